"""The backbone seam: what DVD needs from a video diffusion model, and nothing more.

DVD is a recipe, not one checkpoint: a latent video DiT run once at a fixed timestep with an empty condition,
between the encoder and decoder of its own VAE. Everything else (windows, stitching, the loss, evaluation) only
needs to know the VAE's frame rule (clips of 1 + stride·n frames), its spatial stride times the DiT's patch size
(model sizes are multiples of it), and where LoRA goes. A `Backbone` holds exactly that for one model family, on
diffusers' classes; `backbone_for` picks the family from the classes (and configs) of a DiT/VAE pair.

Latents cross the seam as [B, C, t, h, w], normalised the way the family's own pipeline normalises them, whatever
layout the DiT wants inside (`denoise` packs and unpacks).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

import torch
from torch import nn

from dvd.errors import DVDError
from dvd.model.flow_matching import GENERATIVE, REGRESSION, Objective


@dataclass(frozen=True)
class FrameRule:
    """A causal video VAE encodes 1 + stride·n frames: the first frame alone, then groups of `stride`."""

    stride: int

    def fits(self, num_frames: int) -> bool:
        return num_frames >= 1 and num_frames % self.stride == 1 % self.stride

    def pad(self, frames: torch.Tensor, dim: int = 2) -> torch.Tensor:
        """Repeat the last frame along `dim` (time; [B,C,T,H,W] by default) until the count fits the rule."""
        extra = (1 - frames.shape[dim]) % self.stride
        if extra == 0:
            return frames
        last = frames.narrow(dim, frames.shape[dim] - 1, 1)
        shape = [extra if d == dim % frames.ndim else -1 for d in range(frames.ndim)]
        return torch.cat([frames, last.expand(*shape)], dim=dim)

    def nearest(self, num_frames: int) -> tuple[int, ...]:
        """The counts fitting the rule next to `num_frames`: the one below (if any) and the one above."""
        below = num_frames - (num_frames - 1) % self.stride
        return tuple(count for count in (below, below + self.stride) if count >= 1 and count != num_frames)

    def __str__(self) -> str:
        return f"{self.stride}n+1"


class Backbone(ABC):
    """One model family's DiT/VAE pair as DVD uses it. Subclasses set the class attributes and implement the
    abstract methods; `dvd.model.DVDModel` composes them into encode -> denoise at t = 1000·tau -> decode."""

    family: ClassVar[str]  # recorded in model_index.json ("wan2.1", "wan2.2", "cogvideox", "ltx-video")
    transformer_class: ClassVar[type[nn.Module]]
    vae_class: ClassVar[type[nn.Module]]
    lora_targets: ClassVar[tuple[str, ...]]  # peft target module names in the DiT
    block_class: ClassVar[type[nn.Module]]  # the DiT's repeated block: FSDP's sharding unit (`DepthRegression`)
    # The DiT's input projection (a Conv or a Linear over channel-major patches), which the generative objective
    # widens to [x_sigma, rgb latent] (`dvd.model.input_widening`)
    input_layer: ClassVar[str]
    default_window: ClassVar[int]  # frames per window when neither the user nor the model says otherwise
    default_overlap: ClassVar[int]
    # Named sizes as data: name -> (DiT config, VAE config) for `transformer_class(**dit)` / `vae_class(**vae)`.
    # "tiny" (a few MB, for tests and the proof setup) and the released sizes (e.g. "1.3b", "14b", "5b"), which
    # `dvd bench --preset` and the cost benchmark build with random weights (on the meta device for FLOPs).
    sizes: ClassVar[dict[str, tuple[dict, dict]]]
    # The "learned τ" ablation swaps the DiT's timestep sinusoid for a trained vector (dvd.training.trainable); it
    # knows Wan's condition embedder only.
    supports_learned_tau: ClassVar[bool] = False

    def __init__(
        self,
        transformer: nn.Module,
        vae: nn.Module,
        condition: torch.Tensor | None = None,
        objective: Objective = REGRESSION,
    ) -> None:
        """`condition`: the family's empty-prompt embedding [tokens, dim] where it is not all zeros (read once from
        the base model's text encoder by `from_base`, then saved with the model); None where it is zeros (Wan).
        `objective`: how the DiT was trained (`dvd.model.flow_matching`); a generative DiT takes twice the VAE's
        latent channels."""
        self.transformer = transformer
        self.vae = vae
        self.condition = condition
        self.objective = objective
        self.check_pair()

    def dit_input_channels(self, channels: int) -> int:
        """What the DiT's input width must be for `channels` per token from the VAE: as many for regression, twice as
        many for the generative objective ([x_sigma, rgb latent])."""
        return 2 * channels if self.objective == GENERATIVE else channels

    def objective_note(self) -> str:
        """For errors on the DiT's width: what a generative model's widened input adds to the expectation."""
        return " (a generative model's DiT takes twice the VAE's channels in)" if self.objective == GENERATIVE else ""

    @classmethod
    @abstractmethod
    def from_base(cls, folder: Path) -> Backbone:
        """The family's base model in diffusers' layout (`transformer/`, `vae/`, and `text_encoder/` where the empty
        condition is not zeros), float32 on CPU: the starting point of `dvd train --base`."""

    @classmethod
    @abstractmethod
    def matches(cls, transformer: nn.Module, vae: nn.Module) -> bool:
        """Whether this family owns the pair (class, and where a class serves two families, its config)."""

    @abstractmethod
    def check_pair(self) -> None:
        """Raise DVDError naming the fix when the VAE does not belong to the DiT (latent channels, strides)."""

    @property
    @abstractmethod
    def frame_rule(self) -> FrameRule:
        """The VAE's temporal compression as a rule on clip lengths."""

    @property
    @abstractmethod
    def spatial_stride(self) -> int:
        """Model heights and widths are multiples of this: the VAE's spatial compression times the DiT's patch."""

    @abstractmethod
    def encode(self, pixels: torch.Tensor) -> torch.Tensor:
        """[B,3,T,H,W] in [-1,1], T fitting the frame rule -> normalised latents [B,C,t,h,w] (posterior mean)."""

    @abstractmethod
    def decode(self, latents: torch.Tensor) -> torch.Tensor:
        """Normalised latents [B,C,t,h,w] -> [B,3,T,H,W] in [-1,1]."""

    @abstractmethod
    def denoise(self, transformer: nn.Module, latents: torch.Tensor, timestep: float | torch.Tensor) -> torch.Tensor:
        """One DiT call at `timestep` (0..1000; one for the batch, or a [B] tensor of one per sample) with the empty
        condition: [B,C_in,t,h,w] -> [B,C_out,t,h,w].

        `transformer` is passed, not read from self, so training can pass the DiT wrapped for DDP/FSDP."""

    def empty_condition(self, batch: int, device: torch.device, dtype: torch.dtype) -> torch.Tensor:
        """The text context of an empty prompt, [batch, tokens, dim]."""
        if self.condition is None:
            raise DVDError(
                f"this {self.family} model has no empty-prompt embedding (condition.safetensors beside its "
                "model_index.json): load the folder with DVDPipeline.from_pretrained or dvd.weights.load_weights"
            )
        return self.condition.to(device=device, dtype=dtype).unsqueeze(0).expand(batch, -1, -1)

    @classmethod
    def placeholder_condition(cls, transformer: nn.Module) -> torch.Tensor | None:
        """Zeros in the shape of the family's saved empty-prompt embedding for `transformer` (on its device; None
        where the family has none), so that modules built from a size with random weights (`dvd bench --preset`,
        benchmarks/backbone_cost.py) run without a text encoder: the DiT's cost depends on the shape alone."""
        return None

    @classmethod
    def condition_from_text_encoder(cls) -> bool:
        """Whether `from_base` embeds the empty prompt with the base's text encoder (so a download of the base needs
        `text_encoder/` and `tokenizer/`): true unless the family defines its own `empty_condition`."""
        return cls.empty_condition is Backbone.empty_condition

    def fold_constants(self, cross_attention: bool, time_conditions: bool, timestep: float) -> None:
        """Switch the family's exact fast paths for a fixed timestep and empty condition on (True) or back to the
        reference computation (False): `cross_attention`, the cross-attention over the empty condition as one
        constant; `time_conditions`, the time embedding at `timestep` computed once. A family without them runs the
        reference computation either way."""

    def inert_parameters(self, transformer: nn.Module) -> Iterator[tuple[str, nn.Parameter]]:
        """(name, parameter) of the DiT's parameters that cannot change its output under the empty condition (so
        training freezes them), named as in `transformer.named_parameters()`; none unless the family knows some."""
        return iter(())


def batch_timesteps(timestep: float | torch.Tensor, batch: int, device: torch.device) -> torch.Tensor:
    """[batch] float32 timesteps on `device`: `timestep` for every sample, or the [batch] tensor given."""
    if isinstance(timestep, torch.Tensor):
        if timestep.shape != (batch,):
            raise ValueError(f"per-sample timesteps must have shape ({batch},), got {tuple(timestep.shape)}")
        return timestep.to(device=device, dtype=torch.float32)
    return torch.full((batch,), float(timestep), device=device)


def backbone_for(
    transformer: nn.Module, vae: nn.Module, condition: torch.Tensor | None = None, objective: Objective = REGRESSION
) -> Backbone:
    """The family that owns a DiT/VAE pair; DVDError when none does."""
    from dvd.model.backbones import BACKBONES

    for family in BACKBONES.values():
        if family.matches(transformer, vae):
            return family(transformer, vae, condition, objective)
    supported = ", ".join(BACKBONES)
    raise DVDError(
        f"{type(transformer).__name__} with {type(vae).__name__} is not a backbone dvd supports "
        f"({supported}): use a Wan2.1, Wan2.2 TI2V, CogVideoX or LTX-Video model in diffusers' layout"
    )
