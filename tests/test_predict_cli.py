"""`dvd predict` end to end: real tiny weights on a real video and an image folder, and every bad-input path."""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

import av
import numpy as np
import pytest
from media import shared_video
from model_stub import StandInPipe, stub_model
from PIL import Image

from dvd import cli
from dvd.commands import predict
from dvd.engine.video import VideoEngine, VideoSettings
from dvd.pipeline.inputs import check_inputs

SMALL = ["--height", "32", "--width", "48"]  # 160x90 (the `clip` fixture) -> model size 32x64


pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture
def dvd(monkeypatch):
    """Run `dvd predict ...` through the real entry point; returns the exit code."""
    monkeypatch.setattr(cli, "COMMAND_MODULES", sorted(set(cli.COMMAND_MODULES) | {"predict"}))
    return lambda *argv: cli.main(["predict", *map(str, argv)])


class FakePipe(StandInPipe):
    """Stands in for DVDPipeline where the model's numbers do not matter: disparity = frame brightness."""

    weights_id = "fake"
    weights_kind = None  # a stand-in, not the proof model (whose runs print a note)

    def __init__(self, interrupt_after: int | None = None) -> None:
        self.calls = 0
        self.interrupt_after = interrupt_after

    def predict_windows(self, windows: list[np.ndarray]) -> list[np.ndarray]:
        self.calls += 1
        if self.interrupt_after is not None and self.calls > self.interrupt_after:
            raise KeyboardInterrupt
        return [w.mean(axis=-1) + 0.01 * np.arange(len(w), dtype=np.float32)[:, None, None] for w in windows]


@pytest.fixture
def fake_pipe(monkeypatch):
    pipe = FakePipe()
    stub_model(monkeypatch, lambda cls, *a, **k: pipe)
    return pipe


def leftovers(out: Path) -> list[str]:
    return sorted(p.name for p in out.iterdir() if p.name.startswith(".")) if out.exists() else []


def video_info(path: Path) -> tuple[int, float, int, int]:
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        frames = sum(1 for _ in container.decode(stream))
        return frames, float(stream.average_rate), stream.height, stream.width


def write_images(folder: Path, count: int, size: tuple[int, int] = (30, 40)) -> Path:
    folder.mkdir(parents=True)
    rng = np.random.default_rng(0)
    for index in range(count):
        Image.fromarray(rng.integers(0, 256, (*size, 3), dtype=np.uint8)).save(folder / f"f{index + 1}.png")
    return folder


@pytest.mark.smoke
def test_video_with_tiny_official_weights(clip, dvd, tiny_weights, tmp_path):
    out = tmp_path / "out"
    code = dvd(
        clip,
        "-o",
        out,
        "--weights",
        tiny_weights,
        "--max-frames",
        6,
        *SMALL,
        "--window",
        5,
        "--overlap",
        2,
        "--save",
        "png16,exr,mp4,sbs",
        "--quiet",
    )
    assert code == 0
    result = out / "clip"
    assert sorted(path.name for path in (result / "depth_exr").iterdir()) == [f"{i:06d}.exr" for i in range(6)]
    assert video_info(result / "depth_sbs.mp4") == (6, 24.0, 90, 320)
    disparity = np.load(result / "disparity.npy")
    assert disparity.shape == (6, 90, 160) and disparity.dtype == np.float32
    assert np.isfinite(disparity).all() and disparity.min() >= 0
    meta = json.loads((result / "meta.json").read_text())
    assert meta["kind"] == "disparity" and meta["fps"] == 24.0 and meta["num_frames"] == 6
    assert meta["source_size"] == [90, 160] and meta["model_size"] == [32, 64]
    assert (meta["window"], meta["overlap"], meta["stitch"]) == (5, 2, "global")
    assert str(tiny_weights) in meta["weights"]
    # The 16-bit PNGs decode back to the raw disparity through the mapping recorded in meta.json.
    png = meta["outputs"]["png16"]
    codes = np.stack([np.array(Image.open(result / "depth_png16" / f"{i:06d}.png")) for i in range(6)])
    decoded = png["lo"] + codes / 65535 * (png["hi"] - png["lo"])
    inside = (disparity > png["lo"]) & (disparity < png["hi"])
    assert inside.mean() > 0.9
    np.testing.assert_allclose(decoded[inside], disparity[inside], atol=(png["hi"] - png["lo"]) / 65535)
    assert video_info(result / "depth_vis.mp4") == (6, 24.0, 90, 160)
    assert leftovers(out) == []


@pytest.mark.smoke
def test_image_folder_with_stride_and_fps(dvd, tiny_weights, tmp_path):
    folder = write_images(tmp_path / "shots", 5)
    out = tmp_path / "out"
    assert dvd(folder, "-o", out, "--weights", tiny_weights, *SMALL, "--stride", 2, "--fps", 12, "--quiet") == 0
    disparity = np.load(out / "shots" / "disparity.npy")
    assert disparity.shape == (3, 30, 40)
    meta = json.loads((out / "shots" / "meta.json").read_text())
    assert meta["fps"] == 6.0 and meta["num_frames"] == 3 and meta["input"]["kind"] == "images"
    assert meta["model_size"] == [48, 48]  # 30x40 scaled by 1.2 to cover 32x48 -> 36x48 -> rounded up to 48x48
    assert video_info(out / "shots" / "depth_vis.mp4")[:2] == (3, 6.0)


def test_npy_equals_the_python_api(clip, dvd, fake_pipe, tmp_path):
    out = tmp_path / "out"
    assert (
        dvd(
            clip,
            "-o",
            out,
            "--max-frames",
            9,
            *SMALL,
            "--window",
            5,
            "--overlap",
            2,
            "--stitch",
            "benchmark",
            "--save",
            "npy",
            "--quiet",
        )
        == 0
    )
    frames = check_inputs(clip, max_frames=9)
    engine = VideoEngine(FakePipe().predict_windows, VideoSettings(32, 48, 5, 2, "benchmark"))
    expected = np.stack(list(engine.run(frames.frames, frames.size)))
    np.testing.assert_array_equal(np.load(out / "clip" / "disparity.npy"), expected)
    assert sorted(p.name for p in (out / "clip").iterdir()) == ["disparity.npy", "meta.json"]


def test_keep_model_size_and_side_by_side(clip, dvd, fake_pipe, tmp_path):
    out = tmp_path / "out"
    assert (
        dvd(
            clip,
            "-o",
            out,
            "--max-frames",
            4,
            *SMALL,
            "--keep-model-size",
            "--save",
            "sbs,exr",
            "--colormap",
            "gray",
            "--quiet",
        )
        == 0
    )
    result = out / "clip"
    assert np.load(result / "disparity.npy").shape == (4, 32, 64)
    assert video_info(result / "depth_sbs.mp4") == (4, 24.0, 32, 128)
    assert len(list((result / "depth_exr").glob("*.exr"))) == 4


def test_overwrite_replaces_and_its_absence_refuses(clip, dvd, fake_pipe, tmp_path, capsys):
    out = tmp_path / "out"
    args = (clip, "-o", out, "--max-frames", 2, *SMALL, "--save", "npy,mp4", "--quiet")
    assert dvd(*args) == 0
    calls = fake_pipe.calls
    assert dvd(*args) == 2
    error = capsys.readouterr().err.strip()
    assert "already exist" in error and "--overwrite" in error and len(error.splitlines()) == 1
    assert fake_pipe.calls == calls  # refused before any model work
    assert dvd(clip, "-o", out, "--max-frames", 2, *SMALL, "--save", "npy", "--quiet", "--overwrite") == 0
    assert sorted(p.name for p in (out / "clip").iterdir()) == ["disparity.npy", "meta.json"]
    assert leftovers(out) == []
    (out / "clip" / "old.txt").write_text("keep me")  # a file of the user's: the folder is no longer dvd's alone
    assert dvd(*args, "--overwrite") == 2
    assert "old.txt" in capsys.readouterr().err and (out / "clip" / "old.txt").read_text() == "keep me"


def test_ctrl_c_leaves_nothing_behind(clip, dvd, monkeypatch, tmp_path, capsys):
    """Interrupted in its first model call, before any resume point: nothing to go on from, nothing kept (later
    interrupts keep the partial output for --resume: tests/test_resume.py)."""
    pipe = FakePipe(interrupt_after=0)
    stub_model(monkeypatch, lambda cls, *a, **k: pipe)
    out = tmp_path / "out"
    assert dvd(clip, "-o", out, "--max-frames", 20, *SMALL, "--window", 5, "--overlap", 1, "--quiet") == 130
    assert "interrupted" in capsys.readouterr().err
    assert pipe.calls == 1
    assert list(out.iterdir()) == []


def bad_inputs(clip, tmp_path: Path) -> dict[str, tuple[list, str]]:
    text_video = tmp_path / "notes.mp4"
    text_video.write_text("this is not a video\n")
    empty = tmp_path / "empty"
    empty.mkdir()
    mixed = write_images(tmp_path / "mixed", 2)
    Image.fromarray(np.zeros((20, 20, 3), np.uint8)).save(mixed / "f3.png")
    blocker = tmp_path / "a_file"
    blocker.write_text("x")
    out = tmp_path / "out"
    return {
        "missing file": ([tmp_path / "nope.mp4", "-o", out], "not found"),
        "text named .mp4": ([text_video, "-o", out], "cannot decode"),
        "folder without images": ([empty, "-o", out], "no images"),
        "mixed image sizes": ([mixed, "-o", out], "sizes differ"),
        "unwritable output": ([clip, "-o", blocker / "out"], "cannot write to output folder"),
        "bad overlap": ([clip, "-o", out, "--window", 9, "--overlap", 9], "smaller than the window"),
        "bad save format": ([clip, "-o", out, "--save", "npy,gif"], "unknown --save"),
        "removed stitch preset": ([clip, "-o", out, "--stitch", "anchored"], "use --stitch global"),
    }


@pytest.mark.parametrize(
    "case",
    [
        "missing file",
        "text named .mp4",
        "folder without images",
        "mixed image sizes",
        "unwritable output",
        "bad overlap",
        "bad save format",
        "removed stitch preset",
    ],
)
def test_bad_input_is_one_clear_line_and_no_output(clip, dvd, fake_pipe, tmp_path, capsys, case):
    argv, words = bad_inputs(clip, tmp_path)[case]
    assert dvd(*argv, "--quiet") == 2
    error = capsys.readouterr().err.strip()
    assert words in error and len(error.splitlines()) == 1
    assert fake_pipe.calls == 0
    out = tmp_path / "out"
    assert not out.exists() or list(out.iterdir()) == []


def test_zero_frame_video_is_refused(dvd, fake_pipe, tmp_path, capsys):
    empty_video = tmp_path / "empty.avi"  # AVI keeps a video track that got no frames
    with av.open(str(empty_video), "w") as container:
        stream = container.add_stream("mpeg4", rate=24)
        stream.width, stream.height, stream.pix_fmt = 64, 32, "yuv420p"
        container.start_encoding()
    assert dvd(empty_video, "-o", tmp_path / "out", "--quiet") == 2
    assert "no video frames" in capsys.readouterr().err
    assert not (tmp_path / "out" / "empty").exists()


def test_help_explains_every_option(capsys):
    parser = argparse.ArgumentParser(prog="dvd")
    subparsers = parser.add_subparsers()
    predict.register(subparsers)
    with pytest.raises(SystemExit):
        parser.parse_args(["predict", "--help"])
    text = capsys.readouterr().out
    for option in [
        "--weights",
        "--device",
        "--dtype",
        "--height",
        "--width",
        "--keep-model-size",
        "--window",
        "--overlap",
        "--stitch",
        "--batch-windows",
        "--max-frames",
        "--stride",
        "--fps",
        "--save",
        "--colormap",
        "--overwrite",
        "--quiet",
        "disparity.npy",
        "meta.json",
    ]:
        assert option in text
    for action in subparsers.choices["predict"]._actions:
        assert action.help, f"{action.dest} has no help text"


@pytest.mark.slow
def test_whole_tokyo_walk_video(dvd, tiny_weights, tmp_path):
    out = tmp_path / "out"
    assert dvd(shared_video("tokyo_walk.mp4"), "-o", out, "--weights", tiny_weights, *SMALL, "--quiet") == 0
    disparity = np.load(out / "tokyo_walk" / "disparity.npy", mmap_mode="r")
    assert disparity.shape == (195, 720, 1280)
    meta = json.loads((out / "tokyo_walk" / "meta.json").read_text())
    assert meta["fps"] == 15.0 and meta["num_frames"] == 195 and meta["model_size"] == [32, 64]
    assert video_info(out / "tokyo_walk" / "depth_vis.mp4") == (195, 15.0, 720, 1280)


def test_cpu_warning_only_for_large_models(monkeypatch: pytest.MonkeyPatch):
    from dvd.jobs import batch
    from dvd.pipeline.dvd_pipeline import DVDPipeline
    from dvd.weights.tiny import build_tiny_model

    pipe = DVDPipeline.from_model(build_tiny_model(0))
    assert batch.model_notes(pipe, quiet=False) == []
    monkeypatch.setattr(batch, "CPU_PATIENCE_PARAMETERS", 1000)
    assert batch.model_notes(pipe, quiet=True) == []
    (warning,) = batch.model_notes(pipe, quiet=False)
    assert "on the CPU: expect minutes per window" in warning


def test_processes_share_the_inputs(tiny_weights, tmp_path):
    """Under torchrun (or accelerate launch) each process takes every N-th input; the files equal a single run's."""
    inputs = [write_images(tmp_path / "in" / f"seq{i}", 3) for i in range(3)]
    common = ["--weights", str(tiny_weights), *SMALL, "--quiet"]
    launch = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "-m", "dvd.cli", "predict"]
    done = subprocess.run(
        [*launch, *map(str, inputs), "-o", str(tmp_path / "multi"), *common], capture_output=True, text=True, check=True
    )
    summaries = sorted(line for line in done.stdout.splitlines() if line.startswith("dvd predict:"))
    assert [line.split(" input(s)")[0].split("from ")[1] for line in summaries] == ["1", "2"]
    assert cli.main(["predict", *map(str, inputs), "-o", str(tmp_path / "single"), *common]) == 0
    for folder in inputs:
        np.testing.assert_array_equal(
            np.load(tmp_path / "multi" / folder.name / "disparity.npy"),
            np.load(tmp_path / "single" / folder.name / "disparity.npy"),
        )
