import numpy as np
import pytest
import torch

from dvd.data.raster import resize_frames
from dvd.engine.resize import model_size


@pytest.mark.parametrize(
    ("source", "expected"),
    [
        ((1080, 1920), (480, 864)),  # the official resize policy's examples
        ((720, 1280), (480, 864)),
        ((480, 640), (480, 640)),
        ((1920, 1080), (1152, 640)),
        ((1080, 1440), (480, 640)),
        ((540, 960), (480, 864)),  # ratio 8/9: width 853.3 -> 854 -> 864
        ((200, 200), (640, 640)),  # upscaling: ratio 3.2 on both sides
        ((481, 641), (496, 640)),  # ratio 640/641 wins: height 480.25 -> 481 -> 496, width 640
    ],
)
def test_model_size_reference_examples(source, expected):
    assert model_size(*source) == expected


def test_model_size_custom_minimum():
    # ratio = max(256/100, 256/50) = 5.12 -> 512 x 256, both multiples of 16 already.
    assert model_size(100, 50, min_height=256, min_width=256) == (512, 256)
    # ratio = max(100/30, 100/70) = 3.333..: ceil(100.0) = 100 -> 112, ceil(233.33) = 234 -> 240.
    assert model_size(30, 70, min_height=100, min_width=100) == (112, 240)


def _bilinear_reference(image: np.ndarray, out_h: int, out_w: int) -> np.ndarray:
    """align_corners=False bilinear written out directly: src = (dst + 0.5) * in/out - 0.5, clamped at 0."""

    def weights(n_in: int, n_out: int) -> np.ndarray:
        matrix = np.zeros((n_out, n_in))
        for dst in range(n_out):
            src = max((dst + 0.5) * n_in / n_out - 0.5, 0.0)
            low = int(np.floor(src))
            high = min(low + 1, n_in - 1)
            frac = src - low
            matrix[dst, low] += 1 - frac
            matrix[dst, high] += frac
        return matrix

    return weights(image.shape[0], out_h) @ image @ weights(image.shape[1], out_w).T


def test_upsampling_by_hand():
    frames = np.array([[[0.0, 1.0]]], dtype=np.float32)  # T=1, H=1, W=2
    out = resize_frames(frames, (1, 4))
    np.testing.assert_allclose(out[0, 0], [0.0, 0.25, 0.75, 1.0], atol=1e-7)


def test_downsampling_has_no_antialiasing():
    # Without antialiasing, 4 -> 2 samples at source positions 0.5 and 2.5: the mean of neighbours, not of all.
    frames = np.array([[[0.0, 1.0, 2.0, 3.0]]], dtype=np.float32)
    out = resize_frames(frames, (1, 2))
    np.testing.assert_allclose(out[0, 0], [0.5, 2.5], atol=1e-7)


def test_matches_direct_bilinear_on_random_channels():
    rng = np.random.default_rng(0)
    frames = rng.random((2, 5, 7, 3), dtype=np.float32)
    out = resize_frames(frames, (8, 4))
    assert out.shape == (2, 8, 4, 3) and out.dtype == np.float32
    for t in range(2):
        for c in range(3):
            np.testing.assert_allclose(out[t, :, :, c], _bilinear_reference(frames[t, :, :, c], 8, 4), atol=1e-6)


def test_single_channel_stack_and_torch_input():
    rng = np.random.default_rng(1)
    maps = rng.random((3, 6, 4), dtype=np.float32)
    out = resize_frames(maps, (9, 10))
    assert out.shape == (3, 9, 10)
    np.testing.assert_allclose(out[1], _bilinear_reference(maps[1], 9, 10), atol=1e-6)
    tensor_out = resize_frames(torch.from_numpy(maps), (9, 10))
    assert isinstance(tensor_out, torch.Tensor)
    np.testing.assert_array_equal(tensor_out.numpy(), out)


def test_same_size_is_untouched_and_uint8_becomes_float():
    frames = np.zeros((1, 4, 4, 3), dtype=np.float32)
    assert resize_frames(frames, (4, 4)) is frames
    bytes_in = np.full((1, 2, 2, 3), 200, dtype=np.uint8)
    out = resize_frames(bytes_in, (4, 4))
    assert out.dtype == np.float32
    np.testing.assert_array_equal(out, np.full((1, 4, 4, 3), 200.0, dtype=np.float32))


def test_rejects_other_ranks():
    with pytest.raises(ValueError):
        resize_frames(np.zeros((4, 4), dtype=np.float32), (2, 2))
