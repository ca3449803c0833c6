"""Property tests of the image readers (dvd.io.readers, dvd.data.raster) over random sizes, odd dimensions, 8/16-bit,
grayscale, palette and alpha images written with Pillow, and of the raster resizes."""

from __future__ import annotations

import tempfile
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

from dvd.data.raster import (
    read_mask_png,
    read_matte_png,
    read_png16,
    read_png_depth,
    read_rgb,
    resize_frames,
    resize_nearest,
)
from dvd.errors import DVDError
from dvd.io.readers import open_source

PROPERTY_SETTINGS = settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
SIDES = st.integers(1, 33)  # odd and even, down to one pixel
# (Pillow mode, file suffix): what Pillow writes and dvd reads. 16-bit colour is not writable with Pillow.
EIGHT_BIT = [("L", ".png"), ("RGB", ".png"), ("RGBA", ".png"), ("LA", ".png"), ("P", ".png")]
EIGHT_BIT += [("L", ".tif"), ("RGB", ".tif")]
SIXTEEN_BIT = [("I;16", ".png"), ("I;16", ".tif")]


def random_image(rng: np.random.Generator, mode: str, height: int, width: int) -> Image.Image:
    if mode == "I;16":
        return Image.fromarray(rng.integers(0, 65536, (height, width), dtype=np.uint16))
    if mode == "P":
        return Image.fromarray(rng.integers(0, 256, (height, width, 3), dtype=np.uint8)).quantize(colors=16)
    channels = {"L": 1, "LA": 2, "RGB": 3, "RGBA": 4}[mode]
    values = rng.integers(0, 256, (height, width, channels), dtype=np.uint8)
    return Image.fromarray(values[..., 0] if channels == 1 else values, mode)


def expected_rgb(image: Image.Image) -> np.ndarray:
    """What a reader must return: the RGB colour of each pixel, alpha dropped, grey replicated, at full depth."""
    if image.mode == "I;16":
        return np.repeat(np.asarray(image, dtype=np.uint16)[..., None], 3, axis=2)
    return np.asarray(image.convert("RGB"))


@st.composite
def images(draw, formats: list[tuple[str, str]]) -> tuple[Image.Image, str]:
    mode, suffix = draw(st.sampled_from(formats))
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    return random_image(rng, mode, draw(SIDES), draw(SIDES)), suffix


@PROPERTY_SETTINGS
@given(images(EIGHT_BIT + SIXTEEN_BIT))
def test_one_image_reads_back_exactly_at_its_size_and_depth(case) -> None:
    image, suffix = case
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / f"frame{suffix}"
        image.save(path)
        source = open_source(path)
        assert (source.kind, source.size, source.num_frames) == ("image", (image.height, image.width), 1)
        (pixels,) = list(source.pixels())
        (frame,) = list(source.frames())
    expected = expected_rgb(image)
    assert pixels.dtype == expected.dtype and pixels.shape == (image.height, image.width, 3)
    np.testing.assert_array_equal(pixels, expected)
    scale = 65535.0 if expected.dtype == np.uint16 else 255.0
    assert frame.dtype == np.float32 and 0.0 <= frame.min() and frame.max() <= 1.0
    np.testing.assert_allclose(frame, expected / scale, rtol=0, atol=1e-7)


@PROPERTY_SETTINGS
@given(images(EIGHT_BIT))
def test_the_video_reader_and_the_benchmark_reader_agree_on_8_bit_images(case) -> None:
    image, suffix = case
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / f"frame{suffix}"
        image.save(path)
        (pixels,) = list(open_source(path).pixels())
        np.testing.assert_array_equal(pixels, read_rgb(path))


@PROPERTY_SETTINGS
@given(
    SIDES,
    SIDES,
    st.lists(st.integers(0, 10_000), min_size=1, max_size=6, unique=True),
    st.sampled_from(SIXTEEN_BIT + EIGHT_BIT),
)
def test_an_image_folder_yields_every_file_once_in_natural_order(height, width, numbers, format_) -> None:
    mode, suffix = format_
    rng = np.random.default_rng(len(numbers) * 1000 + height * 40 + width)
    written = {}
    with tempfile.TemporaryDirectory() as folder:
        for number in numbers:  # unpadded numbers: "frame2" must come before "frame10"
            image = random_image(rng, mode, height, width)
            image.save(Path(folder) / f"frame{number}{suffix}")
            written[number] = expected_rgb(image)
        source = open_source(folder)
        assert (source.kind, source.size, source.num_frames) == ("images", (height, width), len(numbers))
        frames = list(source.pixels())
    assert len(frames) == len(numbers)
    for number, pixels in zip(sorted(numbers), frames):
        np.testing.assert_array_equal(pixels, written[number])


@PROPERTY_SETTINGS
@given(SIDES, SIDES, SIDES, SIDES)
def test_a_folder_of_two_sizes_fails_in_one_line_before_decoding(h1, w1, h2, w2) -> None:
    if (h1, w1) == (h2, w2):
        return
    with tempfile.TemporaryDirectory() as folder:
        Image.new("RGB", (w1, h1)).save(Path(folder) / "a1.png")
        Image.new("RGB", (w2, h2)).save(Path(folder) / "a2.png")
        with pytest.raises(DVDError, match="image sizes differ") as error:
            open_source(folder)
    assert "\n" not in str(error.value)


@PROPERTY_SETTINGS
@given(SIDES, SIDES, st.integers(0, 2**32 - 1), st.sampled_from([256.0, 1000.0, 5000.0]))
def test_16_bit_depth_masks_and_mattes_read_back_exactly(height, width, seed, units) -> None:
    rng = np.random.default_rng(seed)
    depth = rng.integers(0, 65536, (height, width), dtype=np.uint16)
    mask = rng.integers(0, 256, (height, width), dtype=np.uint8) * rng.integers(0, 2, (height, width), dtype=np.uint8)
    with tempfile.TemporaryDirectory() as folder:
        Image.fromarray(depth).save(Path(folder) / "depth.png")
        Image.fromarray(mask).save(Path(folder) / "mask.png")
        raw = read_png16(Path(folder) / "depth.png")
        metres = read_png_depth(Path(folder) / "depth.png", units)
        np.testing.assert_array_equal(read_mask_png(Path(folder) / "mask.png"), mask > 0)
        np.testing.assert_allclose(read_matte_png(Path(folder) / "mask.png"), mask / 255.0, rtol=1e-6)
    assert raw.dtype == np.float32 and metres.dtype == np.float32
    np.testing.assert_array_equal(raw, depth.astype(np.float32))
    np.testing.assert_allclose(metres, depth / units, rtol=1e-6)
    assert ((metres == 0) == (depth == 0)).all()  # 0 stays "no depth"


@pytest.mark.parametrize("mode", ["RGBA", "LA"])
def test_alpha_tiff_images_are_read(tmp_path: Path, mode: str) -> None:
    image = random_image(np.random.default_rng(0), mode, 5, 7)
    image.save(tmp_path / "frame.tif")
    (pixels,) = list(open_source(tmp_path / "frame.tif").pixels())
    np.testing.assert_array_equal(pixels, expected_rgb(image))


def test_truncated_tiff_is_refused(tmp_path: Path) -> None:
    random_image(np.random.default_rng(1), "RGBA", 40, 50).save(tmp_path / "frame.tif")
    data = (tmp_path / "frame.tif").read_bytes()
    (tmp_path / "frame.tif").write_bytes(data[: len(data) // 2])
    with pytest.raises(DVDError, match="truncated or not a valid image"):
        list(open_source(tmp_path / "frame.tif").pixels())


@st.composite
def maps(draw) -> np.ndarray:
    shape = (draw(st.integers(1, 3)), draw(SIDES), draw(SIDES))
    if draw(st.booleans()):
        shape += (3,)
    return np.random.default_rng(draw(st.integers(0, 2**32 - 1))).normal(size=shape).astype(np.float32)


@PROPERTY_SETTINGS
@given(maps(), SIDES, SIDES)
def test_bilinear_resize_keeps_shape_rules_and_never_leaves_the_input_range(frames, height, width) -> None:
    resized = resize_frames(frames, (height, width))
    assert resized.shape == (len(frames), height, width) + frames.shape[3:] and resized.dtype == np.float32
    if frames.shape[1:3] == (height, width):
        assert resized is frames
    # no antialias, half-pixel centres: every output is a convex blend of input pixels of its own frame/channel
    axes = (1, 2)
    assert (resized >= frames.min(axis=axes, keepdims=True) - 1e-6).all()
    assert (resized <= frames.max(axis=axes, keepdims=True) + 1e-6).all()
    constant = np.full_like(frames, 0.375)
    np.testing.assert_allclose(resize_frames(constant, (height, width)), 0.375, rtol=0, atol=1e-7)
    if frames.ndim == 4:  # channels are resized independently: the same as one map at a time
        np.testing.assert_allclose(resized[..., 1], resize_frames(frames[..., 1], (height, width)), atol=1e-6)


@PROPERTY_SETTINGS
@given(maps(), SIDES, SIDES, st.booleans())
def test_nearest_resize_only_copies_input_values_of_the_same_frame(frames, height, width, exact) -> None:
    channels_last = frames.ndim == 4
    resized = resize_nearest(frames, (height, width), exact=exact, channels_last=channels_last)
    assert resized.shape == (len(frames), height, width) + frames.shape[3:]
    for source, out in zip(frames, resized):
        assert np.isin(out, source).all()
    if (height, width) == frames.shape[1:3]:
        np.testing.assert_array_equal(resized, frames)
