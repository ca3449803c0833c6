"""Shot-aware stitching: cuts found as frames stream in, one fresh stream per shot, failed seams flagged and joined
as cuts, and the shots in meta.json, the summary line and the Python API."""

from __future__ import annotations

import itertools
import json
from pathlib import Path

import av
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from media import shared_video
from model_stub import StandInPipe, stub_model

from dvd import cli
from dvd.data.raster import resize_frames
from dvd.engine.shots import Cut, SeamJudge, ShotDetector, ShotLog, parse_cut_frames, split_shots
from dvd.engine.stitch import Stitcher
from dvd.engine.video import VideoEngine, VideoSettings
from dvd.engine.windows import Window
from dvd.errors import DVDError
from dvd.io.readers import open_source
from dvd.pipeline.dvd_pipeline import DVDPipeline


def scene(seed: int, count: int, size: tuple[int, int] = (48, 64)) -> np.ndarray:
    """`count` frames of one shot: a smooth random colour field of its own drifting one pixel a frame."""
    rng = np.random.default_rng(seed)
    coarse = rng.random((1, 4, 4 + 4 * count // size[1], 3), dtype=np.float32)
    field = resize_frames(coarse, (size[0], size[1] + count))[0]
    return np.stack([field[:, index : index + size[1]] for index in range(count)])


def video_of(lengths: list[int], size: tuple[int, int] = (48, 64)) -> np.ndarray:
    """Shots of `lengths` frames, each a different scene: hard cuts at the cumulative lengths."""
    return np.concatenate([scene(seed, count, size) for seed, count in enumerate(lengths)])


def cut_indices(lengths: list[int]) -> list[int]:
    return list(np.cumsum(lengths)[:-1])


def write_video(path: Path, frames: np.ndarray, fps: int = 24) -> Path:
    with av.open(str(path), "w") as container:
        stream = container.add_stream("libx264", rate=fps, options={"crf": "18"})
        stream.height, stream.width, stream.pix_fmt = frames.shape[1], frames.shape[2], "yuv420p"
        for frame in frames:
            rgb = np.rint(np.clip(frame, 0, 1) * 255).astype(np.uint8)
            container.mux(stream.encode(av.VideoFrame.from_ndarray(rgb, format="rgb24")))
        container.mux(stream.encode())
    return path


def brightness(windows: list[np.ndarray]) -> list[np.ndarray]:
    """A stand-in model whose windows agree exactly where they overlap: disparity = channel mean."""
    return [w.mean(axis=-1) for w in windows]


def run(frames: np.ndarray, predict=brightness, **settings) -> tuple[np.ndarray, VideoEngine, list]:
    reports: list = []
    engine = VideoEngine(predict, VideoSettings(**settings), on_window=reports.append)
    out = list(engine.stitched(iter(frames)))
    return (np.stack(out) if out else np.empty((0,), np.float32)), engine, reports


def test_the_detector_finds_planted_cuts_in_a_decoded_video(tmp_path):
    lengths = [20, 15, 25]
    path = write_video(tmp_path / "cuts.mp4", video_of(lengths, (90, 160)))
    detector = ShotDetector("auto")
    cuts = [cut for frame in open_source(path).frames() if (cut := detector.observe(frame)) is not None]
    assert [cut.index for cut in cuts] == [0, *cut_indices(lengths)]
    assert [cut.cause for cut in cuts] == ["start", "detected", "detected"]
    assert all(cut.score > detector.threshold for cut in cuts[1:])


def test_each_shot_is_stitched_as_a_video_of_its_own():
    lengths = [23, 9, 30]
    frames = video_of(lengths)
    rng = np.random.default_rng(1)

    def noisy(windows: list[np.ndarray]) -> list[np.ndarray]:
        # Windows that disagree a little, so that every fit and cross-fade matters.
        return [w.mean(axis=-1) * rng.uniform(0.8, 1.2) + rng.uniform(0, 0.1) for w in windows]

    rng = np.random.default_rng(1)
    out, engine, reports = run(frames, noisy, window=8, overlap=3, cuts="auto")
    cuts = cut_indices(lengths)
    assert not any(r.window.start < cut < r.window.end for r in reports for cut in cuts)  # no window spans a cut
    assert [r.index for r in reports] == list(range(len(reports)))
    assert engine.shots.as_meta(len(out)) == [
        {"start": 0, "end": 23, "score": pytest.approx(engine.shots.entries[0].score), "cause": "start"},
        {"start": 23, "end": 32, "score": engine.shots.entries[1].score, "cause": "detected"},
        {"start": 32, "end": 62, "score": engine.shots.entries[2].score, "cause": "detected"},
    ]
    rng = np.random.default_rng(1)  # the same model draws, shot by shot, with cuts off
    alone = [run(part, noisy, window=8, overlap=3, cuts="off")[0] for part in np.split(frames, cuts)]
    np.testing.assert_array_equal(out, np.concatenate(alone))


def test_cuts_off_is_one_shot_and_given_cut_frames_always_cut():
    frames = video_of([12, 12])
    _, engine, reports = run(frames, window=6, overlap=2, cuts="off")
    assert engine.shots.as_meta(24) == [{"start": 0, "end": 24, "score": None, "cause": "start"}]
    assert any(r.window.start < 12 < r.window.end for r in reports)
    _, engine, _ = run(frames, window=6, overlap=2, cuts="off", cut_frames=(5, 30))
    assert [(s["start"], s["end"], s["cause"]) for s in engine.shots.as_meta(24)] == [(0, 5, "start"), (5, 24, "given")]
    _, engine, _ = run(frames, window=6, overlap=2)  # the engine's own default (None) is off
    assert len(engine.shots.as_meta(24)) == 1


@settings(max_examples=40, deadline=None)
@given(
    total=st.integers(1, 60),
    window=st.integers(2, 9),
    overlap_fraction=st.floats(0, 0.9),
    stitch=st.sampled_from(["openworld", "benchmark", "global"]),
    cuts=st.lists(st.integers(1, 70), max_size=6),
    bad_window=st.none() | st.integers(1, 12),
)
def test_every_frame_once_in_order_for_every_batch_size(total, window, overlap_fraction, stitch, cuts, bad_window):
    # One still picture (so that the detector finds no cuts of its own) whose pixel [0, 0] is the frame index.
    frames = np.repeat(np.random.default_rng(total).random((1, 4, 5, 3), dtype=np.float32), total, axis=0)
    overlap = min(int(overlap_fraction * window), window - 1)
    fed: list[int] = []

    def tagged(windows: list[np.ndarray]) -> list[np.ndarray]:
        # Every window agrees exactly with its neighbours, and pixel [0, 0] carries the frame's own index, so any
        # frame out of place shows; window `bad_window` (counted over the video) is noise, a failed seam.
        out = []
        for w in windows:
            out.append(noise(w.shape[:3]) if len(seen) == bad_window else w[..., 0] + 1)
            seen.append(len(seen))
        return out

    indexed = frames.copy()
    indexed[:, 0, 0, 0] = np.arange(total)
    outputs = []
    for batch in (1, 2, 3):
        seen: list[int] = []
        out, engine, reports = run(
            indexed,
            tagged,
            window=window,
            overlap=overlap,
            stitch=stitch,
            batch_windows=batch,
            cut_frames=tuple(sorted(set(cuts))),
            cuts="auto" if bad_window else "off",
        )
        outputs.append(out)
        fed.append(len(out))
        shots = engine.shots.as_meta(len(out))
        given = [s["start"] for s in shots if s["cause"] != "seam"]
        assert given == [0, *sorted({c for c in cuts if c < total})]
        assert [s["end"] for s in shots][-1] == total and all(s["end"] > s["start"] for s in shots)
        assert all(a["end"] == b["start"] for a, b in itertools.pairwise(shots))
        assert not any(r.window.start < c < r.window.end for r in reports for c in cuts)
    assert fed == [total] * 3
    for out in outputs[1:]:
        np.testing.assert_array_equal(out, outputs[0])
    if bad_window is None or bad_window >= len(seen):
        np.testing.assert_allclose(outputs[0][:, 0, 0], np.arange(total) + 1, rtol=1e-4, atol=1e-3)  # in order


def spoil(bad_call: int):
    """Brightness, except window `bad_call` (counting from 0), which comes back as noise: no scale and shift make
    it agree with its neighbour, as when a shot changes inside a window."""
    calls = [0]

    def predict(windows: list[np.ndarray]) -> list[np.ndarray]:
        out = []
        for w in windows:
            disparity = w.mean(axis=-1)
            out.append(noise(disparity.shape) if calls[0] == bad_call else disparity)
            calls[0] += 1
        return out

    return predict


def noise(shape: tuple[int, ...]) -> np.ndarray:
    return np.random.default_rng(7).random(shape, dtype=np.float32)


def test_a_failed_seam_is_flagged_and_with_cuts_auto_becomes_a_cut():
    frames = np.stack([np.tile(np.linspace(0, 1, 64, dtype=np.float32)[None, :, None], (48, 1, 3)) * 0.9] * 40)
    frames += np.linspace(0, 0.1, 40, dtype=np.float32)[:, None, None, None]
    out, engine, reports = run(frames, spoil(4), window=8, overlap=3, stitch="benchmark", cuts="auto")
    # The noisy window fails its seam with the window before and with the one after: both become cuts.
    assert [(seam["window"], seam["recovered"]) for seam in engine.failed_seams] == [([20, 28], True), ([25, 33], True)]
    assert all(seam["residual"] > 0.5 and seam["median"] == 0 for seam in engine.failed_seams)
    assert reports[4].seam_cut == 23 and reports[4].overlap_relative == engine.failed_seams[0]["residual"]
    shots = [(s["start"], s["end"], s["cause"]) for s in engine.shots.as_meta(40)]
    assert shots == [(0, 23, "start"), (23, 28, "seam"), (28, 40, "seam")]
    np.testing.assert_array_equal(out[23:28], noise((8, 48, 64))[3:])  # the new shot at the window's own scale
    np.testing.assert_allclose(out[:20], frames[:20].mean(axis=-1), atol=1e-6)
    np.testing.assert_allclose(out[33:], frames[33:].mean(axis=-1), atol=1e-6)

    out, engine, _ = run(frames, spoil(4), window=8, overlap=3, stitch="benchmark", cuts="off")
    assert engine.failed_seams[0]["window"] == [20, 28] and not any(seam["recovered"] for seam in engine.failed_seams)
    assert len(engine.shots.as_meta(30)) == 1


def test_the_seam_judge_follows_the_running_median():
    judge = SeamJudge(factor=4, floor=0.5)
    assert judge.judge(1.1) and judge.last_median is None  # no median yet: worse than a constant fit fails
    assert not judge.judge(0.9) and not judge.judge(0.1)
    assert judge.last_median is None and list(judge.recent) == [1.1, 0.9, 0.1]
    assert not judge.judge(3.6) and judge.last_median == pytest.approx(0.9)  # 4 x 0.9 = 3.6 is the bar
    assert judge.judge(4.5) and judge.last_median == pytest.approx(1.0)  # 3.6 counted: median 1.0
    judge = SeamJudge(factor=4, floor=0.5, recent=[0.01] * 3)
    assert not judge.judge(0.45)  # under the floor, however far above the median
    assert SeamJudge(recover=False).judge(5.0) is False


def test_a_detector_rebuilt_from_its_state_scores_as_the_original():
    frames = video_of([10, 10])
    whole = ShotDetector("auto", cut_frames=(15,))
    cuts = [whole.observe(frame) for frame in frames]
    first = ShotDetector("auto", cut_frames=(15,))
    for frame in frames[:10]:
        first.observe(frame)
    state = first.state()
    again = ShotDetector("auto", cut_frames=(15,), state=state)
    assert [again.observe(frame) for frame in frames[10:]] == cuts[10:]
    assert state.previous.dtype == np.uint8 and max(state.previous.shape) <= 160


def test_split_shots_holds_one_frame_between_shots():
    frames = video_of([10, 4, 9])  # a cut closer than MIN_SHOT_FRAMES (8) to the last one is not taken
    shots = [(cut.index, len(list(part))) for cut, part in split_shots(iter(frames), ShotDetector("auto"))]
    assert shots == [(0, 10), (10, 13)]
    assert list(split_shots(iter([]), ShotDetector("auto"))) == []


def test_shot_log_orders_late_seams_and_closes_at_the_frame_count():
    log = ShotLog()
    for cut in (Cut(0, "start"), Cut(40, "detected", 60.0), Cut(25, "seam", 1.2)):
        log.add(cut)
    assert log.as_meta(50) == [
        {"start": 0, "end": 25, "score": None, "cause": "start"},
        {"start": 25, "end": 40, "score": 1.2, "cause": "seam"},
        {"start": 40, "end": 50, "score": 60.0, "cause": "detected"},
    ]
    assert [c.index for c in log.failed_seams] == [25]


def test_bad_cut_settings_are_one_line_errors():
    assert parse_cut_frames(" 480,120,120 ") == (120, 480)
    assert parse_cut_frames("") == ()
    for text in ("12,x", "0", "-3"):
        with pytest.raises(DVDError, match="--cut-frames"):
            parse_cut_frames(text)
    with pytest.raises(DVDError, match="--cuts"):
        VideoSettings(cuts="sometimes").validate()
    with pytest.raises(DVDError, match="--cut-threshold"):
        VideoSettings(cut_threshold=0).validate()


def test_cut_detection_defaults_to_videos_only():
    assert VideoSettings().for_input("video").cuts == "auto"
    assert VideoSettings().for_input("images").cuts == "off"
    assert VideoSettings(cuts="auto").for_input("images").cuts == "auto"
    assert VideoSettings(cuts="off").for_input("video").cuts == "off"


class FakePipe(StandInPipe):
    """Stands in for DVDPipeline in `dvd predict`: disparity = frame brightness."""

    weights_id = "fake"
    weights_kind = None  # a stand-in, not the proof model (whose runs print a note)
    predict_windows = staticmethod(brightness)


@pytest.fixture
def dvd(monkeypatch):
    monkeypatch.setattr(cli, "COMMAND_MODULES", sorted(set(cli.COMMAND_MODULES) | {"predict"}))
    stub_model(monkeypatch, lambda cls, *a, **k: FakePipe())
    return lambda *argv: cli.main(["predict", *map(str, argv)])


SMALL = ["--height", "32", "--width", "48", "--window", "9", "--overlap", "3", "--quiet"]


@pytest.mark.smoke
def test_predict_records_shots_in_meta_and_the_summary(dvd, tmp_path, capsys):
    path = write_video(tmp_path / "edit.mp4", video_of([20, 16], (90, 160)))
    assert dvd(path, "-o", tmp_path / "out", *SMALL, "--save", "npy") == 0
    meta = json.loads((tmp_path / "out" / "edit" / "meta.json").read_text())
    assert [(s["start"], s["end"], s["cause"]) for s in meta["shots"]] == [(0, 20, "start"), (20, 36, "detected")]
    assert meta["cuts"] == "auto" and meta["failed_seams"] == []
    assert ", 2 shot(s)" in capsys.readouterr().out

    assert dvd(path, "-o", tmp_path / "off", *SMALL, "--cuts", "off", "--cut-frames", "7", "--stride", "2") == 0
    meta = json.loads((tmp_path / "off" / "edit" / "meta.json").read_text())
    assert [(s["start"], s["end"]) for s in meta["shots"]] == [(0, 7), (7, 18)]  # output frames, after --stride
    assert meta["cuts"] == "off" and meta["cut_frames"] == [7]


def test_the_python_api_takes_the_same_cut_settings(tiny_weights, tmp_path, one_torch_thread):
    pipe = DVDPipeline.from_pretrained(tiny_weights)
    frames = video_of([9, 6], (32, 64))
    kwargs = {"height": 32, "width": 64, "window": 5, "overlap": 2, "stitch": "benchmark"}
    streamed = np.stack(list(pipe.stream(frames, cuts="auto", **kwargs)))
    np.testing.assert_array_equal(streamed, pipe(frames, cuts="auto", **kwargs).prediction)

    # A model whose windows differ in scale only: every seam fits exactly, and only a cut changes the result.
    pipe.predict_windows = lambda windows: [w.mean(axis=-1) * (1 + w.mean()) for w in windows]
    whole = pipe(frames, cut_frames=(9,), **kwargs).prediction
    parts = [pipe(frames[:9], **kwargs).prediction, pipe(frames[9:], **kwargs).prediction]
    np.testing.assert_allclose(whole, np.concatenate(parts), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(pipe(frames, cuts="auto", **kwargs).prediction, whole, rtol=1e-5, atol=1e-6)
    assert not np.allclose(pipe(frames, **kwargs).prediction, whole)  # arrays: no detection unless asked


def test_a_real_cut_between_the_shared_clips_is_found_at_the_right_frame(dvd, tmp_path):
    size, each = (144, 256), 20
    parts = []
    for name in ("davis_rollercoaster.mp4", "tokyo_walk.mp4"):
        source = open_source(shared_video(name))
        parts.append(resize_frames(np.stack(list(source.frames(each))), size))
    path = write_video(tmp_path / "davis_tokyo.mp4", np.concatenate(parts))
    assert dvd(path, "-o", tmp_path / "out", *SMALL, "--save", "npy") == 0
    meta = json.loads((tmp_path / "out" / "davis_tokyo" / "meta.json").read_text())
    assert [(s["start"], s["end"], s["cause"]) for s in meta["shots"]] == [
        (0, each, "start"),
        (each, 2 * each, "detected"),
    ]
    assert meta["shots"][1]["score"] > 2 * meta["cut_threshold"]


def test_windows_report_whole_video_indices():
    frames = video_of([10, 10])
    _, _, reports = run(frames, window=6, overlap=2, cuts="auto")
    assert [tuple(r.window) for r in reports] == [(0, 6), (4, 10), (10, 16), (14, 20)]
    assert all(isinstance(r.window, Window) for r in reports)


def test_the_stitcher_joins_a_failed_seam_without_a_fit():
    stitcher = Stitcher("benchmark", seam_judge=lambda residual: True)
    ramp = np.linspace(0, 1, 12, dtype=np.float32).reshape(1, 3, 4)
    stitcher.add(Window(0, 4), np.repeat(ramp, 4, axis=0))
    stitcher.add(Window(2, 6), np.repeat(5 - 3 * ramp, 4, axis=0))
    assert stitcher.last_seam_cut == 4 and stitcher.last_fit == (1.0, 0.0)
    out = stitcher.pop(6)
    np.testing.assert_array_equal(out[:4], np.repeat(ramp, 4, axis=0))
    np.testing.assert_array_equal(out[4:], np.repeat(5 - 3 * ramp, 2, axis=0))
