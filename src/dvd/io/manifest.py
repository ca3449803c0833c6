"""OUT/manifest.jsonl: one JSON line per input of a `dvd predict` batch, so that a big run can be audited and
re-run for what is missing.

Each line: `input` (the path given), `output` (OUT/<name>), `status` ("ok", "skipped" or "failed"), `frames`
(written; null unless ok), `seconds` (wall time for that input), `error` (one line; null unless failed; for a
skipped input, why it was skipped), `time` (UTC, ISO 8601, when the line was written) and `process` (the rank
under `accelerate launch`, 0 otherwise). Every run appends its lines, so the last line of an input is its current
state.

Several processes append to the same file: each line goes out in one `write` on a descriptor opened with O_APPEND,
which POSIX makes an atomic seek-to-end-and-write, so lines of different processes never interleave or overwrite
each other (one short line per input, far below any file system's write granularity).
"""

from __future__ import annotations

import json
import os
from datetime import UTC, datetime
from pathlib import Path

MANIFEST_FILE = "manifest.jsonl"
STATUSES = ("ok", "skipped", "failed")


class Manifest:
    """Appends the lines of process `process` to `folder`/manifest.jsonl."""

    def __init__(self, folder: Path, process: int = 0) -> None:
        self.path = Path(folder) / MANIFEST_FILE
        self.process = process

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
        line = {
            "input": str(input_path),
            "output": str(output),
            "status": status,
            "frames": frames,
            "seconds": round(seconds, 3),
            "error": None if error is None else " ".join(error.split()),
            "time": datetime.now(UTC).isoformat(timespec="seconds"),
            "process": self.process,
        }
        data = (json.dumps(line) + "\n").encode("utf-8")
        descriptor = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o666)
        try:
            os.write(descriptor, data)
        finally:
            os.close(descriptor)
        return line


def read_manifest(folder: Path) -> list[dict]:
    """Every line of `folder`/manifest.jsonl, oldest first (empty if there is none)."""
    path = Path(folder) / MANIFEST_FILE
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
