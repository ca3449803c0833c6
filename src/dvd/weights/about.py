"""What a weights source is, read without loading it: its kind (official, proof, trained or base) in the words
users read, and the inference defaults saved with it (`dvd.weights.defaults`).

`load_weights` tells the file formats apart (official checkpoint, base model, our pipeline folder, single file);
users care what the model is for. The proof model in particular predicts the procedural world only, and a run on
real footage says so (`PROOF_NOTICE`).
"""

from __future__ import annotations

import json
from pathlib import Path

from dvd.errors import DVDError
from dvd.model.backbone import Backbone
from dvd.model.backbones import BACKBONES
from dvd.weights import load
from dvd.weights.defaults import CONFIG_KEY, ModelDefaults
from dvd.weights.families import UNRECORDED_FAMILY, base_family, recorded_family
from dvd.weights.load import LEGACY_CONFIG, PIPELINE_INDEX, PROOF, WeightFiles, is_diffusers_base, is_trained_index
from dvd.weights.single_file import is_single_file, single_file_header

# The kinds, each with what it means.
KINDS: dict[str, str] = {
    "official": "a checkpoint in the official DVD layout: the official release, or a model exported in it",
    "proof": "the tiny model shipped for `dvd demo`",
    "trained": "a model in dvd's own format (from dvd train, dvd convert or save_pretrained)",
    "base": "a base video model (Wan2.1 or another supported family), not trained for depth (a starting point for "
    "dvd train)",
}
# `LoadedWeights.kind` (a file format) -> the kind of model it holds.
FORMAT_KINDS: dict[str, str] = {
    "official-dvd": "official",
    "base": "base",
    "dvd": "trained",
    "single-file": "trained",
}
PROOF_NOTICE = (
    "the proof model is a tiny 2-layer model of dvd's procedural synthetic world, trained at 64 px for `dvd demo`: "
    "its depth of real footage means nothing; for real videos use the official DVD weights (--weights DIR)"
)


def local_path(source: str | Path | WeightFiles | None) -> Path | None:
    """Where the weights of `source` are on this machine without asking the Hub: the proof model's file for
    `proof`, the path of a local source or of located files; None for the official release and Hub ids."""
    if isinstance(source, WeightFiles):
        return source.path
    if source is None:
        return None
    # The proof model's path as `load_weights` finds it (a test may point it at another file).
    path = load.proof_model_path() if str(source) == PROOF else Path(source).expanduser()
    return path if path.exists() else None


def weights_kind(source: str | Path | WeightFiles | None, file_format: str) -> str:
    """The kind of the model that `load_weights(source)` loaded as `file_format` (`LoadedWeights.kind`)."""
    path = local_path(source)
    if path is not None and path.is_file() and path.resolve() == load.proof_model_path().resolve():
        return "proof"
    return FORMAT_KINDS[file_format]


def read_defaults(source: str | Path | WeightFiles | None) -> ModelDefaults:
    """The defaults saved with the weights that `load_weights(source)` loads, over their backbone's, read from their
    config alone (no tensors, no network): a single file's header, a `save_pretrained` folder's config. Official
    checkpoints, bases, Hub ids and sources that are not there have none of their own (`load_weights` says what is
    wrong with the latter)."""
    saved, family = _saved_defaults(local_path(source))
    return saved.for_backbone(family.default_window, family.default_overlap)


def _saved_defaults(path: Path | None) -> tuple[ModelDefaults, type[Backbone]]:
    """The defaults saved at `path` and the backbone family recorded there (or, for a base, its own)."""
    unrecorded = BACKBONES[UNRECORDED_FAMILY]
    if path is None or (path.is_file() and not is_single_file(path)):
        return ModelDefaults(), unrecorded
    if path.is_file():
        config, where = single_file_header(path), f"the header of {path}"
    elif (path / LEGACY_CONFIG).is_file() or is_trained_index(path / PIPELINE_INDEX):
        config_file = next(path / name for name in (PIPELINE_INDEX, LEGACY_CONFIG) if (path / name).is_file())
        try:
            config = json.loads(config_file.read_text(encoding="utf-8"))
        except ValueError as error:
            raise DVDError(f"{config_file} is not a valid pipeline config ({error}): re-save the model") from None
        config, where = config if isinstance(config, dict) else {}, str(config_file)
    else:
        return ModelDefaults(), base_family(path) if is_diffusers_base(path) else unrecorded
    return ModelDefaults.from_config(config.get(CONFIG_KEY), where), recorded_family(config, where)
