"""The DVD model: a Wan2.1 DiT run once, at a fixed timestep, as a regressor from RGB latents to depth latents.

    pixels [0,1] -> [-1,1] -> VAE encode (posterior mean) -> (mu - mean) * (1/std)
      -> DiT once at t = 1000·tau, text context = zeros[B, 512, text_dim]
      -> z / (1/std) + mean -> VAE decode (clamped to [-1,1]) -> (x+1)/2 -> mean over the 3 channels

The output is affine-invariant disparity: larger is nearer, with unknown scale and shift.
"""

from __future__ import annotations

from collections.abc import Callable
from contextlib import AbstractContextManager, nullcontext

import torch
from diffusers import AutoencoderKLWan, WanTransformer3DModel
from torch import nn

from dvd.errors import DVDError
from dvd.model.fixed_time import fixed_timestep, precompute_time_conditions
from dvd.model.folding import is_folded
from dvd.model.timestep import install_float64_timestep_embedding

DEFAULT_TAU = 0.5
# The official code feeds 512 zero text tokens: the T5 encoder is never run.
TEXT_TOKENS = 512
# The three steps of `DVDModel.forward`, by the names a stage timer hears (`dvd.engine.stages`).
MODEL_STAGES = ("vae_encode", "dit", "vae_decode")
Stage = Callable[[str], AbstractContextManager]


def _untimed(name: str) -> AbstractContextManager:
    return nullcontext()


def regress_depth_latent(transformer: WanTransformer3DModel, latents: torch.Tensor, timestep: float) -> torch.Tensor:
    """The DVD step on its own: one DiT pass at `timestep` with an all-zero text context, RGB latent -> depth latent.

    A function of the DiT alone, so training can wrap the DiT (and not the frozen VAE) for DDP, FSDP or DeepSpeed.
    A DiT whose cross-attention is folded (`dvd.model.folding`) gets one context token: all 512 are the same. A DiT
    whose time conditions are cached (`dvd.model.fixed_time`) for another timestep has them recomputed first.
    """
    cached = fixed_timestep(transformer)
    if cached is not None and cached != timestep:
        precompute_time_conditions(transformer, timestep)
    batch = latents.shape[0]
    dtype = transformer.patch_embedding.weight.dtype
    times = torch.full((batch,), timestep, device=latents.device, dtype=dtype)
    tokens = 1 if is_folded(transformer) else TEXT_TOKENS
    context = torch.zeros(batch, tokens, transformer.config.text_dim, device=latents.device, dtype=dtype)
    return transformer(latents.to(dtype), timestep=times, encoder_hidden_states=context, return_dict=False)[0]


def cast_transformer(transformer: WanTransformer3DModel, dtype: torch.dtype) -> WanTransformer3DModel:
    """Cast to `dtype`, keeping the modules diffusers marks as fp32-sensitive (RoPE tables, norms) in float32."""
    # nn.Module's own `to`: diffusers' override warns on every dtype cast, including this one that keeps its
    # fp32 modules just as `from_pretrained(torch_dtype=...)` does.
    nn.Module.to(transformer, dtype)
    if dtype != torch.float32:
        keep = set(WanTransformer3DModel._keep_in_fp32_modules)
        for name, tensor in [*transformer.named_parameters(), *transformer.named_buffers()]:
            if keep.intersection(name.split(".")):
                tensor.data = tensor.data.float()
    return transformer


class DVDModel(nn.Module):
    """A diffusers Wan DiT + Wan VAE pair wired as the DVD depth regressor."""

    def __init__(self, transformer: WanTransformer3DModel, vae: AutoencoderKLWan, tau: float = DEFAULT_TAU) -> None:
        super().__init__()
        if vae.config.z_dim != transformer.config.in_channels or vae.config.z_dim != transformer.config.out_channels:
            raise DVDError(
                f"the VAE has {vae.config.z_dim} latent channels but the DiT expects "
                f"{transformer.config.in_channels} in / {transformer.config.out_channels} out; "
                "use the Wan2.1 VAE that belongs to this DiT"
            )
        install_float64_timestep_embedding(transformer)
        self.transformer = transformer
        self.vae = vae
        self.tau = float(tau)
        # The reference keeps 1/std, not std, and divides by it when decoding; we follow it to the last bit. Plain
        # tensors, not buffers: they follow the latents' device at use, so a pipeline that moves or offloads only
        # the DiT and the VAE (diffusers' `.to`, `enable_model_cpu_offload`) needs nothing else moved.
        self.latents_mean = torch.tensor(vae.config.latents_mean, dtype=torch.float32).view(1, -1, 1, 1, 1)
        self.latents_inv_std = 1.0 / torch.tensor(vae.config.latents_std, dtype=torch.float32).view(1, -1, 1, 1, 1)
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

    @property
    def dtype(self) -> torch.dtype:
        return self.transformer.patch_embedding.weight.dtype

    @property
    def device(self) -> torch.device:
        return self.transformer.patch_embedding.weight.device

    @property
    def timestep(self) -> float:
        return 1000.0 * self.tau

    def encode(self, pixels: torch.Tensor) -> torch.Tensor:
        """[B,3,T,H,W] in [0,1], on the device the VAE runs on -> normalised latents [B,C,(T-1)//4+1,H/8,W/8]."""
        # Cast before the affine map, as the reference does (it rounds to bf16 first).
        x = pixels.to(dtype=self.vae.dtype) * 2 - 1
        mu = self.vae.encode(x).latent_dist.mode()
        return (mu - self.latents_mean.to(mu)) * self.latents_inv_std.to(mu)

    def regress(self, latents: torch.Tensor) -> torch.Tensor:
        """One DiT pass at the fixed timestep with an all-zero text context; the output is the depth latent."""
        return regress_depth_latent(self.transformer, latents, self.timestep)

    def decode(self, latents: torch.Tensor) -> torch.Tensor:
        """Normalised latents -> [B,3,T,H,W] in [0,1]."""
        z = latents.to(self.vae.dtype)
        z = z / self.latents_inv_std.to(z) + self.latents_mean.to(z)
        video = self.vae.decode(z).sample  # clamped to [-1, 1] by the VAE
        return ((video.float() + 1) / 2).clamp(0, 1)

    def forward(self, pixels: torch.Tensor, stage: Stage = _untimed) -> torch.Tensor:
        """[B,3,T,H,W] in [0,1], T = 4n+1, H and W multiples of 16 -> disparity [B,T,H,W] (float32).

        `stage(name)` is entered around each step (names in MODEL_STAGES), so a profiler can time them.
        """
        encode, dit, decode = MODEL_STAGES
        with stage(encode):
            latents = self.encode(pixels)
        with stage(dit):
            depth = self.regress(latents)
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
