"""A whole DVD model in one .safetensors file: `transformer.*` and `vae.*` tensors (and the empty condition, for a
family that has one), configs and the backbone family in the header.

Used for the small proof model shipped inside the package (`dvd/assets/`), where one flat file is simpler to
package than our `save_pretrained` folder. Tensors may be stored in fp16; loading gives float32. The header may
also hold the model's inference defaults (`dvd.weights.defaults`, as JSON). A header without a family (files
written before dvd knew more than one) is Wan2.1.
"""

from __future__ import annotations

import importlib.resources
import json
from pathlib import Path

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import load_file, save_file

from dvd.errors import DVDError
from dvd.io.atomic import atomic_file
from dvd.model.dvd_model import DVDModel
from dvd.weights.defaults import CONFIG_KEY, ModelDefaults
from dvd.weights.families import BACKBONE_KEY, OBJECTIVE_KEY, check_recorded, recorded_family, recorded_objective
from dvd.weights.formats import check_finite, check_tau
from dvd.weights.saving import write_errors

FORMAT = "dvd-single-file"
CONDITION_KEY = "condition"  # the empty condition's tensor, for a family that has one (here and condition.safetensors)
PROOF_MODEL = "proof_model.safetensors"


def proof_model_path() -> Path:
    """The tiny proof model shipped in `dvd/assets` (written by benchmarks/train_proof.py --ship)."""
    path = Path(str(importlib.resources.files("dvd") / "assets" / PROOF_MODEL))
    if not path.is_file():
        raise DVDError(
            f"the proof model {path} is missing: reinstall dvd (it ships in dvd/assets) or run "
            "benchmarks/train_proof.py --ship from a source checkout"
        )
    return path


def single_file_header(path: Path) -> dict[str, str]:
    """The string entries of a .safetensors header (its "__metadata__"); empty if it has none."""
    with safe_open(str(path), framework="pt") as handle:
        return handle.metadata() or {}


def is_single_file(path: Path) -> bool:
    """Whether `path` is a .safetensors file written by `save_single_file` (it reads the header only)."""
    try:
        return single_file_header(path).get("format") == FORMAT
    except (SafetensorError, OSError):
        return False


def _config(module: torch.nn.Module) -> str:
    return json.dumps({k: v for k, v in module.config.items() if not k.startswith("_")})


def save_single_file(
    model: DVDModel, path: Path, dtype: torch.dtype = torch.float16, defaults: ModelDefaults = ModelDefaults()
) -> Path:
    """Write `model` (LoRA already merged) to `path`, renaming a temporary file into place; `defaults` are the
    model's inference defaults, if it has any."""
    path = Path(path)
    saved = defaults.as_config()
    tensors = {f"transformer.{k}": v for k, v in model.transformer.state_dict().items()}
    tensors.update({f"vae.{k}": v for k, v in model.vae.state_dict().items()})
    if model.backbone.condition is not None:
        tensors[CONDITION_KEY] = model.backbone.condition
    tensors = {k: v.detach().to("cpu", dtype).contiguous() for k, v in tensors.items()}
    metadata = {
        "format": FORMAT,
        BACKBONE_KEY: model.family,
        OBJECTIVE_KEY: model.objective,
        "tau": str(model.tau),
        "transformer": _config(model.transformer),
        "vae": _config(model.vae),
        **({CONFIG_KEY: json.dumps(saved)} if saved else {}),
    }
    with write_errors(path), atomic_file(path) as tmp:
        save_file(tensors, tmp, metadata=metadata)
    return path


def load_single_file(path: Path) -> DVDModel:
    """Read a file written by `save_single_file` into a float32 CPU model."""
    path = Path(path)
    if not path.is_file():
        raise DVDError(f"model file not found: {path}")
    metadata = single_file_header(path)
    if metadata.get("format") != FORMAT:
        raise DVDError(f"{path} is not a single-file DVD model (no '{FORMAT}' header)")
    family = recorded_family(metadata, f"the header of {path}")
    tensors = {key: tensor.float() for key, tensor in load_file(path).items()}
    check_finite(tensors, path)
    transformer = family.transformer_class(**json.loads(metadata["transformer"]))
    vae = family.vae_class(**json.loads(metadata["vae"]))
    transformer.load_state_dict(
        {k[len("transformer.") :]: v for k, v in tensors.items() if k.startswith("transformer.")}
    )
    vae.load_state_dict({k[len("vae.") :]: v for k, v in tensors.items() if k.startswith("vae.")})
    tau = check_tau(metadata.get("tau"), f"the 'tau' header of {path}")
    objective = recorded_objective(metadata, f"in the header of {path}")
    model = DVDModel(transformer, vae, tau=tau, condition=tensors.get(CONDITION_KEY), objective=objective)
    check_recorded(family, model.family, f"the header of {path}")
    return model
