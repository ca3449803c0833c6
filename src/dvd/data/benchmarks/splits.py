"""Pinned sequence lists: ``dvd/data/benchmarks/splits/<name>.txt``, or any text file the user names.

One entry a line, fields separated by white space; blank lines and lines starting with ``#`` are ignored. The
order of a file is kept (the pinned files are sorted), so results never depend on file-system order.
"""

from __future__ import annotations

from importlib import resources
from pathlib import Path

from dvd.errors import DVDError


def pinned_splits() -> list[str]:
    """Names of the lists shipped with dvd."""
    folder = resources.files("dvd.data.benchmarks") / "splits"
    return sorted(entry.name[: -len(".txt")] for entry in folder.iterdir() if entry.name.endswith(".txt"))


def read_split(name_or_path: str) -> list[list[str]]:
    """The entries of a pinned list (by name) or of a split file (by path)."""
    path = Path(name_or_path)
    if path.is_file():
        text = path.read_text()
    else:
        resource = resources.files("dvd.data.benchmarks") / "splits" / f"{name_or_path}.txt"
        if not resource.is_file():
            raise DVDError(f"no split file {name_or_path!r}: pass a file path or one of {', '.join(pinned_splits())}")
        text = resource.read_text()
    lines = (line.strip() for line in text.splitlines())
    return [line.split() for line in lines if line and not line.startswith("#")]
