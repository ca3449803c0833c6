"""Model sizes by name, built with random weights (no download): `dvd bench --preset` and the benchmark scripts.

Every size of every backbone family (`Backbone.sizes`) is a preset named `family:size` (`wan2.1:1.3b`,
`wan2.2:5b`, `cogvideox:5b`, `ltx-video:2b`, each family's `:tiny`); `tiny` and `1.3b`, the names from before dvd
had families, are Wan2.1's, the model DVD was released on. A family whose DiT takes a text encoder's empty-prompt
embedding gets zeros of its shape (`Backbone.placeholder_condition`). Random weights compute exactly what trained
ones do, so speed and memory measured on them hold for the real model.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import torch

from dvd.model.backbone import Backbone
from dvd.model.backbones import BACKBONES
from dvd.model.backbones.wan import Wan21Backbone
from dvd.model.dvd_model import DVDModel

UNQUALIFIED = ("tiny", "1.3b")  # Wan2.1's sizes by their names from before there were families


@dataclass(frozen=True)
class Preset:
    backbone: type[Backbone]
    size: str  # a key of `backbone.sizes`

    @property
    def dit(self) -> dict:
        return self.backbone.sizes[self.size][0]

    @property
    def vae(self) -> dict:
        return self.backbone.sizes[self.size][1]


# The names are dvd.options.MODEL_PRESETS (the CLI offers them without importing torch).
PRESETS: dict[str, Preset] = {name: Preset(Wan21Backbone, name) for name in UNQUALIFIED} | {
    f"{family}:{size}": Preset(backbone, size) for family, backbone in BACKBONES.items() for size in backbone.sizes
}


def random_model(
    name: str,
    device: torch.device | str = "cpu",
    dtype: torch.dtype = torch.float32,
    seed: int = 0,
    num_layers: int | None = None,
) -> DVDModel:
    """The DVD model of preset `name` with diffusers' default random initialisation, drawn from `seed`;
    `num_layers` replaces the DiT's depth (its blocks are identical, so a few of them time the rest).

    Built in place on `device` (meta: shapes only) and in `dtype`: the 1.3B DiT never exists in float32 on the host
    (5.7 GB), so the host memory a run reports is the run's own. Callers still cast with `DVDModel.to_precision`,
    which brings the modules diffusers keeps in float32 back to float32.
    """
    preset = PRESETS[name]
    dit = preset.dit if num_layers is None else {**preset.dit, "num_layers": num_layers}
    torch.manual_seed(seed)
    with torch.device(device), default_dtype(dtype):
        transformer = preset.backbone.transformer_class(**dit)
        vae = preset.backbone.vae_class(**preset.vae)
    return DVDModel(transformer, vae, condition=preset.backbone.placeholder_condition(transformer))


@contextmanager
def default_dtype(dtype: torch.dtype) -> Iterator[None]:
    previous = torch.get_default_dtype()
    torch.set_default_dtype(dtype)
    try:
        yield
    finally:
        torch.set_default_dtype(previous)
