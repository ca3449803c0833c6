"""`dvd predict`'s progress line: the frames written as the bar, and what the run is doing right now beside it; and the
one line of a corpus run on Ray (`CorpusProgress`).

A window's frames are written only once the model has run on it (and, stitched globally, on the windows after it),
so on a slow device the bar alone would sit at 0 for the whole first window. The line therefore also shows the
frames decoded so far and the stage of the window in hand (VAE encode, DiT, VAE decode), which it hears as the
run's stage timer (`dvd.bench.profiling`): the same calls `dvd bench` times. The time left is shown only once
frames have been written, when there is a rate to estimate it from.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterable, Iterator
from contextlib import AbstractContextManager, nullcontext
from typing import TYPE_CHECKING, TextIO, TypeVar

from tqdm import tqdm

from dvd.engine.stages import READ, NoTimer
from dvd.model.dvd_model import MODEL_STAGES

if TYPE_CHECKING:
    from dvd.pipeline.dvd_pipeline import DVDPipeline

Item = TypeVar("Item")

STAGE_NAMES = dict(zip(MODEL_STAGES, ("VAE encode", "DiT", "VAE decode")))
# Before the first frame is written: no time left (there is no rate yet); afterwards tqdm's usual line.
WAITING_FORMAT = "{l_bar}{bar}| {n_fmt}/{total_fmt} [{elapsed}{postfix}]"
RUNNING_FORMAT = "{l_bar}{bar}| {n_fmt}/{total_fmt} [{elapsed}<{remaining}, {rate_fmt}{postfix}]"
REFRESH_SECONDS = 0.5  # the decoded-frame count redraws the line at most this often


class PredictProgress(NoTimer):
    """The progress line of one input: `written(count)` moves the bar; as the run's timer (`predict_to_folder`'s
    `timer`, and `pipe`'s `stage_timer` inside the `with`) it hears frames decoded, windows started and model
    stages. Called from the reading, model and writing threads alike."""

    def __init__(self, name: str, total: int, pipe: DVDPipeline, disable: bool = False) -> None:
        self.pipe = pipe
        # smoothing=0: the time left from the average rate since the start, as frames arrive a window at a time.
        self.bar = tqdm(
            total=total,
            desc=name,
            unit="frame",
            disable=disable,
            dynamic_ncols=True,
            smoothing=0,
            bar_format=WAITING_FORMAT,
        )
        self.decoded = 0
        self.windows = 0
        self.doing = "decoding"
        self._lock = threading.Lock()
        self._drawn = 0.0
        self._rate_known = False

    def __enter__(self) -> PredictProgress:
        self.pipe.stage_timer = self
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.pipe.stage_timer = NoTimer()
        self.bar.close()

    def written(self, count: int) -> None:
        """`count` frames are written (`predict_to_folder`'s progress callback)."""
        with self._lock:
            if count and not self._rate_known:
                self._rate_known = True
                self.bar.bar_format = RUNNING_FORMAT
            self.bar.update(count - self.bar.n)

    def postfix(self) -> str:
        """What the line says beside the bar, e.g. 'decoded 25, window 4: DiT'."""
        window = f"window {self.windows}: {self.doing}" if self.windows else self.doing
        return f"decoded {self.decoded}, {window}"

    def iterate(self, name: str, items: Iterable[Item]) -> Iterator[Item]:
        for item in items:
            if name == READ:
                self.decoded += 1
                self._draw(force=False)
            yield item

    def stage(self, name: str) -> AbstractContextManager:
        if name in STAGE_NAMES:
            self.doing = STAGE_NAMES[name]
            self._draw(force=True)
        return nullcontext()

    def count_windows(self, count: int) -> None:
        self.windows += count

    def _draw(self, force: bool) -> None:
        now = time.monotonic()
        if not force and now - self._drawn < REFRESH_SECONDS:
            return
        with self._lock:
            self._drawn = now
            self.bar.set_postfix_str(self.postfix(), refresh=True)


class CorpusProgress:
    """The one line of a corpus run (`dvd predict --ray`): inputs done and failed, frames per second across all
    actors, and the time left (the frames still to do, as their headers count them, at that rate). A line about
    one input goes above it. On a terminal the line is redrawn in place; elsewhere (a log) it is written at most
    every LOG_SECONDS, and once at the end."""

    LOG_SECONDS = 60.0

    def __init__(self, inputs: int, frames: int, stream: TextIO, disable: bool = False) -> None:
        self.inputs, self.left, self.stream, self.disable = inputs, frames, stream, disable
        self.done = self.failed = self.written = 0
        self.started = time.monotonic()
        self._shown = 0.0
        self._terminal = stream.isatty()
        self._said: set[str] = set()

    def finished(self, planned: int, written: int | None) -> None:
        """An input came back: `written` frames, or None if it failed."""
        self.done += 1
        self.left -= planned
        if written is None:
            self.failed += 1
        else:
            self.written += written
        self._draw()

    def say(self, line: str) -> None:
        """Print `line` above the progress line; a line said before (each actor's note about the model) only once."""
        if line in self._said:
            return
        self._said.add(line)
        self._clear()
        print(line, file=self.stream)
        if self._terminal:
            self._draw()

    def line(self) -> str:
        seconds = time.monotonic() - self.started
        rate = self.written / seconds if seconds > 0 else 0.0
        left = format_interval(self.left / rate) if rate > 0 else "?"
        failed = f", {self.failed} failed" if self.failed else ""
        return f"dvd predict: {self.done}/{self.inputs} inputs done{failed}, {rate:.2f} frames/s, {left} left"

    def close(self) -> None:
        if self._terminal:
            self._clear()
        elif not self.disable and self.done:
            print(self.line(), file=self.stream)

    def _draw(self) -> None:
        if self.disable:
            return
        if self._terminal:
            self.stream.write(f"\r{self.line()}\x1b[K")
            self.stream.flush()
        elif time.monotonic() - self._shown >= self.LOG_SECONDS:
            self._shown = time.monotonic()
            print(self.line(), file=self.stream)

    def _clear(self) -> None:
        if self._terminal and not self.disable:
            self.stream.write("\r\x1b[K")


def format_interval(seconds: float) -> str:
    """h:mm:ss, as tqdm shows the time left."""
    return tqdm.format_interval(seconds)
