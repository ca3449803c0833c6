"""The app's limits and its own temporary folder: what `dvd app` checks and makes before any heavy import or model
load (this module imports neither torch nor Gradio), and the only folder the page may serve files from."""

from __future__ import annotations

import itertools
import secrets
import shutil
import tempfile
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from dvd.errors import DVDError
from dvd.io.links import link_or_copy
from dvd.options import DEFAULT_APP_KEEP_MINUTES, DEFAULT_APP_MAX_SECONDS, DEFAULT_APP_MAX_UPLOAD_MB


@dataclass(frozen=True)
class AppLimits:
    """What one job may ask of the machine (`dvd app` flags), and how long its files are kept."""

    max_upload_mb: float = DEFAULT_APP_MAX_UPLOAD_MB
    max_seconds: float = DEFAULT_APP_MAX_SECONDS
    keep_minutes: float = DEFAULT_APP_KEEP_MINUTES

    def __post_init__(self) -> None:
        for name in ("max_upload_mb", "max_seconds", "keep_minutes"):
            if not getattr(self, name) > 0:
                raise DVDError(f"--{name.replace('_', '-')} must be positive, got {getattr(self, name)}")


class Workspace:
    """The app's own temporary folder: the examples it offers (copies or hard links of the files given), and one
    sub-folder per job, deleted when a job fails or is cancelled, when it is older than `keep_minutes`, and (the
    whole workspace) at exit. Created fresh under `parent`, so that nothing the app did not write is ever deleted.

    It is the only folder the page serves files from: a file beside an example is never reachable. Job folders
    carry a random part in their names, so that one visitor cannot guess another's results."""

    def __init__(self, parent: Path | None, keep_minutes: float) -> None:
        base = Path(parent) if parent is not None else Path(tempfile.gettempdir())
        base.mkdir(parents=True, exist_ok=True)
        self.root = Path(tempfile.mkdtemp(prefix="dvd-app-", dir=base))
        self.jobs = self.root / "jobs"
        self.jobs.mkdir()
        self.examples = self.root / "examples"
        self.examples.mkdir()
        self.keep_seconds = keep_minutes * 60
        self._ids = itertools.count(1)
        self._lock = threading.Lock()

    def share_examples(self, files: Sequence[Path]) -> list[Path]:
        """`files` as the page offers them: each hard-linked (on the same file system) or copied into its own
        sub-folder of `examples`, keeping its name; the user's files themselves are never served. A link given
        as an example is followed; nothing writes to these files, and removing them leaves the user's as they are."""
        shared = []
        for number, file in enumerate(files, start=1):
            folder = self.examples / str(number)
            folder.mkdir()
            shared.append(link_or_copy(Path(file), folder / Path(file).name))
        return shared

    def new_job_folder(self) -> tuple[str, Path]:
        """A new job's id and folder (made when the job starts)."""
        with self._lock:
            job_id = f"{int(time.time())}-{next(self._ids):04d}"
        return job_id, self.jobs / f"{job_id}-{secrets.token_hex(8)}"

    def sweep(self, now: float | None = None, busy: Sequence[Path] = ()) -> list[Path]:
        """Remove job folders older than `keep_minutes` (not those in `busy`); returns what was removed."""
        limit = (time.time() if now is None else now) - self.keep_seconds
        removed = []
        for folder in sorted(self.jobs.iterdir()):
            if folder not in busy and folder.stat().st_mtime < limit:
                shutil.rmtree(folder, ignore_errors=True)
                removed.append(folder)
        return removed

    def close(self) -> None:
        shutil.rmtree(self.root, ignore_errors=True)
