"""The frame-count rule of the causal Wan VAE: it encodes 1 + 4n frames (the first frame alone, then groups of 4)."""

from __future__ import annotations

import torch

VAE_TIME_STRIDE = 4


def is_vae_frame_count(num_frames: int) -> bool:
    """True for 1, 5, 9, ...: the clip lengths the VAE encodes without padding."""
    return num_frames >= 1 and num_frames % VAE_TIME_STRIDE == 1


def pad_to_vae_frame_count(frames: torch.Tensor, dim: int = 2) -> torch.Tensor:
    """Repeat the last frame along ``dim`` (time; [B,C,T,H,W] by default) until the count is 1 + 4n."""
    extra = (1 - frames.shape[dim]) % VAE_TIME_STRIDE
    if extra == 0:
        return frames
    last = frames.narrow(dim, frames.shape[dim] - 1, 1)
    return torch.cat(
        [frames, last.expand(*[extra if d == dim % frames.ndim else -1 for d in range(frames.ndim)])], dim=dim
    )
