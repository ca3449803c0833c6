"""dvd app's jobs without a server: settings as `dvd predict`'s, uploads, limits, Cancel, temporary files."""

from __future__ import annotations

import json
import os
import socket
import time
import zipfile
from io import BytesIO
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from dvd.app.examples import example_files, write_synthetic_example
from dvd.app.jobs import AppLimits, JobRequest, JobRunner, Workspace, extract_frames, frame_view, prepare_input
from dvd.cli import build_parser, main
from dvd.commands.predict import settings_from_args
from dvd.errors import DVDError
from dvd.io.colormaps import colorize
from dvd.io.readers import open_source
from dvd.pipeline.dvd_pipeline import DVDPipeline

SMALL = {"height": 32, "width": 48, "window": 5, "overlap": 1}


@pytest.fixture(scope="module")
def tiny_pipe(tiny_weights: Path) -> DVDPipeline:
    return DVDPipeline.from_pretrained(str(tiny_weights), device="cpu")


def test_request_defaults_are_dvd_predicts(tmp_path: Path) -> None:
    """The page's defaults mean what `dvd predict` does with no flags, for a video (no --fps) and an image."""
    for name, video_input in (("clip.mp4", True), ("still.png", False)):
        flags = build_parser().parse_args(["predict", name, "-o", str(tmp_path)])
        expected = settings_from_args(flags)
        got = JobRequest().settings(Path(name), tmp_path, video_input)
        assert (got.video, got.outputs) == (expected.video, expected.outputs)
        assert got.fps == (None if video_input else "24")


def test_request_refuses_what_dvd_predict_refuses(tmp_path: Path) -> None:
    cases = [
        (JobRequest(window=9, overlap=9), "smaller than the window"),
        (JobRequest(save=("npy", "gif")), "unknown --save format"),
        (JobRequest(height=5000), "too large"),
        (JobRequest(window=8.5), "whole number"),
    ]
    for request, message in cases:
        with pytest.raises(DVDError, match=message):
            request.settings(Path("clip.mp4"), tmp_path, True)


def test_uploads_other_than_media_and_zips_are_refused(tmp_path: Path) -> None:
    notes = tmp_path / "notes.txt"
    notes.write_text("not a video")
    with pytest.raises(DVDError, match="notes.txt is not a video, an image or a zip of frames"):
        prepare_input(notes, tmp_path / "in", AppLimits())
    with pytest.raises(DVDError, match="no file given"):
        prepare_input(None, tmp_path / "in", AppLimits())
    big = tmp_path / "big.mp4"
    big.write_bytes(bytes(2 * 1024 * 1024))
    with pytest.raises(DVDError, match="big.mp4 is 2 MB; this app takes at most 1 MB"):
        prepare_input(big, tmp_path / "in", AppLimits(max_upload_mb=1))
    assert not (tmp_path / "in").exists()


def _png(value: int) -> bytes:
    buffer = BytesIO()
    Image.fromarray(np.full((6, 8, 3), value, np.uint8)).save(buffer, format="PNG")
    return buffer.getvalue()


def test_zip_of_frames_is_flattened_in_natural_order_and_cannot_escape(tmp_path: Path) -> None:
    archive = tmp_path / "frames.zip"
    with zipfile.ZipFile(archive, "w") as bundle:
        bundle.writestr("shot/f10.png", _png(10))
        bundle.writestr("shot/f2.png", _png(2))
        bundle.writestr("../../escape.png", _png(99))  # a hostile name: only its base name is used
        bundle.writestr("shot/readme.txt", "ignored")
        bundle.writestr("__MACOSX/shot/._f2.png", "resource fork")
    folder = extract_frames(archive, tmp_path / "job" / "frames", max_bytes=1024 * 1024)
    assert sorted(path.name for path in folder.iterdir()) == ["escape.png", "f10.png", "f2.png"]
    assert not (tmp_path / "escape.png").exists() and not (tmp_path.parent / "escape.png").exists()

    with pytest.raises(DVDError, match="unpacks to more than"):
        extract_frames(archive, tmp_path / "job2", max_bytes=100)
    empty = tmp_path / "empty.zip"
    with zipfile.ZipFile(empty, "w") as bundle:
        bundle.writestr("notes.txt", "no images")
    with pytest.raises(DVDError, match="holds no images"):
        extract_frames(empty, tmp_path / "job3", max_bytes=1024)
    broken = tmp_path / "broken.zip"
    broken.write_bytes(b"PK not really")
    with pytest.raises(DVDError, match="not a readable zip"):
        extract_frames(broken, tmp_path / "job4", max_bytes=1024)


def test_workspace_sweeps_old_jobs_and_is_removed_at_close(tmp_path: Path) -> None:
    workspace = Workspace(tmp_path, keep_minutes=1)
    folders = []
    for _ in range(3):
        _, folder = workspace.new_job_folder()
        folder.mkdir()
        folders.append(folder)
    old = time.time() - 120
    for folder in folders[:2]:
        os.utime(folder, (old, old))
    assert workspace.sweep(busy=[folders[1]]) == [folders[0]]  # old and idle; the busy one and the new one stay
    assert [folder.exists() for folder in folders] == [False, True, True]
    mine = tmp_path / "mine.txt"
    mine.write_text("the user's")
    workspace.close()
    assert sorted(tmp_path.iterdir()) == [mine]  # only what the app made is gone


class _CancelAfterFirstWindow:
    """The tiny pipeline, but pressing Cancel as soon as its first window has been predicted."""

    def __init__(self, pipe: DVDPipeline, runner: JobRunner) -> None:
        self._pipe, self.runner, self.job_id = pipe, runner, None

    def __getattr__(self, name: str) -> object:
        return getattr(self._pipe, name)

    def predict_windows(self, windows: list[np.ndarray]) -> list[np.ndarray]:
        outputs = self._pipe.predict_windows(windows)
        self.runner.cancel(self.job_id)
        return outputs


def test_cancel_stops_between_windows_and_leaves_nothing(tiny_pipe, clip: Path, tmp_path: Path, one_torch_thread):
    workspace = Workspace(tmp_path, keep_minutes=60)
    runner = JobRunner(tiny_pipe, workspace, AppLimits())
    pressing = _CancelAfterFirstWindow(tiny_pipe, runner)
    runner.pipe = pressing
    job = runner.new_job()
    pressing.job_id = job.id
    runner.start(job, clip, JobRequest(**SMALL)).join(60)
    assert job.state == "cancelled", job.message
    assert job.windows_done == 1 and job.windows_total == 8  # 30 frames in windows of 5 overlapping by 1
    assert job.message == f"stopped after 1 of 8 windows ({job.frames_written} frames written); nothing was kept"
    assert list(workspace.jobs.iterdir()) == []  # no job folder, no staging folder, no extracted input


def test_a_job_writes_what_dvd_predict_writes_and_zips_frame_folders(tiny_pipe, clip, tmp_path, one_torch_thread):
    runner = JobRunner(tiny_pipe, Workspace(tmp_path, keep_minutes=60), AppLimits())
    job = runner.new_job()
    request = JobRequest(**SMALL, save=("npy", "png16", "sbs"), max_frames=9)
    runner.start(job, clip, request).join(60)
    assert job.state == "done", job.message
    assert (job.frames_written, job.frames_total, job.windows_done, job.windows_total) == (9, 9, 2, 2)
    assert [path.name for path in job.result.downloads] == [
        "disparity.npy",
        "meta.json",
        "depth_sbs.mp4",
        "clip_depth_png16.zip",
    ]
    assert np.load(job.result.npy).shape == (9, 90, 160)
    with zipfile.ZipFile(job.result.downloads[-1]) as bundle:
        assert bundle.namelist() == [f"depth_png16/{index:06d}.png" for index in range(9)]


def test_too_long_videos_are_refused_before_the_model_runs(tiny_pipe, clip: Path, tmp_path: Path) -> None:
    runner = JobRunner(tiny_pipe, Workspace(tmp_path, keep_minutes=60), AppLimits(max_seconds=1))
    job = runner.new_job()
    runner.start(job, clip, JobRequest(**SMALL)).join(60)  # 30 frames at 24 fps: 1.25 s
    assert job.state == "failed"
    assert job.message == (
        "clip.mp4 is 1.2 s long (with these frame settings) and this app takes at most 1 s per job "
        "(dvd app --max-seconds): set a frame limit or trim the video"
    )
    assert job.windows_done == 0 and list(runner.workspace.jobs.iterdir()) == []


def test_frame_view_shows_one_frame_with_its_range(tmp_path: Path) -> None:
    frames = np.stack([np.linspace(1.0, 3.0, 12, dtype=np.float32).reshape(3, 4), np.full((3, 4), 2.0, np.float32)])
    np.save(tmp_path / "disparity.npy", frames)
    view = frame_view(tmp_path / "disparity.npy", 0, "gray")
    assert (view.index, view.count, view.low, view.high) == (0, 2, 1.0, 3.0)
    assert np.array_equal(view.image, colorize((frames[0] - 1.0) / 2.0, "gray"))
    assert view.describe() == "frame 1 of 2: disparity 1 to 3 (affine-invariant, larger = nearer)"
    # With the range of the job's videos in meta.json, a frame is coloured as in the videos.
    meta = {"outputs": {"npy": {"file": "disparity.npy"}, "mp4": {"file": "depth_vis.mp4", "lo": 0.0, "hi": 4.0}}}
    (tmp_path / "meta.json").write_text(json.dumps(meta))
    flat = frame_view(tmp_path / "disparity.npy", 5, "gray")  # past the end: the last frame
    assert (flat.index, flat.low, flat.high) == (1, 2.0, 2.0)
    assert np.array_equal(flat.image, colorize(np.full((3, 4), 0.5, np.float32), "gray"))


def test_examples_are_the_synthetic_scene_and_the_media_given(tmp_path: Path) -> None:
    synthetic = write_synthetic_example(tmp_path)
    source = open_source(synthetic)
    assert (source.num_frames, source.size, source.fps) == (48, (144, 256), 24.0)
    given = tmp_path / "given"
    given.mkdir()
    for name in ("b.mp4", "a.png", "notes.txt"):
        (given / name).write_bytes(b"")
    assert example_files([given, synthetic]) == [given / "a.png", given / "b.mp4", synthetic]
    with pytest.raises(DVDError, match="--examples: .*missing.mp4 not found"):
        example_files([tmp_path / "missing.mp4"])


def test_dvd_app_refuses_a_taken_port_and_bad_limits_at_once(capsys) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        assert main(["app", "--port", str(port), "--weights", "proof"]) == 2
    assert (
        f"cannot serve on 127.0.0.1:{port} (Address already in use): choose another --port" in capsys.readouterr().err
    )
    assert main(["app", "--port", str(port), "--max-seconds", "0"]) == 2
    assert "--max-seconds must be positive, got 0.0" in capsys.readouterr().err
