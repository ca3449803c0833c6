"""Independent reference fits computed by numpy, to check `dvd.engine.scale_shift` against."""

from __future__ import annotations

import numpy as np


def lstsq_fit(rows: list[tuple[np.ndarray, np.ndarray, float]]) -> np.ndarray:
    """Weighted least squares solved by numpy on sqrt(weight)-scaled rows."""
    design = np.concatenate([np.sqrt(w) * np.stack([p.ravel(), np.ones(p.size)], 1) for p, _, w in rows])
    target = np.concatenate([np.sqrt(w) * r.ravel() for _, r, w in rows])
    return np.linalg.lstsq(design.astype(np.float64), target.astype(np.float64), rcond=None)[0]


def joint_stitch_fits(
    windows: list[tuple[int, int]], preds: list[np.ndarray], spread: float, lag: int
) -> list[tuple[float, float]]:
    """`--stitch global`'s (scale, shift) per window, by dense least squares over pixel rows (numpy's lstsq).

    Each time a window arrives, the whole problem over the windows so far is solved, the windows already written
    held at their values; while more than `lag` windows wait, the oldest is written at the solution. Seam rows
    ``a_j y + b_j - a_i x - b_i`` carry the weight 1 / (residual variance of x after its least-squares fit on y) per
    overlap pixel count; prior rows ``a_i p_i + b_i - p_i`` carry 1 / (spread^2 var(p_i)) per window pixel count.
    """
    preds = [np.asarray(p, np.float64) for p in preds]
    written: dict[int, tuple[float, float]] = {0: (1.0, 0.0)}

    def solve(last: int) -> dict[int, tuple[float, float]]:
        unknown = [i for i in range(last + 1) if i not in written]
        column = {i: 2 * k for k, i in enumerate(unknown)}
        rows, targets = [], []

        def add_rows(weight: float, parts: list[tuple[int, np.ndarray, float]], target: np.ndarray) -> None:
            # sum over parts of (scale_i * values + shift_i * sign) = target, per pixel, rows scaled by sqrt(weight)
            design = np.zeros((target.size, 2 * len(unknown)))
            rhs = target.astype(np.float64).copy()
            for i, values, sign in parts:
                if i in written:
                    rhs -= written[i][0] * values + written[i][1] * sign
                else:
                    design[:, column[i]] += values
                    design[:, column[i] + 1] += sign
            rows.append(np.sqrt(weight) * design)
            targets.append(np.sqrt(weight) * rhs)

        for j in range(1, last + 1):
            overlap = windows[j - 1][1] - windows[j][0]
            x, y = preds[j - 1][-overlap:].ravel(), preds[j][:overlap].ravel()
            design = np.stack([y, np.ones_like(y)], 1)
            residual = x - design @ np.linalg.lstsq(design, x, rcond=None)[0]
            variance = max(float(np.mean(residual**2)), 1e-12 * float(np.mean(x**2)))
            add_rows(1.0 / (variance * x.size), [(j, y, 1.0), (j - 1, -x, -1.0)], np.zeros_like(x))
        for i in range(1, last + 1):
            p = preds[i].ravel()
            add_rows(1.0 / (spread**2 * float(np.var(p)) * p.size), [(i, p, 1.0)], p)
        solution = np.linalg.lstsq(np.concatenate(rows), np.concatenate(targets), rcond=None)[0]
        return {i: (float(solution[column[i]]), float(solution[column[i] + 1])) for i in unknown}

    waiting: list[int] = []
    for j in range(1, len(windows)):
        waiting.append(j)
        while len(waiting) > lag:
            oldest = waiting.pop(0)
            written[oldest] = solve(j)[oldest]
    while waiting:
        oldest = waiting.pop(0)
        written[oldest] = solve(len(windows) - 1)[oldest]
    return [written[i] for i in range(len(windows))]
