"""Stitching window predictions into one video: least-squares scale/shift, clamp, linear cross-fade.

This is the one implementation of the overlap alignment, as in the official scripts; inference, evaluation and
anything else that joins windows call it. Presets:

- ``openworld``: the official single-video script (back-shifted last window, scale clipped to [0.7, 1.5]).
- ``benchmark``: the official evaluation script (fixed overlap, short last window, no clip).
- ``anchored``: ours. A chain of pairwise fits lets alignment errors add up from window to window like a random
  walk; worse, least squares of the stitched overlap on a *noisy* new window is biased towards a smaller scale
  (regression dilution: the slope shrinks by var(signal) / (var(signal) + var(noise))), and in a chain that bias
  compounds at every seam, so depth flattens along a long video. Here every window also re-predicts ``K`` anchor
  frames taken from the first window (prepended to its input), and its scale/shift is fitted jointly to the
  stitched overlap and to the first window's disparity of those anchors, which ties each window to one common
  reference: errors stay bounded instead of accumulating, and only ``K`` frames at model resolution are kept.
  The fit is the symmetric one (scale = sign(cov) * std(ref) / std(pred), the geometric mean of the two
  regressions), which has no dilution bias when both sides are equally noisy, as two predictions of the same
  frames are; so later windows keep the first window's depth contrast. ``benchmarks/stitch_drift.py`` measures it.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np

from dvd.errors import DVDError
from dvd.inference.scale_shift import fit_blocks
from dvd.inference.windows import Window
from dvd.model.frames import is_vae_frame_count
from dvd.options import STITCH_PRESETS, StitchPreset


def get_stitch_preset(name: str) -> StitchPreset:
    """The preset called ``name``; DVDError for an unknown name."""
    try:
        return STITCH_PRESETS[name]
    except KeyError:
        raise DVDError(f"unknown stitch preset {name!r}: use one of {', '.join(STITCH_PRESETS)}") from None


def validate_anchor_frames(anchor_frames: int, window: int, overlap: int) -> None:
    """Raise DVDError unless ``anchor_frames`` anchors fit in a window next to more than ``overlap`` video frames."""
    # 1 + 4m anchors fill whole latent frames of the causal VAE (the first latent holds one frame, each later one
    # four), so no latent mixes an anchor with a video frame.
    if not is_vae_frame_count(anchor_frames):
        raise DVDError(f"--anchor-frames must be 1, 5, 9, ... (1 + a multiple of 4), got {anchor_frames}")
    if window - anchor_frames <= overlap:
        raise DVDError(
            f"window {window} leaves {window - anchor_frames} video frames after {anchor_frames} anchors, "
            f"not more than the overlap {overlap}: raise --window or lower --overlap/--anchor-frames"
        )


def anchor_indices(num_frames: int, anchor_frames: int) -> np.ndarray:
    """Indices of ``anchor_frames`` frames spread evenly over the first window's ``num_frames`` frames."""
    return np.rint(np.linspace(0, num_frames - 1, anchor_frames)).astype(np.int64)


def apply_scale_shift(pred: np.ndarray, scale: float, shift: float) -> np.ndarray:
    """``pred * scale + shift`` in float32 with negative values set to 0 (disparity is never negative)."""
    aligned = np.asarray(pred, dtype=np.float32) * np.float32(scale) + np.float32(shift)
    np.maximum(aligned, 0.0, out=aligned)
    return aligned


def cross_fade(ref: np.ndarray, new: np.ndarray) -> np.ndarray:
    """Linear cross-fade over the overlap frames: the first is pure ``ref``, the last pure ``new``."""
    alpha = np.linspace(0.0, 1.0, len(ref), dtype=np.float32).reshape((-1,) + (1,) * (ref.ndim - 1))
    return (1.0 - alpha) * ref + alpha * new


class Stitcher:
    """Joins window predictions in schedule order, keeping only frames that are not yet handed out.

    ``add`` aligns a window onto the stitched frames it overlaps; ``pop`` hands out finished frames and forgets
    them, so memory holds the not-yet-final tail (plus the anchors) however long the video is.
    """

    def __init__(
        self, preset: StitchPreset | str = "openworld", seam_judge: Callable[[float], bool] | None = None
    ) -> None:
        self.preset = get_stitch_preset(preset) if isinstance(preset, str) else preset
        # Told each seam's relative residual; True fails the seam, which is then joined as a cut (see `add`).
        self.seam_judge = seam_judge
        self._frames: list[np.ndarray] = []
        self._base = 0  # source index of self._frames[0]
        self._frame_shape: tuple[int, ...] = (0, 0)
        self._anchor_ref: np.ndarray | None = None
        self.windows_added = 0
        self.last_fit: tuple[float, float] | None = None  # (scale, shift) applied to the latest window, for diagnostics
        self.last_overlap_mae: float | None = None  # mean |aligned - stitched| over the latest overlap
        self.last_overlap_relative: float | None = None  # that, over the stitched overlap's mean absolute deviation
        self.last_seam_cut: int | None = None  # where the latest window started a new shot after a failed seam

    @property
    def end(self) -> int:
        """One past the last stitched frame."""
        return self._base + len(self._frames)

    def add(self, window: Window, pred: np.ndarray, anchors: np.ndarray | None = None) -> None:
        """Align ``pred`` ([window.length, H, W]) and merge it; ``anchors`` are its predictions of the anchor frames."""
        if len(pred) != window.length:
            raise ValueError(f"window {tuple(window)} needs {window.length} predicted frames, got {len(pred)}")
        if self.preset.anchored and anchors is None:
            raise ValueError("the anchored preset needs the window's anchor predictions")
        if self.windows_added == 0:
            if window.start != 0:
                raise ValueError(f"the first window must start at frame 0, got {tuple(window)}")
            if self.preset.anchored:
                self._anchor_ref = np.array(anchors, dtype=np.float32)
            self._frames = list(np.asarray(pred, dtype=np.float32))
            self._frame_shape = tuple(pred.shape[1:])
            self.windows_added, self.last_fit = 1, (1.0, 0.0)
            return
        overlap = self.end - window.start
        if not self._base <= window.start <= self.end < window.end:
            raise ValueError(f"window {tuple(window)} does not continue the stitched frames [{self._base}, {self.end})")
        ref = np.stack(self._frames[len(self._frames) - overlap :]) if overlap > 0 else None
        scale, shift = self._fit(pred, ref, anchors)
        aligned = apply_scale_shift(pred, scale, shift)
        self.windows_added, self.last_fit, self.last_overlap_mae = self.windows_added + 1, (scale, shift), None
        self.last_overlap_relative = self.last_seam_cut = None
        if overlap > 0:
            self.last_overlap_mae = float(np.mean(np.abs(aligned[:overlap] - ref), dtype=np.float64))
            self.last_overlap_relative = self.last_overlap_mae / _variation(ref)
            if self.seam_judge is not None and self.seam_judge(self.last_overlap_relative):
                self._join_as_cut(pred, anchors, overlap)
                return
            del self._frames[len(self._frames) - overlap :]
            self._frames.extend(cross_fade(ref, aligned[:overlap]))
        self._frames.extend(aligned[overlap:])

    def _join_as_cut(self, pred: np.ndarray, anchors: np.ndarray | None, overlap: int) -> None:
        """After a failed seam: the stitched frames stay as they are and the window's later frames start a new shot
        at its own scale, as the first window of a video does; later windows align to them (and, anchored, to this
        window's anchors)."""
        self.last_seam_cut, self.last_fit = self.end, (1.0, 0.0)
        if self.preset.anchored:
            self._anchor_ref = np.array(anchors, dtype=np.float32)
        self._frames.extend(apply_scale_shift(pred[overlap:], 1.0, 0.0))

    def pop(self, before: int) -> np.ndarray:
        """Hand out (and forget) the stitched frames with index below ``before``, as [N, H, W] float32."""
        count = min(before, self.end) - self._base
        if count <= 0:
            return np.empty((0,) + self._frame_shape, dtype=np.float32)
        done = np.stack(self._frames[:count])
        del self._frames[:count]
        self._base += count
        return done

    def state(self) -> dict:
        """Everything `restore` needs to go on as if nothing had happened (dvd predict --resume): the not yet
        handed-out tail, the anchors' reference and the counters. The arrays are the stitcher's own (never changed
        in place), so taking a state costs no copy."""
        return {
            "base": self._base,
            "tail": list(self._frames),
            "frame_shape": list(self._frame_shape),
            "anchor_ref": self._anchor_ref,
            "windows_added": self.windows_added,
            "last_fit": None if self.last_fit is None else [float(value) for value in self.last_fit],
            "last_overlap_mae": self.last_overlap_mae,
        }

    def restore(self, state: dict) -> None:
        """Continue from a `state()` of a stitcher with the same preset."""
        self._base = int(state["base"])
        self._frames = [np.asarray(frame, dtype=np.float32) for frame in state["tail"]]
        self._frame_shape = tuple(int(side) for side in state["frame_shape"])
        self._anchor_ref = None if state["anchor_ref"] is None else np.asarray(state["anchor_ref"], np.float32)
        self.windows_added = int(state["windows_added"])
        self.last_fit = (
            None if state["last_fit"] is None else (float(state["last_fit"][0]), float(state["last_fit"][1]))
        )
        self.last_overlap_mae = state["last_overlap_mae"]

    def _fit(self, pred: np.ndarray, ref: np.ndarray | None, anchors: np.ndarray | None) -> tuple[float, float]:
        blocks: list[tuple[np.ndarray, np.ndarray, float]] = []
        if ref is not None:
            blocks.append((pred[: len(ref)], ref, 1.0))
        if self.preset.anchored:
            # The overlap and the anchors get equal total weight whatever their frame counts, so the pull towards
            # the common reference does not fade when the overlap is long.
            anchor_weight = len(ref) / len(anchors) if ref is not None else 1.0
            blocks.append((anchors, self._anchor_ref, anchor_weight))
        if not blocks:
            return 1.0, 0.0  # windows that do not overlap have nothing to align to: they are joined as they are
        scale, shift = fit_blocks(blocks, symmetric=self.preset.symmetric_fit)
        if self.preset.scale_clip is not None:
            scale = float(np.clip(scale, *self.preset.scale_clip))
        return scale, shift


def _variation(ref: np.ndarray) -> float:
    """The scale a seam's residual is judged against: the mean absolute deviation of the stitched overlap, at least
    1% of its mean level (a flat overlap, e.g. a black frame, would make any residual look huge)."""
    level = float(np.mean(np.abs(ref), dtype=np.float64))
    deviation = float(np.mean(np.abs(ref - np.float32(np.mean(ref, dtype=np.float64))), dtype=np.float64))
    return max(deviation, 0.01 * level, 1e-12)


def stitch_windows(
    windows: Sequence[Window],
    predictions: Sequence[np.ndarray],
    preset: StitchPreset | str = "openworld",
    anchors: Sequence[np.ndarray] | None = None,
) -> np.ndarray:
    """Stitch all window predictions of a video at once (for evaluation and tests): [T, H, W] float32."""
    stitcher = Stitcher(preset)
    for index, (window, pred) in enumerate(zip(windows, predictions, strict=True)):
        stitcher.add(window, pred, None if anchors is None else anchors[index])
    return stitcher.pop(stitcher.end)
