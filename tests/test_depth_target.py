import numpy as np
import pytest

from dvd.data.train.target import truncated_disparity


def _direct(depth, valid):
    """The reference formula written out with np.quantile over the given valid pixels."""
    disp = 1.0 / depth[valid]
    lo, hi = np.quantile(disp, 0.02), np.quantile(disp, 0.98)
    out = np.zeros(depth.shape)
    out[valid] = np.clip((disp - lo) / (hi - lo + 1e-5), 0, 1)
    return out


def test_hand_computed_four_pixels():
    depth = np.array([[1.0, 2.0], [4.0, 5.0]])
    # disp sorted = 0.2, 0.25, 0.5, 1; linear quantiles at positions 0.06 and 2.94 of 3.
    lo, hi = 0.2 + 0.06 * 0.05, 0.5 + 0.94 * 0.5
    expected = np.clip((np.array([[1.0, 0.5], [0.25, 0.2]]) - lo) / (hi - lo + 1e-5), 0, 1)
    np.testing.assert_allclose(truncated_disparity(depth), expected, atol=1e-6)
    assert truncated_disparity(depth)[0, 0] == 1.0 and truncated_disparity(depth)[1, 1] == 0.0


def test_per_image_scope_matches_numpy_per_frame():
    rng = np.random.default_rng(0)
    depth = rng.uniform(0.5, 30.0, (3, 9, 11)).astype(np.float32)
    valid = rng.uniform(size=depth.shape) > 0.2
    out = truncated_disparity(depth, valid, "image")
    assert out.dtype == np.float32 and out.shape == depth.shape
    for k in range(3):
        np.testing.assert_allclose(out[k], _direct(depth[k].astype(np.float64), valid[k]), atol=2e-6)


def test_per_clip_scope_uses_the_whole_clip():
    rng = np.random.default_rng(1)
    # Frames at very different distances: per clip, the near frame saturates towards 1 and the far one towards 0.
    depth = np.stack([rng.uniform(1, 2, (6, 7)), rng.uniform(10, 20, (6, 7))]).astype(np.float32)
    valid = np.ones(depth.shape, bool)
    out = truncated_disparity(depth, valid, "clip")
    np.testing.assert_allclose(out, _direct(depth.astype(np.float64), valid), atol=2e-6)
    assert out[0].mean() > 0.5 > out[1].mean()
    per_image = truncated_disparity(depth, valid, "image")
    assert not np.allclose(out, per_image)


def test_invalid_pixels_are_far_and_excluded_from_the_quantiles():
    rng = np.random.default_rng(2)
    depth = rng.uniform(2, 40, (12, 16))
    depth[:3] = 655.35  # VKITTI sky
    depth[5, 5], depth[6, 6], depth[7, 7] = 0.0, np.inf, np.nan
    valid = (depth > 1e-5) & (depth < 80)
    out = truncated_disparity(depth, valid)
    assert (out[:3] == 0).all()
    assert out[5, 5] == 0 and out[6, 6] == 0 and out[7, 7] == 0
    fine = valid & np.isfinite(depth)
    np.testing.assert_allclose(out, _direct(np.where(fine, depth, 1.0), fine), atol=2e-6)


def test_no_mask_means_every_positive_finite_pixel():
    depth = np.array([[1.0, 0.0], [np.inf, 3.0], [4.0, 8.0]])
    fine = np.isfinite(depth) & (depth > 0)
    np.testing.assert_allclose(truncated_disparity(depth), _direct(np.where(fine, depth, 1.0), fine), atol=2e-6)


def test_empty_scope_and_unknown_scope_raise():
    depth = np.ones((2, 4, 4))
    valid = np.ones(depth.shape, bool)
    valid[1] = False
    with pytest.raises(ValueError, match="no usable"):
        truncated_disparity(depth, valid, "image")
    assert truncated_disparity(depth * np.arange(1, 17).reshape(4, 4), valid, "clip")[1].max() == 0
    with pytest.raises(ValueError, match="unknown scope"):
        truncated_disparity(depth, valid, "video")
