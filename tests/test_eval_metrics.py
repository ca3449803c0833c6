"""Known answers for the evaluation alignment, the depth metrics and the temporal metrics."""

from __future__ import annotations

import math

import numpy as np
import pytest

from dvd.evaluation.alignment import align_to_depth, disparity_to_depth, fit_disparity
from dvd.evaluation.metrics import DEPTH_METRICS, depth_metrics
from dvd.evaluation.temporal import relative_temporal_diff, temporal_alignment_error


def test_affine_transform_of_gt_disparity_scores_perfectly() -> None:
    rng = np.random.default_rng(0)
    gt = rng.uniform(1.0, 50.0, size=(4, 12, 16)).astype(np.float32)
    valid = rng.uniform(size=gt.shape) > 0.2
    pred = (3.0 / gt.astype(np.float64) + 0.25).astype(np.float32)  # disparity up to scale and shift
    depth, scale, shift = align_to_depth(pred, gt, valid, 0.5, 80.0)
    metrics = depth_metrics(depth, gt, valid)
    assert scale == pytest.approx(1 / 3, rel=1e-6)
    assert shift == pytest.approx(-0.25 / 3, rel=1e-5)
    assert metrics["abs_rel"] == pytest.approx(0.0, abs=1e-6)
    assert metrics["delta1"] == 1.0
    assert metrics["rmse"] == pytest.approx(0.0, abs=1e-4)
    assert metrics["silog"] == pytest.approx(0.0, abs=1e-3)


def test_fit_matches_numpy_lstsq() -> None:
    rng = np.random.default_rng(1)
    gt = rng.uniform(0.5, 20.0, size=(3, 10, 11))
    valid = rng.uniform(size=gt.shape) > 0.3
    pred = 1 / gt * 2.0 - 0.1 + rng.normal(scale=0.05, size=gt.shape)
    design = np.stack([pred[valid], np.ones(valid.sum())], axis=1)
    expected, *_ = np.linalg.lstsq(design, 1 / gt[valid], rcond=None)
    scale, shift = fit_disparity(pred.astype(np.float32), gt.astype(np.float32), valid)
    design32 = np.stack([pred.astype(np.float32)[valid].astype(np.float64), np.ones(valid.sum())], axis=1)
    expected32, *_ = np.linalg.lstsq(design32, 1 / gt.astype(np.float32)[valid].astype(np.float64), rcond=None)
    assert (scale, shift) == pytest.approx(tuple(expected32), rel=1e-9)
    assert scale == pytest.approx(expected[0], rel=1e-3)


def test_constant_prediction_fits_the_mean_disparity() -> None:
    gt = np.array([[[1.0, 2.0], [4.0, 4.0]]], dtype=np.float32)
    scale, shift = fit_disparity(np.full(gt.shape, 0.7, np.float32), gt, np.ones(gt.shape, bool))
    assert scale == 0.0
    assert shift == pytest.approx((1 + 0.5 + 0.25 + 0.25) / 4)


def test_fit_without_valid_pixels_raises() -> None:
    with pytest.raises(ValueError):
        fit_disparity(np.ones((1, 2, 2)), np.ones((1, 2, 2)), np.zeros((1, 2, 2), bool))


def test_disparity_clip_then_invert_then_depth_clip() -> None:
    # -1 -> disparity floor 1e-3 -> 1000 m -> max 80; 0.5 -> 2 m; 100 -> 0.01 m -> min 0.1.
    depth = disparity_to_depth(np.array([[[-1.0, 0.5, 100.0]]]), 1.0, 0.0, 0.1, 80.0)
    np.testing.assert_allclose(depth, [[[80.0, 2.0, 0.1]]], rtol=1e-6)
    shifted = disparity_to_depth(np.array([[[1.0]]]), 2.0, 0.5, 0.1, 80.0)
    assert shifted[0, 0, 0] == pytest.approx(0.4)


def test_each_metric_by_hand_on_one_frame() -> None:
    pred = np.array([[[2.0, 1.0], [3.0, 4.0]]], dtype=np.float32)
    gt = np.array([[[1.0, 1.0], [2.0, 4.0]]], dtype=np.float32)
    metrics = depth_metrics(pred, gt, np.ones(gt.shape, bool))
    log_diff = [math.log(2), 0.0, math.log(1.5), 0.0]
    expected = {
        "abs_rel": (1 / 1 + 0 + 1 / 2 + 0) / 4,
        "sq_rel": (1 / 1 + 0 + 1 / 2 + 0) / 4,
        "rmse": math.sqrt((1 + 0 + 1 + 0) / 4),
        "rmse_log": math.sqrt((math.log(2) ** 2 + math.log(1.5) ** 2) / 4),
        "log10": (math.log10(2) + math.log10(1.5)) / 4,
        "delta1": 2 / 4,  # ratios 2, 1, 1.5, 1
        "delta2": 3 / 4,  # 1.5 < 1.5625
        "delta3": 3 / 4,  # 2 > 1.953125
        "i_rmse": math.sqrt((0.5**2 + (1 / 2 - 1 / 3) ** 2) / 4),
        "silog": 100 * math.sqrt(sum(d * d for d in log_diff) / 4 - (sum(log_diff) / 4) ** 2),
    }
    assert set(metrics) == set(DEPTH_METRICS)
    for name, value in expected.items():
        assert metrics[name] == pytest.approx(value, rel=1e-6), name


def test_frames_are_averaged_then_log10_is_pooled_and_empty_frames_ignored() -> None:
    # Frame 0: one valid pixel, 2 m for 1 m (AbsRel 1). Frame 1: three exact pixels. Frame 2: no valid pixel.
    pred = np.array([[[2.0, 9.0], [9.0, 9.0]], [[3.0, 3.0], [3.0, 9.0]], [[5.0, 5.0], [5.0, 5.0]]], np.float32)
    gt = np.array([[[1.0, 1.0], [1.0, 1.0]], [[3.0, 3.0], [3.0, 1.0]], [[1.0, 1.0], [1.0, 1.0]]], np.float32)
    valid = np.array([[[1, 0], [0, 0]], [[1, 1], [1, 0]], [[0, 0], [0, 0]]], bool)
    metrics = depth_metrics(pred, gt, valid)
    assert metrics["abs_rel"] == pytest.approx(0.5)  # (1 + 0) / 2 frames, not 1/4 pooled
    assert metrics["delta1"] == pytest.approx(0.5)
    assert metrics["rmse"] == pytest.approx(0.5)
    assert metrics["log10"] == pytest.approx(math.log10(2) / 4)  # pooled over the 4 valid pixels


def test_silog_averages_frame_variances_before_the_root() -> None:
    pred = np.array([[[2.0, 1.0]], [[1.0, 1.0]]], np.float32)
    gt = np.ones((2, 1, 2), np.float32)
    metrics = depth_metrics(pred, gt, np.ones(gt.shape, bool))
    # Frame 0: d = [ln 2, 0], variance ln2^2/4; frame 1: variance 0.
    assert metrics["silog"] == pytest.approx(100 * math.sqrt(math.log(2) ** 2 / 8), rel=1e-6)


def test_depth_metrics_need_a_valid_pixel() -> None:
    with pytest.raises(ValueError):
        depth_metrics(np.ones((2, 2, 2)), np.ones((2, 2, 2)), np.zeros((2, 2, 2), bool))


K = np.array([[50.0, 0.0, 16.0], [0.0, 50.0, 12.0], [0.0, 0.0, 1.0]])


def _translation(x: float, z: float) -> np.ndarray:
    pose = np.eye(4)
    pose[0, 3], pose[2, 3] = x, z
    return pose


def test_tae_is_zero_for_a_plane_under_pure_translation() -> None:
    # A fronto-parallel wall at world z = 5; the camera (identity rotation) slides sideways and forwards, so the
    # exact depth of frame t is 5 - z_t at every pixel.
    xs, zs = [0.0, 0.1, 0.25, 0.3], [0.0, 0.0, 0.5, 1.0]
    poses = np.stack([_translation(x, z) for x, z in zip(xs, zs)])
    depth = np.stack([np.full((24, 32), 5.0 - z) for z in zs])
    assert temporal_alignment_error(depth, K, poses) == pytest.approx(0.0, abs=1e-9)


def test_tae_by_hand_for_a_static_camera_and_a_scaled_frame() -> None:
    poses = np.stack([np.eye(4), np.eye(4)])
    depth = np.stack([np.full((24, 32), 5.0), np.full((24, 32), 5.5)])
    # Forward: |5.5 - 5| / 5.5; backward: |5 - 5.5| / 5; TAE = 100 * mean of the two.
    expected = 100 * (0.5 / 5.5 + 0.5 / 5) / 2
    assert temporal_alignment_error(depth, np.stack([K, K]), poses) == pytest.approx(expected)


def test_tae_uses_camera_to_world_poses() -> None:
    # Camera moves 1 m forwards towards a wall at z = 5: depths 5 then 4. Inverting the pose convention would
    # predict 6 for the second frame instead.
    poses = np.stack([_translation(0, 0), _translation(0, 1.0)])
    depth = np.stack([np.full((24, 32), 5.0), np.full((24, 32), 4.0)])
    assert temporal_alignment_error(depth, K, poses) == pytest.approx(0.0, abs=1e-9)
    swapped = temporal_alignment_error(depth, K, poses[::-1].copy())
    assert swapped == pytest.approx(100 * (2 / 4 + 2 / 5) / 2)


def test_tae_needs_two_frames() -> None:
    with pytest.raises(ValueError):
        temporal_alignment_error(np.ones((1, 4, 4)), K, np.eye(4)[None])


def test_relative_temporal_diff_by_hand() -> None:
    pred = np.stack([np.ones((2, 2)), np.full((2, 2), 2.0)])
    gt = np.ones((2, 2, 2))
    valid = np.ones(gt.shape, bool)
    # Predicted relative change 1 (2 vs 1), GT change 0: RMSE 1 / (1 + 1e-6).
    assert relative_temporal_diff(pred, gt, valid) == pytest.approx(1 / (1 + 1e-6))
    assert relative_temporal_diff(pred, gt, np.zeros(gt.shape, bool)) is None
