"""The `dvd` command line: one entry point, one module per subcommand under `dvd.commands`.

Command modules import only light modules at their top (their parsers take names and defaults from
`dvd.options`) and the heavy stack (torch, diffusers, av) inside `run`, so `dvd --help` and argument errors
answer at once, and Ctrl-C or SIGTERM while torch loads ends like any other interruption.

Exit codes: 0 success; 1 an internal error (a bug: one line, the traceback with DVD_DEBUG=1); 2 a problem with the
input, the options or the disk, said in one line with the fix; 130 Ctrl-C; 143 SIGTERM.
"""

from __future__ import annotations

import argparse
import codecs
import importlib
import os
import signal
import sys
import threading
import traceback
from collections.abc import Iterator
from contextlib import contextmanager

from dvd.errors import DVDError, Terminated

# Each module defines `register(subparsers)`, which adds its parser and sets `run=<function(args) -> int>`.
COMMAND_MODULES = ["predict", "convert", "eval", "train", "demo", "bench", "app", "doctor"]
DEBUG_VARIABLE = "DVD_DEBUG"  # set to 1 for the traceback of an internal error


class OneLineParser(argparse.ArgumentParser):
    """Argument errors in one line, like every other failure; the usage is one --help away."""

    def error(self, message: str):
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def build_parser() -> argparse.ArgumentParser:
    parser = OneLineParser(
        prog="dvd",
        description="Video depth estimation with DVD (Deterministic Video Depth). "
        "Outputs are affine-invariant disparity: larger values are nearer.",
    )
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name in COMMAND_MODULES:
        importlib.import_module(f"dvd.commands.{name}").register(subparsers)
    return parser


def main(argv: list[str] | None = None) -> int:
    prog = "dvd"
    with sigterm_raises(), leaving_process_group(), printable_file_names():
        try:
            args = build_parser().parse_args(argv)
            prog = f"dvd {args.command}"
            return int(args.run(args) or 0)
        except DVDError as error:
            return fail(prog, str(error), 2)
        except OSError as error:  # disk full, permissions, a path that became a file: unfinished outputs are removed
            where = f" ({error.filename})" if error.filename else ""
            reason = f"{error.strerror or error}{where}; check the path, permissions and free space"
            return fail(prog, "; ".join([reason, *getattr(error, "__notes__", [])]), 2)
        except Terminated as error:
            return fail(prog, f"terminated (SIGTERM); {with_notes(error, 'unfinished outputs were removed')}", 143)
        except KeyboardInterrupt as error:
            return fail(prog, f"interrupted; {with_notes(error, 'unfinished outputs were removed')}", 130)
        except Exception as error:  # noqa: BLE001 - a bug: one line for the user, the traceback on request
            if os.environ.get(DEBUG_VARIABLE):
                traceback.print_exc()
            return fail(
                prog,
                f"internal error ({type(error).__name__}: {error}); this is a bug: please report it with the "
                f"output of the same command run with {DEBUG_VARIABLE}=1 and the output of `dvd doctor`"
                + "".join(f"; {note}" for note in getattr(error, "__notes__", [])),
                1,
            )


def with_notes(error: BaseException, default: str) -> str:
    """`default`, or the notes an error collected on its way out instead (e.g. that an interrupted run's partial
    output was kept for --resume, and where)."""
    notes = getattr(error, "__notes__", None)
    return "; ".join(notes) if notes else default


def fail(prog: str, message: str, code: int) -> int:
    """Print `prog: error: message` as one line on stderr; returns `code`."""
    print(f"{prog}: error: {' '.join(message.split())}", file=sys.stderr)
    return code


FILE_NAME_ERRORS = "dvd-file-names"


def escape_name_bytes(error: UnicodeError) -> tuple[str, int]:
    """The codec error handler FILE_NAME_ERRORS: a byte of a file name that is not UTF-8 (a lone surrogate of
    os.fsdecode) as `\\xNN`, anything else unencodable as Python's backslash escape."""
    if not isinstance(error, UnicodeEncodeError):
        raise error
    escaped = [
        f"\\x{ord(char) - 0xDC00:02x}" if 0xDC80 <= ord(char) <= 0xDCFF else ascii(char)[1:-1]
        for char in error.object[error.start : error.end]
    ]
    return "".join(escaped), error.end


codecs.register_error(FILE_NAME_ERRORS, escape_name_bytes)


@contextmanager
def printable_file_names() -> Iterator[None]:
    """Let stdout and stderr print any file name: Linux names are bytes, and one that is not UTF-8 (legal) reaches
    Python as lone surrogates, which a strict stream (a UTF-8 locale's stdout) refuses with UnicodeEncodeError
    after the work is done. Such bytes are printed as `\\xff` escapes instead (`escape_name_bytes`); a stream
    that already writes them back as the original bytes (surrogateescape, the C locale's stdout) is left so."""
    changed = {
        stream: stream.errors
        for stream in (sys.stdout, sys.stderr)
        if getattr(stream, "errors", None) in ("strict", "backslashreplace") and hasattr(stream, "reconfigure")
    }
    for stream in changed:
        stream.reconfigure(errors=FILE_NAME_ERRORS)
    try:
        yield
    finally:
        for stream, errors in changed.items():
            stream.reconfigure(errors=errors)


@contextmanager
def leaving_process_group() -> Iterator[None]:
    """Tear down the torch.distributed group a command joined (predict or train under torchrun/accelerate), however
    it ends, while the interpreter is whole: left to interpreter shutdown, gloo's worker threads can abort
    (SIGABRT) a process whose run succeeded."""
    try:
        yield
    finally:
        dist = sys.modules.get("torch.distributed")  # never imported: no group, and no reason to load torch now
        if dist is not None and dist.is_available() and dist.is_initialized():
            dist.destroy_process_group()


@contextmanager
def sigterm_raises() -> Iterator[None]:
    """Turn SIGTERM into `Terminated` (a KeyboardInterrupt) while the command runs, so it cleans up like Ctrl-C."""
    if threading.current_thread() is not threading.main_thread():  # signal handlers live in the main thread only
        yield
        return

    def terminate(signum: int, frame: object) -> None:
        raise Terminated

    previous = signal.signal(signal.SIGTERM, terminate)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


INTERRUPTED_CODES = (130, 143)  # Ctrl-C, SIGTERM


def console() -> None:
    """The `dvd` program (and `python -m dvd.cli`): `main`, then exit with its code.

    After an interrupt the code is passed to os._exit: when the KeyboardInterrupt struck while an extension module
    ran Python code during its import (torch loads for seconds), CPython remembers it as unhandled and, although
    `main` handled it and cleaned up, ends the process by SIGINT itself (status -2 instead of 130).
    """
    code = main()
    if code in INTERRUPTED_CODES:
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)
    sys.exit(code)


if __name__ == "__main__":
    console()
