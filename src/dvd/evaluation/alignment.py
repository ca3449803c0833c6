"""The evaluation alignment: one scale and shift per sequence, fitted in disparity space, then back to depth.

The protocol of the DVD paper's evaluation (and of Depth Anything / DepthCrafter before it):

1. fit ``s, b`` minimising ``sum (s * pred + b - 1 / gt)^2`` over the valid pixels of all frames at once, in float64;
2. ``disparity = max(s * pred + b, 1e-3)``;
3. ``depth = clip(1 / disparity, min_depth, max_depth)``.

Deliberate differences from the official DVD script, both documented in docs/evaluation.md:

- the fit uses every valid pixel; the official script also drops pixels where the raw prediction is <= 0. That
  rule only removes DVD's saturated far pixels, and it would discard half of a prediction from a tool whose
  affine-invariant output is centred on 0, so a tool-agnostic benchmark cannot keep it;
- ``numpy.linalg.lstsq`` on a stacked [N, 2] float64 design matrix allocates about 32 bytes per valid pixel
  (1.1 GiB for 110 KITTI frames; ``benchmarks/eval_alignment.py``); the same least-squares solution is computed
  here by `dvd.engine.scale_shift` from centred float64 sums accumulated frame by frame, which agrees with lstsq to rounding (5.6e-15
  relative in that benchmark) in about 10 MiB.
"""

from __future__ import annotations

import numpy as np

from dvd.engine.scale_shift import ScaleShiftFit

MIN_DISPARITY = 1e-3


def fit_disparity(pred: np.ndarray, gt_depth: np.ndarray, valid: np.ndarray) -> tuple[float, float]:
    """Least-squares ``(scale, shift)`` with ``scale * pred + shift ~ 1 / gt_depth`` over ``valid``, in float64.

    Arrays are [T, H, W]; ``gt_depth`` must be positive wherever ``valid``. Raises ValueError when ``valid`` selects
    no pixel; a constant prediction gets the best constant, ``(0, mean GT disparity)``.
    """
    fit = ScaleShiftFit()
    for p_frame, g_frame, v_frame in zip(pred, gt_depth, valid, strict=True):
        fit.add(p_frame[v_frame], 1.0 / g_frame[v_frame].astype(np.float64))
    return fit.least_squares()


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
    scale, shift = fit_disparity(pred, gt_depth, valid)
    return disparity_to_depth(pred, scale, shift, min_depth, max_depth), scale, shift


def align_for_tae(
    pred: np.ndarray, gt_depth: np.ndarray, in_range: np.ndarray, min_depth: float, max_depth: float
) -> tuple[np.ndarray, float, float]:
    """The alignment of Video Depth Anything's TAE script: the raw prediction clipped to >= 1e-3 first, the fit over
    every GT pixel in the depth range (``in_range``: no evaluation mask; VDA applies the mask in the TAE
    comparison instead), then as :func:`align_to_depth`. Returns (depth, scale, shift)."""
    return align_to_depth(np.maximum(pred, MIN_DISPARITY), gt_depth, in_range, min_depth, max_depth)
