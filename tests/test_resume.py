"""Resumable runs: the engine goes on from any saved state bit for bit; an interrupted `dvd predict` (Ctrl-C,
kill -9) goes on with --resume and writes the same files as an uninterrupted run; what may not be resumed is
refused in one line."""

from __future__ import annotations

import json
import os
import signal
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import rendezvous
from model_stub import StandInPipe

from dvd import cli
from dvd.engine.stream import stream_disparity
from dvd.engine.video import VideoEngine, VideoSettings
from dvd.errors import DVDError
from dvd.io import atomic
from dvd.io.readers import open_source
from dvd.jobs.outputs import OutputSettings, predict_to_folder
from dvd.jobs.resume import STATE_FILE, Checkpoint, load_checkpoint, save_checkpoint

pytestmark = pytest.mark.usefixtures("one_torch_thread")

# The chained stitcher writes frames a window after they arrive, which the interrupt points below are chosen for;
# the global preset resumes in its own tests.
SMALL = VideoSettings(height=32, width=48, window=5, overlap=1, stitch="openworld", cuts="off")


def fake_predictions(windows: list[np.ndarray]) -> list[np.ndarray]:
    """Disparity that depends on the whole window (so every fit has work to do) and on nothing else."""
    return [
        w.mean(axis=-1) * (1 + w.mean()) + np.linspace(0, 1, len(w), dtype=np.float32)[:, None, None] for w in windows
    ]


class FakePipe(StandInPipe):
    """A DVDPipeline stand-in (brightness-like disparity) that can be interrupted at its Nth model call."""

    weights_id = "fake"

    def __init__(self, interrupt_at: int | None = None, error: BaseException | None = None) -> None:
        self.calls = 0
        self.interrupt_at = interrupt_at
        self.error = error or KeyboardInterrupt()

    def predict_windows(self, windows: list[np.ndarray]) -> list[np.ndarray]:
        self.calls += 1
        if self.calls == self.interrupt_at:
            raise self.error
        return fake_predictions(windows)


def scene(count: int, cut: int | None = None, size: int = 16) -> list[np.ndarray]:
    """Smoothly moving gradients, with a different scene from frame `cut` on."""
    y, x = np.mgrid[0:size, 0:size] / size
    frames = []
    for index in range(count):
        if cut is None or index < cut:
            rgb = np.stack([x + 0.01 * index, y, 0.5 + 0 * x], axis=-1)
        else:
            rgb = np.stack([1 - y, 0.2 + 0 * x, 0.5 * x + 0.005 * index], axis=-1)
        frames.append(np.clip(rgb, 0, 1).astype(np.float32))
    return frames


@pytest.mark.parametrize("stitch", ["openworld", "benchmark", "global"])
@pytest.mark.parametrize("batch_windows", [1, 2, 3])
def test_stream_resumes_from_every_state_bit_for_bit(stitch, batch_windows):
    frames = scene(37)
    settings = {"window": 9, "overlap": 3, "stitch": stitch}
    states = []
    whole = list(
        stream_disparity(frames, fake_predictions, batch_windows=batch_windows, on_state=states.append, **settings)
    )
    assert len(whole) == 37 and len(states) >= 2
    for state in states:
        rest = stream_disparity(
            frames[state.buffer_start :], fake_predictions, batch_windows=batch_windows, resume=state, **settings
        )
        resumed = whole[: state.emitted] + list(rest)
        assert len(resumed) == 37
        assert all(np.array_equal(a, b) for a, b in zip(resumed, whole)), f"differs after resuming at {state.emitted}"


@pytest.mark.parametrize(
    "cuts,cut_frames,stitch",
    [("auto", (), "openworld"), ("auto", (40,), "global"), ("off", (17, 30), "openworld")],
    ids=["detected cut", "detected and given cuts, global (failed seams too)", "given cuts"],
)
def test_engine_resumes_within_any_shot(cuts, cut_frames, stitch):
    """Shot state (detector, seam judge, shots so far) is part of the engine's state: a resumed engine finds the same
    cuts and failed seams and yields the same frames."""
    frames = scene(50, cut=23)
    settings = VideoSettings(window=9, overlap=3, stitch=stitch, cuts=cuts, cut_frames=cut_frames)
    states: list[dict] = []
    engine = VideoEngine(fake_predictions, settings)
    whole = list(engine.stitched(iter(frames), on_state=states.append))
    shots = engine.shots.as_meta(50)
    assert {shot["start"] for shot in shots} & {17, 23}  # the planted or the given cut
    assert states
    for state in states:
        start, emitted = VideoEngine.resume_points(state)
        again = VideoEngine(fake_predictions, settings)
        resumed = whole[:emitted] + list(again.stitched(iter(frames[start:]), resume=state))
        assert all(np.array_equal(a, b) for a, b in zip(resumed, whole, strict=True))
        assert again.shots.as_meta(50) == shots and again.failed_seams == engine.failed_seams


def test_checkpoint_file_round_trip_and_refusals(tmp_path):
    engine = {"tail": [np.arange(6, dtype=np.float32).reshape(2, 3)], "none": None, "x": 0.1 + 0.2, "n": [1, "a"]}
    save_checkpoint(tmp_path, Checkpoint({"window": 9}, 12, engine))
    loaded = load_checkpoint(tmp_path)
    assert loaded.written == 12 and loaded.fingerprint == {"window": 9}
    assert np.array_equal(loaded.engine["tail"][0], engine["tail"][0]) and loaded.engine["x"] == 0.1 + 0.2
    assert loaded.engine["none"] is None and loaded.engine["n"] == [1, "a"]
    assert sorted(os.listdir(tmp_path)) == [STATE_FILE]  # the temporary file became the state
    (tmp_path / STATE_FILE).write_bytes(b"garbage")
    with pytest.raises(DVDError, match="--overwrite to discard it"):
        load_checkpoint(tmp_path)


def run_folder(pipe, source_path: Path, target: Path, video=SMALL, output=None, **kwargs) -> int:
    output = output or OutputSettings(formats=("npy", "exr", "png16"))
    source = open_source(source_path)
    return predict_to_folder(pipe, source, target, video, output, host_threads=False, resumable=True, **kwargs)


def assert_same_files(expected: Path, actual: Path) -> None:
    """Every file byte for byte; meta.json apart from the run's wall time."""
    names = sorted(str(p.relative_to(expected)) for p in expected.rglob("*") if p.is_file())
    assert names == sorted(str(p.relative_to(actual)) for p in actual.rglob("*") if p.is_file())
    for name in names:
        if name == "meta.json":
            first, second = (json.loads((folder / name).read_text()) for folder in (expected, actual))
            first.pop("seconds"), second.pop("seconds")
            assert first == second
        else:
            assert (expected / name).read_bytes() == (actual / name).read_bytes(), f"{name} differs"


@pytest.mark.parametrize("interrupt_at", [3, 6])
def test_interrupted_run_resumes_to_the_same_files(clip, tmp_path, interrupt_at):
    run_folder(FakePipe(), clip, tmp_path / "whole" / "clip")
    out = tmp_path / "out"
    with pytest.raises(KeyboardInterrupt) as interrupted:
        run_folder(FakePipe(interrupt_at=interrupt_at), clip, out / "clip")
    kept = atomic.resumable_staging(out / "clip", STATE_FILE)
    assert len(kept) == 1 and not (out / "clip").exists()
    assert f"kept in {kept[0]}" in interrupted.value.__notes__[0] and "--resume" in interrupted.value.__notes__[0]
    written = load_checkpoint(kept[0]).written
    assert 0 < written < 30
    pipe = FakePipe()
    assert run_folder(pipe, clip, out / "clip", resume=True) == 30
    assert_same_files(tmp_path / "whole" / "clip", out / "clip")
    assert pipe.calls < 29 // 4  # windows before the resume point were not predicted again
    assert sorted(os.listdir(out)) == ["clip"]  # nothing left beside it, and no state file in it


def test_resume_with_batches_and_global_stitching_and_a_failure_that_is_not_the_inputs(clip, tmp_path):
    video = replace(SMALL, stitch="global", batch_windows=2)
    run_folder(FakePipe(), clip, tmp_path / "whole" / "clip", video)
    with pytest.raises(RuntimeError):
        run_folder(FakePipe(interrupt_at=3, error=RuntimeError("out of memory")), clip, tmp_path / "clip", video)
    run_folder(FakePipe(), clip, tmp_path / "clip", video, resume=True)
    assert_same_files(tmp_path / "whole" / "clip", tmp_path / "clip")


def test_partial_output_is_refused_without_resume_and_discarded_by_overwrite(clip, tmp_path):
    with pytest.raises(KeyboardInterrupt):
        run_folder(FakePipe(interrupt_at=3), clip, tmp_path / "clip")
    with pytest.raises(DVDError, match="pass --resume to go on with it, or --overwrite to discard it"):
        run_folder(FakePipe(), clip, tmp_path / "clip")
    pipe = FakePipe()
    run_folder(pipe, clip, tmp_path / "clip", overwrite=True)
    assert pipe.calls == 8  # started over: every window of 30 frames (window 5, overlap 1)
    assert sorted(os.listdir(tmp_path)) == ["clip"]


def test_resume_with_other_settings_or_a_changed_input_is_refused(clip, tmp_path):
    source = tmp_path / "in.mp4"
    source.write_bytes(clip.read_bytes())
    with pytest.raises(KeyboardInterrupt):
        run_folder(FakePipe(interrupt_at=3), source, tmp_path / "in")
    with pytest.raises(DVDError, match="used overlap=1, this run overlap=2: resume with the same settings"):
        run_folder(FakePipe(), source, tmp_path / "in", replace(SMALL, overlap=2), resume=True)
    with pytest.raises(DVDError, match="used formats="):
        run_folder(FakePipe(), source, tmp_path / "in", output=OutputSettings(formats=("npy",)), resume=True)
    with open(source, "ab") as handle:
        handle.write(b"\0")
    with pytest.raises(DVDError, match="the input changed since the interrupted run"):
        run_folder(FakePipe(), source, tmp_path / "in", resume=True)
    assert atomic.resumable_staging(tmp_path / "in", STATE_FILE)  # refusals keep the partial output


def test_resume_without_a_partial_output_starts_fresh(clip, tmp_path):
    assert run_folder(FakePipe(), clip, tmp_path / "clip", resume=True) == 30


def test_stale_cleanup_keeps_resumable_folders_and_only_one_run_takes_one(tmp_path):
    final = tmp_path / "clip"
    kept = tmp_path / ".clip.partial-0-0-0a1b2c3d"
    stale = tmp_path / ".clip.partial-0-0-11111111"
    for folder in (kept, stale):
        folder.mkdir()
        atomic._write_marker(folder, final)  # as dvd makes them
    (kept / STATE_FILE).write_bytes(b"x")
    assert atomic.remove_stale_staging(final, keep=STATE_FILE) == [stale]
    assert atomic.resumable_staging(final, STATE_FILE) == [kept]
    taken = atomic.adopt_staging(kept, final)
    assert taken.exists() and not kept.exists() and f"-{os.getpid()}-" in taken.name
    assert atomic.resumable_staging(final, STATE_FILE) == []  # this live process owns it now
    with pytest.raises(DVDError, match="taken over by another run"):
        atomic.adopt_staging(kept, final)


def test_kill_9_after_a_checkpoint_then_resume_gives_identical_files(clip, tiny_weights, tmp_path):
    """The real thing: `dvd predict` in a child process, killed with SIGKILL while it is held right after saving
    its second resume point (3 model calls in all; the last saves no state)."""
    args = [clip, "--weights", tiny_weights, "--height", 32, "--width", 48, "--window", 5, "--overlap", 1]
    args = [str(arg) for arg in (*args, "--max-frames", 13, "--save", "npy,exr,png16", "--quiet")]
    assert cli.main(["predict", *args, "-o", str(tmp_path / "whole")]) == 0
    out, marks = tmp_path / "out", tmp_path / "marks"
    pause = "dvd.jobs.resume:save_checkpoint:2:after"
    child = rendezvous.start(["predict", *args, "-o", out], marks, {"DVD_TEST_PAUSE": pause, "OMP_NUM_THREADS": "1"})
    rendezvous.wait_for(marks / "paused", child)
    child.send_signal(signal.SIGKILL)
    assert child.wait() == -signal.SIGKILL
    assert not (out / "clip").exists()
    (kept,) = atomic.resumable_staging(out / "clip", STATE_FILE)
    assert 0 < load_checkpoint(kept).written < 13
    assert cli.main(["predict", *args, "-o", str(out)]) == 2  # a plain run refuses to throw the work away
    assert cli.main(["predict", *args, "-o", str(out), "--resume"]) == 0
    assert_same_files(tmp_path / "whole" / "clip", out / "clip")


def test_streamed_colour_outputs_cannot_be_resumed(clip, tmp_path):
    output = OutputSettings(formats=("npy", "mp4"), colour_range="first-window")
    with pytest.raises(DVDError, match="use --colour-range video, or run without --resume"):
        run_folder(FakePipe(), clip, tmp_path / "clip", output=output, resume=True)
    with pytest.raises(KeyboardInterrupt):  # such a run saves no progress: its staging folder goes, as before
        run_folder(FakePipe(interrupt_at=3), clip, tmp_path / "clip", output=output)
    assert os.listdir(tmp_path) == []


def test_an_image_folder_resumes_too(tmp_path):
    from PIL import Image

    folder = tmp_path / "in" / "frames"
    folder.mkdir(parents=True)
    for index, frame in enumerate(scene(14, size=32)):
        Image.fromarray((frame * 255).astype(np.uint8)).save(folder / f"f{index}.png")
    run_folder(FakePipe(), folder, tmp_path / "whole" / "frames")
    with pytest.raises(KeyboardInterrupt):
        run_folder(FakePipe(interrupt_at=3), folder, tmp_path / "frames")
    run_folder(FakePipe(), folder, tmp_path / "frames", resume=True)
    assert_same_files(tmp_path / "whole" / "frames", tmp_path / "frames")
    (folder / "f3.png").write_bytes((folder / "f4.png").read_bytes())  # one frame replaced
    with pytest.raises(KeyboardInterrupt):
        run_folder(FakePipe(interrupt_at=3), folder, tmp_path / "again" / "frames")
    (folder / "f5.png").unlink()
    with pytest.raises(DVDError, match="the input changed"):
        run_folder(FakePipe(), folder, tmp_path / "again" / "frames", resume=True)


def test_resume_from_a_state_saved_before_any_frame_was_final(clip, tmp_path):
    """openworld's first window waits for the next one, so the first state holds no frame; a run stopped right after
    writing a few frames past it resumes from frame 0, dropping what it wrote."""
    run_folder(FakePipe(), clip, tmp_path / "whole" / "clip")

    def stop_after_two(count: int) -> None:
        if count == 2:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        run_folder(FakePipe(), clip, tmp_path / "clip", progress=stop_after_two)
    (kept,) = atomic.resumable_staging(tmp_path / "clip", STATE_FILE)
    assert load_checkpoint(kept).written == 0 and len(os.listdir(kept / "depth_exr")) == 2
    run_folder(FakePipe(), clip, tmp_path / "clip", resume=True)
    assert_same_files(tmp_path / "whole" / "clip", tmp_path / "clip")


def test_the_input_fingerprint_covers_every_byte(tmp_path):
    """Same size, same mtime, 200 bytes changed in the middle of a file far larger than any sample of it."""
    from dvd.jobs.resume import input_digest

    path = tmp_path / "in.mp4"
    data = bytearray(np.random.default_rng(0).integers(0, 256, 1 << 20, dtype=np.uint8).tobytes())
    path.write_bytes(bytes(data))
    before = input_digest([path])
    times = path.stat()
    data[len(data) // 2 : len(data) // 2 + 200] = bytes(200)
    path.write_bytes(bytes(data))
    os.utime(path, ns=(times.st_atime_ns, times.st_mtime_ns))
    assert path.stat().st_size == times.st_size and path.stat().st_mtime_ns == times.st_mtime_ns
    assert input_digest([path]) != before
