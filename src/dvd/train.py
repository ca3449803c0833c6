"""`python -m dvd.train --config FILE`: the entry point for `accelerate launch -m dvd.train ...` (and torchrun).

The same options as `dvd train`; every process runs this module and accelerate wires them together.
"""

from __future__ import annotations

import argparse
import sys

from dvd.commands.train import DESCRIPTION, add_arguments, run
from dvd.errors import DVDError


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m dvd.train", description=DESCRIPTION)
    add_arguments(parser)
    args = parser.parse_args(argv)
    try:
        return run(args)
    except DVDError as error:
        print(f"dvd train: error: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("dvd train: interrupted; the last complete checkpoint is kept (resume with --resume)", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
