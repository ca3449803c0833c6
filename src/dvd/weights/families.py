"""Which backbone family a weights folder or file holds, read from its configs before any tensor is.

A trained model records its family: `"backbone"` in the `model_index.json` that `DVDPipeline.save_pretrained`
writes, and in a single file's header (beside `"objective"`, how its DiT was trained); what was written before dvd knew more than one family is Wan2.1. A base model
in diffusers' layout names its component classes (in `model_index.json`, else in each component's `config.json`).
Those names are only compared with the classes of the families dvd knows (`dvd.model.backbones.BACKBONES`), never
imported. Where one pair of classes serves two families (Wan2.1 and Wan2.2), the family is decided on skeletons
built from the configs on the meta device: no memory, no weights, and a VAE that does not fit its DiT is refused
before anything is read.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from accelerate import init_empty_weights

from dvd.errors import DVDError
from dvd.model.backbone import Backbone, backbone_for
from dvd.model.backbones import BACKBONES
from dvd.model.flow_matching import REGRESSION, Objective, check_objective

BACKBONE_KEY = "backbone"  # in model_index.json and in a single file's header
OBJECTIVE_KEY = "objective"  # likewise: how the DiT was trained (`dvd.model.flow_matching`); regression if absent
UNRECORDED_FAMILY = "wan2.1"  # models saved before the family was recorded
PIPELINE_INDEX = "model_index.json"  # diffusers' pipeline layout
COMPONENTS = ("transformer", "vae")


def read_json(path: Path) -> dict[str, Any]:
    """A JSON object from `path`; DVDError naming the file otherwise."""
    try:
        config = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as error:
        raise DVDError(f"{path} is not a readable JSON config ({error}): re-save or re-download the model") from None
    if not isinstance(config, dict):
        raise DVDError(f"{path} holds {type(config).__name__}, not a JSON object: re-save or re-download the model")
    return config


def recorded_family(config: dict[str, Any], where: str) -> type[Backbone]:
    """The family a trained model's config records under `BACKBONE_KEY` (Wan2.1 when it records none)."""
    name = config.get(BACKBONE_KEY, UNRECORDED_FAMILY)
    if name not in BACKBONES:
        raise DVDError(
            f"{where} records backbone {name!r}, which this dvd does not know ({', '.join(BACKBONES)}): "
            "update dvd, or re-save the model with this version"
        )
    return BACKBONES[name]


def recorded_objective(config: dict[str, Any], where: str) -> Objective:
    """The objective a trained model's config records under `OBJECTIVE_KEY` (regression when it records none)."""
    return check_objective(config.get(OBJECTIVE_KEY, REGRESSION), f"the {OBJECTIVE_KEY} {where} records")


def check_recorded(family: type[Backbone], found: str, where: str) -> None:
    """The DiT/VAE pair a trained model's files hold (`found`, a family name) must be of the family it records."""
    if found != family.family:
        raise DVDError(
            f"{where} records backbone {family.family}, but its DiT and VAE are a {found} model: the files are "
            "damaged or were edited; re-save the model"
        )


def component_class(folder: Path, component: str) -> str | None:
    """The class name a diffusers-layout folder gives `component`: its model_index.json entry, else the
    `_class_name` of `component/config.json`; None when neither names one."""
    index = folder / PIPELINE_INDEX
    if index.is_file():
        entry = read_json(index).get(component)
        if isinstance(entry, list) and len(entry) == 2 and isinstance(entry[1], str):
            return entry[1]
    config = folder / component / "config.json"
    if config.is_file():
        name = read_json(config).get("_class_name")
        return name if isinstance(name, str) else None
    return None


def check_component_classes(folder: Path, family: type[Backbone]) -> None:
    """A trained model's components must be of its recorded family's classes (compared by name)."""
    for component, expected in zip(COMPONENTS, (family.transformer_class, family.vae_class), strict=True):
        named = component_class(folder, component)
        if named is not None and named != expected.__name__:
            raise DVDError(
                f"{folder} records backbone {family.family}, but its {component} is a {named}, not a "
                f"{expected.__name__}: the folder is damaged or was edited; re-save the model"
            )


def base_family(folder: Path) -> type[Backbone]:
    """The family of a base model in diffusers' layout (`transformer/`, `vae/`, usually a model_index.json)."""
    dit, vae = (component_class(folder, component) for component in COMPONENTS)
    owners = [family for family in BACKBONES.values() if family.transformer_class.__name__ == dit]
    if not owners:
        raise DVDError(
            f"{folder} holds a {dit or 'DiT of unknown class'}, not a backbone dvd supports "
            f"({', '.join(BACKBONES)}): start from a Wan2.1, Wan2.2 TI2V, CogVideoX or LTX-Video model in "
            "diffusers' layout (model_index.json, transformer/, vae/)"
        )
    pair = next((family for family in owners if family.vae_class.__name__ == vae), None)
    if pair is None:
        expected = " or ".join(sorted({family.vae_class.__name__ for family in owners}))
        found = f"the VAE is a {vae}, which does not belong to" if vae else "there is no VAE (vae/config.json) for"
        raise DVDError(
            f"{folder}: {found} its {dit} (that takes a {expected}): put the base model's own VAE in {folder / 'vae'}"
        )
    return type(_skeleton(folder, pair))


def _skeleton(folder: Path, family: type[Backbone]) -> Backbone:
    """The backbone that owns the folder's DiT/VAE pair, built on the meta device from the configs alone
    (`backbone_for` checks that the two fit)."""
    with init_empty_weights():
        transformer, vae = (
            cls.from_config(cls.load_config(folder / component))
            for cls, component in zip((family.transformer_class, family.vae_class), COMPONENTS, strict=True)
        )
    return backbone_for(transformer, vae)
