"""Rendezvous points in a child `dvd` process, so that a test signals, kills or races it at a known moment instead
of after a guessed sleep.

The child is this file run as a script: it installs the hooks its environment asks for, then runs `dvd`'s own
entry point (`dvd.cli.console`, as `dvd` and `python -m dvd.cli` do).

- `DVD_TEST_IMPORT_MARK=MODULE`: write `<marks>/import-started` as the import of MODULE (e.g. torch) begins, and
  `<marks>/import-finished` once it has finished.
- `DVD_TEST_PAUSE=MODULE:ATTRIBUTE:CALL:WHEN`: at the CALL-th call of ATTRIBUTE (a function or `Class.method`,
  looked up in MODULE, where its callers find it), before it runs or after it has returned (WHEN), write
  `<marks>/paused` and wait until `<marks>/release` exists. The patch is made as MODULE is imported, so the child
  imports in its usual order. Python handles a signal in the main thread: one sent while a main-thread call waits
  interrupts it there; one sent while another thread (the writer) waits lands wherever the main thread is, while
  the run cannot finish, and the test then releases the waiting thread so that the run can clean up.

`<marks>` is `DVD_TEST_MARKS`; `DVD_TEST_RELEASE` names another release file (children that share one are released
together).
"""

from __future__ import annotations

import functools
import importlib.abc
import importlib.util
import os
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

POLL_SECONDS = 0.002  # how often both sides look for the other's file: a poll interval, not a guess at timing
WAIT_SECONDS = 300  # neither side waits longer for the other (a broken test fails instead of hanging)


def start(argv: list, marks: Path, env: dict[str, str] | None = None, release: Path | None = None) -> subprocess.Popen:
    """`dvd ARGV` in a child process with the hooks `env` asks for (see the module docstring), its marks in
    `marks`; stdout and stderr are pipes."""
    marks.mkdir(parents=True, exist_ok=True)
    extra = {"DVD_TEST_MARKS": str(marks), "DVD_TEST_RELEASE": str(release or marks / "release")}
    return subprocess.Popen(
        [sys.executable, __file__, *map(str, argv)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, **(env or {}), **extra},
    )


def wait_for(mark: Path, process: subprocess.Popen | None = None) -> None:
    """Until `mark` exists; fails if `process` ends first (its stderr in the message) or after WAIT_SECONDS."""
    deadline = time.monotonic() + WAIT_SECONDS
    while not mark.exists():
        if process is not None and process.poll() is not None:
            raise AssertionError(
                f"the child ended (exit {process.returncode}) before {mark.name}: {process.stderr.read()}"
            )
        if time.monotonic() > deadline:
            raise AssertionError(f"no {mark} after {WAIT_SECONDS} s")
        time.sleep(POLL_SECONDS)


def release(marks: Path) -> None:
    (marks / "release").touch()


def finish(process: subprocess.Popen) -> tuple[int, str]:
    """The child's exit code and stderr, once it has ended (killed if it outlives WAIT_SECONDS)."""
    try:
        _, err = process.communicate(timeout=WAIT_SECONDS)
    finally:
        process.kill()
    return process.returncode, err


# --- the child's side ----------------------------------------------------------------------------------------------


def _mark(name: str) -> None:
    (Path(os.environ["DVD_TEST_MARKS"]) / name).touch()


def _pause() -> None:
    _mark("paused")
    release_file = Path(os.environ["DVD_TEST_RELEASE"])
    deadline = time.monotonic() + WAIT_SECONDS
    while not release_file.exists() and time.monotonic() < deadline:
        time.sleep(POLL_SECONDS)


def _pausing(function: Callable, call: int, when: str) -> Callable:
    calls = 0

    @functools.wraps(function)
    def wrapper(*args, **kwargs):
        nonlocal calls
        calls += 1
        if calls == call and when == "before":
            _pause()
        result = function(*args, **kwargs)
        if calls == call and when == "after":
            _pause()
        return result

    return wrapper


class _Hooks(importlib.abc.MetaPathFinder):
    """Runs `on_start(name)` and `on_finish(name, module)` around the execution of the modules in `watched`."""

    def __init__(self, watched: dict[str, tuple[Callable, Callable]]) -> None:
        self.watched = watched

    def find_spec(self, name, path, target=None):
        if name not in self.watched:
            return None
        sys.meta_path.remove(self)
        try:
            spec = importlib.util.find_spec(name)
        finally:
            sys.meta_path.insert(0, self)
        on_start, on_finish = self.watched.pop(name)
        execute = spec.loader.exec_module

        def exec_module(module):
            on_start(name)
            execute(module)
            on_finish(name, module)

        spec.loader.exec_module = exec_module
        return spec


def _install() -> None:
    watched: dict[str, tuple[Callable, Callable]] = {}
    imported = os.environ.get("DVD_TEST_IMPORT_MARK")
    if imported:
        watched[imported] = (lambda name: _mark("import-started"), lambda name, module: _mark("import-finished"))
    pause = os.environ.get("DVD_TEST_PAUSE")
    if pause:
        module_name, attribute, call, when = pause.split(":")
        owner_path, _, name = attribute.rpartition(".")

        def patch(module_name: str, module: object) -> None:
            owner = functools.reduce(getattr, owner_path.split("."), module) if owner_path else module
            setattr(owner, name, _pausing(getattr(owner, name), int(call), when))

        watched[module_name] = (lambda name: None, patch)
    sys.meta_path.insert(0, _Hooks(watched))


if __name__ == "__main__":
    _install()
    sys.argv = ["dvd", *sys.argv[1:]]
    from dvd.cli import console

    console()
