"""The `dvd` command line: one entry point, one module per subcommand under `dvd.commands`."""

from __future__ import annotations

import argparse
import importlib
import sys

from dvd.errors import DVDError

# Each module defines `register(subparsers)`, which adds its parser and sets `run=<function(args) -> int>`.
COMMAND_MODULES = ["predict", "convert", "eval", "train", "demo"]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="dvd",
        description="Video depth estimation with DVD (Deterministic Video Depth). "
        "Outputs are affine-invariant disparity: larger values are nearer.",
    )
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name in COMMAND_MODULES:
        importlib.import_module(f"dvd.commands.{name}").register(subparsers)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return int(args.run(args) or 0)
    except DVDError as error:
        print(f"dvd {args.command}: error: {error}", file=sys.stderr)
        return 2
    except OSError as error:  # disk full, permissions, a path that became a file: unfinished outputs are removed
        where = f" ({error.filename})" if error.filename else ""
        print(
            f"dvd {args.command}: error: {error.strerror or error}{where}; check the path, permissions and free space",
            file=sys.stderr,
        )
        return 2
    except KeyboardInterrupt:
        print(f"dvd {args.command}: interrupted; unfinished outputs were removed", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
