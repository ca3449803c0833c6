"""The 8/16-bit outputs' disparity range: the whole video by default (a second pass over disparity.npy), the first
window where output must stream (--colour-range first-window); meta.json records the rule."""

from __future__ import annotations

import json
from pathlib import Path

import av
import numpy as np
import pytest
from model_stub import StandInPipe, stub_model
from PIL import Image

from dvd import cli
from dvd.io.writers import DisparityRange
from dvd.jobs import colour_range
from dvd.jobs.colour_range import RangeSample, range_stride, video_range


def brightening(count: int = 40, size: tuple[int, int] = (48, 80)) -> np.ndarray:
    """A fixed pattern that brightens twentyfold over the clip: disparity = brightness grows far beyond frame 0's."""
    y, x = np.mgrid[0 : size[0], 0 : size[1]] / np.float32(max(size))
    pattern = np.stack([0.5 + 0.5 * np.sin(7 * x), 0.5 + 0.5 * np.cos(5 * y), 0.5 + 0.5 * np.sin(4 * (x + y))], -1)
    gains = np.linspace(0.05, 1.0, count, dtype=np.float32)
    return (pattern[None] * gains[:, None, None, None]).astype(np.float32)


def write_video(path: Path, frames: np.ndarray) -> Path:
    with av.open(str(path), "w") as container:
        stream = container.add_stream("libx264", rate=24, options={"crf": "12"})
        stream.height, stream.width, stream.pix_fmt = frames.shape[1], frames.shape[2], "yuv420p"
        for frame in frames:
            rgb = np.rint(frame * 255).astype(np.uint8)
            container.mux(stream.encode(av.VideoFrame.from_ndarray(rgb, format="rgb24")))
        container.mux(stream.encode())
    return path


class FakePipe(StandInPipe):
    """Stands in for DVDPipeline: disparity = frame brightness, so later frames have a wider range."""

    weights_id = "fake"
    weights_kind = None  # a stand-in, not the proof model (whose runs print a note)

    @staticmethod
    def predict_windows(windows: list[np.ndarray]) -> list[np.ndarray]:
        return [w.mean(axis=-1) for w in windows]


@pytest.fixture
def dvd(monkeypatch):
    monkeypatch.setattr(cli, "COMMAND_MODULES", sorted(set(cli.COMMAND_MODULES) | {"predict"}))
    stub_model(monkeypatch, lambda cls, *a, **k: FakePipe())
    return lambda *argv: cli.main(["predict", *map(str, argv)])


def decoded_png16(folder: Path, meta: dict) -> np.ndarray:
    codes = np.stack([np.asarray(Image.open(path)) for path in sorted(folder.glob("*.png"))]).astype(np.float64)
    return meta["lo"] + codes / 65535 * (meta["hi"] - meta["lo"]), codes


def video_frames(path: Path) -> int:
    with av.open(str(path)) as container:
        return sum(1 for _ in container.decode(video=0))


def test_the_whole_video_range_holds_what_comes_later():
    disparity = np.concatenate([np.full((10, 8, 8), 0.5), np.linspace(0, 10, 30 * 64).reshape(30, 8, 8)])
    disparity[:10] += np.linspace(0, 1, 64).reshape(8, 8)
    whole = video_range(disparity.astype(np.float32))
    first = DisparityRange.fit(disparity[:10])
    assert whole.lo < 0.2 and whole.hi > 9.8
    assert first.hi < 1.7  # the first-window rule would clip everything above


def test_the_range_reads_a_fixed_subsample_and_memmaps_alike(tmp_path, monkeypatch):
    rng = np.random.default_rng(3)
    disparity = rng.gamma(2.0, 1.0, (50, 60, 70)).astype(np.float32)
    np.save(tmp_path / "d.npy", disparity)
    mapped = np.load(tmp_path / "d.npy", mmap_mode="r")
    assert video_range(mapped) == video_range(disparity)
    monkeypatch.setattr(colour_range, "RANGE_FRAMES", 5)
    monkeypatch.setattr(colour_range, "RANGE_PIXELS", 100)
    # At most 5 of 50 frames: every 16th (every 8th would be 7 frames), every 6th pixel each way
    # (sqrt(4200 / 100) = 6.5 -> 6).
    assert video_range(mapped) == DisparityRange.fit(disparity[[0, 16, 32, 48], ::6, ::6])


@pytest.mark.parametrize("count", [1, 5, 6, 7, 11, 12, 13, 40])
def test_frames_sampled_as_they_pass_give_the_range_of_the_finished_video(monkeypatch, count):
    """`RangeSample` sees each frame once, before the length is known, and keeps at most RANGE_FRAMES grids; at the
    end it holds exactly the frames `video_range` reads from the whole video."""
    monkeypatch.setattr(colour_range, "RANGE_FRAMES", 3)
    disparity = np.random.default_rng(count).gamma(2.0, 1.0, (count, 20, 30)).astype(np.float32)
    sample = RangeSample((20, 30))
    most = 0
    for index, frame in enumerate(disparity):
        sample.add(index, frame)
        most = max(most, len(sample._samples))
    assert most <= 3
    assert sample.range(count) == video_range(disparity)
    stride = range_stride(count)
    assert -(-count // stride) <= 3 and (stride == 1 or -(-count // (stride // 2)) > 3)
    with pytest.raises(ValueError, match="not every"):
        sample.range(count + stride)  # frames it never saw


def test_the_range_holds_no_whole_frame_it_has_read():
    """Each frame read for the range is freed once subsampled: a view of it would keep RANGE_FRAMES whole frames."""
    import weakref

    alive: set[int] = set()
    most = 0

    class Frames:
        shape = (20, 64, 64)

        def __getitem__(self, index: int) -> np.ndarray:
            nonlocal most
            frame = np.full(self.shape[1:], float(index), np.float32)
            alive.add(index)
            weakref.finalize(frame, alive.discard, index)
            most = max(most, len(alive))
            return frame

    assert video_range(Frames()) == video_range(np.arange(20, dtype=np.float32)[:, None, None] * np.ones((64, 64)))
    assert most == 1


SETTINGS = ["--height", "32", "--width", "48", "--window", "9", "--overlap", "3", "--cuts", "off", "--quiet"]


def test_predict_maps_the_whole_video_by_default(dvd, tmp_path):
    frames = brightening()
    path = write_video(tmp_path / "dawn.mp4", frames)
    assert dvd(path, "-o", tmp_path / "out", *SETTINGS, "--save", "npy,png16,mp4,sbs,exr") == 0
    folder = tmp_path / "out" / "dawn"
    meta = json.loads((folder / "meta.json").read_text())
    assert meta["colour_range"]["rule"] == "video"
    assert list(meta["outputs"]) == ["npy", "png16", "mp4", "sbs", "exr"]  # in the order asked
    png = meta["outputs"]["png16"]
    assert {(meta["outputs"][name]["lo"], meta["outputs"][name]["hi"]) for name in ("png16", "mp4", "sbs")} == {
        (png["lo"], png["hi"])
    }
    disparity = np.load(folder / "disparity.npy")
    values, codes = decoded_png16(folder / "depth_png16", png)
    assert len(values) == len(disparity) == 40
    assert np.mean((codes == 0) | (codes == 65535)) < 0.01  # the percentiles with headroom clip next to nothing
    inside = (disparity >= png["lo"]) & (disparity <= png["hi"])
    assert np.abs(values - disparity)[inside].max() <= (png["hi"] - png["lo"]) / 65535
    assert video_frames(folder / "depth_vis.mp4") == video_frames(folder / "depth_sbs.mp4") == 40
    assert len(list((folder / "depth_exr").iterdir())) == 40


def test_first_window_rule_streams_and_clips_later_frames(dvd, tmp_path):
    path = write_video(tmp_path / "dawn.mp4", brightening())
    assert dvd(path, "-o", tmp_path / "out", *SETTINGS, "--save", "png16,mp4", "--colour-range", "first-window") == 0
    folder = tmp_path / "out" / "dawn"
    meta = json.loads((folder / "meta.json").read_text())
    assert meta["colour_range"]["rule"] == "first-window"
    _, codes = decoded_png16(folder / "depth_png16", meta["outputs"]["png16"])
    assert np.mean(codes[-10:] == 65535) > 0.5  # the frames after the first window are saturated
    assert video_frames(folder / "depth_vis.mp4") == 40


def test_no_ranged_output_no_rule_and_a_bad_rule_is_refused(dvd, tmp_path, capsys):
    path = write_video(tmp_path / "dawn.mp4", brightening(12))
    assert dvd(path, "-o", tmp_path / "out", *SETTINGS, "--save", "npy") == 0
    assert "colour_range" not in json.loads((tmp_path / "out" / "dawn" / "meta.json").read_text())
    with pytest.raises(SystemExit):
        dvd(path, "-o", tmp_path / "bad", "--colour-range", "shot")
    assert "--colour-range" in capsys.readouterr().err
