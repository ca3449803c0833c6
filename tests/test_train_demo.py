"""`dvd demo` and the single-file model format it ships in."""

from __future__ import annotations

import argparse

import av
import numpy as np
import pytest
import torch

import dvd.weights.load
from dvd.commands import demo
from dvd.io.colormaps import colorize
from dvd.weights.single_file import load_single_file, proof_model_path, save_single_file
from dvd.weights.tiny import build_tiny_model


def test_single_file_round_trip(tmp_path):
    model = build_tiny_model(3)
    path = save_single_file(model, tmp_path / "m.safetensors", dtype=torch.float32)
    loaded = load_single_file(path)
    assert loaded.tau == model.tau
    latents = torch.randn(1, 16, 2, 4, 4, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        torch.testing.assert_close(loaded.regress(latents), model.regress(latents))
    half = load_single_file(save_single_file(model, tmp_path / "h.safetensors"))  # fp16 storage, float32 model
    assert half.dtype == torch.float32
    assert (tmp_path / "h.safetensors").stat().st_size < 0.6 * path.stat().st_size


def test_comparison_panels_share_the_truth_scale():
    rgb = np.full((1, 2, 2, 3), 7, np.uint8)
    depth = np.array([[[1.0, 2.0], [4.0, 8.0]]], np.float32)
    valid = np.ones_like(depth, bool)
    truth = 1.0 / depth
    frames = demo.comparison_frames(rgb, 3.0 * truth + 1.0, depth, valid)  # an exact prediction up to scale/shift
    lo, hi = np.percentile(truth, [1, 99])
    expected = colorize((truth - lo) / (hi - lo))
    assert frames.shape == (1, 2, 6, 3)
    np.testing.assert_array_equal(frames[:, :, :2], rgb)
    np.testing.assert_array_equal(frames[:, :, 4:], expected)
    np.testing.assert_array_equal(frames[:, :, 2:4], expected)  # aligned back onto the truth's units


def test_demo_writes_the_video_and_prints_scores(tmp_path, monkeypatch, capsys):
    weights = save_single_file(build_tiny_model(0), tmp_path / "proof.safetensors")
    monkeypatch.setattr(dvd.weights.load, "proof_model_path", lambda: weights)  # what the name `proof` loads
    out = tmp_path / "out" / "demo.mp4"
    args = argparse.Namespace(output=out, scene=1, frames=9, window=5, overlap=2)
    assert demo.run(args) == 0
    printed = capsys.readouterr().out
    assert "AbsRel" in printed and "only" in printed and "official DVD weights" in printed
    with av.open(str(out)) as container:
        frames = [f.to_ndarray(format="rgb24") for f in container.decode(video=0)]
    size = demo.TRAINED_SIZE * demo.SCALE_UP
    assert len(frames) == 9 and frames[0].shape == (size, 3 * size, 3)
    assert not list(out.parent.glob(".*"))  # no temporary file left behind


def test_shipped_proof_model_loads():
    model = load_single_file(proof_model_path())
    assert model.transformer.config.num_layers == 2


def test_bad_output_name_is_refused(tmp_path):
    args = argparse.Namespace(output=tmp_path / "demo.avi", scene=0, frames=9, window=5, overlap=2)
    with pytest.raises(demo.DVDError, match=r"\.mp4"):
        demo.run(args)
