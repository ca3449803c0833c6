import os
from fractions import Fraction

import av
import numpy as np
import pytest
from PIL import Image

from dvd.errors import DVDError
from dvd.io.colormaps import colorize, colormap_table
from dvd.io.writers import (
    DisparityRange,
    ExrWriter,
    NpyWriter,
    Png16Writer,
    VideoWriter,
    open_writers,
    write_rgb_video,
)


def decode_video(path):
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        frames = [frame.to_ndarray(format="rgb24") for frame in container.decode(stream)]
        return np.stack(frames), stream.average_rate


# --- DisparityRange: the one normalisation rule ----------------------------------------------------------------


def test_range_fit_by_hand():
    # 0..100: 1st percentile 1, 99th 99, headroom 10% of 98 = 9.8 on each side.
    fitted = DisparityRange.fit(np.arange(101, dtype=np.float32).reshape(1, 1, 101))
    assert fitted.lo == pytest.approx(-8.8) and fitted.hi == pytest.approx(108.8)
    constant = DisparityRange.fit(np.full((2, 3, 3), 0.25, dtype=np.float32))
    assert (constant.lo, constant.hi) == (pytest.approx(-0.25), pytest.approx(0.75))


def test_range_normalise_clips_and_rejects_bad_bounds():
    value_range = DisparityRange(1.0, 3.0)
    np.testing.assert_allclose(value_range.normalise(np.array([0.0, 1.0, 2.5, 3.0, 9.0])), [0, 0, 0.75, 1, 1])
    with pytest.raises(ValueError):
        DisparityRange(2.0, 2.0)


# --- npy -------------------------------------------------------------------------------------------------------


def test_npy_round_trip_with_unknown_length(tmp_path):
    rng = np.random.default_rng(0)
    chunks = [rng.random((3, 5, 7), dtype=np.float32), rng.random((5, 7), dtype=np.float32), rng.random((4, 5, 7))]
    with NpyWriter(tmp_path) as writer:
        for chunk in chunks:
            writer.write(chunk)
    expected = np.concatenate([chunks[0], chunks[1][None], chunks[2].astype(np.float32)])
    loaded = np.load(tmp_path / "disparity.npy")
    assert loaded.dtype == np.float32 and loaded.shape == (8, 5, 7)
    np.testing.assert_array_equal(loaded, expected)
    mapped = np.load(tmp_path / "disparity.npy", mmap_mode="r")
    np.testing.assert_array_equal(mapped[5], expected[5])
    assert writer.meta() == {"file": "disparity.npy", "dtype": "float32", "shape": [8, 5, 7]}
    header_bytes = os.path.getsize(tmp_path / "disparity.npy") - expected.nbytes
    assert header_bytes % 64 == 0


def test_npy_with_no_frames_is_still_valid(tmp_path):
    NpyWriter(tmp_path).close()
    assert np.load(tmp_path / "disparity.npy").shape == (0, 0, 0)


def test_npy_refuses_a_size_change(tmp_path):
    with NpyWriter(tmp_path) as writer:
        writer.write(np.zeros((2, 4), dtype=np.float32))
        with pytest.raises(ValueError):
            writer.write(np.zeros((2, 5), dtype=np.float32))


def resident_bytes() -> int:
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def test_npy_memory_does_not_grow_with_length(tmp_path):
    frame = np.ones((512, 512), dtype=np.float32)  # 1 MiB
    writer = NpyWriter(tmp_path)
    writer.write(frame)
    before = resident_bytes()
    for _ in range(160):
        writer.write(frame)
    grown = resident_bytes() - before  # measured before close: a buffering writer would hold 160 MiB here
    writer.close()
    assert grown < 32 * 2**20
    assert np.load(tmp_path / "disparity.npy", mmap_mode="r").shape == (161, 512, 512)


def test_npy_frames_reads_what_npy_writer_wrote(tmp_path):
    """The second pass over disparity.npy reads frames with plain reads (no map whose pages stay in the RSS)."""
    from dvd.io.writers import NpyFrames

    frames = np.random.default_rng(4).random((5, 6, 7), dtype=np.float32)
    with NpyWriter(tmp_path) as writer:
        writer.write(frames[:2])
        writer.write(frames[2:])
    with NpyFrames(tmp_path / "disparity.npy") as read:
        assert read.shape == (5, 6, 7) and len(read) == 5 and read.dtype == np.float32
        np.testing.assert_array_equal(np.stack(list(read)), frames)
        np.testing.assert_array_equal(read[-1], frames[4])
        with pytest.raises(IndexError):
            read[5]
    np.save(tmp_path / "flat.npy", np.zeros((2, 3), np.float32))
    with pytest.raises(DVDError, match=r"shape \(2, 3\).*\[T, H, W\]"):
        NpyFrames(tmp_path / "flat.npy")
    (tmp_path / "cut.npy").write_bytes((tmp_path / "disparity.npy").read_bytes()[:-10])
    with NpyFrames(tmp_path / "cut.npy") as cut, pytest.raises(DVDError, match="truncated"):
        cut[4]


# --- 16-bit PNG and EXR ----------------------------------------------------------------------------------------


def test_png16_round_trip_within_quantisation(tmp_path):
    rng = np.random.default_rng(2)
    disparity = rng.uniform(0.2, 0.8, size=(3, 9, 11)).astype(np.float32)
    disparity[0, 0, 0], disparity[0, 0, 1] = -5.0, 5.0  # outside the range: clipped to lo / hi
    lo, hi = 0.1, 0.9
    with Png16Writer(tmp_path, DisparityRange(lo, hi)) as writer:
        writer.write(disparity[:2])
        writer.write(disparity[2])
    files = sorted((tmp_path / "depth_png16").iterdir())
    assert [f.name for f in files] == ["000000.png", "000001.png", "000002.png"]
    for file, expected in zip(files, disparity):
        with Image.open(file) as image:
            codes = np.array(image)
        assert codes.dtype == np.uint16 and codes.shape == (9, 11)
        decoded = lo + codes / 65535 * (hi - lo)
        np.testing.assert_allclose(decoded, np.clip(expected, lo, hi), atol=(hi - lo) / 65535 / 2 + 1e-7)
    assert writer.meta()["lo"] == lo and writer.meta()["hi"] == hi and writer.meta()["frames"] == 3


def test_exr_round_trip_is_exact(tmp_path):
    disparity = np.random.default_rng(3).normal(size=(2, 6, 5)).astype(np.float32)
    with ExrWriter(tmp_path) as writer:
        writer.write(disparity)
    for index in range(2):
        with av.open(str(tmp_path / "depth_exr" / f"{index:06d}.exr")) as container:
            decoded = next(container.decode(video=0)).to_ndarray(format="grayf32le")
        np.testing.assert_array_equal(decoded, disparity[index])


# --- colour maps -----------------------------------------------------------------------------------------------


def test_spectral_r_ends_and_truncation():
    # ColorBrewer Spectral ends: #5e4fa2 (far, blue) and #9e0142 (near, red).
    np.testing.assert_array_equal(colorize(np.array([0.0, 1.0]), "Spectral_r"), [[94, 79, 162], [158, 1, 66]])
    table = colormap_table("Spectral_r")
    np.testing.assert_array_equal(colorize(np.array(0.5)), table[127])  # 127.5 truncates to 127
    np.testing.assert_array_equal(colorize(np.array([-1.0, 2.0])), table[[0, 255]])


def test_other_maps():
    np.testing.assert_array_equal(colorize(np.array([0.0, 0.999, 1.0]), "gray"), [[0] * 3, [254] * 3, [255] * 3])
    assert colorize(np.array(1.0), "inferno")[2] < 200 and colorize(np.array(1.0), "inferno")[0] > 240  # yellow
    assert colorize(np.array(0.0), "inferno").sum() < 10  # black
    with pytest.raises(DVDError, match="unknown colour map"):
        colormap_table("jet")


# --- videos ----------------------------------------------------------------------------------------------------


def test_colorize_yuv420_is_the_colour_map_in_bt709_limited_range():
    from av.video.reformatter import ColorRange, Colorspace, VideoReformatter

    from dvd.io.colormaps import colorize_yuv420

    values = np.tile(np.linspace(0, 1, 64, dtype=np.float32), (8, 1))
    values[:, :32] = 0.25  # a flat left half: every 2x2 block there holds one colour
    planes = colorize_yuv420(values, "Spectral_r")
    assert planes.shape == (12, 64) and planes.dtype == np.uint8
    red, green, blue = colormap_table("Spectral_r")[int(0.25 * 255)].astype(float) / 255
    luma = 0.2126 * red + 0.7152 * green + 0.0722 * blue  # BT.709 by hand: Y, Cb, Cr of a flat colour
    flat = planes.reshape(-1)
    y, cb, cr = flat[:512].reshape(8, 64), flat[512:640].reshape(4, 32), flat[640:].reshape(4, 32)
    assert (y[:, :32] == round(16 + 219 * luma)).all()
    assert (cb[:, :16] == round(128 + 224 * (blue - luma) / 1.8556)).all()
    assert (cr[:, :16] == round(128 + 224 * (red - luma) / 1.5748)).all()
    # Against the general path (RGB picture, then swscale's BT.709 conversion): the same picture, up to the
    # chroma filter at sharp changes.
    rgb = av.VideoFrame.from_ndarray(colorize(values, "Spectral_r"), format="rgb24")
    converted = VideoReformatter().reformat(
        rgb, format="yuv420p", dst_colorspace=Colorspace.ITU709, dst_color_range=ColorRange.MPEG
    )
    assert np.abs(converted.to_ndarray().astype(int) - planes).max() <= 3
    with pytest.raises(ValueError, match="even"):
        colorize_yuv420(values[:7])


@pytest.mark.parametrize("size", [(24, 40), (21, 33), (2, 6)])
@pytest.mark.parametrize("strip_pixels", [1, 100, 1 << 17])
def test_the_video_s_picture_is_built_in_strips_with_the_same_bytes(size, strip_pixels, monkeypatch):
    """Strips of rows (whole 2x2 blocks, any count, the last one short) give the planes of the whole frame."""
    from dvd.io.colormaps import colorize_yuv420
    from dvd.io.writers import _pad_to_even

    monkeypatch.setattr(VideoWriter, "STRIP_PIXELS", strip_pixels)
    value_range = DisparityRange(-0.5, 2.0)
    disparity = np.random.default_rng(0).normal(0.7, 0.8, size).astype(np.float32)  # clipped at both ends too
    writer = VideoWriter(".", 24, value_range)
    picture = writer._colour_yuv420(disparity).to_ndarray()
    assert np.array_equal(picture, colorize_yuv420(_pad_to_even(value_range.normalise(disparity)), writer.colormap))


def test_the_video_is_encoded_by_frame_threads(tmp_path):
    """x264's frame threads: encoding overlaps the colour mapping of the next frame (see VideoWriter._open)."""
    with VideoWriter(tmp_path, 24, DisparityRange(0.0, 1.0)) as writer:
        writer.write(np.full((2, 16, 16), 0.5, dtype=np.float32))
        assert writer._stream.codec_context.thread_type.name == "FRAME"


def test_colour_video_frames_size_fps_and_colour(tmp_path):
    value_range = DisparityRange(0.0, 1.0)
    disparity = np.ones((5, 32, 48), dtype=np.float32)  # all near -> the red end of Spectral_r
    disparity[:, :, :16] = 0.0  # left third far -> the blue end
    with VideoWriter(tmp_path, Fraction(30000, 1001), value_range) as writer:
        writer.write(disparity[:2])
        writer.write(disparity[2:])
    frames, rate = decode_video(tmp_path / "depth_vis.mp4")
    assert frames.shape == (5, 32, 48, 3) and rate == Fraction(30000, 1001)
    middle = frames[2].astype(int)
    assert np.abs(middle[8:24, 4:12] - [94, 79, 162]).max() <= 6
    assert np.abs(middle[8:24, 28:44] - [158, 1, 66]).max() <= 6


def test_odd_sizes_are_padded_to_even(tmp_path):
    with VideoWriter(tmp_path, 24, DisparityRange(0.0, 1.0), colormap="gray") as writer:
        writer.write(np.full((3, 21, 33), 0.5, dtype=np.float32))
    frames, rate = decode_video(tmp_path / "depth_vis.mp4")
    assert frames.shape == (3, 22, 34, 3) and rate == 24
    assert np.abs(frames.astype(int) - 127).max() <= 3


def test_side_by_side(tmp_path):
    rgb = np.zeros((4, 32, 48, 3), dtype=np.float32)
    rgb[..., 1] = 1.0  # green picture
    with VideoWriter(tmp_path, 12, DisparityRange(0.0, 1.0), "gray", side_by_side=True) as writer:
        assert writer.needs_rgb
        with pytest.raises(ValueError):
            writer.write(np.zeros((4, 32, 48), dtype=np.float32))
        writer.write(np.zeros((4, 32, 48), dtype=np.float32), rgb)
    frames, _ = decode_video(tmp_path / "depth_sbs.mp4")
    assert frames.shape == (4, 32, 96, 3)
    assert np.abs(frames[1, 8:24, 8:40].astype(int) - [0, 255, 0]).max() <= 6
    assert frames[1, 8:24, 56:88].max() <= 6  # disparity 0 in gray is black


def test_open_writers_group(tmp_path):
    value_range = DisparityRange(0.0, 1.0)
    group = open_writers(tmp_path, ["npy", "png16", "mp4", "sbs"], fps=24, value_range=value_range)
    assert group.needs_rgb
    disparity = np.linspace(0, 1, 2 * 16 * 16, dtype=np.float32).reshape(2, 16, 16)
    with group:
        group.write(disparity, np.zeros((2, 16, 16, 3), dtype=np.float32))
    meta = group.meta()
    assert set(meta) == {"npy", "png16", "mp4", "sbs"}
    assert meta["npy"]["shape"] == [2, 16, 16] and meta["mp4"]["frames"] == 2 and meta["sbs"]["fps"] == 24.0
    written = sorted(p.name for p in tmp_path.iterdir())
    assert written == ["depth_png16", "depth_sbs.mp4", "depth_vis.mp4", "disparity.npy"]
    with pytest.raises(ValueError, match="DisparityRange"):
        open_writers(tmp_path / "x", ["mp4"], fps=24)
    with pytest.raises(ValueError, match="unknown output formats"):
        open_writers(tmp_path / "x", ["gif"], fps=24)


# --- degenerate ranges, frame-rate limits and time stamps --------------------------------------------------------


def test_range_of_all_nan_is_one_line_error():
    with pytest.raises(DVDError, match="NaN"):
        DisparityRange.fit(np.full((2, 4, 4), np.nan, dtype=np.float32))


def test_range_ignores_nan_and_widens_degenerate_windows():
    mixed = np.arange(101, dtype=np.float32)
    mixed[::10] = np.nan
    assert np.isfinite([DisparityRange.fit(mixed).lo, DisparityRange.fit(mixed).hi]).all()
    huge = DisparityRange.fit(np.full((2, 3, 3), 1e20, dtype=np.float32))  # c +- 0.5 would collapse in float64
    assert huge.lo < 1e20 < huge.hi
    flat = DisparityRange.fit(0.3 + 1e-9 * np.arange(50, dtype=np.float64))
    assert (flat.lo, flat.hi) == pytest.approx((-0.2, 0.8))


@pytest.mark.parametrize("fps", ["1e9", "1e-9", 0])
def test_video_writer_refuses_unplayable_rates(tmp_path, fps):
    with pytest.raises(DVDError, match="between 1/1000 and 1000"):
        VideoWriter(tmp_path, fps, DisparityRange(0.0, 1.0))


def test_video_writer_keeps_given_times(tmp_path):
    times = [Fraction(0), Fraction(1, 10), Fraction(15, 100), Fraction(1), Fraction(3, 2)]
    with VideoWriter(tmp_path, 24, DisparityRange(0.0, 1.0), time_base=Fraction(1, 1000)) as writer:
        writer.write(np.zeros((5, 8, 8), np.float32), times=times)
    with av.open(str(tmp_path / "depth_vis.mp4")) as container:
        decoded = [float(frame.time) for frame in container.decode(video=0)]
    np.testing.assert_allclose(decoded, [float(t) for t in times], atol=1e-3)


# --- write_rgb_video: the synthetic clips of the app, the demo, bench and doctor ---------------------------------


def test_write_rgb_video_keeps_frames_rate_and_pads_odd_sides(tmp_path):
    frames = np.zeros((3, 31, 45, 3), np.uint8)
    frames[..., 0] = 200
    frames[1, ..., 1] = 120
    frames[2, ..., 2] = 60
    path = write_rgb_video(tmp_path / "clip.mp4", iter(frames), 12, preset="ultrafast")  # a generator will do
    decoded, rate = decode_video(path)
    assert decoded.shape == (3, 32, 46, 3) and rate == 12
    # Flat colours survive H.264 + yuv420p to within rounding of the colour conversion.
    np.testing.assert_allclose(decoded[:, :31, :45].astype(int), frames.astype(int), atol=6)


def test_write_rgb_video_refuses_frames_it_would_alter(tmp_path):
    small, wide = np.zeros((8, 8, 3), np.uint8), np.zeros((8, 10, 3), np.uint8)
    with pytest.raises(ValueError, match="no frames"):
        write_rgb_video(tmp_path / "a.mp4", [], 24)
    with pytest.raises(ValueError, match=r"shape \(8, 8, 3\), got uint8 \(8, 10, 3\)"):
        write_rgb_video(tmp_path / "b.mp4", [small, wide], 24)
    with pytest.raises(ValueError, match="got float32"):
        write_rgb_video(tmp_path / "c.mp4", [small, small.astype(np.float32)], 24)
    with pytest.raises(ValueError, match=r"RGB frames \[H, W, 3\]"):
        write_rgb_video(tmp_path / "d.mp4", [np.zeros((8, 8), np.uint8)], 24)
