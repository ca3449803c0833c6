"""The streaming engine: frames in, stitched disparity frames out, in bounded memory.

Frames arrive one at a time (already at model size); windows are cut as soon as they are decidable, predicted in
batches of ``batch_windows``, stitched, and every frame is yielded as soon as no later window can overlap it.
Only the input frames that a pending or future window may still need and the not-yet-final stitched tail (with
``--stitch global``, also the windows still within its lag) are held, so memory does not depend on the video length, which need not be known in advance.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass

import numpy as np

from dvd.engine.allocator import ArrayPool, release_free_memory
from dvd.engine.stitch import Stitcher, StitchPreset, get_stitch_preset
from dvd.engine.windows import Window, WindowScheduler, validate_window
from dvd.errors import DVDError
from dvd.options import DEFAULT_STITCH

WindowPredictor = Callable[[list[np.ndarray]], list[np.ndarray]]
"""Predicts disparity for several windows at once: list of [L, H, W, 3] frames -> list of [L, H, W]."""


@dataclass(frozen=True)
class WindowReport:
    """One window, just stitched: which frames, the scale and shift it got, and how well its overlap agreed."""

    index: int  # 0 for the first window
    window: Window
    scale: float
    shift: float
    overlap_mae: float | None  # mean |aligned - stitched| over the overlap (the official eval's "overlap MAE")
    overlap_relative: float | None = None  # overlap_mae over the stitched overlap's variation (engine/shots)
    seam_cut: int | None = None  # the frame where this window started a new shot, its seam having failed


WindowCallback = Callable[[WindowReport], None]


@dataclass(frozen=True)
class StreamState:
    """The engine between two model calls, enough to go on from there (dvd predict --resume): the window schedule,
    the stitcher, and which input frames it had taken in and still held.

    A resumed stream is fed the input frames from ``buffer_start`` on (the earlier ones are final already); the
    ones below ``frames_seen`` are taken back in without a decision, since every window they could decide has
    been predicted. ``emitted`` stitched frames had been handed out.
    """

    frames_seen: int
    buffer_start: int
    emitted: int
    scheduler: dict
    stitcher: dict

    def as_tree(self) -> dict:
        """Plain values and arrays only (dvd.jobs.resume stores it)."""
        return {
            "frames_seen": self.frames_seen,
            "buffer_start": self.buffer_start,
            "emitted": self.emitted,
            "scheduler": self.scheduler,
            "stitcher": self.stitcher,
        }

    @classmethod
    def from_tree(cls, tree: dict) -> StreamState:
        return cls(**tree)


StateCallback = Callable[[StreamState], None]


def validate_stream_settings(window: int, overlap: int, stitch: str, batch_windows: int) -> StitchPreset:
    """The stitch preset for these settings; DVDError if they cannot work."""
    if batch_windows < 1:
        raise DVDError(f"--batch-windows must be at least 1, got {batch_windows}")
    preset = get_stitch_preset(stitch)
    validate_window(window, overlap)
    return preset


def stream_disparity(
    frames: Iterable[np.ndarray],
    predict_windows: WindowPredictor,
    *,
    window: int = 81,
    overlap: int = 21,
    stitch: str = DEFAULT_STITCH,
    batch_windows: int = 1,
    on_window: WindowCallback | None = None,
    resume: StreamState | None = None,
    on_state: StateCallback | None = None,
    seam_judge: Callable[[float], bool] | None = None,
) -> Iterator[np.ndarray]:
    """Yield the stitched disparity of each input frame ([H, W] float32), in order, as soon as it is final.

    ``on_window`` is called with a `WindowReport` after each window is stitched (progress, seam diagnostics); an
    exception it raises stops the stream between windows. ``seam_judge`` (a `dvd.engine.shots.SeamJudge`'s
    ``failed``) may fail a seam, which the stitcher then joins as a cut.

    ``predict_windows`` receives at most ``batch_windows`` windows of equal length per call; the output does not depend on ``batch_windows``.

    ``on_state`` is called with a `StreamState` after each model call's windows are stitched and their final
    frames yielded; ``resume`` continues from such a state, with the same settings, fed the same input frames
    from its ``buffer_start`` on: the frames yielded are exactly those an uninterrupted stream would have yielded
    after its ``emitted`` frames, and since the windows are grouped into model calls the same way, they are the
    same bits.
    """
    preset = validate_stream_settings(window, overlap, stitch, batch_windows)
    scheduler = WindowScheduler(window, overlap, preset.schedule)
    stitcher = Stitcher(preset, seam_judge)
    # On resume the frames before `buffer_start` are not fed again: the buffer starts there.
    buffer = _FrameBuffer(resume.buffer_start if resume is not None else 0)
    pending: list[Window] = []
    if resume is not None:
        scheduler.restore(resume.scheduler)
        stitcher.restore(resume.stitcher)

    def flush() -> None:
        for group in _equal_length_runs(pending):
            inputs = [buffer.stack(np.arange(w.start, w.end)) for w in group]
            outputs = predict_windows(inputs)
            _check_outputs(inputs, outputs)
            for w, out in zip(group, outputs):
                stitcher.add(w, out)
                if on_window is not None:
                    scale, shift = stitcher.last_fit
                    overlap_mae = stitcher.last_overlap_mae if stitcher.windows_added > 1 else None
                    relative, cut = stitcher.last_overlap_relative, stitcher.last_seam_cut
                    on_window(WindowReport(stitcher.windows_added - 1, w, scale, shift, overlap_mae, relative, cut))
        pending.clear()

    def decide(frames_seen: int, finished: bool) -> Iterator[np.ndarray]:
        pending.extend(scheduler.advance(frames_seen, finished))
        flushed = bool(pending) and (len(pending) >= batch_windows or finished)
        if flushed:
            flush()
        if not pending:
            if scheduler.done:
                stitcher.finish()
            yield from stitcher.pop(scheduler.earliest_future_start(frames_seen))
        buffer.forget_before(min([scheduler.earliest_future_start(frames_seen)] + [w.start for w in pending]))
        if flushed:
            # Once a model call: its windows' frames and the model's temporaries are gone; their pages go back to
            # the system instead of lingering in the heaps' holes (dvd.engine.allocator).
            release_free_memory()
        if flushed and on_state is not None:
            stitched = stitcher.state()
            on_state(StreamState(frames_seen, buffer.start, stitched["base"], scheduler.state(), stitched))

    frames = iter(frames)
    if resume is not None:
        for frame in itertools.islice(frames, resume.frames_seen - resume.buffer_start):
            buffer.append(np.asarray(frame))
    for frame in frames:
        buffer.append(np.asarray(frame))
        yield from decide(buffer.end, finished=False)
    yield from decide(buffer.end, finished=True)


class _FrameBuffer:
    """The input frames from some index up to the newest one; windows of them are stacked into recycled arrays."""

    def __init__(self, start: int = 0) -> None:
        self._frames: list[np.ndarray] = []
        self._base = start
        self._pool = ArrayPool()

    @property
    def start(self) -> int:
        return self._base

    @property
    def end(self) -> int:
        return self._base + len(self._frames)

    def append(self, frame: np.ndarray) -> None:
        if frame.ndim != 3 or frame.shape[-1] != 3:
            raise DVDError(f"frame {self.end} has shape {frame.shape}: expected [height, width, 3] RGB")
        if self._frames and frame.shape != self._frames[0].shape:
            raise DVDError(
                f"frame {self.end} is {frame.shape[1]}x{frame.shape[0]} but earlier frames are "
                f"{self._frames[0].shape[1]}x{self._frames[0].shape[0]}: all frames of a video must share one size"
            )
        self._frames.append(frame)

    def stack(self, indices: np.ndarray) -> np.ndarray:
        frames = [self._frames[i - self._base] for i in indices]
        return np.stack(frames, out=self._pool.empty((len(frames), *frames[0].shape), frames[0].dtype))

    def forget_before(self, index: int) -> None:
        drop = max(0, min(index, self.end) - self._base)
        if drop:
            del self._frames[:drop]
            self._base += drop


def _equal_length_runs(windows: list[Window]) -> list[list[Window]]:
    """Split into consecutive runs of equal length, since one batch must share one shape."""
    runs: list[list[Window]] = []
    for w in windows:
        if runs and runs[-1][0].length == w.length:
            runs[-1].append(w)
        else:
            runs.append([w])
    return runs


def _check_outputs(inputs: list[np.ndarray], outputs: list[np.ndarray]) -> None:
    if len(outputs) != len(inputs):
        raise ValueError(f"the predictor returned {len(outputs)} windows for {len(inputs)} inputs")
    for frames_in, out in zip(inputs, outputs):
        if out.shape != frames_in.shape[:3]:
            raise ValueError(f"the predictor returned shape {out.shape} for input frames {frames_in.shape}")
