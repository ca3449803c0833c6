"""Depth-accuracy metrics of one sequence, averaged as the official DVD evaluation does (per frame, then over frames).

With ``p`` the aligned predicted depth and ``g`` the GT depth (metres) over the ``n`` valid pixels of a frame:

- ``abs_rel``  = mean |p - g| / g             - ``sq_rel``  = mean (p - g)^2 / g
- ``rmse``     = sqrt(mean (p - g)^2)         - ``rmse_log`` = sqrt(mean (ln p - ln g)^2)
- ``i_rmse``   = sqrt(mean (1/p - 1/g)^2)     (1/m, not 1/km)
- ``delta_k``  = fraction with max(p/g, g/p) < 1.25^k, k = 1, 2, 3
- ``silog``    = 100 * sqrt(mean over frames of (mean d^2 - (mean d)^2)), d = ln p - ln g
- ``log10``    = mean |log10 p - log10 g| pooled over the valid pixels of all frames (as the reference does)

All but ``log10`` and ``silog`` are computed per frame and then averaged over frames; a sequence's value is that
average, and a data set's is the plain mean over sequences. Frames without any valid pixel are left out of the
averages (the caller counts and reports them); the official script drops the whole sequence instead. Sums are
taken in float64 (the official code uses float32 torch tensors; the difference is below 1e-6 relative).
"""

from __future__ import annotations

import numpy as np

DEPTH_METRICS: tuple[str, ...] = (
    "abs_rel",
    "sq_rel",
    "rmse",
    "rmse_log",
    "log10",
    "delta1",
    "delta2",
    "delta3",
    "i_rmse",
    "silog",
)
HIGHER_IS_BETTER: frozenset[str] = frozenset({"delta1", "delta2", "delta3"})
_PER_FRAME = ("abs_rel", "sq_rel", "rmse", "rmse_log", "delta1", "delta2", "delta3", "i_rmse")


def _frame_values(p: np.ndarray, g: np.ndarray) -> dict[str, float]:
    """Per-frame metrics on the valid pixels (1-D float64 arrays, both positive)."""
    diff = p - g
    log_diff = np.log(p) - np.log(g)
    ratio = np.maximum(p / g, g / p)
    return {
        "abs_rel": float(np.mean(np.abs(diff) / g)),
        "sq_rel": float(np.mean(diff**2 / g)),
        "rmse": float(np.sqrt(np.mean(diff**2))),
        "rmse_log": float(np.sqrt(np.mean(log_diff**2))),
        "delta1": float(np.mean(ratio < 1.25)),
        "delta2": float(np.mean(ratio < 1.25**2)),
        "delta3": float(np.mean(ratio < 1.25**3)),
        "i_rmse": float(np.sqrt(np.mean((1.0 / p - 1.0 / g) ** 2))),
        "silog_var": float(np.mean(log_diff**2) - np.mean(log_diff) ** 2),
    }


def depth_metrics(pred_depth: np.ndarray, gt_depth: np.ndarray, valid: np.ndarray) -> dict[str, float]:
    """All :data:`DEPTH_METRICS` of one sequence. Arrays are [T, H, W]; ``pred_depth`` and ``gt_depth`` must be
    positive wherever ``valid``. Raises ValueError when no frame has a valid pixel."""
    frames: list[dict[str, float]] = []
    log10_sum = 0.0
    log10_count = 0
    for p_frame, g_frame, v_frame in zip(pred_depth, gt_depth, valid):
        if not v_frame.any():
            continue
        p = p_frame[v_frame].astype(np.float64)
        g = g_frame[v_frame].astype(np.float64)
        frames.append(_frame_values(p, g))
        log10_sum += float(np.sum(np.abs(np.log10(p) - np.log10(g))))
        log10_count += p.size
    if not frames:
        raise ValueError("no frame has a valid pixel")
    result = {name: float(np.mean([f[name] for f in frames])) for name in _PER_FRAME}
    result["log10"] = log10_sum / log10_count
    # Rounding can leave a variance of a perfect prediction at -1e-17; sqrt needs it clamped.
    result["silog"] = 100.0 * float(np.sqrt(max(np.mean([f["silog_var"] for f in frames]), 0.0)))
    return {name: result[name] for name in DEPTH_METRICS}
