"""Shared fixtures: tiny random DVD weights written in the official file formats."""

from __future__ import annotations

from pathlib import Path

import pytest

from dvd.model.tiny import write_tiny_official_weights


@pytest.fixture(scope="session")
def tiny_weights(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A folder like the official release: model.safetensors (pipe.dit. + LoRA), model_config.yaml, Wan2.1_VAE.pth."""
    return write_tiny_official_weights(tmp_path_factory.mktemp("tiny_official"), seed=0)
