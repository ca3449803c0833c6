"""`dvd predict --ray` on a local Ray (2 CPUs, 2 actors of one torch thread, the proof model): the same files as a
single process with one thread, byte for byte (meta.json's `seconds`, the wall time, aside), one manifest line per
input and the same lines as OUT/manifest.parquet; a bad input fails its row, not the run; an actor killed with
SIGKILL in the middle of a video has the video resumed from its last resume point, with the same files and
nothing left behind; without Ray, or with an address nobody answers at, one line."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import ray
from media import write_test_video
from PIL import Image

from dvd import cli
from dvd.engine.video import VideoSettings
from dvd.errors import DVDError
from dvd.io.atomic import STAGING_MARKER
from dvd.jobs.batch import PredictSettings, check_inputs
from dvd.jobs.cluster import RAY_LOG, ActorPlan, ray_failure
from dvd.jobs.corpus import MAX_ATTEMPTS, InputWorker, described_error, longest_first, new_attempts, raised_again
from dvd.jobs.manifest import INDEX_FILE, read_manifest
from dvd.jobs.outputs import OutputSettings
from dvd.jobs.progress import CorpusProgress
from dvd.jobs.resume import STATE_FILE, load_checkpoint

pytestmark = pytest.mark.usefixtures("one_torch_thread")  # the single-process runs: one thread, as each actor

MODEL = ["--weights", "proof", "--height", "32", "--width", "48", "--quiet"]


@pytest.fixture(scope="module")
def local_ray():
    """One local Ray for the module (starting one takes seconds); `dvd predict --ray` uses a Ray this process
    already runs, and leaves it running."""
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield
    ray.shutdown()


def predict(*argv: object) -> int:
    return cli.main(["predict", *map(str, argv)])


def write_images(folder: Path, count: int, truncate: int | None = None) -> Path:
    """`count` PNGs; the one at index `truncate` cut short after its header, so the input opens (its size and first
    frame are read) and fails only when that frame is decoded."""
    folder.mkdir(parents=True)
    rng = np.random.default_rng(0)
    for index in range(count):
        file = folder / f"f{index}.png"
        Image.fromarray(rng.integers(0, 256, (24, 40, 3), dtype=np.uint8)).save(file)
        if index == truncate:
            file.write_bytes(file.read_bytes()[:60])
    return folder


def assert_same_outputs(expected: Path, actual: Path, names: list[str]) -> None:
    """OUT/<name>/ of two runs: the same files, byte for byte; meta.json apart from its `seconds`."""
    for name in names:
        files = sorted(str(p.relative_to(expected / name)) for p in (expected / name).rglob("*") if p.is_file())
        assert files == sorted(str(p.relative_to(actual / name)) for p in (actual / name).rglob("*") if p.is_file())
        for file in files:
            first, second = (folder / name / file for folder in (expected, actual))
            if file == "meta.json":
                metas = [json.loads(path.read_text()) for path in (first, second)]
                assert [meta.pop("seconds") >= 0 for meta in metas] == [True, True]
                assert metas[0] == metas[1], f"{name}/meta.json differs"
            else:
                assert first.read_bytes() == second.read_bytes(), f"{name}/{file} differs"


def leftovers(out: Path) -> list[str]:
    return sorted(path.name for path in out.iterdir() if path.name.startswith("."))


def index_rows(out: Path) -> list[dict]:
    from pyarrow import parquet

    return parquet.read_table(out / INDEX_FILE).to_pylist()


@pytest.mark.smoke
def test_a_ray_run_writes_what_a_single_process_writes(local_ray, tmp_path, capfd):
    inputs = tmp_path / "in"
    inputs.mkdir()
    write_test_video(inputs / "long.mp4", frames=21)
    write_test_video(inputs / "short.mp4", frames=9)
    write_images(inputs / "frames", 4)
    write_images(inputs / "broken", 4, truncate=2)  # opens, then fails at its third frame: in the actor
    # A table with settings per row (a stride, an image rate) and a column dvd does not know (noted, ignored).
    listing = inputs / "corpus.csv"
    listing.write_text("path,stride,fps,caption\nlong.mp4,,,a\nshort.mp4,2,,b\nframes,,12,c\nbroken,,,d\n")
    args = [listing, *MODEL, "--keep-going"]
    assert predict(*args, "-o", tmp_path / "single") == 3  # 3: --keep-going recorded a failure
    capfd.readouterr()
    assert predict(*args, "-o", tmp_path / "ray", "--ray") == 3
    out, err = capfd.readouterr()
    single, on_ray = tmp_path / "single", tmp_path / "ray"
    assert_same_outputs(single, on_ray, ["long", "short", "frames"])
    assert json.loads((on_ray / "short" / "meta.json").read_text())["num_frames"] == 5  # the row's stride
    assert not (on_ray / "broken").exists() and leftovers(on_ray) == [] and leftovers(single) == []
    lines = read_manifest(on_ray)
    assert sorted((line["input"], line["status"], line["frames"]) for line in lines) == sorted(
        (line["input"], line["status"], line["frames"]) for line in read_manifest(single)
    )
    assert len(lines) == 4 and [line["error"] for line in lines if line["status"] == "failed"] == [
        line["error"] for line in read_manifest(single) if line["status"] == "failed"
    ]
    (failed,) = [line for line in lines if line["status"] == "failed"]
    assert failed["input"].endswith("broken") and "--allow-damaged" in failed["error"]
    assert index_rows(on_ray) == lines  # the Parquet index holds the run's manifest lines, column for column
    assert f"{on_ray / RAY_LOG}" in out and "2 actor(s) of 1 CPU" in out and "30 frames from 3 input(s)" in out
    assert err.count("columns caption of") == 1 and err.count("the proof model is a tiny") == 1
    assert "1 input(s) failed" in err and "broken" in err and "Starting execution" not in out + err
    assert "Starting execution" in (on_ray / RAY_LOG).read_text()  # Ray's own lines went to its log


def test_inputs_go_longest_first_by_their_header_frame_count(tmp_path):
    for name, frames in [("a", 5), ("b", 12), ("c", 9), ("d", 12)]:
        write_test_video(tmp_path / f"{name}.mp4", frames=frames)
    listing = tmp_path / "list.jsonl"
    rows = [{"path": "a.mp4"}, {"path": "b.mp4", "stride": 3}, {"path": "c.mp4"}, {"path": "d.mp4"}]
    listing.write_text("".join(json.dumps(row) + "\n" for row in rows))
    video = VideoSettings(height=32, width=48)
    settings = PredictSettings(inputs=(str(listing),), output=tmp_path / "out", video=video, outputs=OutputSettings())
    assert [entry.path.stem for entry in longest_first(check_inputs(settings))] == ["d", "c", "a", "b"]


def test_an_actor_killed_mid_video_resumes_it_elsewhere_and_nothing_is_lost(local_ray, tmp_path, capfd):
    inputs = tmp_path / "in"
    inputs.mkdir()
    write_test_video(inputs / "long.mp4", frames=61)
    write_test_video(inputs / "other.mp4", frames=13)
    write_test_video(inputs / "done.mp4", frames=5)
    clean, out = tmp_path / "clean", tmp_path / "out"
    assert predict(inputs / "long.mp4", inputs / "other.mp4", *MODEL, "-o", clean) == 0
    assert predict(inputs / "done.mp4", *MODEL, "-o", out) == 0  # already complete: --skip-existing keeps it
    done_inode = (out / "done" / "disparity.npy").stat().st_ino
    killed: dict = {}
    finished = threading.Event()

    def kill_at_the_first_resume_point() -> None:
        """SIGKILL the actor predicting long.mp4 once its staging folder holds a resume point with frames on disk
        (the first ones hold none: the global stitcher writes a frame two windows after it is predicted)."""
        while not finished.is_set():
            for folder in out.glob(".long.partial-*"):
                if (folder / STATE_FILE).is_file() and load_checkpoint(folder).written > 0:
                    killed["folder"] = folder.stat().st_ino
                    killed["disparity"] = (folder / "disparity.npy").stat().st_ino
                    os.kill(int(folder.name.split("-")[1]), signal.SIGKILL)  # .long.partial-PID-START-TOKEN
                    return
            time.sleep(0.002)

    killer = threading.Thread(target=kill_at_the_first_resume_point)
    killer.start()
    capfd.readouterr()
    try:
        code = predict(inputs, *MODEL, "-o", out, "--skip-existing", "--ray")
    finally:
        finished.set()
        killer.join()
    printed = "".join(capfd.readouterr())
    assert code == 0, printed
    assert "folder" in killed, "the actor was never killed"
    # Ray's word of the death went to its log; the run printed only its own lines.
    assert "(raylet)" not in printed and "died" in (out / RAY_LOG).read_text()
    assert printed.count("\n") == 3, printed  # the proof model's note, the summary, the Ray line
    assert_same_outputs(clean, out, ["long", "other"])
    # The folder the killed actor was writing became the output, its disparity.npy written on, not started over.
    assert (out / "long").stat().st_ino == killed["folder"]
    assert (out / "long" / "disparity.npy").stat().st_ino == killed["disparity"]
    assert (out / "done" / "disparity.npy").stat().st_ino == done_inode
    assert leftovers(out) == [] and not list(out.rglob(STAGING_MARKER)) and not list(out.rglob(STATE_FILE))
    this_run = read_manifest(out)[1:]  # after the single process's line for done.mp4
    assert sorted((Path(line["input"]).name, line["status"]) for line in this_run) == [
        ("done.mp4", "skipped"),
        ("long.mp4", "ok"),
        ("other.mp4", "ok"),
    ]
    assert index_rows(out) == this_run


def test_an_input_whose_worker_keeps_dying_fails_its_row(local_ray, tmp_path, monkeypatch):
    """The call counter the actors share: an input called again after MAX_ATTEMPTS calls whose worker died fails
    with a line saying so, instead of being retried for ever."""
    write_test_video(tmp_path / "a.mp4", frames=5)
    settings = PredictSettings(
        inputs=(), output=tmp_path / "out", video=VideoSettings(height=32, width=48), outputs=OutputSettings()
    )
    monkeypatch.chdir(tmp_path)
    attempts = new_attempts(ray)
    for _ in range(MAX_ATTEMPTS):  # calls that never came back: their worker died
        ray.get(attempts.start.remote("out/a"))
    worker = InputWorker(settings, str(tmp_path), ActorPlan(1, 1.0, 0.0, "cpu"), attempts, False)
    row = {"input": "a.mp4", "output": "out/a", "row": "{}", "redo": None, "metric_only": None, "planned": 5}
    result = worker(row)
    assert result["status"] == "failed" and f"died {MAX_ATTEMPTS} times" in result["error"]
    assert result["frames"] is None and not (tmp_path / "out").exists()


def test_an_actor_that_cannot_start_ends_the_run_in_one_line(local_ray, capsys):
    """What Ray raises when an actor's constructor fails (e.g. a node without the shared folder): its report, many
    lines with the actor's traceback, becomes one line with the actor's own error."""

    class Homeless:
        def __init__(self) -> None:
            raise DVDError("this node has no folder /shared/run: the inputs and OUT must be at the same paths")

        def ping(self) -> None:
            pass

    with pytest.raises(ray.exceptions.RayError) as died:
        ray.get(ray.remote(num_cpus=0)(Homeless).remote().ping.remote())
    assert str(died.value).count("\n") > 3
    line = str(ray_failure(died.value))
    assert line.startswith("Ray stopped the run (ActorDiedError): this node has no folder /shared/run: the inputs")
    assert "\n" not in line and "\x1b" not in line
    assert "ray::Homeless.__init__()" in capsys.readouterr().err  # the whole report, for Ray's log


def test_without_keep_going_the_driver_raises_the_actors_error_as_it_was():
    """A failed row ends a run without --keep-going with the error the input met (its exit code and line), as in a
    single process, rebuilt from plain data (nothing is unpickled); a row without a description becomes its line."""
    error = DVDError("clip.mp4 is truncated")
    error.add_note("see meta.json")
    again = raised_again({"exception": described_error(error), "error": "the line"})
    assert type(again) is DVDError and str(again) == "clip.mp4 is truncated" and again.__notes__ == ["see meta.json"]
    disk = raised_again({"exception": described_error(OSError(28, "No space left on device", "out/a")), "error": ""})
    assert isinstance(disk, OSError) and (disk.errno, disk.filename) == (28, "out/a")
    assert disk.strerror == "No space left on device"
    bug = raised_again({"exception": described_error(ValueError(lambda: None)), "error": ""})
    assert type(bug).__name__ == "ValueError" and not isinstance(bug, (DVDError, OSError))
    again = raised_again({"exception": None, "error": "internal error (ValueError: ...)"})
    assert type(again) is DVDError and str(again) == "internal error (ValueError: ...)"


def test_the_progress_line_counts_inputs_frames_and_the_time_left():
    from io import StringIO

    stream = StringIO()
    progress = CorpusProgress(inputs=3, frames=300, stream=stream)
    progress.started -= 10  # 10 s ago
    progress.finished(planned=100, written=100)
    assert progress.line() == "dvd predict: 1/3 inputs done, 10.00 frames/s, 00:20 left"
    progress.finished(planned=50, written=None)
    assert progress.line().startswith("dvd predict: 2/3 inputs done, 1 failed, 10.00 frames/s, 00:15 left")
    progress.say("a note")
    progress.say("a note")
    progress.close()
    assert stream.getvalue().count("a note") == 1 and stream.getvalue().endswith("00:15 left\n")


def test_without_ray_installed_one_line_names_the_extra(tmp_path, clip):
    blocked = "import sys; sys.modules['ray'] = None; from dvd.cli import main; sys.exit(main(sys.argv[1:]))"
    out = tmp_path / "out"
    run = subprocess.run(
        [sys.executable, "-c", blocked, "predict", str(clip), "-o", str(out), "--ray"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert run.returncode == 2
    assert run.stderr.strip().count("\n") == 0 and 'pip install "dvd[ray]"' in run.stderr
    assert not out.exists()


@pytest.mark.parametrize(
    ("address", "problem"),
    [("127.0.0.1:1", "no Ray cluster answers at 127.0.0.1:1"), ("headnode", "--ray headnode is not an address")],
)
def test_an_address_no_cluster_answers_at_is_one_line(tmp_path, clip, capsys, address, problem):
    assert predict(clip, *MODEL, "-o", tmp_path / "out", "--ray", address) == 2
    err = capsys.readouterr().err
    assert problem in err and err.count("\n") == 1
    assert not (tmp_path / "out").exists()


def test_a_fifo_planted_at_the_ray_log_is_one_line_not_a_hang(tmp_path):
    from dvd.jobs.cluster import _output_to

    os.mkfifo(tmp_path / RAY_LOG)
    with pytest.raises(DVDError, match="cannot write Ray's log"), _output_to(tmp_path / RAY_LOG):
        pass
