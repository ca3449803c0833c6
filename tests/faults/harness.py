"""The fault suite's harness: one hostile case = what to set up, what to run, what must come out.

Every case is held to the same guarantees, whatever it tests:
- the exit code is the expected one (0 only where the tool must succeed);
- a failure prints exactly one line on stderr, naming the problem, and no traceback;
- nothing half-written is left: no `.partial-`, `.old-` or `.tmp-` names anywhere in the workspace;
- a failed run leaves nothing new in the workspace: no output under its final name either, only the `-o` folder
  itself and the manifest's line, or the complete outputs the case names in `leaves` (docs/guarantees.md: an
  output appears complete or not at all);
- files the user had before the run are untouched (same bytes), unless the case says it replaces them.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import yaml

from dvd import cli

LEFTOVER_MARKERS = (".partial-", ".old-", ".tmp-")
MANIFEST = "manifest.jsonl"  # every predict run appends its line to OUT/manifest.jsonl, failed ones too


@dataclass
class Workspace:
    """A fresh folder per case: `user/` holds files the tool must never touch; `out/` is where outputs go."""

    root: Path
    clip: Path  # a small H.264 video (tests/media.py)
    weights: Path  # tiny random weights in the official layout

    @property
    def user(self) -> Path:
        return self.root / "user"

    @property
    def out(self) -> Path:
        return self.root / "out"

    def snapshot(self) -> dict[str, str]:
        """Bytes of every file under user/ and out/, by relative path (what a run must leave alone)."""
        files = {}
        for folder in (self.user, self.out):
            for path in sorted(folder.rglob("*")) if folder.exists() else []:
                if path.is_file():
                    files[str(path.relative_to(self.root))] = hashlib.sha256(path.read_bytes()).hexdigest()
        return files

    def paths(self) -> set[str]:
        """Every file and folder in the workspace, by relative path (what a failed run must not add to)."""
        return {str(path.relative_to(self.root)) for path in self.root.rglob("*")}


@dataclass(frozen=True)
class Fault:
    """One case. `argv` builds its inputs in the workspace and returns the arguments after `dvd`."""

    name: str
    argv: Callable[[Workspace], list]
    code: int = 2
    message: str = ""  # a fragment of the one stderr line (code != 0) or of stdout (code 0)
    check: Callable[[Workspace], None] | None = None  # further assertions on what is on disk
    replaces: tuple[str, ...] = ()  # workspace-relative files the run may legitimately rewrite
    subprocess: bool = False  # run `python -m dvd.cli` in a child process (signals, imports, environment)
    env: dict[str, str] | None = None
    leaves: tuple[str, ...] = ()  # workspace-relative outputs a failed run keeps, complete (docs/guarantees.md)


def make_workspace(tmp_path: Path, clip: Path, weights: Path) -> Workspace:
    workspace = Workspace(tmp_path, clip, weights)
    workspace.user.mkdir()
    (workspace.user / "notes.txt").write_text("a file of the user's; no dvd command may touch it\n")
    return workspace


def run_dvd(argv: list, env: dict[str, str] | None = None, timeout: float = 300) -> subprocess.CompletedProcess:
    """`python -m dvd.cli ARGV` in a child process, with the given extra environment."""
    return subprocess.run(
        [sys.executable, "-m", "dvd.cli", *map(str, argv)],
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
        env={**os.environ, **(env or {})},
    )


def run_fault(fault: Fault, workspace: Workspace, capsys: pytest.CaptureFixture) -> tuple[int, str, str]:
    """Run one case and check every guarantee of the module docstring; returns (code, stdout, stderr)."""
    argv = [str(a) for a in fault.argv(workspace)]
    before = workspace.snapshot()
    paths_before = workspace.paths()
    if fault.subprocess:
        done = run_dvd(argv, fault.env)
        code, out, err = done.returncode, done.stdout, done.stderr
    else:
        capsys.readouterr()
        code = cli.main(argv)
        out, err = capsys.readouterr()
    assert code == fault.code, f"{fault.name}: exit {code}, expected {fault.code}\nstdout: {out}\nstderr: {err}"
    assert "Traceback" not in err, f"{fault.name}: traceback on stderr\n{err}"
    if fault.code != 0:
        lines = [line for line in err.splitlines() if line.strip()]
        assert len(lines) == 1, f"{fault.name}: expected one line on stderr, got {len(lines)}:\n{err}"
        assert fault.message in lines[0], f"{fault.name}: {fault.message!r} not in {lines[0]!r}"
    else:
        assert fault.message in out, f"{fault.name}: {fault.message!r} not in stdout {out!r}"
    assert_no_leftovers(workspace.root)
    if fault.code != 0:
        assert_failed_run_added_nothing(workspace, paths_before, fault.leaves)
    after = workspace.snapshot()
    for name, digest in before.items():
        # Every predict run appends its lines to OUT/manifest.jsonl (tests/test_batch.py checks them).
        if name not in fault.replaces and Path(name).name != MANIFEST:
            assert after.get(name) == digest, f"{fault.name}: {name} was changed or removed"
    if fault.check is not None:
        fault.check(workspace)
    return code, out, err


def assert_no_leftovers(root: Path) -> None:
    leftovers = [p for p in root.rglob("*") if any(marker in p.name for marker in LEFTOVER_MARKERS)]
    assert not leftovers, f"half-written outputs left behind: {leftovers}"


def assert_failed_run_added_nothing(workspace: Workspace, before: set[str], leaves: tuple[str, ...] = ()) -> None:
    """A failed run added to the workspace at most the output folder `out/` and its manifest line, and the outputs
    in `leaves` (a `dvd predict` one complete): no other output under its final name, whole or not."""
    for name in leaves:
        kept = workspace.root / name
        assert kept.exists(), f"{name} was not kept"
        if (kept / "meta.json").exists() or (kept / "disparity.npy").exists():
            assert_complete_output(kept)

    def allowed(name: str) -> bool:
        return name in ("out", f"out/{MANIFEST}") or any(name == k or name.startswith(f"{k}/") for k in leaves)

    added = sorted(name for name in workspace.paths() - before if not allowed(name))
    assert not added, f"a failed run left new paths behind: {added}"


def assert_complete_output(folder: Path) -> None:
    """`folder` is a finished `dvd predict` output: every file its meta.json names is there, and its disparity.npy
    (where it wrote one) holds every frame meta.json counts."""
    assert (folder / "meta.json").is_file(), f"{folder} is not a complete output: no meta.json"
    meta = json.loads((folder / "meta.json").read_text())
    for output in meta.get("outputs", {}).values():
        name = output.get("file") or output.get("folder")
        assert name is None or (folder / name).exists(), f"{folder}: meta.json names {name}, which is missing"
    if not (folder / "disparity.npy").exists():
        return
    frames = np.load(folder / "disparity.npy", mmap_mode="r").shape[0]
    assert frames == meta["num_frames"] > 0, f"{folder}: {frames} frames in disparity.npy, meta.json says {meta}"


def parametrize(cases: list[Fault]):
    """`@parametrize(CASES)` on a test taking `fault`: one test per case, named after it."""
    return pytest.mark.parametrize("fault", cases, ids=[case.name for case in cases])


def write_train_config(path: Path, output_dir: Path, **train: object) -> Path:
    """A one-step `dvd train` config of the tiny model on synthetic images; `train` adds or overrides train keys."""
    source = {"kind": "synthetic", "samples": 4, "height": 32, "width": 32, "clips": False}
    config = {
        "model": {"weights": "tiny"},
        "finetune": {"lora_rank": 4},
        "data": {"clip_frames": 5, "image_batch": 1, "sources": [source]},
        "optim": {"lr": 1e-3, "grad_accum": 1},
        "train": {
            "output_dir": str(output_dir),
            "max_steps": 1,
            "mixed_precision": "no",
            "gradient_checkpointing": False,
            "validate_at_start": False,
            "loggers": ["csv"],
            **train,
        },
    }
    path.write_text(yaml.safe_dump(config))
    return path
