"""The exact fast path against the reference, on random weights in float32: the folded cross-attention against
diffusers' own, and the precomputed time conditions against computing them on every call."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from dvd import DVDPipeline
from dvd.model.fixed_time import fixed_timestep, precompute_time_conditions, release_time_conditions
from dvd.model.folding import fold_cross_attention, is_folded, unfold_cross_attention
from dvd.weights.tiny import build_tiny_model

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def relative(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).abs().max() / b.abs().max())


def test_folded_dit_equals_the_reference_dit():
    model = build_tiny_model(seed=3)
    # Random weights give the text embedding, to_v and to_out a real say in the output, so folding them has teeth.
    with torch.no_grad():
        for block in model.transformer.blocks:
            block.attn2.to_v.weight.normal_(std=0.2)
            block.attn2.to_out[0].bias.normal_(std=0.2)
    latents = torch.randn(2, 16, 3, 6, 8)
    with torch.no_grad():
        reference = model.regress(latents)
        fold_cross_attention(model.transformer)
        folded = model.regress(latents)
        unfold_cross_attention(model.transformer)
        again = model.regress(latents)
    assert relative(folded, reference) <= 1e-5
    torch.testing.assert_close(again, reference, rtol=0, atol=0)
    with torch.no_grad():
        for block in model.transformer.blocks:
            block.attn2.to_out[0].bias.zero_()
        # The branch folded away does matter: changing its constant changes the output.
        assert relative(model.regress(latents), reference) > 1e-3


def test_pipeline_folds_by_default_and_matches_the_unfolded_output(tiny_weights: Path):
    pipe = DVDPipeline.from_pretrained(tiny_weights, device="cpu", dtype="float32")
    assert is_folded(pipe.transformer)
    frames = np.random.default_rng(0).integers(0, 256, (5, 32, 48, 3), dtype=np.uint8)
    folded = pipe.predict_window(frames)
    pipe.unfold_constants()
    reference = pipe.predict_window(frames)
    assert np.abs(folded - reference).max() <= 1e-5 * np.abs(reference).max()


def test_folded_gradients_equal_the_reference_gradients():
    """Through the text embedding, to_v and to_out, the folded branch trains as the full one does."""
    latents = torch.randn(1, 16, 2, 4, 4)
    grads = []
    for fold in (False, True):
        model = build_tiny_model(seed=5)
        if fold:
            fold_cross_attention(model.transformer)
        model.regress(latents).square().mean().backward()
        block = model.transformer.blocks[0]
        grads.append([block.attn2.to_v.weight.grad, block.attn2.to_out[0].weight.grad])
    for reference, folded in zip(grads[0], grads[1]):
        assert relative(folded, reference) <= 1e-5


def test_precomputed_time_conditions_are_bit_identical_and_used():
    model = build_tiny_model(seed=4)
    keys = list(model.transformer.state_dict())
    fold_cross_attention(model.transformer)
    latents = torch.randn(2, 16, 3, 6, 8)
    with torch.no_grad():
        reference = [model.regress(latents[:1]), model.regress(latents)]
        precompute_time_conditions(model.transformer, model.timestep)
        assert fixed_timestep(model.transformer) == model.timestep
        assert list(model.transformer.state_dict()) == keys  # diffusers' module tree and checkpoint names
        # batch 1 was computed at precompute time, batch 2 at its first call: both exactly the reference
        torch.testing.assert_close(model.regress(latents[:1]), reference[0], rtol=0, atol=0)
        torch.testing.assert_close(model.regress(latents), reference[1], rtol=0, atol=0)
        # The cache is what runs: with the time embedder's weights wiped the output stays, until it is released.
        embedder = model.transformer.condition_embedder
        embedder.time_embedder.linear_1.weight.zero_()
        torch.testing.assert_close(model.regress(latents), reference[1], rtol=0, atol=0)
        release_time_conditions(model.transformer)
        assert fixed_timestep(model.transformer) is None
        assert relative(model.regress(latents), reference[1]) > 1e-3


def test_precomputed_time_conditions_follow_a_new_timestep():
    model = build_tiny_model(seed=4)
    latents = torch.randn(1, 16, 2, 4, 4)
    with torch.no_grad():
        model.tau = 0.3
        reference = model.regress(latents)
        model.tau = 0.5
        precompute_time_conditions(model.transformer, model.timestep)
        model.tau = 0.3
        torch.testing.assert_close(model.regress(latents), reference, rtol=0, atol=0)
        assert fixed_timestep(model.transformer) == 300.0


def test_pipeline_switches_each_part_of_the_fast_path(tiny_weights: Path):
    pipe = DVDPipeline.from_pretrained(tiny_weights, device="cpu", dtype="float32")
    assert is_folded(pipe.transformer) and fixed_timestep(pipe.transformer) == pipe.model.timestep
    frames = np.random.default_rng(1).integers(0, 256, (5, 32, 48, 3), dtype=np.uint8)
    fast = pipe.predict_window(frames)
    pipe.fold_constants(cross_attention=True, time_conditions=False)
    assert is_folded(pipe.transformer) and fixed_timestep(pipe.transformer) is None
    np.testing.assert_array_equal(pipe.predict_window(frames), fast)  # the time cache is bit-exact
    pipe.fold_constants(cross_attention=False, time_conditions=True)
    assert not is_folded(pipe.transformer) and fixed_timestep(pipe.transformer) == pipe.model.timestep
    assert np.abs(pipe.predict_window(frames) - fast).max() <= 1e-5 * np.abs(fast).max()
