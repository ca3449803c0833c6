"""The one scale-and-shift fit: ``scale * pred + shift ~ ref``, used by stitching, evaluation, validation and the
benchmarks; its moments feed `--stitch global`'s joint problem (dvd.engine.joint_fit).

Sums are weighted, centred and float64, and they stream: each `add` folds in one more block of pixels (a frame, a
masked frame, an overlap) with the pairwise update of Chan, Golub and LeVeque, so a fit over a 100-frame sequence
holds one frame's float64 copy at a time and is as accurate as a two-pass solve. The plain normal equations in
float32 (what the official scripts use) lose several digits over millions of pixels.

One rule for the degenerate case: when the prediction carries no usable signal (it is constant) the fit is the best
constant, ``(0, mean(ref))``.
A fit with no pixels at all raises ValueError: callers decide what "nothing to align to" means for them.
"""

from __future__ import annotations

import numpy as np

# A constant prediction has zero variance in exact arithmetic; float64 rounding of its mean leaves a residue of
# about 1e-16 of its square, which would yield an arbitrary scale. Below this relative size the variance is 0.
_RELATIVE_VARIANCE_EPS = 1e-12


class ScaleShiftFit:
    """Weighted moments of (pred, ref) pairs, accumulated block by block; `least_squares` solves."""

    def __init__(self) -> None:
        self.weight = 0.0  # total weight: the sum over blocks of weight * pixel count
        self.mean_pred = self.mean_ref = 0.0
        self._var_pred = self._var_ref = self._cov = 0.0  # weighted centred sums (not yet divided by the weight)
        self._square_pred = 0.0  # weighted sum of pred**2, only to judge when the variance is rounding noise

    def add(self, pred: np.ndarray, ref: np.ndarray, weight: float = 1.0) -> ScaleShiftFit:
        """Fold in one block of pixels (any equal shapes; pass masked pixels as 1-D arrays)."""
        if np.shape(pred) != np.shape(ref):
            raise ValueError(f"prediction {np.shape(pred)} and reference {np.shape(ref)} differ in shape")
        if np.size(pred) == 0 or weight == 0:
            return self
        # float64 copies, centred in place: one allocation per side (a frame is ~0.4 M pixels, fitted per window).
        x = np.array(pred, dtype=np.float64).ravel()
        mean_x = float(x.mean())
        x -= mean_x
        var_x = float(x @ x)
        if ref is pred:  # the moments of one array (dvd.engine.joint_fit's prior): half the work
            mean_y, var_y, cov = mean_x, var_x, var_x
        else:
            y = np.array(ref, dtype=np.float64).ravel()
            mean_y = float(y.mean())
            y -= mean_y
            var_y, cov = float(y @ y), float(x @ y)
        block = weight * x.size
        total = self.weight + block
        delta_x, delta_y = mean_x - self.mean_pred, mean_y - self.mean_ref
        between = self.weight * block / total
        self._var_pred += weight * var_x + delta_x * delta_x * between
        self._var_ref += weight * var_y + delta_y * delta_y * between
        self._cov += weight * cov + delta_x * delta_y * between
        self._square_pred += weight * (var_x + x.size * mean_x * mean_x)
        self.mean_pred += delta_x * block / total
        self.mean_ref += delta_y * block / total
        self.weight = total
        return self

    def add_frames(self, pred: np.ndarray, ref: np.ndarray, weight: float = 1.0) -> ScaleShiftFit:
        """Fold in [T, ...] arrays (or sequences of frames) one frame at a time, so the float64 copies stay one frame
        large."""
        if len(pred) != len(ref):  # (each frame's shape is checked by `add`)
            raise ValueError(f"prediction ({len(pred)} frames) and reference ({len(ref)} frames) differ in shape")
        for pred_frame, ref_frame in zip(pred, ref):
            self.add(pred_frame, pred_frame if ref is pred else ref_frame, weight)
        return self

    def moments(self) -> tuple[float, float, float, float, float]:
        """``(mean pred, mean ref, var pred, var ref, cov)`` per unit of weight (dvd.engine.joint_fit)."""
        if self.weight == 0:
            raise ValueError("no pixels to take moments of")
        total = self.weight
        return self.mean_pred, self.mean_ref, self._var_pred / total, self._var_ref / total, self._cov / total

    def least_squares(self) -> tuple[float, float]:
        """``(scale, shift)`` minimising the weighted sum of ``(scale * pred + shift - ref)^2``."""
        if self._no_signal():
            return 0.0, self.mean_ref
        scale = self._cov / self._var_pred
        return scale, self.mean_ref - scale * self.mean_pred

    def _no_signal(self) -> bool:
        if self.weight == 0:
            raise ValueError("no pixels to fit a scale and shift on")
        return self._var_pred <= _RELATIVE_VARIANCE_EPS * self._square_pred


def fit_scale_shift(pred: np.ndarray, ref: np.ndarray, valid: np.ndarray | None = None) -> tuple[float, float]:
    """Least-squares ``(scale, shift)`` of ``pred`` onto ``ref`` ([T, ...] arrays) over the ``valid`` pixels."""
    fit = ScaleShiftFit()
    if valid is None:
        return fit.add_frames(pred, ref).least_squares()
    for pred_frame, ref_frame, valid_frame in zip(pred, ref, valid, strict=True):
        fit.add(pred_frame[valid_frame], ref_frame[valid_frame])
    return fit.least_squares()
