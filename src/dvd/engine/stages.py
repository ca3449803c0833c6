"""The stages a run's time is told in, and the timer the engine and the pipeline report to when nobody measures.

Host stages are timed where they happen: the engine (resize, stitch, resize_back), the pipeline (transfer: window ->
tensor, padding, to the device and back, the finite check) and `predict_to_folder` (read, write). `write` is the
writers' own time; `resize_back` inside it is counted apart. `dvd.bench.profiling.StageTimer` records them.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from contextlib import AbstractContextManager, nullcontext
from typing import TypeVar

TRANSFER = "transfer"
READ, RESIZE, STITCH, RESIZE_BACK, WRITE = "read", "resize", "stitch", "resize_back", "write"
Item = TypeVar("Item")


class NoTimer:
    """The pipeline's default: stages cost nothing and are not recorded."""

    def stage(self, name: str) -> AbstractContextManager:
        return nullcontext()

    def iterate(self, name: str, items: Iterable[Item]) -> Iterator[Item]:
        return iter(items)

    def count_windows(self, count: int) -> None:
        pass
