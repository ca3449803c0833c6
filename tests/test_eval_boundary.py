"""Known answers for the three boundary metrics on synthetic step edges."""

from __future__ import annotations

import numpy as np
import pytest

from dvd.evaluation.boundary import boundary_f1, boundary_recall, rgb_boundary_f1

BACKGROUND, NEAR = 10.0, 5.0


def square(rows: slice, cols: slice, size: tuple[int, int] = (12, 12), near: float = NEAR) -> np.ndarray:
    depth = np.full(size, BACKGROUND)
    depth[rows, cols] = near
    return depth


GT = square(slice(4, 8), slice(4, 8))


def test_boundary_f1_perfect_shifted_missing() -> None:
    assert boundary_f1(GT, GT) == pytest.approx(1.0)
    # Shifted one pixel right: the left/right-facing contours miss entirely; the top/bottom ones overlap on 3 of
    # 4 pairs. P = R = (0 + 0 + 3/4 + 3/4) / 4 at every threshold.
    shifted = square(slice(4, 8), slice(5, 9))
    assert boundary_f1(shifted, GT) == pytest.approx(0.375)
    assert boundary_f1(np.full(GT.shape, BACKGROUND), GT) == 0.0


def test_boundary_f1_is_scale_invariant_and_averages_frames() -> None:
    shifted = square(slice(4, 8), slice(5, 9))
    video_pred = np.stack([GT * 3.0, shifted])
    assert boundary_f1(video_pred, np.stack([GT, GT])) == pytest.approx((1.0 + 0.375) / 2)


def test_boundary_f1_weights_thresholds_by_their_value() -> None:
    # Depth ratio 1.15: contours exist for thresholds below 1.15 only (the first 5 of linspace(1.05, 1.25, 10)).
    gt = square(slice(4, 8), slice(4, 8), near=BACKGROUND / 1.15)
    thresholds = np.linspace(1.05, 1.25, 10)
    expected = thresholds[thresholds < 1.15].sum() / thresholds.sum()
    assert boundary_f1(gt, gt) == pytest.approx(expected)


def test_boundary_f1_single_orientation_scores_a_quarter_as_depth_pro() -> None:
    step = np.full((8, 8), BACKGROUND)
    step[:, :4] = NEAR  # one contour, facing one way
    assert boundary_f1(step, step) == pytest.approx(0.25)


def test_boundary_f1_ignores_pairs_with_invalid_gt() -> None:
    gt = GT.copy()
    gt[:, 10:] = 0.0  # no GT there; a prediction with a spurious contour in that region is not penalised
    valid = gt > 0
    pred = GT.copy()
    pred[2:4, 10:] = 1.0
    assert boundary_f1(pred, gt, valid) == pytest.approx(1.0)
    assert boundary_f1(pred, GT) < 1.0


def test_boundary_recall_against_a_mask() -> None:
    matte = np.zeros(GT.shape)
    matte[4:8, 4:8] = 1.0
    assert boundary_recall(GT, matte) == pytest.approx(1.0)
    assert boundary_recall(np.full(GT.shape, BACKGROUND), matte) == 0.0
    assert boundary_recall(np.stack([GT, GT]), np.stack([matte, matte])) == pytest.approx(1.0)


def test_boundary_recall_thins_runs_to_their_strongest_ratio() -> None:
    # Depth 10 | 7 | 5 across columns 2-4: two consecutive right-facing contours (inverse-depth ratios 1.43 and
    # 1.4); thinning keeps only the first. A mask edge there is found, one at the weaker pair is not.
    depth = np.tile(np.array([10, 10, 10, 7, 5, 5, 5, 5], float), (6, 1))
    at_strong, at_weak = np.zeros(depth.shape), np.zeros(depth.shape)
    at_strong[:, 3:] = 1.0
    at_weak[:, 4:] = 1.0
    # Only one of the four orientations has mask edges, so a full hit scores 1/4.
    assert boundary_recall(depth, at_strong) == pytest.approx(0.25)
    assert boundary_recall(depth, at_weak) == 0.0


def _white_square(rows: slice, cols: slice) -> np.ndarray:
    rgb = np.zeros((12, 12, 3), np.uint8)
    rgb[rows, cols] = 255
    return rgb


def test_rgb_boundary_f1_matches_depth_edges_to_image_edges() -> None:
    rgb = _white_square(slice(4, 8), slice(4, 8))
    assert rgb_boundary_f1(GT, rgb) == pytest.approx(1.0, abs=1e-5)
    assert rgb_boundary_f1(np.full(GT.shape, BACKGROUND), rgb) == 0.0
    # A perfect depth contour scores 0 where the image has no edge: this metric measures image-edge agreement.
    assert rgb_boundary_f1(GT, np.full((12, 12, 3), 128, np.uint8)) == 0.0
    far = square(slice(4, 8), slice(4, 8))
    far[:, :] = BACKGROUND
    far[0:2, 0:2] = NEAR  # a contour far from the image edge: no match either way
    assert rgb_boundary_f1(far, rgb) == pytest.approx(0.0, abs=1e-6)


def test_rgb_boundary_f1_pools_counts_over_frames_and_masks() -> None:
    rgb = np.stack([_white_square(slice(4, 8), slice(4, 8))] * 2)
    depth = np.stack([GT, np.full(GT.shape, BACKGROUND)])
    # Frame 1 has image edges but no depth edge: precision stays 1, recall halves: F1 = 2 * 0.5 / 1.5.
    assert rgb_boundary_f1(depth, rgb) == pytest.approx(2 * 0.5 / 1.5, abs=1e-5)
    valid = np.ones(depth.shape, bool)
    valid[1] = False  # masking frame 1 removes its unmatched image edges
    assert rgb_boundary_f1(depth, rgb, valid) == pytest.approx(1.0, abs=1e-5)
