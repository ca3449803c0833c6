"""The folded cross-attention against diffusers' own, on random weights in float32."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from dvd import DVDPipeline
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
