"""Output folders, concurrency, signals and the entry point: what dvd replaces, what it leaves behind, how it ends.

Each test names the finding of the hostile-user pass it holds to (issue "No silent wrong answers, no lost user
data"): 1 --overwrite data loss, 2 concurrent runs, 3 staging folders left behind, 4 Ctrl-C while torch loads,
5 slow --help, 6 0700 folders, 7 temporary names in errors, 8 eval's late output check.
"""

from __future__ import annotations

import errno
import json
import os
import shutil
import signal
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import rendezvous
from harness import Fault, Workspace, assert_complete_output, assert_no_leftovers, parametrize, run_fault
from media import write_test_video
from safetensors.torch import load_file, save_file

from dvd import cli
from dvd.io import atomic
from dvd.jobs.resume import STATE_FILE

SMALL = ("--height", 32, "--width", 48, "--quiet")
CHILD_ENV = {"OMP_NUM_THREADS": "1"}  # two cores: children that spin-wait on each other's threads crawl
# Rendezvous points of the child runs (tests/rendezvous.py): before the output is renamed into place; after the
# first resume point is saved (a window is complete, in the writing thread); before the first model call.
BEFORE_COMMIT = "dvd.io.atomic:_commit:1:before"
AFTER_FIRST_CHECKPOINT = "dvd.jobs.resume:save_checkpoint:1:after"
BEFORE_FIRST_WINDOW = "dvd.pipeline.dvd_pipeline:DVDPipeline.predict_windows:1:before"


def predict(ws: Workspace, *extra, source: Path | None = None) -> list:
    """`dvd predict` of the first 5 frames of `source` (default the shared clip) into out/; `-o` in `extra` wins."""
    source = source or ws.clip
    return ["predict", source, "-o", ws.out, "--weights", ws.weights, *SMALL, "--max-frames", 5, *extra]


def predict_onto(make: Callable[[Workspace], object]) -> Callable[[Workspace], list]:
    """`dvd predict --overwrite` after `make` has put something where the output goes (out/clip)."""

    def argv(ws: Workspace) -> list:
        make(ws)
        return predict(ws, "--overwrite")

    return argv


def child(ws: Workspace, out: str, held: str, pause: str | None = None, release: Path | None = None, **env):
    """`three_windows` into out/OUT in a child process (tests/rendezvous.py), its marks in marks/HELD, held at `pause`
    (MODULE:ATTRIBUTE:CALL:before|after) until released."""
    env = {**CHILD_ENV, **env, **({"DVD_TEST_PAUSE": pause} if pause else {})}
    return rendezvous.start(three_windows(ws, ws.out / out), ws.root / "marks" / held, env, release)


def three_windows(ws: Workspace, out: Path) -> list:
    """`dvd predict` of 13 frames in three windows into `out`: a resume point after each of the first two."""
    return predict(ws, "-o", out, "--max-frames", 13, "--window", 5, "--overlap", 1)


def staging_folders(out: Path) -> list[Path]:
    return list(out.glob(".clip.partial-*")) if out.exists() else []


def one_line(err: str) -> str:
    lines = [line for line in err.splitlines() if line.strip()]
    assert "Traceback" not in err and len(lines) == 1, f"expected one line, no traceback:\n{err}"
    return lines[0]


def fake_prediction(folder: Path, *, kind: str = "disparity", extra: str | None = None) -> Path:
    """A folder laid out like a `dvd predict` output (meta.json naming its files), optionally with a user file."""
    folder.mkdir(parents=True)
    np.save(folder / "disparity.npy", np.zeros((1, 2, 2), np.float32))
    meta = {"kind": kind, "dvd_version": "0.1.0", "outputs": {"npy": {"file": "disparity.npy"}}}
    (folder / "meta.json").write_text(json.dumps(meta))
    if extra is not None:
        (folder / extra).write_text("the user's\n")
    return folder


def user_file_named_clip(ws: Workspace) -> Path:
    ws.out.mkdir()
    (ws.out / "clip").write_text("the user's\n")
    return ws.out / "clip"


def user_folder(ws: Workspace, name: str = "mine") -> Path:
    folder = ws.out / name
    folder.mkdir(parents=True)
    (folder / "holiday.txt").write_text("the user's\n")
    return folder


def weights_inside_user(ws: Workspace) -> Path:
    shutil.copytree(ws.weights, ws.user / "weights")
    return ws.user / "weights"


def gt_and_predictions(ws: Workspace) -> tuple[Path, Path]:
    """A one-sequence GT folder and a perfect (affine) prediction for it."""
    depth = np.random.default_rng(0).uniform(1.0, 10.0, (3, 12, 16)).astype(np.float32)
    (ws.root / "gt" / "seq" / "depth").mkdir(parents=True)
    for index, frame in enumerate(depth):
        np.save(ws.root / "gt" / "seq" / "depth" / f"{index:04d}.npy", frame)
    (ws.root / "pred").mkdir()
    np.save(ws.root / "pred" / "seq.npy", (2.5 / depth + 0.3).astype(np.float32))
    return ws.root / "gt", ws.root / "pred"


def user_json(ws: Workspace) -> Path:
    (ws.user / "settings.json").write_text("{}\n")
    return ws.user / "settings.json"


def evaluate(ws: Workspace, *extra, data: bool = False) -> list:
    """`dvd eval` of saved predictions; without `data` the GT folder does not exist, so a refusal that names the
    output shows that the output was checked before any data was read."""
    gt, pred = gt_and_predictions(ws) if data else (ws.root / "no-gt", ws.root / "no-pred")
    return ["eval", "--gt-folder", gt, "--predictions", pred, "--min-depth", 0.5, "--max-depth", 20, *extra]


def earlier_eval(ws: Workspace, *extra) -> list:
    argv = evaluate(ws, "-o", ws.out / "run", "--json", ws.out / "run.json", data=True)
    assert cli.main([str(a) for a in argv]) == 0
    return [*argv, *extra]


def changed_weights(ws: Workspace) -> Path:
    """A copy of the tiny weights with one LoRA tensor doubled: the merged model differs."""
    folder = ws.root / "changed-weights"
    shutil.copytree(ws.weights, folder)
    state = load_file(folder / "model.safetensors")
    state["pipe.dit.blocks.0.self_attn.q.lora_B.default.weight"] *= 2
    save_file(state, folder / "model.safetensors")
    return folder


def convert(weights: Path, out: Path) -> list:
    return ["convert", "--weights", weights, "-o", out]


def earlier_conversion(ws: Workspace) -> list:
    """A conversion (copied to first/), then the same command with --overwrite, of weights changed meanwhile;
    out/fresh holds a conversion of the changed weights."""
    assert cli.main([str(a) for a in convert(ws.weights, ws.out / "converted")]) == 0
    shutil.copytree(ws.out / "converted", ws.root / "first")
    changed = changed_weights(ws)
    assert cli.main([str(a) for a in convert(changed, ws.out / "fresh")]) == 0
    return [*convert(changed, ws.out / "converted"), "--overwrite"]


CONVERTED_WEIGHTS = ("transformer/diffusion_pytorch_model.safetensors", "vae/diffusion_pytorch_model.safetensors")


def check_replaced_conversion(ws: Workspace) -> None:
    """The replaced conversion is the changed weights', byte for byte, not the earlier one."""
    for file in sorted(p.relative_to(ws.out / "fresh") for p in (ws.out / "fresh").rglob("*") if p.is_file()):
        assert (ws.out / "converted" / file).read_bytes() == (ws.out / "fresh" / file).read_bytes(), file
    transformer = CONVERTED_WEIGHTS[0]
    assert (ws.out / "converted" / transformer).read_bytes() != (ws.root / "first" / transformer).read_bytes()


def earlier_prediction_of_another_clip(ws: Workspace) -> list:
    """A prediction of in/clip.mp4, then the same command with --overwrite after that file was replaced by a clip
    of another size (and another picture); out/fresh/clip holds the prediction of the new clip."""
    source = ws.root / "in" / "clip.mp4"
    source.parent.mkdir()
    shutil.copy(ws.clip, source)
    assert cli.main([str(a) for a in predict(ws, source=source)]) == 0
    write_test_video(source, frames=8, size=(72, 128))
    assert cli.main([str(a) for a in predict(ws, "-o", ws.out / "fresh", source=source)]) == 0
    return predict(ws, "--overwrite", source=source)


def check_replaced_prediction(ws: Workspace) -> None:
    assert_complete_output(ws.out / "clip")
    replaced, fresh = (np.load(ws.out / name / "disparity.npy") for name in ("clip", "fresh/clip"))
    assert replaced.shape == (5, 72, 128)  # the new clip's size, not the earlier 90x160
    np.testing.assert_array_equal(replaced, fresh)


def earlier_eval_of_other_predictions(ws: Workspace) -> list:
    """Results of a perfect prediction, then the same command with --overwrite after the prediction was changed to
    one with errors; out/fresh holds the results of the changed one."""
    argv = [str(a) for a in earlier_eval(ws)]
    prediction = ws.root / "pred" / "seq.npy"
    noise = np.random.default_rng(1).uniform(0.5, 1.5, (3, 12, 16)).astype(np.float32)
    np.save(prediction, np.load(prediction) * noise)
    fresh = argv[: argv.index("-o")] + ["-o", str(ws.out / "fresh")]
    assert cli.main(fresh) == 0
    return [*argv, "--overwrite"]


def check_replaced_results(ws: Workspace) -> None:
    """The replaced results are the changed prediction's (those of a fresh run), not the perfect score."""
    replaced, fresh = (json.loads((ws.out / name / "summary.json").read_text())["mean"] for name in ("run", "fresh"))
    assert replaced == fresh and replaced["abs_rel"] > 0.05, (replaced, fresh)
    assert json.loads((ws.out / "run.json").read_text())["mean"] == fresh


# Finding 1: --overwrite replaces only what dvd wrote; finding 8: eval checks its outputs before any scoring.
OVERWRITE = [
    Fault(
        "convert --overwrite onto a folder of user files",
        lambda ws: ["convert", "--weights", ws.weights, "-o", ws.user, "--overwrite"],
        message="not an output of this dvd command",
    ),
    Fault(
        "convert --overwrite onto the parent of its own source",
        lambda ws: ["convert", "--weights", weights_inside_user(ws), "-o", ws.user, "--overwrite"],
        message="replaces only dvd's own outputs",
    ),
    Fault(
        "convert --overwrite onto a user file",
        lambda ws: ["convert", "--weights", ws.weights, "-o", ws.user / "notes.txt", "--overwrite"],
        message="no model_index.json",
    ),
    Fault(
        "convert --overwrite onto a predict output",
        lambda ws: ["convert", "--weights", ws.weights, "-o", fake_prediction(ws.out / "clip"), "--overwrite"],
        message="model_index.json",
    ),
    Fault(
        "convert without --overwrite onto an existing folder",
        lambda ws: ["convert", "--weights", ws.weights, "-o", user_folder(ws)],
        message="already exists",
    ),
    Fault(
        "convert --overwrite replaces its own conversion",
        earlier_conversion,
        code=0,
        message="converted",
        check=check_replaced_conversion,
        replaces=tuple(
            f"out/converted/{name}"
            for name in ("model_index.json", "transformer/config.json", "vae/config.json", *CONVERTED_WEIGHTS)
        ),
    ),
    Fault(
        "predict --overwrite onto a folder of user files",
        predict_onto(lambda ws: user_folder(ws, "clip")),
        message="no readable meta.json",
    ),
    Fault(
        "predict --overwrite onto its own output with a user file added",
        predict_onto(lambda ws: fake_prediction(ws.out / "clip", extra="notes.md")),
        message="notes.md, which dvd did not write",
    ),
    Fault(
        "predict --overwrite onto a meta.json of another kind",
        predict_onto(lambda ws: fake_prediction(ws.out / "clip", kind="mask")),
        message="not one of dvd predict's",
    ),
    Fault(
        "predict --overwrite onto a user file named like the output",
        predict_onto(user_file_named_clip),
        message="no readable meta.json",
    ),
    Fault(
        "predict --overwrite replaces its own output",
        earlier_prediction_of_another_clip,
        code=0,
        message="5 frames",
        check=check_replaced_prediction,
        replaces=("out/clip/meta.json", "out/clip/disparity.npy", "out/clip/depth_vis.mp4"),
    ),
    Fault(
        "eval -o onto earlier results, before reading any data",
        lambda ws: evaluate(ws, "-o", user_folder(ws)),
        message="already exists",
    ),
    Fault(
        "eval --overwrite -o onto a folder of user files, before reading any data",
        lambda ws: evaluate(ws, "-o", user_folder(ws), "--overwrite"),
        message="not a dvd eval result",
    ),
    Fault(
        "eval --json onto a user file, before reading any data",
        lambda ws: evaluate(ws, "--json", ws.user / "notes.txt"),
        message="already exists",
    ),
    Fault(
        "eval --overwrite --json onto a user's JSON",
        lambda ws: evaluate(ws, "--json", user_json(ws), "--overwrite"),
        message="not a dvd eval result",
    ),
    Fault(
        "eval -o without --overwrite onto its own earlier results",
        lambda ws: earlier_eval(ws)[:-2],  # drops --json: only the -o folder is in the way
        message="already exists",
    ),
    Fault(
        "eval --overwrite replaces its own results",
        earlier_eval_of_other_predictions,
        code=0,
        message="wrote",
        check=check_replaced_results,
        replaces=tuple(
            f"out/run/{name}" for name in ("summary.json", "per_sequence.jsonl", "summary.md", "summary.csv")
        )
        + ("out/run.json",),
    ),
    Fault(
        "eval --report -o onto a folder of user files",
        lambda ws: ["eval", "--report", ws.root / "missing-run", "-o", user_folder(ws), "--overwrite"],
        message="has no report.md",
    ),
]


@parametrize(OVERWRITE)
def test_overwrite_only_replaces_dvds_own_outputs(fault: Fault, workspace: Workspace, capsys) -> None:
    run_fault(fault, workspace, capsys)


# Finding 5: the parsers need no torch.
ENTRY = [
    Fault("argument error", lambda ws: ["predict", ws.clip], message="required: -o/--output", subprocess=True),
    Fault("unknown command", lambda ws: ["predcit"], message="invalid choice", subprocess=True),
]


@parametrize(ENTRY)
def test_argument_errors_are_one_line(fault: Fault, workspace: Workspace, capsys) -> None:
    run_fault(fault, workspace, capsys)


def test_help_and_argument_errors_do_not_import_torch() -> None:
    probe = (
        "import runpy, sys\n"
        "sys.argv = ['dvd', *sys.argv[1:]]\n"
        "try:\n    runpy.run_module('dvd.cli', run_name='__main__')\nexcept SystemExit:\n    pass\n"
        "print(sorted(m for m in ('torch', 'diffusers', 'av', 'numpy') if m in sys.modules), file=sys.stderr)\n"
    )
    for argv in ([], ["--help"], *[[name, "--help"] for name in cli.COMMAND_MODULES], ["predict", "x"]):
        done = subprocess.run([sys.executable, "-c", probe, *argv], capture_output=True, text=True, check=False)
        assert done.stderr.splitlines()[-1] == "[]", f"dvd {' '.join(argv)} imported {done.stderr}"


# Finding 2: two runs into one folder.
def test_concurrent_runs_one_wins_the_other_fails_cleanly(workspace: Workspace) -> None:
    """Both runs are held once their output is written, just before it is renamed into place (so both are past the
    check that it does not exist yet), then released together: the rename decides, and exactly one gets it."""
    release = workspace.root / "release"
    runs = [child(workspace, "race", f"run{index}", BEFORE_COMMIT, release) for index in range(2)]
    for index, run in enumerate(runs):
        rendezvous.wait_for(workspace.root / "marks" / f"run{index}" / "paused", run)
    assert len(staging_folders(workspace.out / "race")) == 2 and not (workspace.out / "race" / "clip").exists()
    release.touch()
    results = [rendezvous.finish(run) for run in runs]
    assert sorted(code for code, _ in results) == [0, 2], results
    loser = one_line(next(err for code, err in results if code == 2))
    assert f"{workspace.out / 'race' / 'clip'} appeared while this run was writing it (another dvd run?)" in loser
    assert_complete_output(workspace.out / "race" / "clip")
    assert_no_leftovers(workspace.root)


# Findings 3 and 4: signals at any moment, also while torch is still being imported.
@pytest.mark.parametrize(
    "signum,code", [(signal.SIGINT, 130), (signal.SIGTERM, 143)], ids=["Ctrl-C while torch loads", "SIGTERM too"]
)
def test_signals_while_torch_loads(workspace: Workspace, signum, code) -> None:
    held = workspace.root / "marks" / "run"
    process = child(workspace, "run", "run", DVD_TEST_IMPORT_MARK="torch")
    rendezvous.wait_for(held / "import-started", process)
    process.send_signal(signum)
    returned, err = rendezvous.finish(process)
    assert not (held / "import-finished").exists(), "torch had finished loading when the signal landed"
    assert returned == code, err
    assert "unfinished outputs were removed" in one_line(err)
    assert not (workspace.out / "run").exists() or os.listdir(workspace.out / "run") == []
    assert_no_leftovers(workspace.root)


def test_signals_while_writing(workspace: Workspace) -> None:
    """Three runs in parallel (each waits seconds for torch), each signalled at a rendezvous point: SIGINT once a
    window is complete (its output kept for --resume), SIGTERM before the first window (nothing kept), SIGKILL once
    a window is complete (its staging folder left; the next runs must not take it for finished or throw it away)."""
    points = {"int": AFTER_FIRST_CHECKPOINT, "term": BEFORE_FIRST_WINDOW, "kill": AFTER_FIRST_CHECKPOINT}
    signals = {"int": signal.SIGINT, "term": signal.SIGTERM, "kill": signal.SIGKILL}
    processes = {name: child(workspace, name, name, point) for name, point in points.items()}
    for name, process in processes.items():
        held = workspace.root / "marks" / name
        rendezvous.wait_for(held / "paused", process)
        assert len(staging_folders(workspace.out / name)) == 1  # it is writing
        process.send_signal(signals[name])
        rendezvous.release(held)  # a run held in its writing thread goes on there; the signal is the main thread's
    results = {name: rendezvous.finish(process) for name, process in processes.items()}
    assert results["int"][0] == 130 and results["term"][0] == 143 and results["kill"][0] == -signal.SIGKILL, results
    for name in signals:
        assert not (workspace.out / name / "clip").exists(), f"SIG{name.upper()}: an unfinished output in place"
    (kept,) = staging_folders(workspace.out / "int")
    line = one_line(results["int"][1])
    assert f"kept in {kept}" in line and "--resume" in line, line
    assert "unfinished outputs were removed" in one_line(results["term"][1])
    assert staging_folders(workspace.out / "term") == []
    # A kept or killed run's progress: a plain run refuses to throw it away, --resume goes on with it (bit for bit:
    # tests/test_resume.py) and --overwrite discards it.
    for name, finish_with in (("int", "--overwrite"), ("kill", "--resume")):
        argv = [str(a) for a in three_windows(workspace, workspace.out / name)]
        assert atomic.resumable_staging(workspace.out / name / "clip", STATE_FILE), name
        assert cli.main(argv) == 2
        assert cli.main([*argv, finish_with]) == 0
        assert_complete_output(workspace.out / name / "clip")
    assert_no_leftovers(workspace.root)


def dead_process() -> tuple[int, str]:
    """The pid and start time of a process that has exited (it lives until its stdin closes)."""
    done = subprocess.Popen([sys.executable, "-c", "import sys; sys.stdin.read()"], stdin=subprocess.PIPE)
    start = atomic._start_time(done.pid) or "0"
    done.communicate()
    return done.pid, start


def test_only_staging_folders_of_dead_runs_are_removed(workspace: Workspace) -> None:
    workspace.out.mkdir()
    pid, start = dead_process()
    stale = workspace.out / f".clip.partial-{pid}-{start}-0a1b2c3d"
    reused = workspace.out / f".clip.partial-{os.getpid()}-1-0a1b2c3d"  # our pid, another start time: pid reuse
    live = workspace.out / f".clip.partial-{os.getpid()}-{atomic._start_time(os.getpid()) or '0'}-0a1b2c3d"
    foreign = [workspace.out / ".clip.partial-of-the-user", workspace.out / ".other.partial-1-2-0a1b2c3d"]
    for folder in [stale, reused, live, *foreign]:
        folder.mkdir()
        (folder / "x").write_text("x")
    for folder in (stale, reused, live):  # as dvd makes them: with the marker their name calls for
        atomic._write_marker(folder, workspace.out / "clip")
    assert sorted(atomic.remove_stale_staging(workspace.out / "clip")) == sorted([stale, reused])
    assert live.exists() and all(folder.exists() for folder in foreign)


# Finding 6: permissions follow the umask.
@pytest.mark.parametrize("umask,folder_mode,file_mode", [(0o022, 0o755, 0o644), (0o002, 0o775, 0o664)])
def test_outputs_get_the_umasks_permissions(workspace: Workspace, umask, folder_mode, file_mode) -> None:
    previous = os.umask(umask)
    try:
        with atomic.atomic_directory(workspace.out / "result") as staging:
            (staging / "data.txt").write_text("x")
        atomic.atomic_write_text(workspace.out / "summary.json", "{}")
    finally:
        os.umask(previous)
    assert (workspace.out / "result").stat().st_mode & 0o777 == folder_mode
    assert (workspace.out / "result" / "data.txt").stat().st_mode & 0o777 == file_mode
    assert (workspace.out / "summary.json").stat().st_mode & 0o777 == file_mode


def test_predict_folder_permissions_follow_the_umask(workspace: Workspace) -> None:
    previous = os.umask(0o022)
    try:
        assert cli.main([str(a) for a in predict(workspace)]) == 0
    finally:
        os.umask(previous)
    assert (workspace.out / "clip").stat().st_mode & 0o777 == 0o755


# Finding 7: errors name the user's path, not the staging or temporary one.
def test_disk_errors_name_the_final_path(workspace: Workspace, capsys, monkeypatch) -> None:
    from dvd.io.writers import NpyWriter

    def disk_full(self, *args) -> None:
        raise OSError(errno.ENOSPC, "No space left on device", str(self.path))

    monkeypatch.setattr(NpyWriter, "write", disk_full)
    assert cli.main([str(a) for a in predict(workspace)]) == 2
    line = one_line(capsys.readouterr().err)
    assert str(workspace.out / "clip" / "disparity.npy") in line and ".partial-" not in line
    assert_no_leftovers(workspace.root)


def test_temporary_file_errors_name_the_final_path(tmp_path: Path) -> None:
    target = tmp_path / "summary.json"
    with pytest.raises(OSError) as failure, atomic.atomic_file(target) as tmp:
        raise OSError(errno.ENOSPC, "No space left on device", str(tmp))  # the disk fills while writing it
    assert failure.value.filename == str(target) and os.listdir(tmp_path) == []
    (tmp_path / "file").write_text("x")
    with pytest.raises(NotADirectoryError) as failure:  # the temporary file cannot even be made
        atomic.atomic_write_text(tmp_path / "file" / "summary.json", "{}")
    assert failure.value.filename == str(tmp_path / "file" / "summary.json")
