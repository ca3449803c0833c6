"""Boundary metrics under three distinct names, so numbers from different definitions are never mixed up.

- :func:`boundary_f1` — Depth Pro's scale-invariant boundary F1 (the Depth Pro paper and its eval code). Occluding contours are read
  from depth ratios of neighbouring pixels in both the prediction and the GT depth, per orientation, with exact
  pixel correspondence; F1 is averaged over ratio thresholds ``linspace(1.05, 1.25, 10)`` weighted by the
  threshold. Needs no RGB.
- :func:`boundary_recall` — Depth Pro's scale-invariant boundary recall against a foreground mask (matting or
  segmentation), with the predicted contours thinned to one pixel per run.
- :func:`rgb_boundary_f1` — the official DVD repository's variant: "GT" edges are Sobel edges of the RGB frame,
  predicted edges are depth-ratio peaks, matched within one pixel. It measures agreement with image edges, not
  with depth discontinuities; it is reported for parity with the official numbers only.

All take [T, H, W] arrays of *depth* (aligned predictions, metres). The Depth Pro metrics are computed per frame
and averaged over frames; the RGB variant pools its counts over all frames of the sequence, as the official code.

Where the GT has invalid pixels (Depth Pro's data sets are dense), :func:`boundary_f1` only looks at neighbour
pairs whose pixels are both valid, in the prediction and the GT alike.
"""

from __future__ import annotations

import numpy as np

SI_THRESHOLDS = np.linspace(1.05, 1.25, 10)
SI_WEIGHTS = SI_THRESHOLDS / SI_THRESHOLDS.sum()
MATTE_THRESHOLD = 0.1
RGB_EDGE_THRESHOLD = 0.15
RGB_DEPTH_RATIO = 1.05
_EPS = 1e-6
_MIN_DEPTH = 1e-6


def _neighbour_ratios(inverse_depth: np.ndarray) -> list[np.ndarray]:
    """Ratios of inverse depth between neighbours for the 4 orientations (left, top, right, bottom).

    Orientation "right" is rho(x+1)/rho(x): large where the right neighbour is the nearer (occluding) side.
    Horizontal maps are [H, W-1], vertical ones [H-1, W].
    """
    rho = inverse_depth
    return [
        rho[:, :-1] / rho[:, 1:],
        rho[:-1, :] / rho[1:, :],
        rho[:, 1:] / rho[:, :-1],
        rho[1:, :] / rho[:-1, :],
    ]


def _pair_masks(valid: np.ndarray) -> list[np.ndarray]:
    """For each orientation of :func:`_neighbour_ratios`, whether both pixels of the pair are valid."""
    horizontal = valid[:, :-1] & valid[:, 1:]
    vertical = valid[:-1, :] & valid[1:, :]
    return [horizontal, vertical, horizontal, vertical]


def _inverse(depth: np.ndarray) -> np.ndarray:
    return 1.0 / np.maximum(depth.astype(np.float64), _MIN_DEPTH)


def _weighted_over_thresholds(score_at) -> float:
    return float(sum(w * score_at(t) for t, w in zip(SI_THRESHOLDS, SI_WEIGHTS)))


def _frame_boundary_f1(pred: np.ndarray, gt: np.ndarray, valid: np.ndarray) -> float:
    pred_ratios, gt_ratios = _neighbour_ratios(_inverse(pred)), _neighbour_ratios(_inverse(gt))
    pairs = _pair_masks(valid)

    def f1_at(threshold: float) -> float:
        precision = recall = 0.0
        for p_ratio, g_ratio, pair in zip(pred_ratios, gt_ratios, pairs):
            p_edge = (p_ratio > threshold) & pair
            g_edge = (g_ratio > threshold) & pair
            hits = np.count_nonzero(p_edge & g_edge)
            precision += hits / max(np.count_nonzero(p_edge), 1) / 4
            recall += hits / max(np.count_nonzero(g_edge), 1) / 4
        return 0.0 if precision + recall == 0 else 2 * precision * recall / (precision + recall)

    return _weighted_over_thresholds(f1_at)


def boundary_f1(pred_depth: np.ndarray, gt_depth: np.ndarray, valid: np.ndarray | None = None) -> float:
    """Depth Pro's scale-invariant boundary F1, mean over frames. Arrays [T, H, W] (or [H, W]) of depth.

    As in Depth Pro, an orientation without any GT edge contributes 0 to the recall and precision averages, so a
    perfect prediction of a scene whose contours all face one way scores 0.25, and a scene without any contour 0.
    """
    pred_depth, gt_depth = np.asarray(pred_depth), np.asarray(gt_depth)
    valid = np.ones(gt_depth.shape, dtype=bool) if valid is None else np.asarray(valid, dtype=bool)
    if gt_depth.ndim == 2:
        pred_depth, gt_depth, valid = pred_depth[None], gt_depth[None], valid[None]
    return float(np.mean([_frame_boundary_f1(p, g, v) for p, g, v in zip(pred_depth, gt_depth, valid)]))


def _thin_runs(edges: np.ndarray, ratio: np.ndarray) -> np.ndarray:
    """Keep, in each run of consecutive True pixels along the last axis, only the pixel of largest ratio."""
    flat_edges = edges.reshape(-1)
    # A run starts at a True pixel whose left neighbour is False or that begins a row.
    previous = np.zeros_like(edges)
    previous[:, 1:] = edges[:, :-1]
    run_id = np.cumsum((edges & ~previous).reshape(-1))
    positions = np.flatnonzero(flat_edges)
    if positions.size == 0:
        return edges.copy()
    runs = run_id[positions]
    # Stable sort by run, then by descending ratio: the first entry of each run is its (first) maximum.
    order = np.lexsort((-ratio.reshape(-1)[positions], runs))
    first = np.ones(order.size, dtype=bool)
    first[1:] = runs[order][1:] != runs[order][:-1]
    thinned = np.zeros(flat_edges.size, dtype=bool)
    thinned[positions[order][first]] = True
    return thinned.reshape(edges.shape)


def _frame_boundary_recall(pred: np.ndarray, matte: np.ndarray) -> float:
    inside = matte > MATTE_THRESHOLD
    outside = ~inside
    # Same orientations as _neighbour_ratios: "right" means the right pixel is the foreground one.
    gt_edges = [
        inside[:, :-1] & outside[:, 1:],
        inside[:-1, :] & outside[1:, :],
        inside[:, 1:] & outside[:, :-1],
        inside[1:, :] & outside[:-1, :],
    ]
    ratios = _neighbour_ratios(_inverse(pred))
    horizontal = [True, False, True, False]

    def recall_at(threshold: float) -> float:
        recall = 0.0
        for ratio, g_edge, is_horizontal in zip(ratios, gt_edges, horizontal):
            above = ratio > threshold
            if is_horizontal:
                p_edge = _thin_runs(above, ratio)
            else:
                p_edge = _thin_runs(above.T, ratio.T).T
            recall += np.count_nonzero(p_edge & g_edge) / max(np.count_nonzero(g_edge), 1) / 4
        return recall

    return _weighted_over_thresholds(recall_at)


def boundary_recall(pred_depth: np.ndarray, matte: np.ndarray) -> float:
    """Depth Pro's scale-invariant boundary recall against a foreground matte in [0, 1] (> 0.1 is foreground),
    mean over frames. Arrays [T, H, W] (or [H, W])."""
    pred_depth, matte = np.asarray(pred_depth), np.asarray(matte)
    if matte.ndim == 2:
        pred_depth, matte = pred_depth[None], matte[None]
    return float(np.mean([_frame_boundary_recall(p, m) for p, m in zip(pred_depth, matte)]))


def _shifted(image: np.ndarray, dy: int, dx: int, mode: str, fill: float = 0.0) -> np.ndarray:
    """``image[y + dy, x + dx]`` with the border padded by ``mode`` ("constant" with ``fill``, or "edge")."""
    kwargs = {"constant_values": fill} if mode == "constant" else {}
    padded = np.pad(image, 1, mode=mode, **kwargs)
    height, width = image.shape
    return padded[1 + dy : 1 + dy + height, 1 + dx : 1 + dx + width]


def _sobel_edges(rgb: np.ndarray) -> np.ndarray:
    """Official "GT" edges: Sobel magnitude of the grey image (zero-padded), min-max normalised, > 0.15."""
    rgb = rgb.astype(np.float64) / (255.0 if rgb.dtype == np.uint8 else 1.0)
    grey = 0.299 * rgb[..., 0] + 0.587 * rgb[..., 1] + 0.114 * rgb[..., 2]
    at = {(dy, dx): _shifted(grey, dy, dx, "constant") for dy in (-1, 0, 1) for dx in (-1, 0, 1)}
    gx = (at[-1, 1] + 2 * at[0, 1] + at[1, 1]) - (at[-1, -1] + 2 * at[0, -1] + at[1, -1])
    gy = (at[1, -1] + 2 * at[1, 0] + at[1, 1]) - (at[-1, -1] + 2 * at[-1, 0] + at[-1, 1])
    magnitude = np.sqrt(gx**2 + gy**2 + _EPS)
    normalised = (magnitude - magnitude.min()) / (magnitude.max() - magnitude.min() + _EPS)
    return normalised > RGB_EDGE_THRESHOLD


def _ratio_peak_edges(depth: np.ndarray) -> np.ndarray:
    """Official predicted edges: a neighbour deeper by > 5 % (replicate-padded), at a 3-tap peak of that ratio."""
    depth = np.maximum(depth.astype(np.float64), _EPS)
    edges = np.zeros(depth.shape, dtype=bool)
    for dy, dx in ((0, 1), (0, -1), (1, 0), (-1, 0)):
        ratio = _shifted(depth, dy, dx, "edge") / depth
        along = (0, 1) if dy == 0 else (1, 0)
        neighbours = [_shifted(ratio, sign * along[0], sign * along[1], "constant", -np.inf) for sign in (-1, 1)]
        peak = (ratio >= neighbours[0]) & (ratio >= neighbours[1])
        edges |= (ratio > RGB_DEPTH_RATIO) & peak
    return edges


def _dilate(mask: np.ndarray) -> np.ndarray:
    """3x3 binary dilation (one pixel of tolerance)."""
    out = np.zeros_like(mask)
    for dy in (-1, 0, 1):
        for dx in (-1, 0, 1):
            out |= _shifted(mask, dy, dx, "constant", False)
    return out


def rgb_boundary_f1(pred_depth: np.ndarray, rgb: np.ndarray, valid: np.ndarray | None = None) -> float:
    """The official DVD repository's RGB-edge boundary F1, counts pooled over all frames.

    ``pred_depth`` [T, H, W] aligned depth, ``rgb`` [T, H, W, 3] (uint8, or float in [0, 1]), ``valid`` [T, H, W].
    """
    pred_depth, rgb = np.asarray(pred_depth), np.asarray(rgb)
    if pred_depth.ndim == 2:
        pred_depth, rgb = pred_depth[None], rgb[None]
    valid = (
        np.ones(pred_depth.shape, dtype=bool)
        if valid is None
        else np.asarray(valid, dtype=bool).reshape(pred_depth.shape)
    )
    hits_p = hits_r = n_pred = n_gt = 0
    for depth, image, mask in zip(pred_depth, rgb, valid):
        gt_edges = _sobel_edges(image) & mask
        pred_edges = _ratio_peak_edges(depth) & mask
        hits_p += np.count_nonzero(pred_edges & _dilate(gt_edges))
        hits_r += np.count_nonzero(gt_edges & _dilate(pred_edges))
        n_pred += np.count_nonzero(pred_edges)
        n_gt += np.count_nonzero(gt_edges)
    precision = hits_p / (n_pred + _EPS)
    recall = hits_r / (n_gt + _EPS)
    return float(2 * precision * recall / (precision + recall + _EPS))
