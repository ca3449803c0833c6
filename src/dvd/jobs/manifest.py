"""OUT/manifest.jsonl: one JSON line per input of a `dvd predict` batch, so that a big run can be audited and
re-run for what is missing.

Each line: `input` (the path given), `output` (OUT/<name>), `status` ("ok", "skipped" or "failed"), `frames`
(written; null unless ok), `seconds` (wall time for that input), `error` (one line; null unless failed; for a
skipped input, why it was skipped), `reason` (the same text: the corpus-run contract's name for it, kept beside
`error` so readers of either name work), `time` (UTC, ISO 8601, when the line was written) and `process` (the rank
under `accelerate launch`, 0 otherwise). Every run appends its lines, so the last line of an input is its current
state.

Several processes append to the same file: each line goes out in one `write` on a descriptor opened with O_APPEND,
which POSIX makes an atomic seek-to-end-and-write, so lines of different processes never interleave or overwrite
each other (one short line per input, far below any file system's write granularity).

`dvd predict --ray` also writes OUT/manifest.parquet, for data-set builders: that run's lines (one per input), with
the same columns, as one Parquet file (`write_index`), replaced by each --ray run. It is written whole under a
temporary name and renamed into place, and only a regular file is ever replaced (`check_index`).

The manifest is a regular file of dvd's, checked when a run begins (`Manifest` refuses a link, a FIFO, a folder or
a device there, before any model work) and opened with O_NOFOLLOW for every line, so a link planted at its name is
never written through and a FIFO cannot block a finished run. A last line cut short (a run killed mid-write, an
edit) gets a newline first, so the new record starts on its own line and stays readable.
"""

from __future__ import annotations

import errno
import json
import os
import stat
from contextlib import suppress
from datetime import UTC, datetime
from pathlib import Path

from dvd.errors import DVDError

MANIFEST_FILE = "manifest.jsonl"
INDEX_FILE = "manifest.parquet"
STATUSES = ("ok", "skipped", "failed")
# The columns of a manifest line, with the Parquet type of each (nullable: frames and error are often null).
COLUMNS = {
    "input": "string",
    "output": "string",
    "status": "string",
    "frames": "int64",
    "seconds": "float64",
    "error": "string",
    "reason": "string",
    "time": "string",
    "process": "int64",
}


class Manifest:
    """Appends the lines of process `process` to `folder`/manifest.jsonl. A run makes it before any model work: an
    existing manifest that is not a regular file dvd can append to is refused then (DVDError), not once the outputs
    are written."""

    def __init__(self, folder: Path, process: int = 0) -> None:
        self.path = Path(folder) / MANIFEST_FILE
        self.process = process
        if os.path.lexists(self.path):
            try:
                os.close(self._open())
            except OSError as error:
                raise DVDError(
                    f"cannot append to {self.path} ({error.strerror}): make it writable, move it away or choose "
                    "another output folder"
                ) from None

    def record(
        self,
        input_path: Path | str,
        output: Path,
        status: str,
        seconds: float = 0.0,
        frames: int | None = None,
        error: str | None = None,
    ) -> dict:
        """Append one line; returns it as a dict."""
        if status not in STATUSES:
            raise ValueError(f"unknown manifest status {status!r}: one of {STATUSES}")
        error = None if error is None else " ".join(error.split())
        line = {  # the keys of COLUMNS, in their order
            "input": str(input_path),
            "output": str(output),
            "status": status,
            "frames": frames,
            "seconds": round(seconds, 3),
            "error": error,
            "reason": error,
            "time": datetime.now(UTC).isoformat(timespec="seconds"),
            "process": self.process,
        }
        data = (json.dumps(line) + "\n").encode("utf-8")
        descriptor = self._open()
        try:
            size = os.fstat(descriptor).st_size
            if size and os.pread(descriptor, 1, size - 1) != b"\n":
                data = b"\n" + data
            os.write(descriptor, data)
        finally:
            os.close(descriptor)
        return line

    def _open(self) -> int:
        """A descriptor open for appending to the manifest, created if need be; DVDError naming what is there when
        it is not a regular file. Looked at before opening, so that a device or FIFO is never opened, and again
        after, in case it was swapped in between (O_NOFOLLOW and O_NONBLOCK keep that open from following a link
        or blocking)."""
        with suppress(FileNotFoundError):
            self._refuse_special(os.lstat(self.path).st_mode)
        flags = os.O_RDWR | os.O_APPEND | os.O_CREAT | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC
        try:
            descriptor = os.open(self.path, flags, 0o666)
        except OSError as error:
            if error.errno in (errno.ELOOP, errno.ENXIO, errno.EISDIR):
                self._refuse_special(os.lstat(self.path).st_mode)
            raise
        try:
            self._refuse_special(os.fstat(descriptor).st_mode)
        except DVDError:
            os.close(descriptor)
            raise
        return descriptor

    def _refuse_special(self, mode: int) -> None:
        if not stat.S_ISREG(mode):
            raise DVDError(
                f"{self.path} is {_kind(mode)}, not a file dvd can append its record to: move it away or choose "
                "another output folder"
            )


def _kind(mode: int) -> str:
    """What a file that is not a regular one is, in words."""
    for test, name in (
        (stat.S_ISLNK, "a symbolic link"),
        (stat.S_ISFIFO, "a FIFO"),
        (stat.S_ISDIR, "a folder"),
        (stat.S_ISCHR, "a device"),
        (stat.S_ISBLK, "a device"),
        (stat.S_ISSOCK, "a socket"),
    ):
        if test(mode):
            return name
    return "not a regular file"


def read_manifest(folder: Path) -> list[dict]:
    """Every line of `folder`/manifest.jsonl, oldest first (empty if there is none)."""
    path = Path(folder) / MANIFEST_FILE
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def check_index(folder: Path) -> None:
    """Refuse, before any model work, an OUT/manifest.parquet that is not a regular file (a link, a folder): the
    run would replace it."""
    path = Path(folder) / INDEX_FILE
    with suppress(FileNotFoundError):
        mode = os.lstat(path).st_mode
        if not stat.S_ISREG(mode):
            raise DVDError(
                f"{path} is {_kind(mode)}, not a file dvd can replace with its index: move it away or choose another "
                "output folder"
            )


def write_index(folder: Path, lines: list[dict]) -> Path:
    """`lines` (manifest lines, as `Manifest.record` returns them) as `folder`/manifest.parquet, in one rename."""
    import pyarrow as arrow
    from pyarrow import parquet

    from dvd.io.atomic import atomic_file

    path = Path(folder) / INDEX_FILE
    check_index(folder)
    schema = arrow.schema([(name, arrow.type_for_alias(kind)) for name, kind in COLUMNS.items()])
    table = arrow.Table.from_pylist([{name: line[name] for name in COLUMNS} for line in lines], schema=schema)
    with atomic_file(path) as temporary:
        parquet.write_table(table, temporary)
    return path
