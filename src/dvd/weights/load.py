"""Finding weights — a local folder or file, or Hub ids through huggingface_hub's cache — and building a DVDModel.

What a `--weights` source may be:
- our format, the diffusers pipeline layout written by `DVDPipeline.save_pretrained` and `dvd convert`
  (`model_index.json`, `transformer/`, `vae/`), and its predecessor (`dvd_config.json` instead of `model_index.json`);
- the official DVD release: a folder or file with `dvd_1.1.safetensors` or `model.safetensors` (optional
  `model_config.yaml`), with the Wan2.1 VAE beside it (`Wan2.1_VAE.pth` or a diffusers `vae/` folder) or else taken
  from the Wan2.1 Hub repository;
- a base model, the starting point for training, not a depth model: Wan2.1's original layout
  (`diffusion_pytorch_model*.safetensors` + `Wan2.1_VAE.pth`), or any supported family in diffusers' layout
  (`model_index.json`, `transformer/`, `vae/`; `dvd.weights.families` tells which), loaded by its backbone's
  `from_base`;
- a single-file model (`dvd.weights.single_file`), or the name `proof`: the tiny one shipped for `dvd demo`;
- a Hub repository id holding any of the official or base layouts.

A trained model's family is recorded with it (`dvd.weights.families`); its empty condition, for a family whose
condition is not zeros, lies beside its model_index.json (`CONDITION_FILE`, safetensors only).
"""

from __future__ import annotations

import contextlib
import json
import os
import re
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, TypeVar

import torch
import yaml
from diffusers import AutoencoderKLWan
from huggingface_hub import (
    constants,
    get_hf_file_metadata,
    hf_hub_download,
    hf_hub_url,
    snapshot_download,
    try_to_load_from_cache,
)
from huggingface_hub.errors import EntryNotFoundError, RepositoryNotFoundError
from safetensors import SafetensorError
from safetensors.torch import load_file

from dvd.errors import DVDError
from dvd.model.backbones.pretrained import from_safetensors
from dvd.model.dvd_model import DEFAULT_TAU, DVDModel
from dvd.weights.families import (
    PIPELINE_INDEX,
    base_family,
    check_component_classes,
    check_recorded,
    read_json,
    recorded_family,
    recorded_objective,
)
from dvd.weights.formats import (
    check_finite,
    check_tau,
    lora_rank,
    merge_lora,
    read_sharded_safetensors,
    read_state_dict,
    safetensors_names,
    strip_dit_prefix,
    transformer_from_original,
    transformer_with_lora,
    unreadable_safetensors,
    vae_from_original,
)
from dvd.weights.single_file import CONDITION_KEY, PROOF_MODEL, is_single_file, load_single_file, proof_model_path

DEFAULT_DVD_REPO = "FayeHongfeiZhang/DVD"
DEFAULT_WAN_REPO = "Wan-AI/Wan2.1-T2V-1.3B"
DVD_CHECKPOINT_NAMES = ("dvd_1.1.safetensors", "model.safetensors")
VAE_FILE = "Wan2.1_VAE.pth"
MODEL_CONFIG = "model_config.yaml"
BASE_SHARDS = "diffusion_pytorch_model*.safetensors"
# What to fetch of a Hub repository that holds no DVD checkpoint: a Wan2.1 base in the original layout (DiT shards
# (+ index), its config and the VAE, not the 11 GB T5), or the configs that tell a diffusers-layout base's family.
WAN_BASE_PATTERNS = [BASE_SHARDS, "diffusion_pytorch_model*.safetensors.index.json", "config.json", VAE_FILE]
BASE_CONFIG_PATTERNS = ["model_index.json", "transformer/config.json", "vae/config.json"]
EMBEDDED_VAE_PREFIX = "pipe.vae."
PROOF = "proof"  # the name of the proof model shipped in the package
PIPELINE_CLASS = "DVDPipeline"  # the `_class_name` of the model_index.json that DVDPipeline.save_pretrained writes
LEGACY_CONFIG = "dvd_config.json"  # the same folders as written before dvd's pipeline became a diffusers one
CONDITION_FILE = "condition.safetensors"  # the empty condition beside model_index.json, for families that have one
# A Hub repository id: owner/name, letters, digits, '-', '_' and '.' (huggingface_hub's own rule, minus length).
HUB_ID = re.compile(r"[A-Za-z0-9][\w.-]*/[A-Za-z0-9][\w.-]*")
ModuleT = TypeVar("ModuleT", bound=torch.nn.Module)
LOCAL_SUFFIXES = (".safetensors", ".pth", ".pt", ".bin", ".ckpt", ".yaml", ".json")  # files, never repositories


@dataclass
class LoadedWeights:
    model: DVDModel
    weights_id: str  # what was loaded, for meta.json and logs
    kind: str  # "dvd" | "official-dvd" | "base" | "single-file"


def hub_help() -> str:
    return (
        f"download {' or '.join(DVD_CHECKPOINT_NAMES)} (and {MODEL_CONFIG}) "
        f"from https://huggingface.co/{DEFAULT_DVD_REPO} and {VAE_FILE} from https://huggingface.co/{DEFAULT_WAN_REPO} "
        "into one folder DIR, then pass --weights DIR"
    )


class NotInRepository(DVDError):
    """The Hub repository (or, offline, its cached copy) does not hold the files asked for."""


def hub_offline() -> bool:
    return bool(constants.HF_HUB_OFFLINE) or os.environ.get("HF_HUB_OFFLINE", "0").lower() in ("1", "true", "yes")


def hub_file(repo_id: str, candidates: tuple[str, ...]) -> Path:
    """The first of `candidates` present in a Hub repo, from the local cache if there, else downloaded."""
    for name in candidates:
        cached = try_to_load_from_cache(repo_id, name)
        if isinstance(cached, str):
            return Path(cached)
    if hub_offline():
        raise NotInRepository(f"{repo_id} is not in the Hugging Face cache and HF_HUB_OFFLINE is set; {hub_help()}")
    name = next((n for n in candidates if hub_has_file(repo_id, n)), None)
    if name is None:
        raise NotInRepository(f"Hub repository {repo_id} has none of {', '.join(candidates)}; {hub_help()}")
    return Path(hf_hub_download(repo_id, name))


def hub_has_file(repo_id: str, name: str) -> bool:
    """Whether the Hub repo holds `name`, asked in one request. It is the first contact with the Hub, made without
    huggingface_hub's retries (five, with back-off: ~30 s of warnings), so an unreachable Hub fails at once."""
    try:
        get_hf_file_metadata(hf_hub_url(repo_id, name), timeout=constants.HF_HUB_ETAG_TIMEOUT)
    except EntryNotFoundError:
        return False
    except RepositoryNotFoundError:
        raise DVDError(
            f"Hub repository {repo_id} was not found (or is private or gated: log in with `hf auth login`); "
            "check the id, or " + hub_help()
        ) from None
    except Exception as error:  # noqa: BLE001 - the network errors' types depend on huggingface_hub's HTTP client
        raise DVDError(
            f"the Hugging Face Hub ({constants.ENDPOINT}) could not be reached for {repo_id} "
            f"({type(error).__name__}); {hub_help()}, or set HF_HUB_OFFLINE=1 to use files already in the cache"
        ) from None
    return True


def hub_snapshot(repo_id: str, patterns: list[str]) -> Path:
    """A local folder with the repo's files matching `patterns` (cache first; offline uses the cache only)."""
    try:
        return Path(snapshot_download(repo_id, allow_patterns=patterns, local_files_only=hub_offline()))
    except Exception as error:  # noqa: BLE001 - as in hub_has_file
        where = "is not in the Hugging Face cache (HF_HUB_OFFLINE is set)" if hub_offline() else "could not be fetched"
        raise DVDError(f"{repo_id} {where} ({type(error).__name__}); {hub_help()}") from None


def finite(module: ModuleT, folder: Path) -> ModuleT:
    """`module` (loaded by diffusers from `folder`) once its tensors are known to be finite."""
    check_finite(module.state_dict(), folder)
    return module


def diffusers_module(cls: type[ModuleT], folder: Path, **kwargs: Any) -> ModuleT:
    """`cls.from_pretrained(folder)` from its safetensors only, once its tensors are known to be finite."""
    require_safetensors(folder)
    return finite(from_safetensors(cls, folder, **kwargs), folder)


def require_safetensors(folder: Path) -> None:
    """Without safetensors diffusers would fall back to a pickled .bin, logging on the way; dvd loads no pickle of
    weights."""
    if not any(folder.glob("*.safetensors")):
        raise DVDError(
            f"{folder} holds no .safetensors weights: dvd does not load pickled weights (.bin), which can run code; "
            "save the model with save_pretrained (safetensors is its default) or dvd convert"
        )


def find_dvd_checkpoint(directory: Path) -> Path | None:
    for folder in (directory, directory / "ckpt"):
        for name in DVD_CHECKPOINT_NAMES:
            if (folder / name).is_file():
                return folder / name
    return None


def read_model_config(checkpoint: Path) -> dict:
    path = checkpoint.parent / MODEL_CONFIG
    if not path.is_file():
        return {}
    try:
        config = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as error:
        raise DVDError(f"{path} is not valid YAML ({error.__class__.__name__}); fix or delete it") from None
    return config if isinstance(config, dict) else {}


@dataclass(frozen=True)
class WeightFiles:
    """Where a weights source's files are on this machine, once the Hub's (if any) are in its cache."""

    kind: str  # as LoadedWeights.kind
    path: Path  # the checkpoint file (official-dvd, single-file) or the folder (dvd, base)
    vae_dir: Path | None = None  # where a Wan2.1 VAE beside the weights is looked for (official-dvd, Wan2.1 base)
    hub_vae: Path | None = None  # the Hub's Wan2.1 VAE, when there is none beside the weights or inside them
    label: str | None = None  # what meta.json calls the weights, when not the path


def locate_weights(source: str | Path | None = None) -> WeightFiles:
    """Find every file `source` needs, downloading Hub files into huggingface_hub's cache, without building the
    model: a missing file or an unreachable Hub fails here, before a caller writes anything. None means the
    official release; `proof` names the shipped proof model even where a local `proof` exists (`./proof` for that).
    """
    if source is None:
        return locate_on_hub(DEFAULT_DVD_REPO)
    if str(source) == PROOF:
        return WeightFiles("single-file", proof_model_path(), label=f"dvd/assets/{PROOF_MODEL}")
    path = Path(source).expanduser()
    if path.exists():
        return locate_local(path)
    if looks_like_hub_id(source):
        return locate_on_hub(str(source))
    raise DVDError(
        f"weights not found: {source} does not exist (a local path; a Hub repository id is owner/name, "
        "e.g. FayeHongfeiZhang/DVD): check the path"
    )


def locate_local(path: Path) -> WeightFiles:
    if path.is_file():
        if path.suffix != ".safetensors":
            raise DVDError(
                f"{path} is not a DVD checkpoint; pass the folder holding {' or '.join(DVD_CHECKPOINT_NAMES)}"
            )
        if is_single_file(path):
            return WeightFiles("single-file", path)
        return with_vae(WeightFiles("official-dvd", path, vae_dir=path.parent))
    if (path / LEGACY_CONFIG).is_file() or is_trained_index(path / PIPELINE_INDEX):
        return WeightFiles("dvd", path)
    checkpoint = find_dvd_checkpoint(path)
    if checkpoint is not None:
        return with_vae(WeightFiles("official-dvd", checkpoint, vae_dir=path))
    if any(path.glob(BASE_SHARDS)):
        return with_vae(WeightFiles("base", path, vae_dir=path))
    if is_diffusers_base(path):
        return WeightFiles("base", path)
    raise DVDError(
        f"no weights found in {path}: expected {' or '.join(DVD_CHECKPOINT_NAMES)} (official DVD), "
        f"{PIPELINE_INDEX} (DVDPipeline.save_pretrained or dvd convert output, or a base model in diffusers' "
        f"layout) or {BASE_SHARDS} (Wan2.1 base); " + hub_help()
    )


def is_diffusers_base(folder: Path) -> bool:
    """Whether `folder` (not a trained DVD model's) looks like a base model in diffusers' layout; which family, and
    whether dvd supports it, `dvd.weights.families.base_family` tells."""
    return (folder / PIPELINE_INDEX).is_file() or (folder / "transformer" / "config.json").is_file()


def is_trained_index(path: Path) -> bool:
    """Whether `path` is the model_index.json of a trained DVD model (a base model's names its own pipeline). An
    unreadable one counts, so that loading it says what is wrong with it."""
    if not path.is_file():
        return False
    try:
        index = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return True
    return not isinstance(index, dict) or index.get("_class_name") == PIPELINE_CLASS


def locate_on_hub(repo_id: str) -> WeightFiles:
    """A Hub repository holding the official DVD checkpoint, or else a base model: Wan2.1's original layout, or a
    supported family in diffusers' layout (its safetensors only, and the text encoder where the family embeds its
    empty prompt with it)."""
    try:
        checkpoint = hub_file(repo_id, DVD_CHECKPOINT_NAMES)
    except NotInRepository as missing:
        base = hub_snapshot(repo_id, WAN_BASE_PATTERNS + BASE_CONFIG_PATTERNS)
        if any(base.glob(BASE_SHARDS)):
            return with_vae(WeightFiles("base", base, vae_dir=base))
        if not (base / "transformer" / "config.json").is_file():
            raise missing from None
        components = ["transformer", "vae"]
        if base_family(base).condition_from_text_encoder():
            components += ["text_encoder", "tokenizer"]
        patterns = [f"{name}/*{suffix}" for name in components for suffix in (".json", ".safetensors")]
        base = hub_snapshot(repo_id, [*BASE_CONFIG_PATTERNS, *patterns, "tokenizer/*"])
        return WeightFiles("base", base)
    with contextlib.suppress(DVDError):  # optional; it lands beside the checkpoint in the cache snapshot
        hub_file(repo_id, (MODEL_CONFIG,))
    return with_vae(WeightFiles("official-dvd", checkpoint, vae_dir=checkpoint.parent))


def with_vae(files: WeightFiles) -> WeightFiles:
    """`files`, with the Wan2.1 Hub repository's VAE when the weights have none beside them or inside them."""
    assert files.vae_dir is not None
    if (files.vae_dir / VAE_FILE).is_file() or (files.vae_dir / "vae" / "config.json").is_file():
        return files
    if files.kind == "official-dvd" and any(
        name.startswith(EMBEDDED_VAE_PREFIX) for name in safetensors_names(files.path)
    ):
        return files
    return replace(files, hub_vae=hub_file(DEFAULT_WAN_REPO, (VAE_FILE,)))


def load_vae(files: WeightFiles, embedded: dict | None = None) -> tuple[AutoencoderKLWan, str]:
    """The Wan VAE beside the weights, else the copy inside the DVD checkpoint, else the Wan2.1 Hub repo's."""
    directory = files.vae_dir
    assert directory is not None
    if (directory / VAE_FILE).is_file():
        path = directory / VAE_FILE
        return vae_from_original(read_state_dict(path), path), str(path)
    if (directory / "vae" / "config.json").is_file():
        return diffusers_module(AutoencoderKLWan, directory / "vae"), str(directory / "vae")
    if embedded:
        return vae_from_original(embedded, directory), f"{directory} (VAE inside the checkpoint)"
    path = files.hub_vae or hub_file(DEFAULT_WAN_REPO, (VAE_FILE,))
    return vae_from_original(read_state_dict(path), path), f"{DEFAULT_WAN_REPO}/{VAE_FILE}"


def load_official_dvd(files: WeightFiles, merge: bool = True) -> LoadedWeights:
    checkpoint = files.path
    state = read_state_dict(checkpoint)
    embedded_vae = {k[len(EMBEDDED_VAE_PREFIX) :]: v for k, v in state.items() if k.startswith(EMBEDDED_VAE_PREFIX)}
    dit = strip_dit_prefix(state, checkpoint)
    del state
    config = read_model_config(checkpoint)
    rank = lora_rank(dit)
    alpha = config.get("lora_alpha")
    if rank is not None and config.get("lora_rank") not in (None, rank):
        raise DVDError(f"{MODEL_CONFIG} says lora_rank {config['lora_rank']} but the checkpoint's LoRA has rank {rank}")
    config_json = checkpoint.parent / "config.json"
    if rank is None or merge:
        transformer = transformer_from_original(merge_lora(dit, alpha) if rank else dit, config_json)
    else:
        transformer = transformer_with_lora(dit, rank, alpha, config_json)
    vae, vae_id = load_vae(files, embedded_vae)
    tau = check_tau(config.get("denoise_step", DEFAULT_TAU), f"denoise_step in {checkpoint.parent / MODEL_CONFIG}")
    return LoadedWeights(DVDModel(transformer, vae, tau=tau), f"{checkpoint} + {vae_id}", "official-dvd")


def load_base(files: WeightFiles) -> LoadedWeights:
    """A base model: Wan2.1's original layout as read here, any family's diffusers layout by its `from_base`."""
    directory = files.path
    shards = sorted(directory.glob(BASE_SHARDS))
    if shards:
        transformer = transformer_from_original(read_sharded_safetensors(shards), directory / "config.json")
        vae, vae_id = load_vae(files)
        return LoadedWeights(DVDModel(transformer, vae), f"{directory} (Wan2.1 base) + {vae_id}", "base")
    family = base_family(directory)
    for component in ("transformer", "vae"):
        require_safetensors(directory / component)
    backbone = family.from_base(directory)
    for module, component in ((backbone.transformer, "transformer"), (backbone.vae, "vae")):
        finite(module, directory / component)
    model = DVDModel(backbone.transformer, backbone.vae, condition=backbone.condition)
    return LoadedWeights(model, f"{directory} ({family.family} base)", "base")


def load_pipeline_folder(directory: Path) -> DVDModel:
    """A `save_pretrained` folder: diffusers `transformer/` and `vae/` of the family its config records, the empty
    condition beside them where the family has one, tau from its config file (float32)."""
    config_file = next(directory / name for name in (PIPELINE_INDEX, LEGACY_CONFIG) if (directory / name).is_file())
    config = read_json(config_file)
    tau = check_tau(config.get("tau", DEFAULT_TAU), f"tau in {config_file}")
    family = recorded_family(config, str(config_file))
    objective = recorded_objective(config, f"in {config_file}")
    check_component_classes(directory, family)
    transformer = diffusers_module(family.transformer_class, directory / "transformer", torch_dtype=torch.float32)
    vae = diffusers_module(family.vae_class, directory / "vae", torch_dtype=torch.float32)
    condition = read_condition(directory / CONDITION_FILE)
    model = DVDModel(transformer, vae, tau=tau, condition=condition, objective=objective)
    check_recorded(family, model.family, str(config_file))
    return model


def read_condition(path: Path) -> torch.Tensor | None:
    """The empty condition saved at `path` (safetensors, tensor `CONDITION_KEY`); None when there is none."""
    if not path.is_file():
        return None
    try:
        tensors = load_file(path)
    except (SafetensorError, OSError) as error:
        raise unreadable_safetensors(path, error) from None
    if CONDITION_KEY not in tensors:
        raise DVDError(f"{path} holds no '{CONDITION_KEY}' tensor: re-save the model")
    check_finite(tensors, path)
    return tensors[CONDITION_KEY].float()


def load_weights(source: str | Path | WeightFiles | None = None, merge: bool = True) -> LoadedWeights:
    """Build the DVD model (float32, CPU) from a local path, a Hub id, `proof` or files `locate_weights` found;
    None means the official release.

    `merge` folds an official checkpoint's LoRA into the DiT; False keeps it as separate peft layers.
    """
    files = source if isinstance(source, WeightFiles) else locate_weights(source)
    if files.kind == "single-file":
        return LoadedWeights(load_single_file(files.path), files.label or str(files.path), "single-file")
    if files.kind == "dvd":
        return LoadedWeights(load_pipeline_folder(files.path), str(files.path), "dvd")
    if files.kind == "official-dvd":
        return load_official_dvd(files, merge)
    return load_base(files)


def looks_like_hub_id(source: str | Path) -> bool:
    """Whether a source that is not on disk may be a Hub id (`owner/name`); anything path-like is decided locally,
    so a mistyped path fails at once instead of after the Hub client's network retries."""
    text = str(source)
    if isinstance(source, Path) or text.startswith((".", "~")) or Path(text).is_absolute():
        return False
    if text.lower().endswith(LOCAL_SUFFIXES):
        return False
    return HUB_ID.fullmatch(text) is not None
