"""The evaluation alignment: one scale and shift per sequence, fitted in disparity space, then back to depth.

This is the only place the protocol's alignment lives (reference-behaviour.md §6.1, field-notes.md §4.1):

1. fit ``s, b`` minimising ``sum (s * pred + b - 1 / gt)^2`` over the valid pixels of all frames at once, in float64;
2. ``disparity = max(s * pred + b, 1e-3)``;
3. ``depth = clip(1 / disparity, min_depth, max_depth)``.

Deliberate differences from the official DVD script, both documented in the README:

- the fit uses every valid pixel; the official script also drops pixels where the raw prediction is <= 0. That
  rule only removes DVD's saturated far pixels, and it would discard half of a prediction from a tool whose
  affine-invariant output is centred on 0, so a tool-agnostic benchmark cannot keep it;
- ``numpy.linalg.lstsq`` on a stacked [N, 2] float64 design matrix allocates about 32 bytes per valid pixel
  (1.1 GiB for 110 KITTI frames; ``benchmarks/eval_alignment.py``); the same least-squares solution is computed
  here from centred float64 sums accumulated frame by frame, which agrees with lstsq to rounding (5.6e-15
  relative in that benchmark) in about 10 MiB.
"""

from __future__ import annotations

import numpy as np

MIN_DISPARITY = 1e-3


def _frame_sums(pred: np.ndarray, gt_depth: np.ndarray, valid: np.ndarray, centre: tuple[float, float] | None):
    """Per-frame float64 sums of the prediction and the GT disparity; centred on ``centre`` when given."""
    for p_frame, g_frame, v_frame in zip(pred, gt_depth, valid):
        p = p_frame[v_frame].astype(np.float64)
        t = 1.0 / g_frame[v_frame].astype(np.float64)
        if centre is None:
            yield p.size, float(p.sum()), float(t.sum())
        else:
            p -= centre[0]
            t -= centre[1]
            yield float(np.dot(p, p)), float(np.dot(p, t))


def fit_scale_shift(pred: np.ndarray, gt_depth: np.ndarray, valid: np.ndarray) -> tuple[float, float]:
    """Least-squares ``(scale, shift)`` with ``scale * pred + shift ~ 1 / gt_depth`` over ``valid``, in float64.

    Arrays are [T, H, W]; ``gt_depth`` must be positive wherever ``valid``. Two passes over the frames (means,
    then centred sums) keep the solution as accurate as lstsq's. A constant prediction has no scale to fit: the
    result is ``(0, mean GT disparity)``, the best constant. Raises ValueError when ``valid`` selects no pixel.
    """
    count = sum_p = sum_t = 0.0
    for n, sp, st in _frame_sums(pred, gt_depth, valid, None):
        count += n
        sum_p += sp
        sum_t += st
    if count == 0:
        raise ValueError("no valid pixel to fit the scale and shift on")
    mean_p, mean_t = sum_p / count, sum_t / count
    var_p = cov = 0.0
    for spp, spt in _frame_sums(pred, gt_depth, valid, (mean_p, mean_t)):
        var_p += spp
        cov += spt
    if var_p <= 0.0:
        return 0.0, mean_t
    scale = cov / var_p
    return scale, mean_t - scale * mean_p


def disparity_to_depth(pred: np.ndarray, scale: float, shift: float, min_depth: float, max_depth: float) -> np.ndarray:
    """Aligned depth float32: ``clip(1 / max(scale * pred + shift, 1e-3), min_depth, max_depth)``."""
    depth = np.empty(pred.shape, dtype=np.float32)
    # Frame by frame, so the float64 intermediate is one frame, not the whole clip.
    for out, frame in zip(depth.reshape((-1,) + pred.shape[-2:]), pred.reshape((-1,) + pred.shape[-2:])):
        disparity = np.maximum(frame.astype(np.float64) * scale + shift, MIN_DISPARITY)
        out[...] = np.clip(1.0 / disparity, min_depth, max_depth)
    return depth


def align_to_depth(
    pred: np.ndarray, gt_depth: np.ndarray, valid: np.ndarray, min_depth: float, max_depth: float
) -> tuple[np.ndarray, float, float]:
    """Align affine-invariant disparity ``pred`` [T,H,W] to ``gt_depth`` over ``valid``: (depth, scale, shift)."""
    scale, shift = fit_scale_shift(pred, gt_depth, valid)
    return disparity_to_depth(pred, scale, shift, min_depth, max_depth), scale, shift
