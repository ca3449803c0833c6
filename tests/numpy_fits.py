"""Independent reference fits computed by numpy, to check `dvd.inference.scale_shift` against."""

from __future__ import annotations

import numpy as np


def lstsq_fit(rows: list[tuple[np.ndarray, np.ndarray, float]]) -> np.ndarray:
    """Weighted least squares solved by numpy on sqrt(weight)-scaled rows."""
    design = np.concatenate([np.sqrt(w) * np.stack([p.ravel(), np.ones(p.size)], 1) for p, _, w in rows])
    target = np.concatenate([np.sqrt(w) * r.ravel() for _, r, w in rows])
    return np.linalg.lstsq(design.astype(np.float64), target.astype(np.float64), rcond=None)[0]


def symmetric_fit(rows: list[tuple[np.ndarray, np.ndarray, float]]) -> tuple[float, float]:
    """sign(cov) * std(ref) / std(pred) and the matching shift, from numpy's weighted averages."""
    pred = np.concatenate([p.ravel() for p, _, _ in rows]).astype(np.float64)
    ref = np.concatenate([r.ravel() for _, r, _ in rows]).astype(np.float64)
    weights = np.concatenate([np.full(p.size, w) for p, _, w in rows])
    mean_p, mean_r = np.average(pred, weights=weights), np.average(ref, weights=weights)
    var_p = np.average((pred - mean_p) ** 2, weights=weights)
    var_r = np.average((ref - mean_r) ** 2, weights=weights)
    assert np.average((pred - mean_p) * (ref - mean_r), weights=weights) > 0
    scale = np.sqrt(var_r / var_p)
    return float(scale), float(mean_r - scale * mean_p)
