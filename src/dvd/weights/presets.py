"""Model sizes by name, built with random weights (no download): `dvd bench --preset` and the benchmark scripts.

Random weights compute exactly what trained ones do, so speed and memory measured on them hold for the real model.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import torch
from diffusers import AutoencoderKLWan, WanTransformer3DModel

from dvd.weights.tiny import TINY_DIT, TINY_VAE_BASE_DIM

# Wan2.1-T2V-1.3B, the DiT DVD fine-tunes: 30 blocks of width 1536 (12 heads of 128), 1.42e9 parameters.
WAN_1_3B_DIT = dict(
    TINY_DIT, num_attention_heads=12, attention_head_dim=128, text_dim=4096, ffn_dim=8960, num_layers=30
)
WAN_VAE_BASE_DIM = 96  # the Wan2.1 VAE (AutoencoderKLWan's default)


@dataclass(frozen=True)
class Preset:
    dit: dict
    vae_base_dim: int


# The names are dvd.options.MODEL_PRESETS (the CLI offers them without importing torch).
PRESETS: dict[str, Preset] = {
    "tiny": Preset(TINY_DIT, TINY_VAE_BASE_DIM),
    "1.3b": Preset(WAN_1_3B_DIT, WAN_VAE_BASE_DIM),
}


def random_modules(
    name: str, device: torch.device | str = "cpu", dtype: torch.dtype = torch.float32, seed: int = 0
) -> tuple[WanTransformer3DModel, AutoencoderKLWan]:
    """The DiT and VAE of preset `name` with diffusers' default random initialisation, drawn from `seed`.

    Built in place on `device` and in `dtype`: the 1.3B DiT never exists in float32 on the host (5.7 GB), so the
    host memory a run reports is the run's own. Callers still cast with `DVDModel.to_precision`, which brings the
    modules diffusers keeps in float32 back to float32.
    """
    preset = PRESETS[name]
    torch.manual_seed(seed)
    with torch.device(device), default_dtype(dtype):
        return WanTransformer3DModel(**preset.dit), AutoencoderKLWan(base_dim=preset.vae_base_dim)


@contextmanager
def default_dtype(dtype: torch.dtype) -> Iterator[None]:
    previous = torch.get_default_dtype()
    torch.set_default_dtype(dtype)
    try:
        yield
    finally:
        torch.set_default_dtype(previous)
