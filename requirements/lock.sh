#!/usr/bin/env bash
# Remake lock-cpu-py311.txt, the tested set: every package, at its exact version, that a fresh Python 3.11 venv gets
# from `pip install torch==2.13.0` then `pip install -e ".[dev,app,metric,docs,ray]"`. Run it from the repository root,
# run the suite on the result (README, "Development"), and commit the lock with the change that needed it.
#   bash requirements/lock.sh            # writes requirements/lock-cpu-py311.txt
set -euo pipefail
cd "$(dirname "$0")/.."
python=${PYTHON:-python3.11}
scratch=$(mktemp -d)
trap 'rm -rf "$scratch"' EXIT
"$python" -m venv "$scratch/venv"
pip="$scratch/venv/bin/pip"
"$pip" install -q torch==2.13.0
"$pip" install -q -e ".[dev,app,metric,docs,ray]"
{
    echo "# The tested set: CPU Linux, Python 3.11. Made by requirements/lock.sh on $(date -u +%F); do not edit by hand."
    echo "# Use it as a constraints file: pip install -e \".[app]\" -c requirements/lock-cpu-py311.txt"
    echo "# torch is pinned without its build label, so a CUDA build of 2.13.0 (installed first) satisfies it too."
    # dvd itself is the editable line; the +cpu label of the CPU wheel is dropped (see above).
    "$pip" freeze --exclude-editable | grep -v '^#' | sed -E 's/^(torch==[^+]+)\+.*/\1/' | LC_ALL=C sort -f
} > "$scratch/lock.txt"
mv "$scratch/lock.txt" requirements/lock-cpu-py311.txt
echo "wrote requirements/lock-cpu-py311.txt ($(grep -c '==' requirements/lock-cpu-py311.txt) packages)"
