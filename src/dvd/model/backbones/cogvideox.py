"""CogVideoX (the paper's second backbone, Table 6) on diffusers' `CogVideoXTransformer3DModel` and
`AutoencoderKLCogVideoX`, called as diffusers' `CogVideoXPipeline` calls them:

- latents: the VAE's posterior mean times `scaling_factor` (0.7 for the 5B), no shift; decoding divides by it
  (`CogVideoXPipeline.decode_latents`; the LoRA training script encodes with `latent_dist.sample() * scaling_factor`);
- the DiT takes [B, F, C, H, W] (frames before channels) and the scheduler's timestep, an integer in 0..999 of
  CogVideoX's DDPM schedule: DVD's t = 1000·τ is passed as it is (τ = 0.5 → 500);
- the context is the T5 embedding of "" padded to the DiT's `max_text_seq_length` (226) tokens, unmasked: the DiT
  attends text and video tokens jointly, padding included, as in the pipeline;
- 3D RoPE as `CogVideoXPipeline._prepare_rotary_positional_embeddings` (5B: `use_rotary_positional_embeddings`);
  CogVideoX 1.5 (`patch_size_t` 2) patches two latent frames at a time, and an odd latent count is padded in front
  with copies of the first latent frame, dropped from the output (the I2V pipeline's padding; T2V discards the
  leading frames the same way).

Frame rule 8n+1, not 4n+1: the VAE compresses time 4x, but its decoder decodes latent frames in pairs
(`num_latent_frames_batch_size` 2, the first group taking an odd one out), so only an odd latent count decodes back
to 4(t-1)+1 frames; an even one gives 4t (13 frames would come back as 16). CogVideoX's own clip lengths (49, 81)
are 8n+1.
"""

from __future__ import annotations

from pathlib import Path
from typing import ClassVar

import torch
from diffusers import AutoencoderKLCogVideoX, CogVideoXTransformer3DModel
from diffusers.models.embeddings import get_3d_rotary_pos_embed
from diffusers.models.transformers.cogvideox_transformer_3d import CogVideoXBlock
from torch import nn

from dvd.errors import DVDError
from dvd.model.backbone import Backbone, FrameRule, batch_timesteps
from dvd.model.backbones.pretrained import empty_prompt_embedding, load_component

# CogVideoX-5B as diffusers' scripts/convert_cogvideox_to_diffusers.py builds it: num_layers 42, num_attention_heads
# 48, use_rotary_positional_embeddings True ("For 5B, it is ..."), VAE scaling_factor 0.7; the rest are the class
# defaults, spelt out: heads of 64, T5-XXL contexts of 4096 x 226, 480x720 px (60x90 latents), 2x2 patches.
COGVIDEOX_5B_DIT = {
    "num_layers": 42,
    "num_attention_heads": 48,
    "attention_head_dim": 64,
    "in_channels": 16,
    "out_channels": 16,
    "text_embed_dim": 4096,
    "max_text_seq_length": 226,
    "sample_height": 60,
    "sample_width": 90,
    "sample_frames": 49,
    "patch_size": 2,
    "temporal_compression_ratio": 4,
    "use_rotary_positional_embeddings": True,
}
COGVIDEOX_5B_VAE = {"latent_channels": 16, "temporal_compression_ratio": 4, "scaling_factor": 0.7}
# The same architecture in 0.4 MB of float32 (the 5B's RoPE and patching, 2 blocks of 2 heads of 16, 4 latent
# channels, VAE widths of 8), for tests and the proof setup; 8-token contexts keep its T5 small too.
TINY_DIT = {
    "num_layers": 2,
    "num_attention_heads": 2,
    "attention_head_dim": 16,
    "in_channels": 4,
    "out_channels": 4,
    "time_embed_dim": 8,
    "text_embed_dim": 16,
    "max_text_seq_length": 8,
    "sample_height": 4,
    "sample_width": 4,
    "sample_frames": 9,
    "patch_size": 2,
    "temporal_compression_ratio": 4,
    "use_rotary_positional_embeddings": True,
}
TINY_VAE = {
    "block_out_channels": (8, 8, 8, 8),
    "latent_channels": 4,
    "layers_per_block": 1,
    "norm_num_groups": 2,
    "temporal_compression_ratio": 4,
    "scaling_factor": 0.7,
}


class CogVideoXBackbone(Backbone):
    family: ClassVar[str] = "cogvideox"
    transformer_class: ClassVar[type[nn.Module]] = CogVideoXTransformer3DModel
    vae_class: ClassVar[type[nn.Module]] = AutoencoderKLCogVideoX
    # diffusers' examples/cogvideo/train_cogvideox_lora.py targets to_q, to_k, to_v, to_out.0 (the joint attention);
    # DVD also adapts both FFN layers (dvd.model.lora, the official q, k, v, o, ffn.0, ffn.2), kept here so the
    # recipe is the same on every backbone.
    lora_targets: ClassVar[tuple[str, ...]] = ("to_q", "to_k", "to_v", "to_out.0", "ff.net.0.proj", "ff.net.2")
    block_class: ClassVar[type[nn.Module]] = CogVideoXBlock
    # Conv2d(C, width) per latent frame; with patch_size_t (1.5) a Linear over channel-major patches
    input_layer: ClassVar[str] = "patch_embed.proj"
    # CogVideoX's clip: 49 frames (6 s at 8 fps + 1); the overlap is about a quarter of it, as DVD's 21 of 81.
    default_window: ClassVar[int] = 49
    default_overlap: ClassVar[int] = 13
    sizes: ClassVar[dict[str, tuple[dict, dict]]] = {
        "tiny": (TINY_DIT, TINY_VAE),
        "5b": (COGVIDEOX_5B_DIT, COGVIDEOX_5B_VAE),
    }

    @classmethod
    def from_base(cls, folder: Path) -> CogVideoXBackbone:
        transformer = load_component(folder, "transformer", CogVideoXTransformer3DModel)
        vae = load_component(folder, "vae", AutoencoderKLCogVideoX)
        # The pipeline's max_sequence_length must be the DiT's max_text_seq_length (its docstring): the positional
        # embedding of CogVideoX-2B has exactly that many text slots.
        condition, _ = empty_prompt_embedding(folder, transformer.config.max_text_seq_length, cls.family)
        return cls(transformer, vae, condition)

    @classmethod
    def matches(cls, transformer: nn.Module, vae: nn.Module) -> bool:
        return isinstance(transformer, CogVideoXTransformer3DModel)

    @classmethod
    def placeholder_condition(cls, transformer: nn.Module) -> torch.Tensor:
        config = transformer.config
        return torch.zeros(config.max_text_seq_length, config.text_embed_dim, device=transformer.device)

    def check_pair(self) -> None:
        dit, fix = self.transformer.config, "use the vae/ of the same CogVideoX model as its transformer/"
        if not isinstance(self.vae, AutoencoderKLCogVideoX):
            raise DVDError(f"a CogVideoX DiT needs an AutoencoderKLCogVideoX, not a {type(self.vae).__name__}: {fix}")
        vae = self.vae.config
        if self.dit_input_channels(vae.latent_channels) != dit.in_channels or vae.latent_channels != dit.out_channels:
            raise DVDError(
                f"the VAE has {vae.latent_channels} latent channels but the CogVideoX DiT takes {dit.in_channels} in "
                f"/ {dit.out_channels} out{self.objective_note()} (an image-to-video DiT takes twice the VAE's): {fix}"
            )
        if vae.temporal_compression_ratio != dit.temporal_compression_ratio:
            raise DVDError(
                f"the VAE compresses time {vae.temporal_compression_ratio}x but the DiT was built for "
                f"{dit.temporal_compression_ratio}x: {fix}"
            )
        expected = (dit.max_text_seq_length, dit.text_embed_dim)
        if self.condition is not None and tuple(self.condition.shape) != expected:
            raise DVDError(
                f"the empty-prompt condition is {tuple(self.condition.shape)} but the DiT takes {expected} "
                "(tokens, dim): train again from this DiT's base model (dvd train --base), which computes it"
            )

    @property
    def frame_rule(self) -> FrameRule:
        return FrameRule(int(self.vae.config.temporal_compression_ratio) * self.vae.num_latent_frames_batch_size)

    @property
    def spatial_stride(self) -> int:
        # The pipeline's vae_scale_factor_spatial (2 ** (levels - 1)) times the DiT's patch.
        return 2 ** (len(self.vae.config.block_out_channels) - 1) * self.transformer.config.patch_size

    def encode(self, pixels: torch.Tensor) -> torch.Tensor:
        mean = self.vae.encode(pixels.to(self.vae.dtype)).latent_dist.mode()
        return mean * self.vae.config.scaling_factor

    def decode(self, latents: torch.Tensor) -> torch.Tensor:
        z = 1 / self.vae.config.scaling_factor * latents.to(self.vae.dtype)  # decode_latents' order, to the bit
        return self.vae.decode(z).sample.clamp(-1, 1)

    def denoise(self, transformer: nn.Module, latents: torch.Tensor, timestep: float | torch.Tensor) -> torch.Tensor:
        config = self.transformer.config
        dtype = self.transformer.patch_embed.text_proj.weight.dtype
        pad = (-latents.shape[2]) % config.patch_size_t if config.patch_size_t else 0
        if pad:
            first = latents[:, :, :1].expand(-1, -1, pad, -1, -1)
            latents = torch.cat([first, latents], dim=2)
        hidden = latents.permute(0, 2, 1, 3, 4).to(dtype)  # [B, F, C, H, W]
        batch, frames, _, height, width = hidden.shape
        rotary = (
            self._rotary_embedding(frames, height, width, hidden.device)
            if config.use_rotary_positional_embeddings
            else None
        )
        out = transformer(
            hidden_states=hidden,
            encoder_hidden_states=self.empty_condition(batch, hidden.device, dtype),
            timestep=batch_timesteps(timestep, batch, hidden.device),
            image_rotary_emb=rotary,
            return_dict=False,
        )[0]
        return out[:, pad:].permute(0, 2, 1, 3, 4)

    def _rotary_embedding(
        self, frames: int, height: int, width: int, device: torch.device
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """`CogVideoXPipeline._prepare_rotary_positional_embeddings` on a latent of frames x height x width."""
        config = self.transformer.config
        patch, patch_t = config.patch_size, config.patch_size_t
        grid = (height // patch, width // patch)
        base = (config.sample_height // patch, config.sample_width // patch)
        if patch_t is None:
            return get_3d_rotary_pos_embed(
                embed_dim=config.attention_head_dim,
                crops_coords=_resize_crop_region(grid, base),
                grid_size=grid,
                temporal_size=frames,
                device=device,
            )
        # The pipeline slices positions 0..grid-1 out of a table of the training size; a larger grid continues the
        # same integer positions instead of failing.
        return get_3d_rotary_pos_embed(
            embed_dim=config.attention_head_dim,
            crops_coords=None,
            grid_size=grid,
            temporal_size=(frames + patch_t - 1) // patch_t,
            grid_type="slice",
            max_size=(max(base[0], grid[0]), max(base[1], grid[1])),
            device=device,
        )


def _resize_crop_region(grid: tuple[int, int], base: tuple[int, int]) -> tuple[tuple[int, int], tuple[int, int]]:
    """The pipeline module's `get_resize_crop_region_for_grid(grid, base_width, base_height)`: the grid's aspect
    fitted into the training grid, centred. Restated, because importing that module imports transformers, which
    predicting does not need."""
    (height, width), (base_height, base_width) = grid, base
    if height / width > base_height / base_width:
        resize_height, resize_width = base_height, round(base_height / height * width)
    else:
        resize_width, resize_height = base_width, round(base_width / width * height)
    top = round((base_height - resize_height) / 2.0)
    left = round((base_width - resize_width) / 2.0)
    return (top, left), (top + resize_height, left + resize_width)
