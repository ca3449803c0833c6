"""What training changes in a DVDModel: LoRA (or every DiT weight) and, for the τ ablation, a learned timestep vector.

LoRA goes where the backbone places it (`Backbone.lora_targets`). The VAE and the base DiT weights stay frozen, and
so does what the empty condition makes inert (`Backbone.inert_parameters`; Wan: the query and key side of every
cross-attention, `dvd.model.folding`, whose LoRA layers stay in the model with lora_B = 0, so the official checkpoint
layout keeps all ten per block). The learned timestep vector knows Wan's condition embedder only
(`Backbone.supports_learned_tau`). A generative model also trains its widened input projection in full.
`architecture_signature` describes the trainable part, so a resume from a
checkpoint of another architecture fails before any step.
"""

from __future__ import annotations

import hashlib

import torch
from torch import Tensor, nn

from dvd.errors import DVDError
from dvd.model.dvd_model import DVDModel, generative_model
from dvd.model.flow_matching import GENERATIVE, Objective
from dvd.model.lora import add_lora
from dvd.model.timestep import install_float64_timestep_embedding
from dvd.training.config import FinetuneSection


class LearnedTimestepEmbedding(nn.Module):
    """The "learned τ" ablation: one trainable vector in place of the sinusoid of the fixed timestep.

    It starts at the sinusoid of 1000·τ, so step 0 matches the fixed-τ model; the timestep value is then ignored.
    """

    def __init__(self, initial: Tensor) -> None:
        super().__init__()
        self.embedding = nn.Parameter(initial.detach().float().clone())

    def forward(self, timesteps: Tensor) -> Tensor:
        return self.embedding.expand(timesteps.shape[0], -1)


def sinusoid_at(model: DVDModel, timestep: float) -> Tensor:
    """The DiT's own (fixed) sinusoidal embedding of one timestep, [freq_dim] float32."""
    proj = model.transformer.condition_embedder.timesteps_proj
    if isinstance(proj, LearnedTimestepEmbedding):
        raise TypeError("the model already has a learned timestep embedding")
    return proj(torch.tensor([timestep], dtype=torch.float32, device=model.device))[0].float()


def for_objective(model: DVDModel, objective: Objective) -> DVDModel:
    """The model `train.objective` trains from `model` (a base, or a trained DVD model): the generative objective
    widens a regression model's DiT input (`dvd.model.dvd_model.generative_model`) and goes on with a generative
    one; a generative model cannot go back to regression."""
    if objective == GENERATIVE:
        return model if model.generative else generative_model(model)
    if model.generative:
        raise DVDError(
            "model.weights is a generative DVD model (its DiT takes [noisy depth, RGB] latents): set train.objective "
            "to generative to train it further, or start regression from a base or a regression DVD model"
        )
    return model


def make_trainable(model: DVDModel, finetune: FinetuneSection, learned_tau: bool, gradient_checkpointing: bool) -> None:
    """Freeze the model, then open exactly the parameters the recipe trains (in place)."""
    if learned_tau and not model.backbone.supports_learned_tau:
        raise DVDError(
            f"model.learned_tau replaces a Wan DiT's timestep embedding, which the {model.family} backbone does not "
            "have: set model.learned_tau to false, or train a Wan2.1 or Wan2.2 base"
        )
    model.requires_grad_(False)
    transformer = model.transformer
    if learned_tau:
        transformer.condition_embedder.timesteps_proj = LearnedTimestepEmbedding(sinusoid_at(model, model.timestep))
    if finetune.mode == "lora":
        add_lora(transformer, model.backbone.lora_targets, finetune.lora_rank, finetune.lora_alpha)
        for name, param in transformer.named_parameters():
            param.requires_grad_(".lora_A." in name or ".lora_B." in name)
    else:
        transformer.requires_grad_(True)
    if learned_tau:
        transformer.condition_embedder.timesteps_proj.requires_grad_(True)
    if model.generative:
        # The widened input's RGB half starts at zero and is learnt from nothing, so the whole input projection
        # trains: it is smaller than any LoRA of it (Wan2.1-1.3B: 1536 x 2·16·4 weights; a rank-r LoRA has
        # r·(1536 + 128)), and no LoRA target covers it.
        transformer.get_submodule(model.backbone.input_layer).requires_grad_(True)
    # Wan: the zero text context makes the query and key side of the cross-attention inert (no effect, zero
    # gradient): training them changes nothing, and a folded DiT does not even call them, which DDP would wait for.
    for _, param in model.backbone.inert_parameters(transformer):
        param.requires_grad_(False)
    if gradient_checkpointing:
        transformer.enable_gradient_checkpointing()


def architecture_signature(model: nn.Module) -> dict[str, list[int]]:
    """Name -> shape of every trainable parameter: equal signatures mean a checkpoint fits this model."""
    return {name: list(p.shape) for name, p in model.named_parameters() if p.requires_grad}


def fold_learned_timestep(model: DVDModel) -> None:
    """Replace a learned timestep vector by the sinusoid plus an exactly compensating bias (in place).

    The first time-embedder layer is affine, so W·e_learned + b = W·e_sin + (b + W·(e_learned − e_sin)): after this
    the model is a plain DVD model at the same τ, loadable by any DVD loader, with the same outputs.
    """
    if not model.backbone.supports_learned_tau:  # no Wan condition embedder: nothing can have been learned there
        return
    embedder = model.transformer.condition_embedder
    proj = embedder.timesteps_proj
    if not isinstance(proj, LearnedTimestepEmbedding):
        return
    learned = proj.embedding.detach().double()
    install_float64_timestep_embedding(model.transformer)
    sinusoid = sinusoid_at(model, model.timestep).double()
    linear = embedder.time_embedder.linear_1
    with torch.no_grad():
        shift = linear.weight.double() @ (learned - sinusoid)
        linear.bias.copy_((linear.bias.double() + shift).to(linear.bias.dtype))


def base_fingerprint(model: nn.Module, samples: int = 64) -> str:
    """A short hash of the frozen tensors (names, shapes and `samples` evenly spaced values of each), so that a resume
    over other base weights is refused: a LoRA means nothing on another base. Sampling keeps it cheap for the 1.3B
    model; two different checkpoints agree on every sampled value of every tensor only by design, not by chance."""
    trained = set(architecture_signature(model))
    digest = hashlib.sha256()
    for name, tensor in model.state_dict().items():
        # Frozen LoRA layers (the inert ones) hold a fresh random lora_A that depends on the seed, not the base.
        if name in trained or ".lora_" in name:
            continue
        flat = tensor.detach().reshape(-1)
        picked = flat[:: max(1, flat.numel() // samples)][:samples].to("cpu", torch.float64)
        digest.update(f"{name}{tuple(tensor.shape)}".encode())
        digest.update(picked.numpy().tobytes())
    return digest.hexdigest()[:16]
