"""LTX-Video on diffusers' `LTXVideoTransformer3DModel` and `AutoencoderKLLTXVideo`, called as `LTXPipeline` calls
them:

- latents: `LTXPipeline._normalize_latents`, (mu - latents_mean) · scaling_factor / latents_std with the VAE's
  per-channel statistics (buffers, not config), and `_denormalize_latents` before decoding;
- the DiT takes packed tokens [B, N, C·p_t·p·p] (`_pack_latents`/`_unpack_latents`), the token grid's frames,
  height and width for its RoPE, and `rope_interpolation_scale` (temporal compression / frame rate, spatial
  compression, spatial compression);
- timestep: the pipeline passes the flow-matching scheduler's timesteps, which `FlowMatchEulerDiscreteScheduler`
  makes sigma · 1000, so DVD's t = 1000·τ is sigma = τ (0.5, the middle of the schedule) with no conversion;
- frame rate: a fixed 25 fps, `LTXPipeline`'s default. The RoPE scales latent frames to seconds; DVD's windows
  carry no frame rate (Wan's and CogVideoX's positions count frames), so a fixed rate keeps the model a function of
  the frames alone, and the pipeline's default is the rate the DiT runs at when none is given;
- context: the T5 embedding of "" padded to 128 tokens (the pipeline's max_sequence_length) with its attention mask,
  under which the DiT gives the padding's keys a -10000 bias: exp(-10000) is 0 in float32 and bfloat16, so they
  weigh exactly nothing. The condition kept is therefore the unmasked tokens alone (the end-of-sequence token of
  "": [1, 4096]) with an all-True mask: the pipeline's call up to rounding, without a second tensor to save, and
  cross-attention over 1 key instead of 128;
- decoding: VAEs with `timestep_conditioning` (LTX-Video 0.9.1 and later) are told decode timestep 0 and no noise is
  mixed in (the pipeline's default `decode_timestep` 0.0, `decode_noise_scale` = it): the decoder can also finish
  denoising a slightly noisy latent, but DVD's latent is a regression output, not a sample. The 0.9.1 decoder also
  injects random spatial noise (`decoder_inject_noise`) from the global generator; DVD draws it from a fixed seed on
  a forked generator, so a prediction is deterministic and the caller's random state untouched.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import ClassVar

import torch
from diffusers import AutoencoderKLLTXVideo, LTXVideoTransformer3DModel
from diffusers.models.transformers.transformer_ltx import LTXVideoTransformerBlock
from torch import nn

from dvd.errors import DVDError
from dvd.model.backbone import Backbone, FrameRule, batch_timesteps
from dvd.model.backbones.pretrained import empty_prompt_embedding, load_component

FRAME_RATE = 25  # LTXPipeline's default frame_rate (see the module docstring)
MAX_SEQUENCE_LENGTH = 128  # LTXPipeline's max_sequence_length; scripts/convert_ltx_to_diffusers.py TOKENIZER_MAX_LENGTH
DECODE_NOISE_SEED = 0

# LTX-Video 2B (0.9.x): diffusers' scripts/convert_ltx_to_diffusers.py builds the DiT as LTXVideoTransformer3DModel()
# with the class defaults, spelt out here, and the 0.9.1 VAE from its get_vae_config("0.9.1").
LTX_2B_DIT = {
    "in_channels": 128,
    "out_channels": 128,
    "patch_size": 1,
    "patch_size_t": 1,
    "num_attention_heads": 32,
    "attention_head_dim": 64,
    "cross_attention_dim": 2048,
    "num_layers": 28,
    "caption_channels": 4096,
}
LTX_091_VAE = {
    "latent_channels": 128,
    "block_out_channels": (128, 256, 512, 512),
    "decoder_block_out_channels": (256, 512, 1024),
    "layers_per_block": (4, 3, 3, 3, 4),
    "decoder_layers_per_block": (5, 6, 7, 8),
    "spatio_temporal_scaling": (True, True, True, False),
    "decoder_spatio_temporal_scaling": (True, True, True),
    "decoder_inject_noise": (True, True, True, False),
    "upsample_residual": (True, True, True),
    "upsample_factor": (2, 2, 2),
    "timestep_conditioning": True,
    "patch_size": 4,
    "patch_size_t": 1,
    "scaling_factor": 1.0,
    "encoder_causal": True,
    "decoder_causal": False,
}
# The same architecture in 1.5 MB of float32: the 0.9.1 VAE's strides (32x32x8), timestep conditioning and noise
# injection at widths of 8-32 with 8 latent channels; a DiT of 2 blocks of 2 heads of 12 on 16-dim contexts.
TINY_DIT = {
    "in_channels": 8,
    "out_channels": 8,
    "patch_size": 1,
    "patch_size_t": 1,
    "num_attention_heads": 2,
    "attention_head_dim": 12,
    "cross_attention_dim": 24,
    "num_layers": 2,
    "caption_channels": 16,
}
TINY_VAE = dict(
    LTX_091_VAE,
    latent_channels=8,
    block_out_channels=(8, 8, 8, 8),
    decoder_block_out_channels=(8, 16, 32),
    layers_per_block=(1, 1, 1, 1, 1),
    decoder_layers_per_block=(1, 1, 1, 1),
)


class LTXVideoBackbone(Backbone):
    family: ClassVar[str] = "ltx-video"
    transformer_class: ClassVar[type[nn.Module]] = LTXVideoTransformer3DModel
    vae_class: ClassVar[type[nn.Module]] = AutoencoderKLLTXVideo
    # huggingface/finetrainers' LoRA (its LTX-Video recipe) targets to_q, to_k, to_v, to_out.0 of the transformer
    # blocks (self- and cross-attention); DVD also adapts both FFN layers (dvd.model.lora), kept here so the recipe
    # is the same on every backbone.
    lora_targets: ClassVar[tuple[str, ...]] = ("to_q", "to_k", "to_v", "to_out.0", "ff.net.0.proj", "ff.net.2")
    # diffusers gives the LTX DiT no `_no_split_modules`, so FSDP needs to be told its block
    block_class: ClassVar[type[nn.Module]] = LTXVideoTransformerBlock
    input_layer: ClassVar[str] = "proj_in"  # a Linear over channel-major packed patches (`_pack`)
    # 121 frames (4.8 s at 25 fps, 16 latent frames) see as much time as DVD's 81 frames of Wan at 16 fps; the
    # overlap is about a quarter of the window, as DVD's 21 of 81.
    default_window: ClassVar[int] = 121
    default_overlap: ClassVar[int] = 31
    sizes: ClassVar[dict[str, tuple[dict, dict]]] = {"tiny": (TINY_DIT, TINY_VAE), "2b": (LTX_2B_DIT, LTX_091_VAE)}

    @classmethod
    def from_base(cls, folder: Path) -> LTXVideoBackbone:
        transformer = load_component(folder, "transformer", LTXVideoTransformer3DModel)
        vae = load_component(folder, "vae", AutoencoderKLLTXVideo)
        embedding, mask = empty_prompt_embedding(folder, MAX_SEQUENCE_LENGTH, cls.family)
        return cls(transformer, vae, embedding[mask])

    @classmethod
    def matches(cls, transformer: nn.Module, vae: nn.Module) -> bool:
        return isinstance(transformer, LTXVideoTransformer3DModel)

    @classmethod
    def placeholder_condition(cls, transformer: nn.Module) -> torch.Tensor:
        # The condition kept is the end-of-sequence token of "" alone (see the module docstring).
        return torch.zeros(1, transformer.config.caption_channels, device=transformer.device)

    def check_pair(self) -> None:
        dit, fix = self.transformer.config, "use the vae/ of the same LTX-Video model as its transformer/"
        if not isinstance(self.vae, AutoencoderKLLTXVideo):
            raise DVDError(f"an LTX-Video DiT needs an AutoencoderKLLTXVideo, not a {type(self.vae).__name__}: {fix}")
        if dit.patch_size_t != 1:
            raise DVDError(
                f"the LTX-Video DiT patches {dit.patch_size_t} latent frames together; dvd supports patch_size_t 1, "
                "as every released LTX-Video has: use one of those"
            )
        channels = self.vae.config.latent_channels * dit.patch_size**2
        if dit.in_channels != self.dit_input_channels(channels) or dit.out_channels != channels:
            raise DVDError(
                f"the VAE's {self.vae.config.latent_channels} latent channels in {dit.patch_size}x{dit.patch_size} "
                f"patches make {channels} per token but the LTX-Video DiT takes {dit.in_channels} in / "
                f"{dit.out_channels} out{self.objective_note()}: {fix}"
            )
        condition = self.condition
        if condition is not None and (condition.ndim != 2 or condition.shape[1] != dit.caption_channels):
            raise DVDError(
                f"the empty-prompt condition is {tuple(condition.shape)} but the DiT takes contexts of "
                f"{dit.caption_channels}: train again from this DiT's base model (dvd train --base), which computes it"
            )

    @property
    def frame_rule(self) -> FrameRule:
        return FrameRule(self.vae.temporal_compression_ratio)

    @property
    def spatial_stride(self) -> int:
        # The ratios are the VAE's attributes, not its config: 0.9.5+ VAEs set them explicitly (as LTXPipeline reads).
        return self.vae.spatial_compression_ratio * self.transformer.config.patch_size

    def encode(self, pixels: torch.Tensor) -> torch.Tensor:
        mean = self.vae.encode(pixels.to(self.vae.dtype)).latent_dist.mode()
        shift, scale = self._statistics(mean)
        return (mean - shift) * self.vae.config.scaling_factor / scale

    def decode(self, latents: torch.Tensor) -> torch.Tensor:
        z = latents.to(self.vae.dtype)
        shift, scale = self._statistics(z)
        z = z * scale / self.vae.config.scaling_factor + shift
        timestep = None
        if self.vae.config.timestep_conditioning:
            timestep = torch.zeros(z.shape[0], device=z.device, dtype=z.dtype)
        with _seeded(z.device):
            return self.vae.decode(z, timestep).sample.clamp(-1, 1)

    def denoise(self, transformer: nn.Module, latents: torch.Tensor, timestep: float | torch.Tensor) -> torch.Tensor:
        config = self.transformer.config
        dtype = self.transformer.proj_in.weight.dtype
        batch, _, frames, height, width = latents.shape
        patch = config.patch_size
        tokens = _pack(latents.to(dtype), patch)
        context = self.empty_condition(batch, latents.device, dtype)
        # The RoPE and unpacking take the token grid; LTXPipeline passes the latent's sizes, the same at patch 1.
        out = transformer(
            hidden_states=tokens,
            encoder_hidden_states=context,
            timestep=batch_timesteps(timestep, batch, latents.device),
            encoder_attention_mask=torch.ones(context.shape[:2], dtype=torch.bool, device=latents.device),
            num_frames=frames,
            height=height // patch,
            width=width // patch,
            rope_interpolation_scale=(
                self.vae.temporal_compression_ratio / FRAME_RATE,
                self.vae.spatial_compression_ratio,
                self.vae.spatial_compression_ratio,
            ),
            return_dict=False,
        )[0]
        return _unpack(out, frames, height // patch, width // patch, patch)

    def _statistics(self, like: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The VAE's per-channel latent mean and std, shaped to broadcast over [B, C, F, H, W] like `like`."""
        shape = (1, -1, 1, 1, 1)
        return self.vae.latents_mean.view(shape).to(like), self.vae.latents_std.view(shape).to(like)


def _pack(latents: torch.Tensor, patch: int) -> torch.Tensor:
    """`LTXPipeline._pack_latents` with patch_size_t 1: [B, C, F, H, W] -> [B, F·(H/p)·(W/p), C·p·p]."""
    batch, channels, frames, height, width = latents.shape
    latents = latents.reshape(batch, channels, frames, height // patch, patch, width // patch, patch)
    return latents.permute(0, 2, 3, 5, 1, 4, 6).flatten(4, 6).flatten(1, 3)


def _unpack(tokens: torch.Tensor, frames: int, height: int, width: int, patch: int) -> torch.Tensor:
    """`LTXPipeline._unpack_latents` with patch_size_t 1, on the token grid frames x height x width."""
    tokens = tokens.reshape(tokens.shape[0], frames, height, width, -1, patch, patch)
    return tokens.permute(0, 4, 1, 2, 5, 3, 6).flatten(5, 6).flatten(3, 4)


@contextmanager
def _seeded(device: torch.device) -> Iterator[None]:
    """Run with `device`'s default generator seeded to DECODE_NOISE_SEED; every generator it touches is restored
    afterwards (`torch.manual_seed` seeds all devices of the type, so all of them are forked)."""
    if device.type == "meta":  # shapes only (FLOP counts on a meta copy): no numbers are drawn, no generator exists
        yield
        return
    if device.type == "cpu":
        with torch.random.fork_rng(devices=[]):
            torch.random.default_generator.manual_seed(DECODE_NOISE_SEED)
            yield
        return
    devices = range(torch.get_device_module(device.type).device_count())
    with torch.random.fork_rng(devices=devices, device_type=device.type):
        torch.manual_seed(DECODE_NOISE_SEED)
        yield
