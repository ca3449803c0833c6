"""The training configuration: one YAML (or TOML) file, validated before anything is built.

Every section is a dataclass; the file may omit any key (defaults are the official DVD training recipe) but
may not add one: an unknown key or a value of the wrong type is a `DVDError` naming the key, what was expected and,
for typos, the closest valid key.
"""

from __future__ import annotations

import copy
import dataclasses
import difflib
import tomllib
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import yaml

from dvd.data.procedural import Split
from dvd.errors import DVDError
from dvd.io.atomic import atomic_write_text
from dvd.model.flow_matching import GENERATIVE, Objective
from dvd.training.losses import LossKind

SourceKind = Literal["synthetic", "hypersim", "vkitti", "tartanair", "folder"]
SOURCE_KINDS: tuple[str, ...] = typing.get_args(SourceKind)
# Kinds that yield clips unless a source says `clips: false`; the others yield single images unless `clips: true`.
VIDEO_SOURCES = {"synthetic", "tartanair", "folder"}


@dataclass
class ModelSection:
    """Which backbone to start from and how the timestep is fed."""

    # "tiny" (random tiny Wan2.1 DiT/VAE, for tests), "proof" (the tiny model shipped for `dvd demo`), a local weights
    # folder (a base model of any supported family, official DVD, or dvd's own format) or a Hub id (official DVD
    # weights or a base model); `dvd train --base` sets it. The backbone family follows from the weights.
    weights: str = "tiny"
    tiny_seed: int = 0
    tau: float = 0.5  # timestep = 1000·tau (the τ ablation: any value in (0, 1])
    learned_tau: bool = False  # replace the sinusoidal timestep embedding by a trainable vector (Wan backbones)
    # Wan backbones: the cross-attention over the zero text context as one constant per block, computed each step
    # from one context token (`dvd.model.folding`): the same loss and gradients, faster; false runs diffusers'
    # attention over 512 tokens. Other backbones have no such fast path and run the reference computation either
    # way: the switch changes speed, never a number, so on them it has nothing to do and is not an error.
    fold_cross_attention: bool = True


@dataclass
class FinetuneSection:
    mode: Literal["lora", "full"] = "lora"
    lora_rank: int = 512
    lora_alpha: float | None = None  # None: alpha = rank (LoRA scale 1, as the official recipe)


@dataclass
class LossSection:
    kind: LossKind = "lmr"
    lambda_sp: float = 0.5
    lambda_temp: float = 0.5
    lambda_reg: float = 0.5  # weight of the edge-aware / multi-scale regulariser
    scales: int = 4  # multi-scale gradient matching: number of scales


@dataclass
class SourceSection:
    """One training or validation data source."""

    kind: SourceKind = "synthetic"
    path: str | None = None  # root of the on-disk layout; not used by `synthetic`
    weight: float = 1.0  # relative draw probability among the active sources
    clips: bool | None = None  # True: clips of `clip_frames`; False: single images; None: the kind's default
    height: int | None = None  # None: the reader's own size (the recipe's: Hypersim/TartanAir 480x640,
    width: int | None = None  # VKITTI 352x1216); a folder source keeps its frames' size; multiples of the
    # backbone's spatial stride (16 for Wan2.1, 32 for Wan2.2), checked once the base is loaded
    depth_scale: float = 0.001  # folder: metres per unit of 16-bit depth PNGs
    depth_range: list[float] = field(default_factory=lambda: [0.0, 1.0e9])  # folder: valid depth (metres), exclusive
    split: Split = "train"  # synthetic: which seed split ("train", "val", "test" never share a scene)
    samples: int = 1000  # synthetic: number of distinct scenes


@dataclass
class DataSection:
    schema: Literal["joint", "video", "image_then_video"] = "joint"
    image_steps: int = 0  # image_then_video: optimiser steps of the image stage before the video stage
    clip_frames: int = 45  # fits the backbone's frame rule (4n+1 for Wan), checked once the base is loaded
    image_batch: int = 8
    video_batch: int = 1
    flip: bool = True  # random horizontal flip (p = 0.5), as the reference
    workers: int = 0  # DataLoader worker processes
    sources: list[SourceSection] = field(default_factory=list)
    validation: list[SourceSection] = field(default_factory=list)
    validation_samples: int = 4  # held-out clips/images evaluated per validation source


@dataclass
class OptimSection:
    lr: float = 1e-4
    betas: list[float] = field(default_factory=lambda: [0.9, 0.999])
    eps: float = 1e-8
    weight_decay: float = 0.01
    grad_clip: float = 1.0
    grad_accum: int = 4
    # "constant", or "reference": torch ConstantLR defaults (lr/3 for the first 5 scheduler ticks), as the official run
    schedule: Literal["constant", "reference"] = "constant"


@dataclass
class TrainSection:
    output_dir: str = "runs/dvd"
    max_steps: int = 1000  # optimiser steps
    seed: int = 42
    mixed_precision: Literal["bf16", "fp16", "no"] = "bf16"
    gradient_checkpointing: bool = True
    checkpoint_every: int = 100
    keep_checkpoints: int = 2
    validate_every: int = 100
    validate_at_start: bool = True
    log_every: int = 10
    loggers: list[Literal["stdout", "csv", "tensorboard"]] = field(default_factory=lambda: ["stdout", "csv"])
    # "merged": our format (LoRA folded in); "official": the official DVD layout (model.safetensors with the LoRA kept
    # beside the base weights under pipe.dit., model_config.yaml, Wan2.1_VAE.pth); both load with
    # `dvd predict --weights`
    export: Literal["merged", "official", "both"] = "merged"
    # "regression": DVD (one DiT pass from the RGB latent to the depth latent at t = 1000·tau). "generative": the
    # paper's baseline, the same backbone as a conditional flow-matching model (`dvd.model.flow_matching`): the DiT's
    # input widened to [noisy depth latent, RGB latent], trained to predict the velocity at logit-normal noise
    # levels (model.tau unused; the loss applies to the velocity: loss.kind l2 is the standard objective), sampled
    # with Euler steps (`dvd predict --steps --seed`)
    objective: Objective = "regression"


@dataclass
class TrainConfig:
    model: ModelSection = field(default_factory=ModelSection)
    finetune: FinetuneSection = field(default_factory=FinetuneSection)
    loss: LossSection = field(default_factory=LossSection)
    data: DataSection = field(default_factory=DataSection)
    optim: OptimSection = field(default_factory=OptimSection)
    train: TrainSection = field(default_factory=TrainSection)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def source_is_clip(source: SourceSection) -> bool:
    """Whether a source yields clips (F = clip_frames) rather than single images (F = 1)."""
    if source.clips is not None:
        return source.clips
    return source.kind in VIDEO_SOURCES


def _type_name(annotation: Any) -> str:
    if typing.get_origin(annotation) is Literal:
        return "one of " + ", ".join(repr(a) for a in typing.get_args(annotation))
    if dataclasses.is_dataclass(annotation):
        return "a mapping"
    return getattr(annotation, "__name__", str(annotation)).replace("NoneType", "null")


def _coerce(value: Any, annotation: Any, where: str) -> Any:
    origin, args = typing.get_origin(annotation), typing.get_args(annotation)
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        (inner,) = [a for a in args if a is not type(None)]
        return _coerce(value, inner, where)
    if origin is Literal:
        if value in args:
            return value
        close = difflib.get_close_matches(str(value), [str(a) for a in args], n=1)
        hint = f"; did you mean {close[0]!r}?" if close else ""
        raise DVDError(f"config key '{where}' is {value!r}: expected {_type_name(annotation)}{hint}")
    if origin is list:
        if not isinstance(value, list):
            raise DVDError(f"config key '{where}' must be a list, got {type(value).__name__} {value!r}")
        return [_coerce(item, args[0], f"{where}[{i}]") for i, item in enumerate(value)]
    if dataclasses.is_dataclass(annotation):
        return _build(annotation, value, where)
    if annotation is bool and isinstance(value, bool):
        return value
    if annotation is int and isinstance(value, int) and not isinstance(value, bool):
        return value
    if annotation is float and not isinstance(value, bool):
        # YAML 1.1 reads "1e-4" (no dot) as a string; accept it as the number it plainly is.
        if isinstance(value, (int, float)):
            return float(value)
        if isinstance(value, str):
            try:
                return float(value)
            except ValueError:
                pass
    if annotation is str and isinstance(value, str):
        return value
    raise DVDError(f"config key '{where}' must be {_type_name(annotation)}, got {type(value).__name__} {value!r}")


def _build(cls: type, mapping: Any, where: str) -> Any:
    if not isinstance(mapping, dict):
        raise DVDError(f"config key '{where or '<top>'}' must be a mapping, got {type(mapping).__name__}")
    hints = typing.get_type_hints(cls)
    names = [f.name for f in dataclasses.fields(cls)]
    values = {}
    for key, value in mapping.items():
        path = f"{where}.{key}" if where else str(key)
        if key not in names:
            close = difflib.get_close_matches(str(key), names, n=1)
            valid = (
                f"did you mean '{where + '.' if where else ''}{close[0]}'?"
                if close
                else f"valid keys: {', '.join(names)}"
            )
            raise DVDError(f"unknown config key '{path}'; {valid}")
        values[key] = _coerce(value, hints[key], path)
    return cls(**values)


def _check(config: TrainConfig) -> None:
    """Cross-field rules that types cannot express."""
    data, optim, train, finetune = config.data, config.optim, config.train, config.finetune
    for name, value in [
        (f"data source {i} {side}", getattr(s, side))
        for i, s in enumerate(data.sources + data.validation)
        for side in ("height", "width")
        if getattr(s, side) is not None
    ]:
        if value <= 0:
            raise DVDError(f"{name} is {value}: it must be positive")
    positive = {
        "data.clip_frames": data.clip_frames,
        "data.image_batch": data.image_batch,
        "data.video_batch": data.video_batch,
        "optim.grad_accum": optim.grad_accum,
        "train.max_steps": train.max_steps,
        "train.checkpoint_every": train.checkpoint_every,
        "train.validate_every": train.validate_every,
        "train.log_every": train.log_every,
        "train.keep_checkpoints": train.keep_checkpoints,
        "finetune.lora_rank": finetune.lora_rank,
        "loss.scales": config.loss.scales,
        "data.validation_samples": data.validation_samples,
    }
    for name, value in positive.items():
        if value < 1:
            raise DVDError(f"{name} is {value}: it must be at least 1")
    if optim.lr <= 0 or optim.grad_clip <= 0:
        raise DVDError("optim.lr and optim.grad_clip must be positive")
    if len(optim.betas) != 2 or not all(0 <= b < 1 for b in optim.betas):
        raise DVDError(f"optim.betas is {optim.betas}: expected two numbers in [0, 1)")
    if train.objective == GENERATIVE and config.model.learned_tau:
        raise DVDError(
            "model.learned_tau learns one fixed timestep, but train.objective generative trains every noise level: "
            "set model.learned_tau to false"
        )
    if train.objective == GENERATIVE and train.export != "merged":
        raise DVDError(
            f"train.export {train.export}: the official DVD layout holds regression models only, not the widened "
            "DiT of train.objective generative: set train.export to merged"
        )
    if not 0 < config.model.tau <= 1:
        raise DVDError(f"model.tau is {config.model.tau}: it must be in (0, 1] (the timestep is 1000·tau)")
    if not data.sources:
        raise DVDError("data.sources is empty: add at least one source, e.g. {kind: synthetic}")
    for i, source in enumerate(data.sources + data.validation):
        if source.kind != "synthetic" and not source.path:
            raise DVDError(f"data source {i} ({source.kind}) needs a 'path' to its data set root")
        if source.weight <= 0:
            raise DVDError(f"data source {i} ({source.kind}) has weight {source.weight}: it must be positive")
        if source.kind == "hypersim" and source_is_clip(source):
            raise DVDError(f"data source {i}: Hypersim has single images only; drop 'clips: true'")
        if len(source.depth_range) != 2 or not source.depth_range[0] < source.depth_range[1]:
            raise DVDError(f"data source {i}: depth_range must be [min, max] with min < max")
    clips = [source_is_clip(s) for s in data.sources]
    if data.schema in ("video", "image_then_video") and not any(clips):
        raise DVDError(f"data.schema '{data.schema}' needs at least one clip source; all sources give single images")
    if data.schema == "image_then_video":
        if all(clips):
            raise DVDError("data.schema 'image_then_video' needs at least one image source (clips: false)")
        if not 0 < data.image_steps < train.max_steps:
            raise DVDError("data.image_steps must be between 1 and train.max_steps - 1 for 'image_then_video'")


def parse_config(mapping: dict[str, Any]) -> TrainConfig:
    """Validate a config mapping (as read from YAML/TOML) into a `TrainConfig`."""
    config = _build(TrainConfig, mapping or {}, "")
    _check(config)
    return config


def apply_overrides(mapping: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    """Set dotted keys from `KEY=VALUE` strings (VALUE read as YAML: `train.max_steps=10`, `loss.kind=l2`)."""
    for override in overrides:
        key, sep, raw = override.partition("=")
        if not sep or not key:
            raise DVDError(f"--set expects KEY=VALUE (e.g. train.max_steps=100), got {override!r}")
        *parents, leaf = key.split(".")
        node = mapping
        for part in parents:
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                raise DVDError(f"--set {key}: '{part}' is not a section")
        try:
            node[leaf] = yaml.safe_load(raw)
        except yaml.YAMLError:
            raise DVDError(f"--set {override}: {raw!r} is not a valid YAML value; quote it or fix it") from None
    return mapping


def load_config(path: str | Path, overrides: list[str] | None = None) -> TrainConfig:
    """Read and validate a `.yaml`/`.yml`/`.toml` training config, with optional `KEY=VALUE` overrides."""
    path = Path(path)
    if not path.is_file():
        raise DVDError(f"config file not found: {path}")
    text = path.read_text()
    try:
        mapping = tomllib.loads(text) if path.suffix == ".toml" else yaml.safe_load(text)
    except (yaml.YAMLError, tomllib.TOMLDecodeError) as error:
        raise DVDError(
            f"{path} is not valid {'TOML' if path.suffix == '.toml' else 'YAML'}: {str(error).splitlines()[0]}"
        ) from None
    mapping = mapping or {}
    if not isinstance(mapping, dict):
        raise DVDError(f"{path}: the config must be a mapping of sections, got {type(mapping).__name__}")
    overrides = overrides or []
    merged = apply_overrides(copy.deepcopy(mapping), overrides)  # its own errors name the --set
    try:
        return parse_config(merged)
    except DVDError as error:
        raise DVDError(f"{_culprit(mapping, overrides, str(error), path)}: {error}") from None


def _culprit(mapping: dict[str, Any], overrides: list[str], error: str, path: Path) -> str:
    """Who to blame for a config error: the file when it fails alone with this error, else the first `--set` after
    which the error appears (so a bad override is not reported as a problem of the file)."""
    for count in range(len(overrides) + 1):
        try:
            parse_config(apply_overrides(copy.deepcopy(mapping), overrides[:count]))
        except DVDError as failure:
            if str(failure) == error:
                return str(path) if count == 0 else f"--set {overrides[count - 1]}"
    return f"{path} with --set {' '.join(overrides)}"


def dump_config(config: TrainConfig, path: str | Path) -> None:
    """Write the resolved config as YAML (every default spelled out), atomically."""
    atomic_write_text(Path(path), yaml.safe_dump(config.to_dict(), sort_keys=False))
