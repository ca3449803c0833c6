"""Training with the folded cross-attention: the same loss and gradients as diffusers' attention over 512 zero
tokens, no trainable parameter left without a gradient (DDP's condition), and the frozen inert side truly inert."""

from __future__ import annotations

import pytest
import torch

from dvd.model.folding import fold_cross_attention, inert_cross_attention_parameters, is_folded
from dvd.training.config import FinetuneSection
from dvd.training.losses import make_loss
from dvd.training.regression import DepthRegression
from dvd.training.trainable import make_trainable
from dvd.weights.tiny import build_tiny_model

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def relative(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).abs().max() / b.abs().max())


def training_model(mode: str, fold: bool, freeze_inert: bool = True):
    model = build_tiny_model(seed=7)
    torch.manual_seed(0)  # peft draws lora_A from the global generator
    make_trainable(model, FinetuneSection(mode=mode, lora_rank=4), learned_tau=False, gradient_checkpointing=False)
    generator = torch.Generator().manual_seed(11)
    with torch.no_grad():
        for name, param in model.transformer.named_parameters():
            if ".lora_B." in name:  # zero at init: give every LoRA layer a say in the output and in the gradients
                param.copy_(0.05 * torch.randn(param.shape, generator=generator))
        for block in model.transformer.blocks:  # and the cross-attention branch a large one
            block.attn2.to_v.weight.mul_(3)
            block.attn2.to_out[0].bias.normal_(std=0.2, generator=generator)
    if not freeze_inert:
        for name, param in inert_cross_attention_parameters(model.transformer):
            param.requires_grad_(mode == "full" or ".lora_" in name)
    if fold:
        fold_cross_attention(model.transformer)
    return model


def loss_and_gradients(model) -> tuple[torch.Tensor, dict[str, torch.Tensor | None]]:
    """One micro-step of the DVD objective (`Trainer.loss`: frozen VAE encodes, the DiT regresses, LMR loss)."""
    generator = torch.Generator().manual_seed(3)
    rgb = torch.rand(2, 3, 5, 32, 32, generator=generator)
    target = torch.rand(2, 1, 5, 32, 32, generator=generator).expand(-1, 3, -1, -1, -1)
    with torch.no_grad():
        rgb_latent, depth_latent = model.encode(rgb), model.encode(target)
    loss = make_loss("lmr", 0.5, 0.5, 0.5, 4)(DepthRegression(model)(rgb_latent), depth_latent, rgb_latent).total
    loss.backward()
    named = model.transformer.named_parameters()
    return loss.detach(), {name: param.grad for name, param in named if param.requires_grad}


@pytest.mark.parametrize("mode", ["lora", "full"])
def test_folded_loss_and_gradients_equal_the_reference(mode):
    reference_loss, reference = loss_and_gradients(training_model(mode, fold=False))
    folded_model = training_model(mode, fold=True)
    assert is_folded(folded_model.transformer)
    folded_loss, folded = loss_and_gradients(folded_model)
    assert relative(folded_loss, reference_loss) <= 1e-5
    assert folded.keys() == reference.keys()
    # DDP's condition: every trainable parameter gets a gradient from the folded forward.
    missing = [name for name, grad in folded.items() if grad is None]
    assert not missing, missing
    through_branch = [n for n in folded if ".attn2.to_v." in n or ".attn2.to_out." in n or "text_embedder" in n]
    assert through_branch and (mode == "full") == any("text_embedder" in n for n in through_branch)
    # The whole gradient within 1e-5 of its largest entry. Per tensor the to_v LoRA gradients differ by up to ~1e-5
    # of their own (small) size: the reference sums 512 equal contributions through to_v's backward and rounds;
    # the folded path takes one. 1e-4 per tensor still catches any wrong or missing term.
    largest = max(float(grad.abs().max()) for grad in reference.values())
    assert max(float((folded[n] - reference[n]).abs().max()) for n in folded) <= 1e-5 * largest
    for name in folded:
        torch.testing.assert_close(
            folded[name], reference[name], rtol=0, atol=1e-4 * float(reference[name].abs().max())
        )
    if mode == "lora":
        assert sum(".lora_" in n for n in folded) == 2 * 8 * folded_model.transformer.config.num_layers


def test_inert_side_has_no_gradient_and_no_effect():
    """Unfrozen and unfolded, the query/key side of the cross-attention gets (numerically) zero gradient, and
    changing it leaves the output as it was: freezing it loses nothing."""
    model = training_model("full", fold=False, freeze_inert=False)
    _, grads = loss_and_gradients(model)
    largest = max(float(g.abs().max()) for g in grads.values())
    inert = dict(inert_cross_attention_parameters(model.transformer))
    assert inert and all(name in grads for name in inert)
    assert max(float(grads[name].abs().max()) for name in inert) <= 1e-5 * largest  # rounding only
    latents = torch.randn(1, 16, 2, 4, 4, generator=torch.Generator().manual_seed(5))
    with torch.no_grad():
        before = model.regress(latents)
        for param in inert.values():
            param.add_(torch.randn_like(param))
        assert relative(model.regress(latents), before) <= 1e-5
