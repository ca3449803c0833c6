"""The DVD model: a video DiT run once, at a fixed timestep, as a regressor from RGB latents to depth latents.

    pixels [0,1] -> [-1,1] -> VAE encode (posterior mean) -> normalised latents
      -> DiT once at t = 1000·tau with the empty condition (Wan: text context = zeros[B, 512, text_dim])
      -> de-normalised -> VAE decode -> [-1,1] -> (x+1)/2 -> mean over the 3 channels

The output is affine-invariant disparity: larger is nearer, with unknown scale and shift. What depends on the model
family (its VAE, latent normalisation, DiT call, frame rule and strides) is its `dvd.model.backbone.Backbone`.

A model trained with the generative objective (the paper's baseline, `dvd.model.flow_matching`) replaces the one DiT
pass by T Euler steps of its widened DiT from seeded noise, conditioned on the RGB latent.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager, nullcontext

import torch
from torch import nn

from dvd.model.backbone import Backbone, FrameRule, backbone_for
from dvd.model.flow_matching import GENERATIVE, REGRESSION, Objective, Velocity, draw_noise, euler_sample
from dvd.model.input_widening import widen_transformer_input

DEFAULT_TAU = 0.5
# The three steps of `DVDModel.forward`, by the names a stage timer hears (`dvd.engine.stages`).
MODEL_STAGES = ("vae_encode", "dit", "vae_decode")
Stage = Callable[[str], AbstractContextManager]


def _untimed(name: str) -> AbstractContextManager:
    return nullcontext()


def cast_transformer(transformer: nn.Module, dtype: torch.dtype) -> nn.Module:
    """Cast to `dtype`, keeping the modules diffusers marks as fp32-sensitive (RoPE tables, norms) in float32."""
    # nn.Module's own `to`: diffusers' override warns on every dtype cast, including this one that keeps its
    # fp32 modules just as `from_pretrained(torch_dtype=...)` does.
    nn.Module.to(transformer, dtype)
    if dtype != torch.float32:
        keep = set(type(transformer)._keep_in_fp32_modules or ())
        for name, tensor in [*transformer.named_parameters(), *transformer.named_buffers()]:
            if keep.intersection(name.split(".")):
                tensor.data = tensor.data.float()
    return transformer


class DVDModel(nn.Module):
    """A DiT/VAE pair of a supported family (`dvd.model.backbones`) wired as the DVD depth regressor."""

    def __init__(
        self,
        transformer: nn.Module,
        vae: nn.Module,
        tau: float = DEFAULT_TAU,
        condition: torch.Tensor | None = None,
        objective: Objective = REGRESSION,
    ) -> None:
        """`condition`: the family's saved empty-prompt embedding, where it has one (see `Backbone`). `objective`:
        how the DiT was trained; a generative model samples instead of regressing (and ignores tau)."""
        super().__init__()
        self.backbone: Backbone = backbone_for(transformer, vae, condition, objective)
        self.transformer = transformer
        self.vae = vae
        self.tau = float(tau)
        self._own_storage()

    def _own_storage(self) -> None:
        """Give every tensor freshly allocated memory.

        Loaded weights may be views into a memory-mapped file at arbitrary offsets; CPU kernels pick different
        (equally valid) summation orders for differently aligned memory, so the same weights would give results that
        differ in the last bits depending on how they were loaded. Owning aligned copies makes loading paths agree.
        """
        with torch.no_grad():
            for tensor in [*self.parameters(), *self.buffers()]:
                tensor.data = tensor.data.clone(memory_format=torch.contiguous_format)
            if self.backbone.condition is not None:
                self.backbone.condition = self.backbone.condition.clone(memory_format=torch.contiguous_format)

    @property
    def dtype(self) -> torch.dtype:
        return self.transformer.dtype

    @property
    def device(self) -> torch.device:
        return self.transformer.device

    @property
    def timestep(self) -> float:
        return 1000.0 * self.tau

    @property
    def family(self) -> str:
        return self.backbone.family

    @property
    def objective(self) -> Objective:
        return self.backbone.objective

    @property
    def generative(self) -> bool:
        return self.backbone.objective == GENERATIVE

    @property
    def frame_rule(self) -> FrameRule:
        return self.backbone.frame_rule

    @property
    def spatial_stride(self) -> int:
        return self.backbone.spatial_stride

    def encode(self, pixels: torch.Tensor) -> torch.Tensor:
        """[B,3,T,H,W] in [0,1], on the device the VAE runs on, T fitting the frame rule -> normalised latents."""
        # Cast before the affine map, as the reference does (it rounds to bf16 first).
        return self.backbone.encode(pixels.to(dtype=self.vae.dtype) * 2 - 1)

    def regress(self, latents: torch.Tensor) -> torch.Tensor:
        """One DiT pass at the fixed timestep with the empty condition; the output is the depth latent."""
        if self.generative:
            raise ValueError("a generative DVD model samples its depth latent (`sample`); it has no regression pass")
        return self.backbone.denoise(self.transformer, latents, self.timestep)

    def velocity(self, dit_input: torch.Tensor, timesteps: torch.Tensor) -> torch.Tensor:
        """The generative DiT's velocity for [x_sigma, rgb latent] at per-sample timesteps (`Velocity`)."""
        return self.backbone.denoise(self.transformer, dit_input, timesteps)

    def sample(
        self, latents: torch.Tensor, steps: int, noise: torch.Tensor, velocity: Velocity | None = None
    ) -> torch.Tensor:
        """The depth latent of a generative model for RGB latents: `steps` Euler steps from `noise` (the RGB latents'
        shape). `velocity` is the DiT call (default: this model's; training passes its wrapped DiT's)."""
        if not self.generative:
            raise ValueError("a regression DVD model has no sampler: it predicts in one pass (`regress`)")
        return euler_sample(velocity or self.velocity, latents, steps, noise)

    def decode(self, latents: torch.Tensor) -> torch.Tensor:
        """Normalised latents -> [B,3,T,H,W] in [0,1]."""
        return ((self.backbone.decode(latents).float() + 1) / 2).clamp(0, 1)

    def forward(
        self,
        pixels: torch.Tensor,
        stage: Stage = _untimed,
        steps: int | None = None,
        generators: Sequence[torch.Generator] | None = None,
    ) -> torch.Tensor:
        """[B,3,T,H,W] in [0,1], T fitting the frame rule, H and W multiples of the spatial stride -> disparity
        [B,T,H,W] (float32).

        A generative model samples with `steps` Euler steps from noise drawn with `generators` (one per window of
        the batch, so a window's noise does not depend on what it is batched with); a regression model takes
        neither. `stage(name)` is entered around each step (names in MODEL_STAGES), so a profiler can time them.
        """
        given = (steps is not None, generators is not None)
        if given != (self.generative, self.generative):
            raise ValueError("a generative DVD model needs `steps` and `generators`; a regression model takes neither")
        if generators is not None and len(generators) != pixels.shape[0]:
            raise ValueError(f"{len(generators)} generators for a batch of {pixels.shape[0]} windows")
        encode, dit, decode = MODEL_STAGES
        with stage(encode):
            latents = self.encode(pixels)
        with stage(dit):
            if generators is None:
                depth = self.regress(latents)
            else:
                noise = torch.cat([draw_noise(latent[None], gen) for latent, gen in zip(latents, generators)])
                depth = self.sample(latents, steps, noise)
        with stage(decode):
            return self.decode(depth).mean(dim=1)

    def set_vae_channels_last(self, enabled: bool) -> None:
        """The VAE's convolution weights in channels-last layout (NDHWC for the 3D ones), or back to the default.
        Convolution kernels then run channels-last and pass that layout on, which on some devices (cuDNN with
        bf16) is faster; the numbers are the same up to rounding (other kernels)."""
        formats = {5: torch.channels_last_3d, 4: torch.channels_last} if enabled else {}
        with torch.no_grad():
            for param in self.vae.parameters():
                if param.ndim in (4, 5):
                    param.data = param.data.contiguous(memory_format=formats.get(param.ndim, torch.contiguous_format))

    def to_precision(self, dtype: torch.dtype) -> DVDModel:
        """Cast to `dtype`, keeping the DiT's fp32-sensitive modules in float32 (see `cast_transformer`)."""
        nn.Module.to(self.vae, dtype)  # nn.Module's own cast: see cast_transformer
        cast_transformer(self.transformer, dtype)
        return self


def generative_model(model: DVDModel) -> DVDModel:
    """The generative baseline's starting point from a regression model (a base or a trained DVD model): its DiT's
    input projection widened to [x_sigma, rgb latent] with the new half zero (`dvd.model.input_widening`), so at
    step 0 it computes what the pretrained DiT computes on the noisy latent. Changes the DiT in place; returns the
    generative model around the same modules."""
    if model.generative:
        raise ValueError("the model is generative already: its DiT's input is widened")
    widen_transformer_input(model.transformer, model.backbone.input_layer, model.transformer.config.in_channels)
    return DVDModel(model.transformer, model.vae, model.tau, model.backbone.condition, GENERATIVE)
