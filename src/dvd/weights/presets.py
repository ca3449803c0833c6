"""Model sizes by name, built with random weights (no download): `dvd bench --preset` and the benchmark scripts.

The sizes are the Wan2.1 backbone's (`Wan21Backbone.sizes`), the model DVD was released on. Random weights compute
exactly what trained ones do, so speed and memory measured on them hold for the real model.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import torch
from diffusers import AutoencoderKLWan, WanTransformer3DModel

from dvd.model.backbones.wan import Wan21Backbone


@dataclass(frozen=True)
class Preset:
    dit: dict
    vae_base_dim: int


# The names are dvd.options.MODEL_PRESETS (the CLI offers them without importing torch).
PRESETS: dict[str, Preset] = {
    name: Preset(dit, vae["base_dim"]) for name, (dit, vae) in Wan21Backbone.sizes.items() if name in ("tiny", "1.3b")
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
