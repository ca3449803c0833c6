"""Fixtures of the fault suite (tests/faults/harness.py holds the harness itself)."""

from __future__ import annotations

from pathlib import Path

import pytest
from harness import Workspace, make_workspace


@pytest.fixture
def workspace(tmp_path: Path, clip: Path, tiny_weights: Path, one_torch_thread) -> Workspace:
    return make_workspace(tmp_path, clip, tiny_weights)
