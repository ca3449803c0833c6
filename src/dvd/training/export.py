"""Turning a trained model into weights that `dvd predict --weights DIR` loads.

- ``merged``: `DVDPipeline.save_pretrained`'s diffusers layout (`model_index.json`, `transformer/`, `vae/`), LoRA folded into the base
  weights: the fastest to load and run.
- ``official``: the official DVD layout: `model.safetensors` with the whole DiT under `pipe.dit.` in original Wan
  names, LoRA tensors kept beside the frozen `base_layer` weights (as the official trainer saves them),
  `model_config.yaml` (`lora_rank`, `lora_alpha`, `denoise_step` = τ) and `Wan2.1_VAE.pth`. The official DVD
  scripts can read it too. It holds Wan2.1 models only; every family exports ``merged``.

A learned timestep vector is folded into the time embedder's bias first (exact), so both formats are plain DVD.
"""

from __future__ import annotations

import copy
from pathlib import Path

import torch
import yaml
from safetensors.torch import save_file

from dvd.errors import DVDError
from dvd.io.atomic import atomic_directory, foreign_entries
from dvd.model.backbones.wan import Wan21Backbone
from dvd.model.dvd_model import DVDModel
from dvd.pipeline.dvd_pipeline import DVDPipeline, pipeline_folder_problem
from dvd.training.trainable import fold_learned_timestep
from dvd.weights.formats import lora_rank, merge_lora, original_dit_state, original_vae_state
from dvd.weights.saving import write_errors


def _plain_copy(model: DVDModel) -> DVDModel:
    """A float32 CPU copy with any learned timestep folded, leaving the training model untouched."""
    clone = copy.deepcopy(model).float().cpu()
    clone.transformer.disable_gradient_checkpointing()
    fold_learned_timestep(clone)
    return clone


def merged_model(model: DVDModel, lora_alpha: float | None) -> DVDModel:
    """The model with its LoRA merged (W + alpha/r·B·A) into a fresh, adapter-free diffusers DiT."""
    clone = _plain_copy(model)
    state = clone.transformer.state_dict()
    if lora_rank(state) is None:
        return clone
    transformer = clone.backbone.transformer_class.from_config(clone.transformer.config)
    transformer.load_state_dict(merge_lora(state, lora_alpha), strict=True)
    return DVDModel(
        transformer, clone.vae, tau=clone.tau, condition=clone.backbone.condition, objective=clone.objective
    )


def export_merged(model: DVDModel, directory: Path, lora_alpha: float | None) -> Path:
    with write_errors(directory), atomic_directory(directory, True, pipeline_folder_problem) as tmp:
        DVDPipeline.from_model(merged_model(model, lora_alpha)).save_pretrained(tmp)
    return directory


def export_official(model: DVDModel, directory: Path, lora_alpha: float | None) -> Path:
    clone = _plain_copy(model)
    dit = original_dit_state(clone.transformer)
    rank = lora_rank(dit)
    config = {"mode": "regression", "denoise_step": clone.tau, "lora_base_model": "dit", "trainable_models": "dit"}
    if rank is not None:
        config.update(lora_rank=rank, lora_alpha=float(lora_alpha if lora_alpha is not None else rank))
    with write_errors(directory), atomic_directory(directory, True, _official_folder_problem) as tmp:
        save_file({"pipe.dit." + k: v.contiguous() for k, v in dit.items()}, tmp / "model.safetensors")
        (tmp / "model_config.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
        torch.save(original_vae_state(clone.vae), tmp / "Wan2.1_VAE.pth")
    return directory


def _official_folder_problem(folder: Path) -> str | None:
    """A re-export replaces only an earlier export of the official layout (see dvd.io.atomic)."""
    return foreign_entries(folder, ["model.safetensors", "model_config.yaml", "Wan2.1_VAE.pth"])


def check_export(formats: list[str], model: DVDModel) -> None:
    """Refuse, before any training step, an export format that cannot hold `model` (its family or objective)."""
    if "official" not in formats:
        return
    if model.family != Wan21Backbone.family:
        raise DVDError(
            f"train.export {'/'.join(formats)}: the official DVD layout holds Wan2.1 models only, and this is a "
            f"{model.family} model: set train.export to merged (dvd's diffusers layout, which `dvd predict` loads)"
        )
    if model.generative:
        raise DVDError(
            f"train.export {'/'.join(formats)}: the official DVD layout holds regression models only, not the "
            "widened DiT of a generative one: set train.export to merged"
        )


def export_model(model: DVDModel, directory: Path, formats: list[str], lora_alpha: float | None) -> list[Path]:
    """Write each of `formats` ("merged", "official") under `directory/<format>`; returns the written folders."""
    check_export(formats, model)
    writers = {"merged": export_merged, "official": export_official}
    return [writers[name](model, Path(directory) / name, lora_alpha) for name in formats]
