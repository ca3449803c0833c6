"""Directories that appear complete or not at all: write into a hidden sibling, then rename it into place."""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from dvd.errors import DVDError


def prepare_output_folder(folder: Path) -> Path:
    """Create `folder` if needed and prove it writable, so a bad output path fails before any model work."""
    folder = Path(folder)
    try:
        folder.mkdir(parents=True, exist_ok=True)
        Path(tempfile.mkdtemp(prefix=".write-test-", dir=folder)).rmdir()
    except OSError as error:
        raise DVDError(
            f"cannot write to output folder {folder} ({error.strerror}): choose another output path"
        ) from None
    return folder


@contextmanager
def atomic_directory(final: Path) -> Iterator[Path]:
    """Yield an empty temporary directory next to `final`; on success it replaces `final`, on any error (or
    KeyboardInterrupt) it is removed and `final` is left as it was."""
    final = Path(final)
    final.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{final.name}.partial-", dir=final.parent))
    try:
        yield staging
        replace_directory(staging, final)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise


def replace_directory(staging: Path, final: Path) -> None:
    """Move a finished `staging` directory to `final`, dropping an old `final` only once the new one is in place."""
    if not final.exists():
        staging.rename(final)
        return
    # A directory cannot be replaced in one rename: move the old one aside, and back if the swap fails.
    old = Path(tempfile.mkdtemp(prefix=f".{final.name}.old-", dir=final.parent))
    final.rename(old / final.name)
    try:
        staging.rename(final)
    except BaseException:
        (old / final.name).rename(final)
        raise
    finally:
        shutil.rmtree(old, ignore_errors=True)


@contextmanager
def atomic_file(path: Path) -> Iterator[Path]:
    """Yield a temporary name beside `path` (same suffix, for writers that go by it); on success it replaces `path`,
    on any error it is removed."""
    path = Path(path)
    tmp = path.with_name(f".{path.stem}.tmp-{os.getpid()}{path.suffix}")
    try:
        yield tmp
        tmp.replace(path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def atomic_write_text(path: Path, text: str) -> None:
    """Write a small text file under a temporary name, then rename it into place."""
    with atomic_file(path) as tmp:
        tmp.write_text(text)
