"""Wan on diffusers: Wan2.1 T2V (1.3B, 14B; 16 latent channels, 8x8x4 VAE) and Wan2.2 TI2V-5B (48 channels,
16x16x4 VAE).

Both are a `WanTransformer3DModel` with an `AutoencoderKLWan`; the Wan2.2 VAE is the residual design
(`is_residual`) that folds 2x2 pixel patches into channels before its 8x encoder, which is how the two families are
told apart. DVD feeds the DiT 512 zero text tokens (the T5 encoder never runs) and computes the timestep sinusoid in
float64, as the official code does. Since the context is zeros and t is fixed, the cross-attention and the time
modulation are constants of the weights: `fold_constants` switches on those exact fast paths (`dvd.model.folding`,
`dvd.model.fixed_time`), and the query/key side of the cross-attention is inert for training.

Wan2.2 TI2V's own pipeline gives every token its own timestep so that an image-conditioned first frame can sit at
t = 0; with no image all tokens share one timestep, which is what the scalar timestep here computes.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import ClassVar

import torch
from diffusers import AutoencoderKLWan, WanTransformer3DModel
from diffusers.models.transformers.transformer_wan import WanTransformerBlock
from torch import nn

from dvd.errors import DVDError
from dvd.model.backbone import Backbone, FrameRule, batch_timesteps
from dvd.model.backbones.pretrained import load_component
from dvd.model.fixed_time import (
    fixed_timestep,
    precompute_time_conditions,
    release_time_conditions,
)
from dvd.model.flow_matching import REGRESSION, Objective
from dvd.model.folding import (
    fold_cross_attention,
    inert_cross_attention_parameters,
    is_folded,
    unfold_cross_attention,
)
from dvd.model.timestep import install_float64_timestep_embedding

# The official code feeds 512 zero text tokens: the T5 encoder is never run.
TEXT_TOKENS = 512

# A Wan DiT at test size: width 256 = 2 heads of 128, 2 layers (a 9-frame 64x64 window runs in well under a second).
TINY_DIT = {
    "patch_size": (1, 2, 2),
    "num_attention_heads": 2,
    "attention_head_dim": 128,
    "in_channels": 16,
    "out_channels": 16,
    "text_dim": 64,
    "freq_dim": 256,
    "ffn_dim": 512,
    "num_layers": 2,
    "cross_attn_norm": True,
    "qk_norm": "rms_norm_across_heads",
    "eps": 1e-6,
}
# Wan2.1-T2V-1.3B, the DiT DVD fine-tunes: 30 blocks of width 1536 (12 heads of 128), 1.42e9 parameters.
WAN21_1_3B_DIT = dict(
    TINY_DIT, num_attention_heads=12, attention_head_dim=128, text_dim=4096, ffn_dim=8960, num_layers=30
)
# Wan2.1-T2V-14B: 40 blocks of width 5120 (40 heads of 128).
WAN21_14B_DIT = dict(
    TINY_DIT, num_attention_heads=40, attention_head_dim=128, text_dim=4096, ffn_dim=13824, num_layers=40
)
WAN21_VAE = {"base_dim": 96}  # the Wan2.1 VAE (AutoencoderKLWan's defaults)
TINY_WAN21_VAE = {"base_dim": 8}

# Wan2.2-TI2V-5B: 30 blocks of width 3072 (24 heads of 128) on 48 latent channels. This and the VAE below are the
# configs of diffusers' scripts/convert_wan_to_diffusers.py ("Wan2.2-TI2V-5B", `vae22_diffusers_config`), less its
# "clip_output" key, which diffusers' AutoencoderKLWan does not take (its decoder always clamps to [-1, 1]).
WAN22_5B_DIT = dict(WAN21_1_3B_DIT, in_channels=48, out_channels=48, num_attention_heads=24, ffn_dim=14336)
WAN22_VAE = {
    "base_dim": 160,
    "z_dim": 48,
    "is_residual": True,
    "in_channels": 12,
    "out_channels": 12,
    "decoder_base_dim": 256,
    "scale_factor_temporal": 4,
    "scale_factor_spatial": 16,
    "patch_size": 2,
    "latents_mean": [
        -0.2289, -0.0052, -0.1323, -0.2339, -0.2799, 0.0174, 0.1838, 0.1557, -0.1382, 0.0542, 0.2813, 0.0891,
        0.1570, -0.0098, 0.0375, -0.1825, -0.2246, -0.1207, -0.0698, 0.5109, 0.2665, -0.2108, -0.2158, 0.2502,
        -0.2055, -0.0322, 0.1109, 0.1567, -0.0729, 0.0899, -0.2799, -0.1230, -0.0313, -0.1649, 0.0117, 0.0723,
        -0.2839, -0.2083, -0.0520, 0.3748, 0.0152, 0.1957, 0.1433, -0.2944, 0.3573, -0.0548, -0.1681, -0.0667,
    ],
    "latents_std": [
        0.4765, 1.0364, 0.4514, 1.1677, 0.5313, 0.4990, 0.4818, 0.5013, 0.8158, 1.0344, 0.5894, 1.0901,
        0.6885, 0.6165, 0.8454, 0.4978, 0.5759, 0.3523, 0.7135, 0.6804, 0.5833, 1.4146, 0.8986, 0.5659,
        0.7069, 0.5338, 0.4889, 0.4917, 0.4069, 0.4999, 0.6866, 0.4093, 0.5709, 0.6065, 0.6415, 0.4944,
        0.5726, 1.2042, 0.5458, 1.6887, 0.3971, 1.0600, 0.3943, 0.5537, 0.5444, 0.4089, 0.7468, 0.7744,
    ],
}  # fmt: skip
# The same architecture at test size: the 2.2 DiT on 48 channels, the residual VAE at base width 8.
TINY_WAN22_DIT = dict(TINY_DIT, in_channels=48, out_channels=48)
TINY_WAN22_VAE = dict(WAN22_VAE, base_dim=8, decoder_base_dim=16)


def run_wan_dit(
    transformer: WanTransformer3DModel, latents: torch.Tensor, timestep: float | torch.Tensor
) -> torch.Tensor:
    """One Wan DiT pass at `timestep` (or one per sample, a [B] tensor) with an all-zero text context: RGB latent ->
    depth latent.

    A DiT whose cross-attention is folded (`dvd.model.folding`) gets one context token: all 512 are the same. A DiT
    whose time conditions are cached (`dvd.model.fixed_time`) for another timestep has them recomputed first; for
    per-sample timesteps the cache, which holds one timestep, is dropped.
    """
    cached = fixed_timestep(transformer)
    if cached is not None and isinstance(timestep, torch.Tensor):
        release_time_conditions(transformer)
    elif cached is not None and cached != timestep:
        precompute_time_conditions(transformer, timestep)
    batch = latents.shape[0]
    dtype = transformer.patch_embedding.weight.dtype
    times = batch_timesteps(timestep, batch, latents.device).to(dtype)
    tokens = 1 if is_folded(transformer) else TEXT_TOKENS
    context = torch.zeros(batch, tokens, transformer.config.text_dim, device=latents.device, dtype=dtype)
    return transformer(latents.to(dtype), timestep=times, encoder_hidden_states=context, return_dict=False)[0]


class WanBackbone(Backbone):
    """What Wan2.1 and Wan2.2 share: the classes, LoRA placement, latent normalisation, the DiT call and its fast
    paths. A subclass names the family, its sizes and which VAE design it owns."""

    transformer_class: ClassVar[type[nn.Module]] = WanTransformer3DModel
    vae_class: ClassVar[type[nn.Module]] = AutoencoderKLWan
    # DVD's LoRA: q, k, v, o of self- and cross-attention and both FFN layers (10 per block); diffusers' names of
    # the official targets ["q", "k", "v", "o", "ffn.0", "ffn.2"] (attn1 is self-, attn2 cross-attention).
    lora_targets: ClassVar[tuple[str, ...]] = ("to_q", "to_k", "to_v", "to_out.0", "ffn.net.0.proj", "ffn.net.2")
    block_class: ClassVar[type[nn.Module]] = WanTransformerBlock
    input_layer: ClassVar[str] = "patch_embedding"  # Conv3d(C, width, kernel = stride = patch)
    default_window: ClassVar[int] = 81  # the official open-world script's
    default_overlap: ClassVar[int] = 21
    supports_learned_tau: ClassVar[bool] = True
    residual_vae: ClassVar[bool]  # which VAE design the family owns (`AutoencoderKLWan.config.is_residual`)

    def __init__(
        self,
        transformer: nn.Module,
        vae: nn.Module,
        condition: torch.Tensor | None = None,
        objective: Objective = REGRESSION,
    ) -> None:
        super().__init__(transformer, vae, condition, objective)
        install_float64_timestep_embedding(transformer)
        # The reference keeps 1/std, not std, and divides by it when decoding; we follow it to the last bit. Plain
        # tensors, not buffers: they follow the latents' device at use, so a pipeline that moves or offloads only
        # the DiT and the VAE (diffusers' `.to`, `enable_model_cpu_offload`) needs nothing else moved.
        self.latents_mean = torch.tensor(vae.config.latents_mean, dtype=torch.float32).view(1, -1, 1, 1, 1)
        self.latents_inv_std = 1.0 / torch.tensor(vae.config.latents_std, dtype=torch.float32).view(1, -1, 1, 1, 1)

    @classmethod
    def from_base(cls, folder: Path) -> Backbone:
        transformer = load_component(folder, "transformer", WanTransformer3DModel)
        return cls(transformer, load_component(folder, "vae", AutoencoderKLWan))

    @classmethod
    def matches(cls, transformer: nn.Module, vae: nn.Module) -> bool:
        wan = isinstance(transformer, WanTransformer3DModel) and isinstance(vae, AutoencoderKLWan)
        return wan and bool(vae.config.is_residual) == cls.residual_vae

    def check_pair(self) -> None:
        channels = self.vae.config.z_dim
        dit = self.transformer.config
        if self.dit_input_channels(channels) != dit.in_channels or channels != dit.out_channels:
            raise DVDError(
                f"the VAE has {channels} latent channels but the DiT expects {dit.in_channels} in / "
                f"{dit.out_channels} out{self.objective_note()}; use the VAE that belongs to this DiT (Wan2.1: the 16-channel Wan2.1 VAE, "
                "Wan2.2 TI2V-5B: the 48-channel Wan2.2 VAE)"
            )

    @property
    def frame_rule(self) -> FrameRule:
        return FrameRule(self.vae.config.scale_factor_temporal)

    @property
    def spatial_stride(self) -> int:
        return self.vae.config.scale_factor_spatial * self.transformer.config.patch_size[1]

    def encode(self, pixels: torch.Tensor) -> torch.Tensor:
        mu = self.vae.encode(pixels).latent_dist.mode()
        return (mu - self.latents_mean.to(mu)) * self.latents_inv_std.to(mu)

    def decode(self, latents: torch.Tensor) -> torch.Tensor:
        z = latents.to(self.vae.dtype)
        z = z / self.latents_inv_std.to(z) + self.latents_mean.to(z)
        return self.vae.decode(z).sample  # clamped to [-1, 1] by the VAE

    def denoise(self, transformer: nn.Module, latents: torch.Tensor, timestep: float | torch.Tensor) -> torch.Tensor:
        return run_wan_dit(transformer, latents, timestep)

    def empty_condition(self, batch: int, device: torch.device, dtype: torch.dtype) -> torch.Tensor:
        return torch.zeros(batch, TEXT_TOKENS, self.transformer.config.text_dim, device=device, dtype=dtype)

    def fold_constants(self, cross_attention: bool, time_conditions: bool, timestep: float) -> None:
        (fold_cross_attention if cross_attention else unfold_cross_attention)(self.transformer)
        if time_conditions:
            precompute_time_conditions(self.transformer, timestep)
        else:
            release_time_conditions(self.transformer)

    def inert_parameters(self, transformer: nn.Module) -> Iterator[tuple[str, nn.Parameter]]:
        return inert_cross_attention_parameters(transformer)


class Wan21Backbone(WanBackbone):
    family: ClassVar[str] = "wan2.1"
    residual_vae: ClassVar[bool] = False
    sizes: ClassVar[dict[str, tuple[dict, dict]]] = {
        "tiny": (TINY_DIT, TINY_WAN21_VAE),
        "1.3b": (WAN21_1_3B_DIT, WAN21_VAE),
        "14b": (WAN21_14B_DIT, WAN21_VAE),
    }


class Wan22Backbone(WanBackbone):
    family: ClassVar[str] = "wan2.2"
    residual_vae: ClassVar[bool] = True
    sizes: ClassVar[dict[str, tuple[dict, dict]]] = {
        "tiny": (TINY_WAN22_DIT, TINY_WAN22_VAE),
        "5b": (WAN22_5B_DIT, WAN22_VAE),
    }
