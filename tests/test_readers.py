from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import pytest
from media import shared_video
from PIL import Image

from dvd.errors import DVDError
from dvd.io.readers import natural_key, open_source, open_sources, resolve_inputs


def write_video(path: Path, frames: np.ndarray, rate=24, codec="libx264", rotation: int | None = None) -> Path:
    """Encode uint8 RGB frames [T, H, W, 3]."""
    with av.open(str(path), "w") as container:
        stream = container.add_stream(codec, rate=rate)
        stream.height, stream.width = frames.shape[1:3]
        stream.pix_fmt = "yuv420p"
        if rotation is not None:
            stream.set_display_rotation(rotation)
        for index, image in enumerate(frames):
            frame = av.VideoFrame.from_ndarray(image, format="rgb24")
            frame.pts = index
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return path


def flat_frames(count: int, height: int = 48, width: int = 64) -> np.ndarray:
    return np.stack([np.full((height, width, 3), 20 * i, dtype=np.uint8) for i in range(count)])


def write_png8(path: Path, value: int, size=(6, 8)) -> Path:
    Image.fromarray(np.full((*size, 3), value, dtype=np.uint8)).save(path)
    return path


# --- ordering --------------------------------------------------------------------------------------------------


def test_natural_sort():
    names = ["f10.png", "f2.png", "F3.png", "f1.png", "f01.png", "a100.png", "a20.png"]
    assert sorted(names, key=natural_key) == ["a20.png", "a100.png", "f01.png", "f1.png", "f2.png", "F3.png", "f10.png"]


def test_folder_is_read_in_natural_order(tmp_path):
    for value, name in [(10, "f10.png"), (2, "f2.png"), (1, "f1.png")]:
        write_png8(tmp_path / name, value)
    source = open_source(tmp_path)
    firsts = [round(float(frame[0, 0, 0]) * 255) for frame in source.frames()]
    assert firsts == [1, 2, 10]
    assert (source.kind, source.name, source.num_frames, source.size) == ("images", tmp_path.name, 3, (6, 8))


# --- image formats ---------------------------------------------------------------------------------------------


def test_16bit_gray_pngs_keep_their_values(tmp_path):
    rng = np.random.default_rng(0)
    codes = rng.integers(0, 65536, size=(2, 5, 7), dtype=np.uint16)
    for index, code in enumerate(codes):
        Image.fromarray(code).save(tmp_path / f"frame_{index}.png")
    frames = list(open_source(tmp_path).frames())
    assert frames[0].dtype == np.float32 and frames[0].shape == (5, 7, 3)
    for frame, code in zip(frames, codes):
        for channel in range(3):
            np.testing.assert_array_equal(np.rint(frame[..., channel] * 65535).astype(np.uint16), code)


def test_16bit_rgb_png_keeps_its_values(tmp_path):
    # Pillow would drop 16-bit RGB to 8 bits; the reader must not.
    codes = np.random.default_rng(1).integers(0, 65536, size=(4, 6, 3), dtype=np.uint16)
    path = tmp_path / "rgb16.png"
    with av.open(str(path), "w", format="image2") as container:
        stream = container.add_stream("png", rate=1)
        stream.height, stream.width, stream.pix_fmt = 4, 6, "rgb48be"
        for packet in (*stream.encode(av.VideoFrame.from_ndarray(codes, format="rgb48le")), *stream.encode()):
            container.mux(packet)
    (frame,) = open_source(path).frames()
    np.testing.assert_array_equal(np.rint(frame * 65535).astype(np.uint16), codes)


def test_8bit_jpeg_and_single_image_source(tmp_path):
    path = tmp_path / "photo.jpg"
    Image.fromarray(np.full((16, 16, 3), 128, dtype=np.uint8)).save(path, quality=100)
    source = open_source(path, image_fps=30)
    (frame,) = source.frames()
    assert (source.kind, source.name, source.rate, source.num_frames) == ("image", "photo", Fraction(30), 1)
    assert abs(float(frame.mean()) - 128 / 255) < 2 / 255


def test_exr_is_read_as_linear_and_encoded_to_srgb(tmp_path):
    linear = np.array([[[0.0, 0.002, 0.18], [0.5, 1.0, 4.0]]], dtype=np.float32)  # 1 x 2 x 3, last one > 1
    path = tmp_path / "plate.exr"
    with av.open(str(path), "w", format="image2") as container:
        stream = container.add_stream("exr", rate=1)
        stream.height, stream.width, stream.pix_fmt = 1, 2, "gbrpf32le"
        for packet in (*stream.encode(av.VideoFrame.from_ndarray(linear, format="gbrpf32le")), *stream.encode()):
            container.mux(packet)
    source = open_source(path)
    assert source.size == (1, 2)
    (frame,) = source.frames()
    # sRGB: 12.92 x below 0.0031308, else 1.055 x^(1/2.4) - 0.055; values above 1 clip to 1.
    expected = [[[0.0, 0.02584, 0.46135], [0.73536, 1.0, 1.0]]]
    np.testing.assert_allclose(frame, expected, atol=2e-5)


def test_pixels_keep_the_decoded_precision_and_frames_are_their_unit_floats(tmp_path):
    """`pixels` (what the engine reads) is uint8 for 8-bit sources, uint16 for deeper ones, float32 for float
    images; `frames` is exactly their [0, 1] float32."""
    rgb8 = np.random.default_rng(2).integers(0, 256, size=(3, 16, 24, 3), dtype=np.uint8)
    (tmp_path / "seq").mkdir()
    for index, image in enumerate(rgb8):
        Image.fromarray(image).save(tmp_path / "seq" / f"f{index}.png")
    codes = np.random.default_rng(3).integers(0, 65536, size=(4, 6), dtype=np.uint16)
    Image.fromarray(codes).save(tmp_path / "deep.png")
    video = write_video(tmp_path / "clip.mp4", rgb8)
    cases = {tmp_path / "seq": (np.uint8, 255), tmp_path / "deep.png": (np.uint16, 65535), video: (np.uint8, 255)}
    for path, (dtype, scale) in cases.items():
        source = open_source(path)
        pixels, frames = list(source.pixels()), list(source.frames())
        assert [p.dtype for p in pixels] == [np.dtype(dtype)] * len(frames), path
        for raw, unit in zip(pixels, frames):
            assert unit.dtype == np.float32
            np.testing.assert_array_equal(unit, raw.astype(np.float32) / np.float32(scale))
    np.testing.assert_array_equal(np.stack(list(open_source(tmp_path / "seq").pixels())), rgb8)
    times = [time for time, _ in open_source(video).timed_pixels(max_frames=2)]
    assert times == [time for time, _ in open_source(video).timed_frames(max_frames=2)] == [0, Fraction(1, 24)]


# --- sampling --------------------------------------------------------------------------------------------------


def test_max_frames_and_stride_on_images(tmp_path):
    for i in range(10):
        write_png8(tmp_path / f"{i}.png", 10 * i)
    source = open_source(tmp_path, image_fps="30000/1001")
    values = [round(float(f[0, 0, 0]) * 255) for f in source.frames(stride=3)]
    assert values == [0, 30, 60, 90]
    assert [round(float(f[0, 0, 0]) * 255) for f in source.frames(max_frames=2, stride=3)] == [0, 30]
    assert source.frame_count(stride=3) == 4 and source.frame_count(max_frames=2, stride=3) == 2
    assert source.rate == Fraction(30000, 1001)
    assert source.output_rate(3) == Fraction(10000, 1001)


def test_bad_sampling_arguments(tmp_path):
    source = open_source(write_png8(tmp_path / "a.png", 1))
    with pytest.raises(DVDError, match="stride"):
        source.frames(stride=0)
    with pytest.raises(DVDError, match="max_frames"):
        source.frames(max_frames=0)


# --- videos ----------------------------------------------------------------------------------------------------


def test_real_video_header_and_first_frames():
    davis = shared_video("davis_rollercoaster.mp4")
    source = open_source(davis)
    assert (source.kind, source.name) == ("video", "davis_rollercoaster")
    assert (source.num_frames, source.num_frames_exact, source.fps, source.size) == (70, True, 24.0, (540, 960))
    assert source.frame_count(stride=4) == 18 and source.output_rate(4) == 6
    frames = list(source.frames(max_frames=3, stride=2))
    with av.open(str(davis)) as container:
        direct = [f.to_ndarray(format="rgb24") for _, f in zip(range(5), container.decode(video=0))]
    assert len(frames) == 3
    for frame, index in zip(frames, [0, 2, 4]):
        assert frame.dtype == np.float32 and frame.shape == (540, 960, 3)
        np.testing.assert_array_equal(frame, direct[index].astype(np.float32) / 255)


def test_fractional_rate_and_estimated_count_for_mkv(tmp_path):
    path = write_video(tmp_path / "clip.mkv", flat_frames(7), rate=Fraction(30000, 1001))
    source = open_source(path)
    assert source.rate == Fraction(30000, 1001)
    assert (source.num_frames, source.num_frames_exact) == (7, False)  # Matroska stores no count: from duration
    assert len(list(source.frames())) == 7


def test_rotation_metadata_is_applied(tmp_path):
    stored = np.zeros((1, 48, 64, 3), dtype=np.uint8)
    stored[0, :16, :16] = 255  # white block at the stored top-left
    # -90 = displayed turned 90 degrees clockwise (a phone held upright): stored top-left ends at the top-right.
    source = open_source(write_video(tmp_path / "phone.mp4", stored, rotation=-90))
    assert source.size == (64, 48)
    (frame,) = source.frames()
    assert frame.shape == (64, 48, 3)
    assert frame[4:12, -12:-4].mean() > 0.9 and frame[4:12, 4:12].mean() < 0.1


# --- many inputs -----------------------------------------------------------------------------------------------


def test_folder_of_videos_and_list_file(tmp_path):
    videos = tmp_path / "videos"
    videos.mkdir()
    write_video(videos / "shot10.mp4", flat_frames(2))
    write_video(videos / "shot9.mp4", flat_frames(3))
    frames = tmp_path / "frames"
    frames.mkdir()
    write_png8(frames / "0.png", 5)
    listing = tmp_path / "lists" / "inputs.txt"
    listing.parent.mkdir()
    listing.write_text("# my inputs\n\n../videos/shot9.mp4\n   \n../frames\n")
    assert resolve_inputs([videos]) == [videos / "shot9.mp4", videos / "shot10.mp4"]
    sources = open_sources([listing])
    assert [(s.name, s.kind, s.num_frames) for s in sources] == [("shot9", "video", 3), ("frames", "images", 1)]


def test_duplicate_output_names_are_refused(tmp_path):
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    first = write_png8(tmp_path / "a" / "clip.png", 1)
    second = write_png8(tmp_path / "b" / "clip.png", 2)
    with pytest.raises(DVDError, match="both write to 'clip/'"):
        resolve_inputs([first, second])
    with pytest.raises(DVDError, match="given twice"):
        resolve_inputs([first, first])


def test_list_file_errors(tmp_path):
    empty = tmp_path / "empty.txt"
    empty.write_text("# nothing\n\n")
    with pytest.raises(DVDError, match="lists no inputs"):
        resolve_inputs([empty])
    missing = tmp_path / "missing.txt"
    missing.write_text("nowhere.mp4\n")
    with pytest.raises(DVDError, match="line 1 of"):
        resolve_inputs([missing])
    nested = tmp_path / "nested.txt"
    nested.write_text("empty.txt\n")
    with pytest.raises(DVDError, match="cannot be nested"):
        resolve_inputs([nested])


# --- errors: one line each, naming the problem -----------------------------------------------------------------


def assert_one_line_error(target, fragment: str) -> None:
    with pytest.raises(DVDError) as caught:
        open_sources([target])
    message = str(caught.value)
    assert fragment in message and "\n" not in message


def test_missing_path(tmp_path):
    assert_one_line_error(tmp_path / "nope.mp4", "input not found")


def test_text_file_renamed_mp4(tmp_path):
    fake = tmp_path / "notes.mp4"
    fake.write_text("these are not video frames\n" * 20)
    assert_one_line_error(fake, "cannot decode")


def test_zero_frame_videos(tmp_path):
    no_stream = tmp_path / "empty.mp4"  # the mp4 muxer drops a video track that got no frames
    with av.open(str(no_stream), "w") as container:
        stream = container.add_stream("libx264", rate=24)
        stream.height, stream.width, stream.pix_fmt = 48, 64, "yuv420p"
        container.start_encoding()
    assert_one_line_error(no_stream, "no video stream")
    empty_stream = tmp_path / "empty.avi"  # AVI keeps the track: a stream that decodes to nothing
    with av.open(str(empty_stream), "w") as container:
        stream = container.add_stream("mpeg4", rate=24)
        stream.height, stream.width, stream.pix_fmt = 48, 64, "yuv420p"
        container.start_encoding()
    assert_one_line_error(empty_stream, "video stream is empty")


def test_folder_without_images(tmp_path):
    (tmp_path / "readme.md").write_text("no pictures here")
    assert_one_line_error(tmp_path, "no images found")


def test_folder_with_images_and_videos(tmp_path):
    write_png8(tmp_path / "0.png", 1)
    write_video(tmp_path / "clip.mp4", flat_frames(1))
    assert_one_line_error(tmp_path, "both images and videos")


def test_mixed_image_sizes_name_the_first_offender(tmp_path):
    write_png8(tmp_path / "f1.png", 1, size=(6, 8))
    write_png8(tmp_path / "f2.png", 1, size=(6, 8))
    write_png8(tmp_path / "f10.png", 1, size=(7, 8))
    write_png8(tmp_path / "f11.png", 1, size=(9, 9))
    assert_one_line_error(tmp_path, "f10.png is 8x7 but f1.png is 8x6")


def test_unsupported_extension(tmp_path):
    odd = tmp_path / "depth.xyz"
    odd.write_bytes(b"\0" * 16)
    assert_one_line_error(odd, "unsupported input")


def test_corrupt_image(tmp_path):
    bad = tmp_path / "broken.png"
    bad.write_bytes(b"not a png at all")
    assert_one_line_error(bad, "cannot read image")


# --- damage, time stamps and flag names in messages --------------------------------------------------------------


def faststart_noise(path: Path, count: int = 20) -> Path:
    rng = np.random.default_rng(0)
    with av.open(str(path), "w", options={"movflags": "faststart"}) as container:
        stream = container.add_stream("libx264", rate=24)
        stream.width, stream.height, stream.pix_fmt = 64, 48, "yuv420p"
        for _ in range(count):
            frame = av.VideoFrame.from_ndarray(rng.integers(0, 256, (48, 64, 3), dtype=np.uint8), format="rgb24")
            container.mux(stream.encode(frame))
        container.mux(stream.encode())
    return path


def halve(path: Path) -> Path:
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    return path


def test_truncated_video_fails_up_front_or_keeps_what_decodes(tmp_path):
    path = halve(faststart_noise(tmp_path / "cut.mp4"))
    with pytest.raises(DVDError, match="cut.mp4 is truncated.*--allow-damaged"):
        open_source(path)
    source = open_source(path, allow_damaged=True)
    kept = len(list(source.frames()))
    assert 0 < kept < source.num_frames == 20
    assert any(f"only {kept} decode" in problem for problem in source.damage), source.damage


@pytest.mark.parametrize("suffix", [".jpg", ".png", ".exr"])
def test_truncated_image_names_the_file(tmp_path, suffix):
    path = tmp_path / f"half{suffix}"
    pixels = np.random.default_rng(0).integers(0, 256, (48, 64, 3), dtype=np.uint8)
    if suffix == ".exr":
        from dvd.io.writers import ExrWriter

        with ExrWriter(tmp_path) as writer:
            writer.write(pixels[..., 0].astype(np.float32))
        (tmp_path / "depth_exr" / "000000.exr").rename(path)
    else:
        Image.fromarray(pixels).save(path)
    halve(path)
    with pytest.raises(DVDError, match=f"half{suffix}"):
        list(open_source(path).frames())


def test_truncated_jpeg_kept_when_allowed(tmp_path):
    Image.fromarray(np.random.default_rng(0).integers(0, 256, (48, 64, 3), dtype=np.uint8)).save(tmp_path / "a.jpg")
    source = open_source(halve(tmp_path / "a.jpg"), allow_damaged=True)
    assert len(list(source.frames())) == 1 and "a.jpg" in source.damage[0]


def test_variable_frame_rate_times_are_kept(tmp_path):
    times_ms = [0, 100, 150, 400, 500, 1500]
    path = tmp_path / "vfr.mp4"
    with av.open(str(path), "w") as container:
        stream = container.add_stream("libx264", rate=10)
        stream.width, stream.height, stream.pix_fmt = 64, 48, "yuv420p"
        stream.time_base = stream.codec_context.time_base = Fraction(1, 1000)
        for index, ms in enumerate(times_ms):
            frame = av.VideoFrame.from_ndarray(flat_frames(len(times_ms))[index], format="rgb24")
            frame.pts = ms
            container.mux(stream.encode(frame))
        container.mux(stream.encode())
    source = open_source(path)
    assert [float(t) for t, _ in source.timed_frames()] == pytest.approx([ms / 1000 for ms in times_ms])
    assert [float(t) for t, _ in source.timed_frames(stride=2)] == pytest.approx([0, 0.15, 0.5])


def test_flag_names_in_messages(tmp_path):
    source = open_source(write_png8(tmp_path / "a.png", 1))
    with pytest.raises(DVDError, match="--max-frames"):
        source.frame_count(max_frames=0)
    with pytest.raises(DVDError, match="--stride"):
        source.frame_count(stride=0)
