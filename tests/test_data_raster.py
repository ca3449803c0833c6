"""The shared raster readers of `dvd.data.raster` give each caller the arrays it had before they were merged."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from dvd.data.raster import (
    kb_crop,
    read_npy_depth,
    read_png16,
    read_png_depth,
    read_rgb,
    resize_frames,
    resize_nearest,
    unit_float,
)
from dvd.errors import DVDError


def test_rgb_is_uint8_and_unit_float_is_the_training_range(tmp_path: Path) -> None:
    rgb = np.random.default_rng(0).integers(0, 256, (5, 7, 3), dtype=np.uint8)
    Image.fromarray(rgb).save(tmp_path / "a.png")
    Image.fromarray(rgb[..., 0]).save(tmp_path / "grey.png")
    read = read_rgb(tmp_path / "a.png")
    assert read.dtype == np.uint8 and np.array_equal(read, rgb)
    assert read_rgb(tmp_path / "grey.png").shape == (5, 7, 3)
    unit = unit_float(read)
    assert unit.dtype == np.float32
    np.testing.assert_array_equal(unit, np.asarray(rgb, dtype=np.float32) / 255.0)
    with pytest.raises(DVDError, match="missing file"):
        read_rgb(tmp_path / "absent.png")


def test_png16_depth_and_npy_depth_are_float32(tmp_path: Path) -> None:
    raw = np.array([[0, 1, 65535], [256, 1000, 5000]], dtype=np.uint16)
    Image.fromarray(raw).save(tmp_path / "d.png")
    assert read_png16(tmp_path / "d.png").dtype == np.float32
    metres = read_png_depth(tmp_path / "d.png", 256.0)
    assert metres.dtype == np.float32
    np.testing.assert_array_equal(metres, raw.astype(np.float32) / np.float32(256.0))
    Image.fromarray(raw.astype(np.uint8)).save(tmp_path / "eight.png")
    with pytest.raises(DVDError, match="expected a 16-bit single-channel PNG"):
        read_png16(tmp_path / "eight.png")
    np.save(tmp_path / "d.npy", np.ones((4, 5, 1)))
    depth = read_npy_depth(tmp_path / "d.npy")
    assert depth.shape == (4, 5) and depth.dtype == np.float32
    np.save(tmp_path / "bad.npy", np.ones((2, 4, 5)))
    with pytest.raises(DVDError, match="expected a 2-D depth map"):
        read_npy_depth(tmp_path / "bad.npy")


@pytest.mark.parametrize(
    ("size", "out"), [((214, 171), (266, 257)), ((238, 212), (52, 26)), ((375, 1242), (352, 1216))]
)
def test_float32_nearest_picks_the_pixels_of_torch_nearest(size: tuple[int, int], out: tuple[int, int]) -> None:
    depth = np.random.default_rng(1).random((2, *size)).astype(np.float32)
    expected = F.interpolate(torch.from_numpy(depth)[:, None], size=out, mode="nearest")[:, 0].numpy()
    np.testing.assert_array_equal(resize_nearest(depth, out, index_dtype=np.float32), expected)


def test_float64_nearest_exact_keeps_the_benchmark_index_rule() -> None:
    image = np.arange(4032 * 3, dtype=np.float32).reshape(4032, 3)
    rows = resize_nearest(image[:, :, None], (480, 3), exact=True, channels_last=True)[:, 0, 0] / 3
    np.testing.assert_array_equal(rows, np.floor((np.arange(480) + 0.5) * (4032 / 480)))


def test_antialiased_bilinear_is_torch_antialias() -> None:
    frames = np.random.default_rng(2).random((1, 20, 30, 3)).astype(np.float32)
    expected = F.interpolate(
        torch.from_numpy(frames).permute(0, 3, 1, 2), size=(7, 9), mode="bilinear", align_corners=False, antialias=True
    ).permute(0, 2, 3, 1)
    np.testing.assert_array_equal(resize_frames(frames, (7, 9), antialias=True), expected.numpy())


def test_kb_crop_keeps_the_bottom_rows_and_centred_columns() -> None:
    frames = np.arange(1 * 6 * 9).reshape(1, 6, 9)
    np.testing.assert_array_equal(kb_crop(frames, (4, 5)), frames[:, 2:6, 2:7])
    with pytest.raises(DVDError, match="smaller than the 352x1216"):
        kb_crop(np.zeros((1, 300, 1300)))


def test_resize_pixels_keeps_the_type_within_one_level_of_the_float_resize():
    from dvd.data.raster import resize_pixels

    rng = np.random.default_rng(7)
    for shape, size in [((45, 80, 3), (32, 64)), ((31, 17, 3), (64, 48))]:
        for dtype, scale, tolerance in [(np.uint8, 255, 1.05), (np.uint16, 65535, 0.51)]:
            frame = rng.integers(0, scale + 1, size=shape).astype(dtype)
            resized = resize_pixels(frame, size)
            reference = resize_frames(frame[None].astype(np.float32) / np.float32(scale), size)[0] * scale
            assert resized.dtype == dtype and resized.shape == (*size, 3) and resized.flags.c_contiguous
            assert np.abs(resized.astype(np.float64) - reference).max() <= tolerance, (dtype, shape)
        as_float = rng.random(shape, dtype=np.float32)
        np.testing.assert_array_equal(resize_pixels(as_float, size), resize_frames(as_float[None], size)[0])
    same = rng.integers(0, 256, size=(32, 64, 3), dtype=np.uint8)
    assert resize_pixels(same, (32, 64)) is same
