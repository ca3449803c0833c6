"""The documentation site builds with no broken link or anchor, and names every flag of every command."""

from __future__ import annotations

import argparse
import importlib.util
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from dvd import cli

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.skipif(
    importlib.util.find_spec("mkdocs") is None or importlib.util.find_spec("material") is None,
    reason="mkdocs-material is not installed (the docs and dev extras install it)",
)
@pytest.mark.smoke
def test_site_builds_strictly(tmp_path: Path):
    site = tmp_path / "site"
    done = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(site)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
        env={**os.environ, "NO_MKDOCS_2_WARNING": "1"},
    )
    assert done.returncode == 0, done.stderr
    for page in ("index.html", "predict/index.html", "guarantees/index.html", "images/proof-model.png"):
        assert (site / page).is_file(), f"the site has no {page}"


# The page that documents each command's flags.
COMMAND_PAGES = {
    "predict": "predict.md",
    "convert": "weights.md",
    "eval": "evaluation.md",
    "train": "training.md",
    "demo": "weights.md",
    "bench": "benchmarks.md",
    "app": "app.md",
    "doctor": "troubleshooting.md",
}


def test_every_command_has_a_page():
    assert set(COMMAND_PAGES) == set(cli.COMMAND_MODULES)


@pytest.mark.parametrize(("command", "page"), sorted(COMMAND_PAGES.items()))
def test_pages_name_every_flag(command: str, page: str):
    subparsers = argparse.ArgumentParser().add_subparsers()
    importlib.import_module(f"dvd.commands.{command}").register(subparsers)
    flags = {
        option
        for action in subparsers.choices[command]._actions
        for option in action.option_strings
        if option.startswith("--") and option != "--help"
    }
    text = (ROOT / "docs" / page).read_text(encoding="utf-8")
    missing = sorted(flag for flag in flags if not re.search(re.escape(flag) + r"(?![\w-])", text))
    assert not missing, f"docs/{page} does not document dvd {command}'s {', '.join(missing)}"
