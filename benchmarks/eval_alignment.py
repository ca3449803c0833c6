"""Memory and time of the evaluation's per-sequence alignment: `dvd.evaluation.alignment.fit_disparity`
(centred float64 sums, frame by frame) against `numpy.linalg.lstsq` on the stacked [N, 2] design matrix (what
the official DVD evaluation calls), on a KITTI-sized clip of random disparity with 80 % valid pixels.

Peak memory is the peak of Python-tracked allocations (tracemalloc, which numpy reports to) above the inputs, so
it counts what each method allocates itself. Also prints the largest difference between the two solutions.

    python benchmarks/eval_alignment.py [--frames 110 --height 352 --width 1216]

Prints a table and appends it to benchmarks/RESULTS.md.
"""

from __future__ import annotations

import argparse
import datetime
import os
import platform
import time
import tracemalloc
from pathlib import Path

import numpy as np

from dvd.evaluation.alignment import fit_disparity

RESULTS = Path(__file__).resolve().parent / "RESULTS.md"


def lstsq_fit(pred: np.ndarray, gt: np.ndarray, valid: np.ndarray) -> tuple[float, float]:
    design = np.stack([pred[valid].astype(np.float64), np.ones(int(valid.sum()))], axis=1)
    (scale, shift), *_ = np.linalg.lstsq(design, 1.0 / gt[valid].astype(np.float64), rcond=None)
    return float(scale), float(shift)


def measure(fit, *arrays: np.ndarray) -> tuple[tuple[float, float], float, float]:
    tracemalloc.start()
    started = time.perf_counter()
    result = fit(*arrays)
    seconds = time.perf_counter() - started
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    return result, peak, seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--frames", type=int, default=110)
    parser.add_argument("--height", type=int, default=352)
    parser.add_argument("--width", type=int, default=1216)
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    shape = (args.frames, args.height, args.width)
    gt = rng.uniform(1.0, 80.0, size=shape).astype(np.float32)
    pred = (2.0 / gt + 0.1 + rng.normal(scale=0.01, size=shape)).astype(np.float32)
    valid = rng.uniform(size=shape) < 0.8
    pixels = int(valid.sum())

    rows = []
    solutions = {}
    for name, fit in [("dvd fit_disparity", fit_disparity), ("numpy lstsq [N,2]", lstsq_fit)]:
        solutions[name], peak, seconds = measure(fit, pred, gt, valid)
        rows.append(f"| {name} | {peak / 2**20:.0f} | {peak / pixels:.1f} | {seconds:.2f} |")
    (s0, b0), (s1, b1) = solutions.values()
    difference = max(abs(s0 - s1) / abs(s1), abs(b0 - b1) / abs(b1))

    command = (
        f"`python benchmarks/eval_alignment.py --frames {args.frames} --height {args.height} --width {args.width}`"
    )
    machine = f"{os.cpu_count()}-core {platform.machine()} CPU, {platform.system()}, numpy {np.__version__}"
    table = "\n".join(
        [
            f"### eval alignment, {datetime.date.today()} ({machine}; {command})",
            "",
            (
                f"One scale+shift over {pixels:,} valid pixels of a {args.frames}x{args.height}x{args.width} clip. "
                f"Largest relative difference between the two solutions: {difference:.1e}."
            ),
            "",
            "| method | peak extra memory (MiB) | bytes per valid pixel | seconds |",
            "|---|---|---|---|",
            *rows,
        ]
    )
    print(table)
    with open(RESULTS, "a") as results:
        results.write("\n" + table + "\n")


if __name__ == "__main__":
    main()
