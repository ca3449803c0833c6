"""Output folders, concurrency, signals and the entry point: what dvd replaces, what it leaves behind, how it ends.

Each test names the finding of the hostile-user pass it holds to (issue "No silent wrong answers, no lost user
data"): 1 --overwrite data loss, 2 concurrent runs, 3 staging folders left behind, 4 Ctrl-C while torch loads,
5 slow --help, 6 0700 folders, 7 temporary names in errors, 8 eval's late output check.
"""

from __future__ import annotations

import errno
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from harness import Fault, Workspace, assert_no_leftovers, parametrize, run_fault
from media import write_test_video

from dvd import cli
from dvd.inference.resume import STATE_FILE
from dvd.io import atomic

SMALL = ("--height", 32, "--width", 48, "--quiet")
CHILD_ENV = {"OMP_NUM_THREADS": "1"}  # two cores: children that spin-wait on each other's threads crawl
LONG_RUN = ("--max-frames", 150, "--window", 5, "--overlap", 1)  # tens of seconds of windows after the model loads


def predict(ws: Workspace, *extra) -> list:
    return ["predict", ws.clip, "-o", ws.out, "--weights", ws.weights, *SMALL, "--max-frames", 5, *extra]


def predict_onto(make: Callable[[Workspace], object]) -> Callable[[Workspace], list]:
    """`dvd predict --overwrite` after `make` has put something where the output goes (out/clip)."""

    def argv(ws: Workspace) -> list:
        make(ws)
        return predict(ws, "--overwrite")

    return argv


def long_clip(ws: Workspace) -> Path:
    """A 150-frame clip, also named clip.mp4: a run of it lasts long enough for a signal to land mid-way."""
    path = ws.root / "long" / "clip.mp4"
    if not path.exists():
        path.parent.mkdir()
        write_test_video(path, frames=150)
    return path


def child(ws: Workspace, *extra, out: Path | None = None) -> subprocess.Popen:
    """`python -m dvd.cli predict` of a long clip into `out` (default out/), started in the background."""
    argv = ["predict", long_clip(ws), "-o", out or ws.out, "--weights", ws.weights, *SMALL, *LONG_RUN, *extra]
    return subprocess.Popen(
        [sys.executable, "-m", "dvd.cli", *map(str, argv)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, **CHILD_ENV},
    )


def staging_folders(out: Path) -> list[Path]:
    return list(out.glob(".clip.partial-*")) if out.exists() else []


def wait_for_staging(out: Path, process: subprocess.Popen) -> None:
    """Until the run has started writing into `out` (its staging folder exists), or has ended."""
    deadline = time.monotonic() + 120
    while not staging_folders(out) and process.poll() is None and time.monotonic() < deadline:
        time.sleep(0.02)


def finish(process: subprocess.Popen) -> tuple[int, str]:
    try:
        _, err = process.communicate(timeout=240)
    finally:
        process.kill()
    return process.returncode, err


def one_line(err: str) -> str:
    lines = [line for line in err.splitlines() if line.strip()]
    assert "Traceback" not in err and len(lines) == 1, f"expected one line, no traceback:\n{err}"
    return lines[0]


def is_complete(folder: Path) -> bool:
    meta = json.loads((folder / "meta.json").read_text())
    return np.load(folder / "disparity.npy").shape[0] == meta["num_frames"] > 0


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


def earlier_prediction(ws: Workspace, *extra) -> list:
    assert cli.main([str(a) for a in predict(ws)]) == 0
    return predict(ws, *extra)


def earlier_conversion(ws: Workspace) -> list:
    argv = ["convert", "--weights", ws.weights, "-o", ws.out / "converted"]
    assert cli.main([str(a) for a in argv]) == 0
    return [*argv, "--overwrite"]


def check_replaced_prediction(ws: Workspace) -> None:
    assert is_complete(ws.out / "clip")


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
    Fault("convert --overwrite replaces its own conversion", earlier_conversion, code=0, message="converted"),
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
        lambda ws: earlier_prediction(ws, "--overwrite"),
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
        lambda ws: earlier_eval(ws, "--overwrite"),
        code=0,
        message="wrote",
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
    first = child(workspace, "--max-frames", 6)
    time.sleep(1.0)
    second = child(workspace, "--max-frames", 6)
    results = [finish(first), finish(second)]
    codes = sorted(code for code, _ in results)
    assert codes == [0, 2], results
    loser = one_line(next(err for code, err in results if code == 2))
    assert "another dvd run" in loser or "already exists" in loser
    assert is_complete(workspace.out / "clip")
    assert_no_leftovers(workspace.root)


# Findings 3 and 4: signals at any moment, also while torch is still being imported.
@pytest.mark.parametrize(
    "signum,code", [(signal.SIGINT, 130), (signal.SIGTERM, 143)], ids=["Ctrl-C while torch loads", "SIGTERM too"]
)
def test_signals_while_torch_loads(workspace: Workspace, signum, code) -> None:
    process = child(workspace)
    time.sleep(random.uniform(1.0, 1.5))  # dvd.cli runs after ~0.2 s; importing torch takes seconds more
    process.send_signal(signum)
    returned, err = finish(process)
    assert returned == code, err
    assert "unfinished outputs were removed" in one_line(err)
    assert_no_leftovers(workspace.root)


def test_signals_while_writing(workspace: Workspace) -> None:
    """SIGINT, SIGTERM and SIGKILL at a random moment of three runs (in parallel: each waits seconds for torch)."""
    signals = {"int": signal.SIGINT, "term": signal.SIGTERM, "kill": signal.SIGKILL}
    processes = {name: child(workspace, out=workspace.out / name) for name in signals}
    for name, process in processes.items():
        wait_for_staging(workspace.out / name, process)
        time.sleep(random.uniform(0.0, 1.0))
        process.send_signal(signals[name])
    results = {name: finish(process) for name, process in processes.items()}
    for name, code in (("int", 130), ("term", 143)):
        returned, err = results[name]
        if returned == 0:  # over before the signal: then it is complete
            assert is_complete(workspace.out / name / "clip")
            continue
        assert returned == code, f"SIG{name.upper()}: exit {returned}\n{err}"
        assert not (workspace.out / name / "clip").exists()
        line = one_line(err)
        kept = staging_folders(workspace.out / name)
        if kept:  # a window was complete: its partial output stays for --resume, and the line says where
            assert len(kept) == 1 and f"kept in {kept[0]}" in line and "--resume" in line
        else:
            assert "unfinished outputs were removed" in line
    # SIGKILL leaves its staging folder. Without progress in it, the next run that writes that output removes it;
    # with progress (a window was complete), a plain run refuses to throw it away, --resume goes on with it (bit
    # for bit: tests/test_resume.py) and --overwrite discards it.
    assert staging_folders(workspace.out / "kill"), "the run ended before it was killed"
    for name in ("int", "term", "kill"):
        if staging_folders(workspace.out / name):
            argv = [str(a) for a in predict(workspace, "-o", workspace.out / name)]
            if atomic.resumable_staging(workspace.out / name / "clip", STATE_FILE):
                assert cli.main(argv) == 2
                argv.append("--overwrite")
            assert cli.main(argv) == 0
            assert is_complete(workspace.out / name / "clip")
    assert_no_leftovers(workspace.root)


def dead_process() -> tuple[int, str]:
    """The pid and start time of a process that has exited."""
    done = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(0.3)"])
    start = atomic._start_time(done.pid) or "0"
    done.wait()
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
    (tmp_path / f".summary.tmp-{os.getpid()}.json").mkdir()  # the temporary name is taken: the write fails
    with pytest.raises(OSError) as failure:
        atomic.atomic_write_text(target, "{}")
    assert failure.value.filename == str(target)
