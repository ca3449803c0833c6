"""Sliding-window schedules over a video, shared by inference, evaluation and streaming.

Two presets reproduce the two official behaviours:

- ``"openworld"`` (the official single-video script): windows of ``window`` frames advancing by
  ``window - overlap``; the last window is shifted back so that it is full length and ends at the last frame,
  so its overlap with the previous window can be larger than ``overlap``.
- ``"benchmark"`` (the official evaluation script): the same, except that the last window is simply cut at the
  end of the video, so it can be short and its overlap is always exactly ``overlap``.

The schedule is computed incrementally by :class:`WindowScheduler` so that a stream whose length is only known
when it ends uses exactly the same rule as :func:`window_schedule` on a known length.
"""

from __future__ import annotations

from typing import NamedTuple

from dvd.errors import DVDError

SCHEDULE_PRESETS: tuple[str, ...] = ("openworld", "benchmark")


class Window(NamedTuple):
    """Frames ``start`` (inclusive) to ``end`` (exclusive) of the source video."""

    start: int
    end: int

    @property
    def length(self) -> int:
        return self.end - self.start


def validate_window(window: int, overlap: int) -> None:
    """Raise DVDError unless ``window >= 1`` and ``0 <= overlap < window``."""
    if window < 1:
        raise DVDError(f"window must be at least 1 frame, got {window}: pass a positive --window")
    if overlap < 0:
        raise DVDError(f"overlap must be 0 or more frames, got {overlap}: pass --overlap between 0 and window-1")
    if overlap >= window:
        raise DVDError(
            f"overlap ({overlap}) must be smaller than the window ({window}): pass --overlap between 0 and {window - 1}"
        )


class WindowScheduler:
    """Decides windows as frames arrive, without knowing the video length in advance.

    Call :meth:`advance` with the number of frames seen so far (and ``finished=True`` once the source has ended);
    it returns every window newly decidable from that information, each exactly once, in order.
    """

    def __init__(self, window: int, overlap: int, preset: str = "openworld") -> None:
        validate_window(window, overlap)
        if preset not in SCHEDULE_PRESETS:
            raise DVDError(f"unknown window schedule {preset!r}: use one of {', '.join(SCHEDULE_PRESETS)}")
        self.window = window
        self.overlap = overlap
        self.preset = preset
        self.stride = window - overlap
        self._next_start = 0
        self._last_end = 0
        self._done = False

    @property
    def done(self) -> bool:
        """True once the last window has been returned."""
        return self._done

    def advance(self, frames_seen: int, finished: bool = False) -> list[Window]:
        """The windows newly decidable from ``frames_seen`` frames (all remaining ones when ``finished``)."""
        decided: list[Window] = []
        # A window that ends exactly at the last frame is the same under both presets and whether or not it
        # turns out to be the last one, so it can be emitted before the end of the source is known.
        while not self._done and self._next_start + self.window <= frames_seen:
            decided.append(self._emit(Window(self._next_start, self._next_start + self.window)))
            self._next_start += self.stride
        if finished and not self._done:
            if self._last_end < frames_seen:
                decided.append(self._emit(self._final_window(frames_seen)))
            self._done = True
        return decided

    def earliest_future_start(self, frames_seen: int) -> int:
        """The smallest start frame any window not yet returned can have; earlier frames are never revisited."""
        if self._done:
            return frames_seen
        if self.preset == "openworld":
            # A back-shifted last window would end at the (unknown) last frame, which is at least frames_seen.
            return min(self._next_start, max(0, frames_seen - self.window))
        return self._next_start

    def state(self) -> dict[str, int | bool]:
        """Where the schedule stands, for a resumable run's state file (`restore` continues from it)."""
        return {"next_start": self._next_start, "last_end": self._last_end, "done": self._done}

    def restore(self, state: dict[str, int | bool]) -> None:
        """Continue the schedule from a `state()` of a scheduler with the same window, overlap and preset."""
        self._next_start, self._last_end, self._done = (
            int(state["next_start"]),
            int(state["last_end"]),
            bool(state["done"]),
        )

    def _final_window(self, num_frames: int) -> Window:
        if self.preset == "openworld":
            return Window(max(0, num_frames - self.window), num_frames)
        return Window(self._next_start, num_frames)

    def _emit(self, window: Window) -> Window:
        self._last_end = window.end
        return window


def window_schedule(num_frames: int, window: int, overlap: int, preset: str = "openworld") -> list[Window]:
    """All windows for a video of ``num_frames`` frames (empty for 0 frames)."""
    if num_frames < 0:
        raise DVDError(f"frame count must be 0 or more, got {num_frames}")
    return WindowScheduler(window, overlap, preset).advance(num_frames, finished=True)
