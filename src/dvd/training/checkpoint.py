"""Training checkpoints: `<output_dir>/checkpoints/step-00000100/`, complete or absent.

A checkpoint holds the trained weights only, in full and float32 (`trainable.safetensors`: LoRA, or the whole DiT in
full fine-tuning, plus a learned timestep vector), the optimizer state (`optimizer.pt`, keyed by parameter name; or
DeepSpeed's own files under `deepspeed/`, see `dvd.training.distributed`), the LR-scheduler state, every process's
RNG states (`rng-RANK.safetensors`: tensors and JSON) and `state.json` (step, architecture signature, the config).
The data order needs no state: it is a function of the step (`dvd.training.batches`). Every process writes into a
hidden `.step-…tmp` folder; the main process then renames it into place, so a run killed mid-save leaves the
previous checkpoint intact.

Nothing in a checkpoint is read in a way that can run code: the optimizer and scheduler states are torch pickles
read with `weights_only=True` (tensors, numbers and plain containers only), the rest is safetensors and JSON; a
file that needs more (a tampered one, or an RNG pickle `rng-RANK.pt` of an older dvd) is refused in one line.
"""

from __future__ import annotations

import json
import random
import re
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import load_file, save_file

from dvd.errors import DVDError
from dvd.io.atomic import replace_directory
from dvd.training.config import ModelSection
from dvd.weights.formats import load_torch_pickle
from dvd.weights.saving import write_errors

CHECKPOINT_DIR = "checkpoints"
STEP_PATTERN = re.compile(r"^step-(\d{8})$")
STATE_FILE = "state.json"
WEIGHTS_FILE = "trainable.safetensors"
OPTIMIZER_FILE = "optimizer.pt"
SCHEDULER_FILE = "scheduler.pt"


def checkpoint_name(step: int) -> str:
    return f"step-{step:08d}"


def list_checkpoints(output_dir: Path) -> list[Path]:
    """Complete checkpoints under `output_dir`, oldest first (temporary folders are ignored)."""
    root = Path(output_dir) / CHECKPOINT_DIR
    if not root.is_dir():
        return []
    found = [p for p in root.iterdir() if p.is_dir() and STEP_PATTERN.match(p.name) and (p / STATE_FILE).is_file()]
    return sorted(found, key=lambda p: int(STEP_PATTERN.match(p.name).group(1)))


def rng_file(rank: int) -> str:
    return f"rng-{rank}.safetensors"


def save_rng_states(path: Path) -> None:
    """This process's RNG states: torch's (and CUDA's) as byte tensors, Python's and numpy's as JSON metadata."""
    tensors = {"torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        tensors.update({f"cuda.{index}": state for index, state in enumerate(torch.cuda.get_rng_state_all())})
    numpy_state = np.random.get_state(legacy=False)
    numpy_state["state"]["key"] = numpy_state["state"]["key"].tolist()
    save_file(tensors, path, metadata={"python": json.dumps(random.getstate()), "numpy": json.dumps(numpy_state)})


def load_rng_states(path: Path) -> dict[str, Any]:
    """What `save_rng_states` wrote, as `set_rng_states` takes it; DVDError for anything else."""
    try:
        with safe_open(str(path), framework="pt") as handle:
            metadata = handle.metadata() or {}
            tensors = {key: handle.get_tensor(key) for key in handle.keys()}  # noqa: SIM118 - not a dict
        version, key, gauss = json.loads(metadata["python"])
        numpy_state = json.loads(metadata["numpy"])
        numpy_state["state"]["key"] = np.asarray(numpy_state["state"]["key"], dtype=np.uint32)
        cuda = [tensors[f"cuda.{index}"] for index in range(sum(name.startswith("cuda.") for name in tensors))]
        return {"python": (version, tuple(key), gauss), "numpy": numpy_state, "torch": tensors["torch"], "cuda": cuda}
    except (SafetensorError, OSError, KeyError, TypeError, ValueError) as error:
        raise DVDError(
            f"{path} is not an RNG state file of dvd ({type(error).__name__}): resume from another checkpoint"
        ) from None


def set_rng_states(states: dict[str, Any]) -> None:
    random.setstate(states["python"])
    np.random.set_state(states["numpy"])
    torch.set_rng_state(states["torch"])
    if states["cuda"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(states["cuda"])


def save_checkpoint(
    output_dir: Path,
    step: int,
    rank: int,
    is_main: bool,
    barrier: Callable[[], None],
    write: Callable[[Path], None],
    keep: int,
) -> Path:
    """Write checkpoint `step` collectively (every process calls this): each process saves its RNG states and calls
    `write(folder)`, which writes what that process holds (see `write_checkpoint_files` for the main process)."""
    root = Path(output_dir) / CHECKPOINT_DIR
    final = root / checkpoint_name(step)
    tmp = root / f".{final.name}.tmp"
    if is_main:
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
    barrier()
    try:
        with write_errors(final):
            save_rng_states(tmp / rng_file(rank))
            write(tmp)
        barrier()
        if is_main:
            replace_directory(tmp, final)
            for old in list_checkpoints(output_dir)[:-keep]:
                shutil.rmtree(old)
    except BaseException:
        if is_main:
            shutil.rmtree(tmp, ignore_errors=True)
        raise
    barrier()
    return final


def write_checkpoint_files(
    folder: Path,
    weights: dict[str, torch.Tensor],
    optimizer: dict[str, Any] | None,
    scheduler: dict[str, Any],
    state: dict[str, Any],
) -> None:
    """The main process's part of a checkpoint; `optimizer` is None where DeepSpeed wrote its own files."""
    save_file({k: v.detach().cpu().contiguous() for k, v in weights.items()}, folder / WEIGHTS_FILE)
    if optimizer is not None:
        torch.save(optimizer, folder / OPTIMIZER_FILE)
    torch.save(scheduler, folder / SCHEDULER_FILE)
    (folder / STATE_FILE).write_text(json.dumps(state, indent=1))


def read_state(checkpoint: Path) -> dict[str, Any]:
    path = Path(checkpoint) / STATE_FILE
    if not path.is_file():
        raise DVDError(f"{checkpoint} is not a training checkpoint (no {STATE_FILE}); pass a checkpoints/step-N folder")
    return json.loads(path.read_text())


def check_compatible(checkpoint: Path, state: dict[str, Any], signature: dict[str, list[int]]) -> None:
    """Refuse a checkpoint whose trainable tensors differ in name or shape from this model's."""
    saved = state["signature"]
    if saved == signature:
        return
    missing = sorted(set(signature) - set(saved))
    extra = sorted(set(saved) - set(signature))
    shape = next((k for k in signature if k in saved and saved[k] != signature[k]), None)
    if shape is not None:
        detail = f"'{shape}' is {saved[shape]} there but {signature[shape]} here"
    elif missing:
        detail = f"it lacks '{missing[0]}' ({len(missing)} trainable tensors missing)"
    else:
        detail = f"it has '{extra[0]}', which this model does not train ({len(extra)} extra)"
    raise DVDError(
        f"cannot resume from {checkpoint}: it was saved by another architecture ({detail}); "
        "use the config it was trained with or start a new output_dir"
    )


def check_same_base(checkpoint: Path, state: dict[str, Any], model: ModelSection, fingerprint: str) -> None:
    """Refuse to continue a run over other base weights: its LoRA (or DiT) was trained for its own base. The
    fingerprint of the frozen tensors decides (weights moved elsewhere are still the same); checkpoints written
    before it was recorded can only compare `model.weights`."""
    before = state.get("config", {}).get("model", {}).get("weights")
    saved = state.get("base_fingerprint")
    if saved == fingerprint or (saved is None and before in (None, model.weights)):
        return
    if before != model.weights:
        detail, fix = f"model.weights was {before!r}, now {model.weights!r}", f"set model.weights back to {before!r}"
    else:
        detail, fix = f"model.weights {model.weights!r} now loads different tensors", "restore those base weights"
    raise DVDError(
        f"cannot resume from {checkpoint}: it was trained over other base weights ({detail}); "
        f"{fix} or start a new train.output_dir"
    )


def load_checkpoint(checkpoint: Path, rank: int, optimizer: bool = True) -> dict[str, Any]:
    """Weights, scheduler state, this rank's RNG states (rank 0's when the run had fewer ranks) and, with
    `optimizer`, the name-keyed optimizer state (False where DeepSpeed restores its own)."""
    checkpoint = Path(checkpoint)
    rng_path = checkpoint / rng_file(rank)
    if not rng_path.is_file():
        rng_path = checkpoint / rng_file(0)
    if not rng_path.is_file() and (checkpoint / "rng-0.pt").exists():
        raise DVDError(
            f"{checkpoint} holds its RNG states as pickles (rng-0.pt, from an older dvd), which dvd does not load "
            "because a pickle can run code: start a new train.output_dir, or resume from a checkpoint of this dvd"
        )
    fix = "resume from another checkpoint"
    restored = {
        "weights": load_file(checkpoint / WEIGHTS_FILE),
        # Optimizer and scheduler states hold plain tensors, numbers and containers: no code, no classes.
        "scheduler": load_torch_pickle(checkpoint / SCHEDULER_FILE, fix),
        "rng": load_rng_states(rng_path),
    }
    if optimizer:
        if not (checkpoint / OPTIMIZER_FILE).is_file():
            raise DVDError(
                f"{checkpoint} holds a DeepSpeed optimizer state (no {OPTIMIZER_FILE}); resume it under DeepSpeed, "
                "with the accelerate config it was trained with"
            )
        restored["optimizer"] = load_torch_pickle(checkpoint / OPTIMIZER_FILE, fix)
    return restored
