"""Stitching window predictions into one video: scale/shift per window, clamp, linear cross-fade.

This is the one implementation of the overlap alignment; inference, evaluation and anything else that joins
windows call it. Presets:

- ``openworld``: the official single-video script (back-shifted last window, each window fitted by least squares
  to the stitched frames it overlaps, scale clipped to [0.7, 1.5]).
- ``benchmark``: the official evaluation script (fixed overlap, short last window, no clip).
- ``global``: ours. The openworld schedule, but every window's scale and shift come from one weighted
  least-squares problem over all seams and every window's own prediction (`dvd.engine.joint_fit`), solved as
  windows arrive with a lag of ``GLOBAL_LAG_WINDOWS`` windows, so errors do not compound from seam to seam.
  ``benchmarks/stitch_end_to_end.py`` measures every preset on model outputs.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence

import numpy as np

from dvd.engine.joint_fit import JointFit, seam_term
from dvd.engine.scale_shift import ScaleShiftFit
from dvd.engine.windows import Window
from dvd.errors import DVDError
from dvd.options import GLOBAL_LAG_WINDOWS, GLOBAL_PRIOR_SPREAD, REMOVED_STITCH_PRESETS, STITCH_PRESETS, StitchPreset


def get_stitch_preset(name: str) -> StitchPreset:
    """The preset called ``name``; DVDError for an unknown or removed name."""
    if name in REMOVED_STITCH_PRESETS:
        raise DVDError(REMOVED_STITCH_PRESETS[name])
    try:
        return STITCH_PRESETS[name]
    except KeyError:
        raise DVDError(f"unknown stitch preset {name!r}: use one of {', '.join(STITCH_PRESETS)}") from None


def apply_scale_shift(pred: np.ndarray, scale: float, shift: float) -> np.ndarray:
    """``pred * scale + shift`` in float32 with negative values set to 0 (disparity is never negative)."""
    aligned = np.multiply(pred, np.float32(scale), dtype=np.float32)
    aligned += np.float32(shift)
    np.maximum(aligned, 0.0, out=aligned)
    return aligned


def cross_fade(ref: Sequence[np.ndarray], new: Sequence[np.ndarray]) -> list[np.ndarray]:
    """Linear cross-fade over the overlap frames: the first is pure ``ref``, the last pure ``new``."""
    alpha = np.linspace(0.0, 1.0, len(ref), dtype=np.float32)
    return [(1.0 - a) * r + a * n for a, r, n in zip(alpha, ref, new)]


class Stitcher:
    """Joins window predictions in schedule order, keeping only frames that are not yet handed out.

    ``add`` takes the next window; ``pop`` hands out finished frames and forgets them; ``finish`` (after the last
    window) writes what is still waiting. Frames are aligned and held one at a time, never as a window-sized array:
    a 720p window of float32 is ~100 MB of fresh pages for the kernel to zero, a frame comes from the heap. The
    chained presets fit and write each window as it is added; ``global`` holds up to ``lag`` windows unwritten while
    later seams may still move them. Memory holds the not-yet-final tail (and, global, the waiting windows) however
    long the video is.
    """

    def __init__(
        self,
        preset: StitchPreset | str = "openworld",
        seam_judge: Callable[[float], bool] | None = None,
        lag: int = GLOBAL_LAG_WINDOWS,
    ) -> None:
        self.preset = get_stitch_preset(preset) if isinstance(preset, str) else preset
        # Told each seam's relative residual; True fails the seam, which is then joined as a cut (see `add`).
        self.seam_judge = seam_judge
        self.lag = lag
        self._frames: list[np.ndarray] = []
        self._base = 0  # source index of self._frames[0]
        self._frame_shape: tuple[int, ...] = (0, 0)
        self._added_end = 0  # one past the last frame of the windows added so far (written or waiting)
        self._joint = JointFit(GLOBAL_PRIOR_SPREAD) if self.preset.joint else None
        self._waiting: list[tuple[Window, Sequence[np.ndarray]]] = []  # global: added, not yet written
        self._previous: Sequence[np.ndarray] | None = None  # global: the latest window's raw frames, for its next seam
        self.windows_added = 0
        self.last_fit: tuple[float, float] | None = None  # (scale, shift) of the latest window (global: so far)
        self.last_overlap_mae: float | None = None  # mean |aligned - stitched| over the latest overlap
        self.last_overlap_relative: float | None = None  # that, over the stitched overlap's mean absolute deviation
        self.last_seam_cut: int | None = None  # where the latest window started a new shot after a failed seam

    @property
    def frame_shape(self) -> tuple[int, ...]:
        """(H, W) of the frames, once a window has been added."""
        return self._frame_shape

    @property
    def end(self) -> int:
        """One past the last stitched (written) frame."""
        return self._base + len(self._frames)

    def add(self, window: Window, pred: np.ndarray) -> None:
        """Align ``pred`` ([window.length, H, W]) and merge it (global: when it leaves the lag)."""
        if len(pred) != window.length:
            raise ValueError(f"window {tuple(window)} needs {window.length} predicted frames, got {len(pred)}")
        # float32 throughout (a model's own output already is: no copy), so that the held windows, the fits and a
        # resumed run all see the same numbers.
        pred = np.asarray(pred, dtype=np.float32)
        if self.windows_added == 0:
            if window.start != 0:
                raise ValueError(f"the first window must start at frame 0, got {tuple(window)}")
            self._frame_shape = tuple(pred.shape[1:])
        elif not self._base <= window.start <= self._added_end < window.end:
            raise ValueError(
                f"window {tuple(window)} does not continue the stitched frames [{self._base}, {self._added_end})"
            )
        self.last_overlap_mae = self.last_overlap_relative = self.last_seam_cut = None
        if self.windows_added == 0:
            self.last_fit = (1.0, 0.0)  # the first window is the reference, written as the model gave it
            self._frames.extend(pred)
            self._start_segment(pred)
        elif self._joint is None:
            self._add_chained(window, pred, self._added_end - window.start)
        else:
            self._add_joint(window, pred, self._added_end - window.start)
        self._added_end = window.end
        self.windows_added += 1

    def finish(self) -> None:
        """Write the windows still waiting (global); call after the last window."""
        while self._waiting:
            self._write_oldest()

    def _add_chained(self, window: Window, pred: np.ndarray, overlap: int) -> None:
        ref = self._frames[len(self._frames) - overlap :]
        self.last_fit = self._fit(pred[:overlap], ref)
        aligned = [apply_scale_shift(frame, *self.last_fit) for frame in pred[:overlap]]
        if ref and self._seam_failed(aligned, ref):
            self._join_as_cut(pred, overlap)
            return
        self._merge(window, pred, self.last_fit, aligned)

    def _add_joint(self, window: Window, pred: np.ndarray, overlap: int) -> None:
        if overlap == 0:
            # Nothing ties this window to the ones before (--overlap 0): it starts a segment, joined as it is.
            self.finish()
            self.last_fit = (1.0, 0.0)
            self._merge(window, pred, self.last_fit)
            self._start_segment(pred)
            return
        previous = self._previous[len(self._previous) - overlap :]
        self._joint.add(pred, seam_term(previous, pred[:overlap]))
        solution = self._joint.solve()
        self.last_fit = (float(solution[-1, 0]), float(solution[-1, 1]))
        before = solution[-2] if len(solution) > 1 else self._joint.fixed
        ref = [apply_scale_shift(frame, *before) for frame in previous]
        if self._seam_failed([apply_scale_shift(frame, *self.last_fit) for frame in pred[:overlap]], ref):
            self._joint.discard_newest()
            self.finish()
            self._join_as_cut(pred, overlap)
            self._start_segment(pred)
            return
        # Held as frames copied out of the model's window-sized array, which is then freed: frame-sized blocks come
        # from the heap and are reused, while window-sized arrays held for `lag` windows leave the next windows'
        # arrays to fresh pages (filling one 720p window's took 0.01-0.97 s on a 2-core VM: benchmarks/RESULTS.md).
        frames = [frame.copy() for frame in pred]
        self._waiting.append((window, frames))
        while len(self._waiting) > self.lag:
            self._write_oldest()
        self._previous = frames

    def _start_segment(self, pred: Sequence[np.ndarray]) -> None:
        """Global: ``pred``'s window is written at its own scale and the next window is tied to it."""
        if self._joint is not None:
            self._joint.start()
            self._previous = pred

    def _write_oldest(self) -> None:
        scale, shift = self._joint.fix_oldest(self._joint.solve())
        window, pred = self._waiting.pop(0)
        self._merge(window, pred, (scale, shift))

    def _seam_failed(self, aligned: list[np.ndarray], ref: list[np.ndarray]) -> bool:
        """Note the seam's residual; True when the judge fails it."""
        self.last_overlap_mae = _mean(np.abs(a - r) for a, r in zip(aligned, ref))
        self.last_overlap_relative = self.last_overlap_mae / _variation(ref)
        return self.seam_judge is not None and self.seam_judge(self.last_overlap_relative)

    def _merge(
        self,
        window: Window,
        pred: Sequence[np.ndarray],
        fit: tuple[float, float],
        aligned: list[np.ndarray] | None = None,
    ) -> None:
        """Align ``pred`` by ``fit``, cross-fade it into the stitched frames it overlaps and append the rest;
        ``aligned`` may hold its overlap frames already aligned."""
        overlap = self.end - window.start
        if overlap > 0:
            if aligned is None:
                aligned = [apply_scale_shift(frame, *fit) for frame in pred[:overlap]]
            start = len(self._frames) - overlap
            self._frames[start:] = cross_fade(self._frames[start:], aligned)
        self._frames.extend(apply_scale_shift(frame, *fit) for frame in pred[overlap:])

    def _join_as_cut(self, pred: np.ndarray, overlap: int) -> None:
        """After a failed seam: the stitched frames stay as they are and the window's later frames start a new shot
        at its own scale, as the first window of a video does; later windows align to them."""
        self.last_seam_cut, self.last_fit = self.end, (1.0, 0.0)
        self._frames.extend(apply_scale_shift(frame, 1.0, 0.0) for frame in pred[overlap:])

    def pop(self, before: int) -> list[np.ndarray]:
        """Hand out (and forget) the stitched frames with index below ``before``, [H, W] float32 each; frames a
        waiting window overlaps are kept until it is written."""
        if self._waiting:
            before = min(before, self._waiting[0][0].start)
        count = max(0, min(before, self.end) - self._base)
        done = self._frames[:count]
        del self._frames[:count]
        self._base += count
        return done

    def state(self) -> dict:
        """Everything `restore` needs to go on as if nothing had happened (dvd predict --resume): the not yet
        handed-out tail, the waiting windows and the counters. The arrays are the stitcher's own (never changed in
        place), so taking a state costs no copy."""
        return {
            "base": self._base,
            "tail": list(self._frames),
            "frame_shape": list(self._frame_shape),
            "added_end": self._added_end,
            "waiting": [[window.start, window.end] for window, _ in self._waiting],
            "waiting_preds": [pred for _, pred in self._waiting],
            # The latest window is usually the newest waiting one: stored once.
            "previous": None if self._waiting and self._previous is self._waiting[-1][1] else self._previous,
            "joint": None if self._joint is None else self._joint.state(),
            "windows_added": self.windows_added,
            "last_fit": None if self.last_fit is None else [float(value) for value in self.last_fit],
            "last_overlap_mae": self.last_overlap_mae,
        }

    def restore(self, state: dict) -> None:
        """Continue from a `state()` of a stitcher with the same preset."""
        self._base = int(state["base"])
        self._frames = [np.asarray(frame, dtype=np.float32) for frame in state["tail"]]
        self._frame_shape = tuple(int(side) for side in state["frame_shape"])
        self._added_end = int(state["added_end"])
        preds = [np.asarray(pred, dtype=np.float32) for pred in state["waiting_preds"]]
        self._waiting = [(Window(int(start), int(end)), pred) for (start, end), pred in zip(state["waiting"], preds)]
        if state["previous"] is not None:
            self._previous = np.asarray(state["previous"], np.float32)
        else:
            self._previous = self._waiting[-1][1] if self._waiting else None
        if self._joint is not None:
            self._joint.restore(state["joint"])
        self.windows_added = int(state["windows_added"])
        self.last_fit = (
            None if state["last_fit"] is None else (float(state["last_fit"][0]), float(state["last_fit"][1]))
        )
        self.last_overlap_mae = state["last_overlap_mae"]

    def _fit(self, pred: np.ndarray, ref: list[np.ndarray]) -> tuple[float, float]:
        if not ref:
            return 1.0, 0.0  # windows that do not overlap have nothing to align to: they are joined as they are
        scale, shift = ScaleShiftFit().add_frames(pred, ref).least_squares()
        if self.preset.scale_clip is not None:
            scale = float(np.clip(scale, *self.preset.scale_clip))
        return scale, shift


def _mean(frames: Iterable[np.ndarray]) -> float:
    """The mean over equal-sized frames, in float64, one frame at a time."""
    return float(np.mean([np.mean(frame, dtype=np.float64) for frame in frames]))


def _variation(ref: list[np.ndarray]) -> float:
    """The scale a seam's residual is judged against: the mean absolute deviation of the stitched overlap, at least
    1% of its mean level (a flat overlap, e.g. a black frame, would make any residual look huge)."""
    level = _mean(np.abs(frame) for frame in ref)
    centre = np.float32(_mean(ref))
    deviation = _mean(np.abs(frame - centre) for frame in ref)
    return max(deviation, 0.01 * level, 1e-12)


def stitch_windows(
    windows: Sequence[Window], predictions: Sequence[np.ndarray], preset: StitchPreset | str = "openworld"
) -> np.ndarray:
    """Stitch all window predictions of a video at once (for evaluation and tests): [T, H, W] float32."""
    stitcher = Stitcher(preset)
    for window, pred in zip(windows, predictions, strict=True):
        stitcher.add(window, pred)
    stitcher.finish()
    frames = stitcher.pop(stitcher.end)
    return np.stack(frames) if frames else np.empty((0,) + stitcher.frame_shape, dtype=np.float32)
