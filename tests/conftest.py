"""Shared fixtures: tiny random DVD weights in the official file formats, a small generated video, one torch thread."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from accelerate.state import AcceleratorState
from media import write_test_video

from dvd.weights.tiny import write_tiny_official_weights


@pytest.fixture(scope="session")
def tiny_weights(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A folder like the official release: model.safetensors (pipe.dit. + LoRA), model_config.yaml, Wan2.1_VAE.pth."""
    return write_tiny_official_weights(tmp_path_factory.mktemp("tiny_official"), seed=0)


@pytest.fixture
def one_torch_thread():
    """One torch thread: on a small shared CPU, spin-waiting OpenMP threads make model runs several times slower."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture
def one_thread_fresh_accelerate(one_torch_thread):
    """For tests that train in-process: accelerate's process state is a singleton, reset before and after each test
    (a `dvd` command run in-process by an earlier test leaves one behind)."""
    AcceleratorState._reset_state(reset_partial_state=True)
    yield
    AcceleratorState._reset_state(reset_partial_state=True)


@pytest.fixture(scope="session")
def clip(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """clip.mp4: 30 frames of 160x90 at 24 fps (16:9, so SMALL model sizes match a 960x540 video's)."""
    return write_test_video(tmp_path_factory.mktemp("media") / "clip.mp4")
