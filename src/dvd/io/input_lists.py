"""Lists of inputs: a .txt file of paths, or a table (CSV, JSON Lines, Parquet) with a `path` column and, beside it,
settings for that row.

A .txt list holds one path per line (blank lines and # comments skipped). A table names each input in its `path`
column; its other columns are handed on as the row's own settings (`ListedInput.settings`: the caller decides
which it knows), empty cells (CSV ""), JSON null and Parquet nulls meaning "as the command line says". Paths are
relative to the list's folder, whichever the format. Lists do not nest.

Parquet is read with pyarrow, which the `ray` extra brings (`pip install "dvd[ray]"`); the other formats need
nothing beyond Python.
"""

from __future__ import annotations

import csv
import json
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from dvd.errors import DVDError

TEXT_LIST = ".txt"
TABLE_LISTS = (".csv", ".jsonl", ".parquet")
LIST_EXTENSIONS = (TEXT_LIST, *TABLE_LISTS)
PATH_COLUMN = "path"


@dataclass(frozen=True)
class ListedInput:
    """One input as given: its path, and the settings its list row gives it (none for a path given directly or
    listed in a .txt file); `list_file` and `where` (e.g. "row 3 of corpus.parquet") name the list and the row, for
    errors about its settings."""

    path: Path
    settings: dict[str, object] = field(default_factory=dict)
    list_file: Path | None = None
    where: str | None = None


def is_list_file(path: Path) -> bool:
    return path.suffix.lower() in LIST_EXTENSIONS and path.is_file()


def read_list(list_file: Path, missing: dict[Path, str] | None = None) -> list[ListedInput]:
    """The inputs `list_file` names, in its order. A listed path that does not exist is a DVDError, or with
    `missing` (dvd predict --keep-going) goes there with its error instead."""
    entries = []
    for where, text, settings in _rows(list_file):
        entry = list_file.parent / Path(text).expanduser()
        if not entry.exists():
            problem = f"{text} ({where}) not found: fix the path, relative to the list"
            if missing is None:
                raise DVDError(problem)
            missing[entry] = problem
            continue
        if is_list_file(entry):
            raise DVDError(f"{where} names another list ({text}): lists cannot be nested")
        entries.append(ListedInput(entry, settings, list_file, where))
    if not entries and not missing:
        raise DVDError(f"{list_file} lists no inputs: write one path per line (or per row, in a `path` column)")
    return entries


def _rows(list_file: Path) -> Iterator[tuple[str, str, dict[str, object]]]:
    """(where, path text, the row's other non-empty values) for each input the file lists."""
    suffix = list_file.suffix.lower()
    if suffix == TEXT_LIST:
        yield from _text_rows(list_file)
        return
    read = {".csv": _csv_rows, ".jsonl": _jsonl_rows, ".parquet": _parquet_rows}[suffix]
    for where, row in read(list_file):
        if PATH_COLUMN not in row:
            raise DVDError(
                f"{list_file} has no `{PATH_COLUMN}` column ({where}): a {suffix} list names each input in a column "
                f"called {PATH_COLUMN}"
            )
        text = row.pop(PATH_COLUMN)
        if not isinstance(text, str) or not text.strip():
            raise DVDError(f"{where} of {list_file} has no {PATH_COLUMN}: give each row the path of an input")
        settings = {name: value for name, value in row.items() if value is not None and value != ""}
        yield f"{where} of {list_file}", text.strip(), settings


def _text_rows(list_file: Path) -> Iterator[tuple[str, str, dict[str, object]]]:
    # A line is a file name, and Linux file names are bytes: those that are not UTF-8 read as os.fsdecode reads them.
    for number, line in enumerate(list_file.read_text("utf-8", "surrogateescape").splitlines(), start=1):
        text = line.strip()
        if text and not text.startswith("#"):
            yield f"line {number} of {list_file}", text, {}


def _csv_rows(list_file: Path) -> Iterator[tuple[str, dict[str, object]]]:
    with open(list_file, newline="", encoding="utf-8", errors="surrogateescape") as handle:
        reader = csv.DictReader(handle)
        for row in reader:
            if None in row:  # more cells than the header has names
                raise DVDError(f"line {reader.line_num} of {list_file} has more cells than its header: fix the row")
            yield f"line {reader.line_num}", {name.strip(): value for name, value in row.items()}


def _jsonl_rows(list_file: Path) -> Iterator[tuple[str, dict[str, object]]]:
    for number, line in enumerate(list_file.read_text("utf-8", "surrogateescape").splitlines(), start=1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except ValueError as error:
            raise DVDError(f"line {number} of {list_file} is not valid JSON ({error}): one object per line") from None
        if not isinstance(row, dict):
            raise DVDError(f"line {number} of {list_file} is not a JSON object: write one object per line")
        yield f"line {number}", row


def _parquet_rows(list_file: Path) -> Iterator[tuple[str, dict[str, object]]]:
    try:
        from pyarrow import parquet
    except ImportError:
        raise DVDError(
            f'reading {list_file} needs pyarrow: pip install "dvd[ray]" (or pyarrow), or give a .csv/.jsonl list'
        ) from None
    try:
        rows = parquet.read_table(list_file).to_pylist()
    except (OSError, ValueError) as error:  # pyarrow's ArrowInvalid is a ValueError
        raise DVDError(f"cannot read {list_file} as Parquet ({error}): check the file") from None
    for number, row in enumerate(rows, start=1):
        yield f"row {number}", row
