"""Temporal-consistency metrics of aligned depth videos.

- :func:`temporal_alignment_error` — TAE as Video Depth Anything defines it (its benchmark/eval/eval_tae.py): each frame's
  aligned depth is re-projected into the next frame with the GT camera poses and intrinsics, and compared with the
  prediction there (an AbsRel against the *predicted* next frame) over the target frame's evaluation mask, forwards
  and backwards, ×100.
- :func:`relative_temporal_diff` — the official DVD evaluation's RMSE between the predicted and the GT relative
  frame-to-frame change.

Conventions: ``poses`` are camera-to-world 4x4 matrices with OpenCV axes (x right, y down, z forward); pixel
``(row i, column j)`` sits at image coordinates ``(j, i)``, the convention of ScanNet's and VDA's intrinsics.
"""

from __future__ import annotations

import numpy as np

from dvd.options import TAE_INTRINSICS

_EPS = 1e-6


def _reproject(depth: np.ndarray, source_k: np.ndarray, target_k: np.ndarray, transform: np.ndarray) -> np.ndarray:
    """Forward-splat ``depth`` (source camera) into the target camera: target z-depth [H, W], 0 where nothing lands.

    As in VDA: every pixel is moved, rounded to the nearest target pixel, and written without a z-buffer. Where
    several pixels land on one target pixel, the last in raster order wins (VDA's torch scatter leaves the winner
    undefined on CUDA and on several CPU threads). Points that land behind the target camera are dropped (VDA writes their negative depth,
    which its validity test then discards unless it overwrote a valid value).
    """
    height, width = depth.shape
    rows, cols = np.mgrid[0:height, 0:width]
    z = depth.astype(np.float64).reshape(-1)
    x = (cols.reshape(-1) - source_k[0, 2]) * z / source_k[0, 0]
    y = (rows.reshape(-1) - source_k[1, 2]) * z / source_k[1, 1]
    moved = transform[:3, :3] @ np.stack([x, y, z]) + transform[:3, 3:4]
    with np.errstate(divide="ignore", invalid="ignore"):
        u = np.rint(target_k[0, 0] * moved[0] / moved[2] + target_k[0, 2])
        v = np.rint(target_k[1, 1] * moved[1] / moved[2] + target_k[1, 2])
    keep = (moved[2] > 0) & (u >= 0) & (u < width) & (v >= 0) & (v < height)
    target = v[keep].astype(np.int64) * width + u[keep].astype(np.int64)
    values = moved[2][keep]
    # The last occurrence of each target pixel wins: take first occurrences of the reversed order.
    reversed_target = target[::-1]
    unique, first = np.unique(reversed_target, return_index=True)
    projected = np.zeros(height * width)
    projected[unique] = values[::-1][first]
    return projected.reshape(height, width)


def _pair_error(reference: np.ndarray, projected: np.ndarray, mask: np.ndarray | None) -> float:
    """Mean |reference - projected| / reference where both are positive and ``mask`` is set; 0 when no pixel
    qualifies (as VDA)."""
    both = (projected > 0) & (reference > 0)
    if mask is not None:
        both &= mask
    if not both.any():
        return 0.0
    ref = reference[both].astype(np.float64)
    return float(np.mean(np.abs(ref - projected[both]) / ref))


def temporal_alignment_error(
    depth: np.ndarray,
    intrinsics: np.ndarray,
    poses: np.ndarray,
    mask: np.ndarray | None = None,
    intrinsics_rule: str = TAE_INTRINSICS[0],
) -> float:
    """TAE of one sequence: ``100 * sum_i (e_fwd_i + e_bwd_i) / (2 (T - 1))``.

    ``depth`` [T, H, W] aligned predicted depth (metres), ``intrinsics`` [3, 3] or [T, 3, 3] (at the depth's
    resolution), ``poses`` [T, 4, 4] camera-to-world, ``mask`` [T, H, W] bool or None: each comparison counts only
    the pixels of the frame it projects *into* (VDA's rule). ``intrinsics_rule`` "source-target" back-projects with
    the source frame's K and projects with the target frame's; "vda" uses frame i's K both ways for the pair
    (i, i+1), as VDA's script (the two agree when K is constant). Raises ValueError for fewer than 2 frames.
    """
    frames = len(depth)
    if frames < 2:
        raise ValueError("TAE needs at least 2 frames")
    if intrinsics_rule not in TAE_INTRINSICS:
        raise ValueError(f"intrinsics_rule must be one of {TAE_INTRINSICS}, not {intrinsics_rule!r}")
    intrinsics = np.broadcast_to(np.asarray(intrinsics, dtype=np.float64), (frames, 3, 3))
    poses = np.asarray(poses, dtype=np.float64)
    total = 0.0
    for i in range(frames - 1):
        k_i, k_next = intrinsics[i], intrinsics[i if intrinsics_rule == "vda" else i + 1]
        mask_i, mask_next = (None, None) if mask is None else (mask[i], mask[i + 1])
        forward = np.linalg.inv(poses[i + 1]) @ poses[i]
        total += _pair_error(depth[i + 1], _reproject(depth[i], k_i, k_next, forward), mask_next)
        total += _pair_error(depth[i], _reproject(depth[i + 1], k_next, k_i, np.linalg.inv(forward)), mask_i)
    return 100.0 * total / (2 * (frames - 1))


def relative_temporal_diff(pred_depth: np.ndarray, gt_depth: np.ndarray, valid: np.ndarray) -> float | None:
    """Mean over frame pairs of the RMSE between predicted and GT relative change ``(d[t+1] - d[t]) / d[t]``,
    over pixels valid in both frames (pairs without such pixels are left out); None when no pair qualifies."""
    errors = []
    for t in range(len(gt_depth) - 1):
        both = valid[t] & valid[t + 1]
        if not both.any():
            continue
        p0, p1 = pred_depth[t][both].astype(np.float64), pred_depth[t + 1][both].astype(np.float64)
        g0, g1 = gt_depth[t][both].astype(np.float64), gt_depth[t + 1][both].astype(np.float64)
        change = (p1 - p0) / (p0 + _EPS) - (g1 - g0) / (g0 + _EPS)
        errors.append(float(np.sqrt(np.mean(change**2))))
    return float(np.mean(errors)) if errors else None
