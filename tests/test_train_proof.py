"""A short run of benchmarks/train_proof.py: both stages must lower their loss within a few steps."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import pytest
import torch

from dvd.model.dvd_model import DVDModel
from dvd.pipeline.dvd_pipeline import DVDPipeline
from dvd.training.config import parse_config
from dvd.training.trainer import train
from dvd.weights.tiny import tiny_transformer

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "train_proof.py"


@pytest.fixture(scope="module")
def proof():
    spec = importlib.util.spec_from_file_location("train_proof", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


pytestmark = pytest.mark.usefixtures("one_thread_fresh_accelerate")


def test_short_proof_lowers_both_losses(proof, tmp_path):
    vae, vae_losses = proof.train_vae(steps=8, size=32, frames=5, seed=0)
    assert np.mean(vae_losses[-3:]) < 0.8 * np.mean(vae_losses[:3])

    start = tmp_path / "start"
    DVDPipeline.from_model(DVDModel(tiny_transformer(0), vae)).save_pretrained(start)
    config = proof.dit_config(start, tmp_path / "run", "lmr", steps=10, size=32, frames=5, seed=0)
    config["data"]["image_batch"] = 2
    result = train(parse_config(config))
    assert result.step == 10 and len(result.losses) == 10
    assert np.mean(result.losses[-3:]) < 0.8 * np.mean(result.losses[:3])


def test_constant_baseline_is_the_best_constant(proof):
    depth = np.array([[[1.0, 2.0], [4.0, 4.0]]], np.float32)
    sample = {"depth": torch.from_numpy(depth), "valid": torch.ones(1, 2, 2, dtype=torch.bool)}
    # the best constant disparity is the mean, (1 + 0.5 + 0.25 + 0.25) / 4 = 0.5, i.e. depth 2 m everywhere
    expected_abs_rel = np.mean([abs(2 - 1) / 1, 0.0, abs(2 - 4) / 4, abs(2 - 4) / 4])
    expected_delta1 = 0.25  # only the 2 m pixel is within 1.25x of 2 m
    scores = proof.constant_baseline([sample])
    assert scores["abs_rel"] == pytest.approx(expected_abs_rel)
    assert scores["delta1"] == pytest.approx(expected_delta1)
