"""Corpus batches: --keep-going records a bad input and goes on, --skip-existing does only what is missing, and
OUT/manifest.jsonl has one line per input; under torchrun every process writes its own inputs' lines."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from model_stub import StandInPipe, stub_model
from PIL import Image

from dvd import cli
from dvd.jobs.batch import SOME_FAILED
from dvd.jobs.manifest import MANIFEST_FILE, Manifest, read_manifest

pytestmark = pytest.mark.usefixtures("one_torch_thread")

SMALL = ["--height", "32", "--width", "48", "--window", "5", "--overlap", "1", "--quiet"]


class FakePipe(StandInPipe):
    """Disparity = brightness; `fail_on` makes the model fail (as out of memory would) on frames of that size."""

    weights_id = "fake"
    weights_kind = None  # a stand-in, not the proof model (whose runs print a note)

    def __init__(self, fail_on: tuple[int, int] | None = None) -> None:
        self.calls = 0
        self.fail_on = fail_on

    def predict_windows(self, windows: list[np.ndarray]) -> list[np.ndarray]:
        self.calls += 1
        if self.fail_on is not None and windows[0].shape[1:3] == self.fail_on:
            raise RuntimeError("out of memory (a test's model failure)")
        return [w.mean(axis=-1) for w in windows]


@pytest.fixture
def fake_pipe(monkeypatch):
    pipe = FakePipe()
    stub_model(monkeypatch, lambda cls, *a, **k: pipe)
    return pipe


def images(folder: Path, count: int = 3, size: tuple[int, int] = (30, 40), sizes: list | None = None) -> Path:
    folder.mkdir(parents=True)
    rng = np.random.default_rng(0)
    for index, shape in enumerate(sizes or [size] * count):
        Image.fromarray(rng.integers(0, 256, (*shape, 3), dtype=np.uint8)).save(folder / f"f{index + 1}.png")
    return folder


def corpus(clip: Path, root: Path) -> dict[str, Path]:
    """Good and broken inputs side by side, and a .txt list of all of them."""
    inputs = root / "in"
    inputs.mkdir(parents=True)
    broken_video = inputs / "notes.mp4"
    broken_video.write_text("this is not a video\n")
    (inputs / "empty").mkdir()
    good = {
        "clip": clip,
        "seq": images(inputs / "seq"),
    }
    bad = {
        "notes": broken_video,
        "mixed": images(inputs / "mixed", sizes=[(30, 40), (20, 20)]),
        "empty": inputs / "empty",
    }
    listing = inputs / "list.txt"
    listing.write_text(
        "".join(f"{path}\n" for path in [good["clip"], bad["notes"], good["seq"], bad["mixed"], bad["empty"]])
        + "gone.mp4\n"  # moved away since the list was made
    )
    return {"list": listing, **{f"good:{k}": v for k, v in good.items()}, **{f"bad:{k}": v for k, v in bad.items()}}


def latest(out: Path) -> dict[str, dict]:
    """The last manifest line of each output name."""
    return {Path(line["output"]).name: line for line in read_manifest(out)}


def test_keep_going_records_bad_inputs_and_finishes_the_good_ones(clip, fake_pipe, tmp_path, capsys):
    paths = corpus(clip, tmp_path)
    out = tmp_path / "out"
    code = cli.main(["predict", str(paths["list"]), "-o", str(out), "--keep-going", *SMALL])
    captured = capsys.readouterr()
    assert code == SOME_FAILED
    errors = [line for line in captured.err.splitlines() if line.strip()]
    assert len(errors) == 1 and errors[0].startswith("dvd predict: error: 4 input(s) failed: ")
    for name in ("notes.mp4", "mixed", "empty", "gone.mp4"):
        assert name in errors[0]
    assert str(out / MANIFEST_FILE) in errors[0]
    assert "2 written, 0 skipped, 4 failed" in captured.out
    assert sorted(p.name for p in out.iterdir()) == ["clip", "manifest.jsonl", "seq"]
    assert np.load(out / "clip" / "disparity.npy").shape == (30, 90, 160)
    lines = read_manifest(out)
    assert [Path(line["output"]).name for line in lines].count("clip") == 1 and len(lines) == 6
    status = {name: line["status"] for name, line in latest(out).items()}
    assert status == {
        "clip": "ok",
        "seq": "ok",
        "notes": "failed",
        "mixed": "failed",
        "empty": "failed",
        "gone": "failed",
    }
    by_name = latest(out)
    assert by_name["clip"]["frames"] == 30 and by_name["seq"]["frames"] == 3 and by_name["clip"]["error"] is None
    assert "cannot decode" in by_name["notes"]["error"] and "no images" in by_name["empty"]["error"]
    assert "gone.mp4 (line 6 of" in by_name["gone"]["error"] and "not found" in by_name["gone"]["error"]
    assert all(line["process"] == 0 and line["seconds"] >= 0 for line in lines)


def test_without_keep_going_the_first_bad_input_stops_before_the_model(clip, fake_pipe, tmp_path, capsys):
    paths = corpus(clip, tmp_path)
    assert cli.main(["predict", str(paths["list"]), "-o", str(tmp_path / "out"), *SMALL]) == 2
    assert "gone.mp4 (line 6 of" in capsys.readouterr().err
    assert fake_pipe.calls == 0 and not (tmp_path / "out").exists()


def test_a_failure_while_predicting_is_recorded_and_the_batch_goes_on(clip, monkeypatch, tmp_path, capsys):
    pipe = FakePipe(fail_on=(32, 64))  # the clip's model size; the 30x40 image folder runs at 48x64
    stub_model(monkeypatch, lambda cls, *a, **k: pipe)
    seq = images(tmp_path / "seq")
    out = tmp_path / "out"
    assert cli.main(["predict", str(clip), str(seq), "-o", str(out), "--keep-going", *SMALL]) == SOME_FAILED
    err = capsys.readouterr().err
    assert "1 input(s) failed" in err and "RuntimeError: out of memory" in err
    by_name = latest(out)
    assert by_name["clip"]["status"] == "failed" and by_name["seq"]["status"] == "ok"
    assert (out / "seq" / "disparity.npy").exists() and not (out / "clip").exists()


def test_a_failure_the_manifest_cannot_record_is_reported_as_itself(clip, monkeypatch, tmp_path, capsys):
    """A full disk fails the input and then its manifest line: the input's own error is the one reported."""
    stub_model(monkeypatch, lambda cls, *a, **k: FakePipe(fail_on=(32, 64)))
    record = Manifest.record

    def disk_full(self, *args, **kwargs) -> None:
        if args[2] == "failed":
            raise OSError(28, "No space left on device")
        record(self, *args, **kwargs)

    monkeypatch.setattr(Manifest, "record", disk_full)
    assert cli.main(["predict", str(clip), "-o", str(tmp_path / "out"), "--keep-going", *SMALL]) == 1
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "out of memory" in err
    assert f"could not be recorded in {MANIFEST_FILE} (No space left on device)" in err


def test_skip_existing_does_only_what_is_missing(clip, fake_pipe, tmp_path, capsys):
    out = tmp_path / "out"
    first, second = images(tmp_path / "a"), images(tmp_path / "b", count=4)
    assert cli.main(["predict", str(clip), str(first), "-o", str(out), *SMALL]) == 0
    calls, stamp = fake_pipe.calls, (out / "clip" / "disparity.npy").stat().st_mtime_ns
    capsys.readouterr()
    assert cli.main(["predict", str(clip), str(first), str(second), "-o", str(out), "--skip-existing", *SMALL]) == 0
    assert "1 written, 2 skipped, 0 failed" in capsys.readouterr().out
    assert fake_pipe.calls == calls + 1  # only b's single window
    assert (out / "clip" / "disparity.npy").stat().st_mtime_ns == stamp
    by_name = latest(out)
    assert [by_name[name]["status"] for name in ("clip", "a", "b")] == ["skipped", "skipped", "ok"]
    assert "is complete (--skip-existing)" in by_name["clip"]["error"]
    # Without the flag, the existing outputs are still refused before any model work.
    assert cli.main(["predict", str(clip), "-o", str(out), *SMALL]) == 2
    assert "already exists" in capsys.readouterr().err


def test_skip_existing_and_overwrite_contradict(clip, fake_pipe, tmp_path, capsys):
    assert cli.main(["predict", str(clip), "-o", str(tmp_path), "--skip-existing", "--overwrite", *SMALL]) == 2
    assert "choose one" in capsys.readouterr().err


def test_manifest_lines_are_whole_json_lines(tmp_path):
    manifest = Manifest(tmp_path, process=1)
    manifest.record("in/a.mp4", tmp_path / "a", "failed", 1.23456, error="bad\nthing")
    manifest.record("in/b.mp4", tmp_path / "b", "ok", 2.0, frames=7)
    lines = (tmp_path / MANIFEST_FILE).read_text().splitlines()
    assert [json.loads(line)["status"] for line in lines] == ["failed", "ok"]
    assert json.loads(lines[0])["error"] == "bad thing" and json.loads(lines[0])["seconds"] == 1.235
    # the corpus-run contract (design.md) names the same field `reason`
    assert json.loads(lines[0])["reason"] == "bad thing" and json.loads(lines[1])["reason"] is None
    with pytest.raises(ValueError, match="unknown manifest status"):
        manifest.record("x", tmp_path / "x", "done")


@pytest.mark.distributed
def test_processes_each_write_their_own_lines(clip, tiny_weights, tmp_path):
    """torchrun with two processes on a list of three good inputs and one broken: each process records its own
    inputs (the broken one included) in the one manifest, and the run fails with SOME_FAILED."""
    inputs = [images(tmp_path / "in" / f"seq{i}") for i in range(3)]
    broken = tmp_path / "in" / "broken.mp4"
    broken.write_text("not a video\n")
    out = tmp_path / "out"
    launch = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "-m", "dvd.cli", "predict"]
    common = ["--weights", str(tiny_weights), "--height", "32", "--width", "48", "--quiet", "--keep-going"]
    done = subprocess.run(
        [*launch, *map(str, [*inputs, broken]), "-o", str(out), *common], capture_output=True, text=True, check=False
    )
    assert done.returncode != 0, done.stderr
    lines = read_manifest(out)
    assert sorted(Path(line["output"]).name for line in lines) == ["broken", "seq0", "seq1", "seq2"]
    assert {line["process"] for line in lines} == {0, 1}
    assert {Path(line["output"]).name: line["status"] for line in lines}["broken"] == "failed"
    assert all((out / f"seq{i}" / "disparity.npy").exists() for i in range(3))


def test_a_rerun_with_everything_done_loads_no_model(clip, fake_pipe, monkeypatch, tmp_path, capsys):
    out = tmp_path / "out"
    assert cli.main(["predict", str(clip), "-o", str(out), *SMALL]) == 0

    def no_model(cls, *args, **kwargs):
        raise AssertionError("the model was loaded although every input was skipped")

    stub_model(monkeypatch, no_model)
    capsys.readouterr()
    assert cli.main(["predict", str(clip), "-o", str(out), "--skip-existing", *SMALL]) == 0
    assert "0 written, 1 skipped, 0 failed" in capsys.readouterr().out
