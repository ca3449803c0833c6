"""What differs between the ways accelerate runs `dvd train`: one process, DDP, FSDP2 and DeepSpeed (ZeRO 1-3).

The loop is accelerate's own idiom and is the same for all of them. What differs is where the trained tensors and
the optimizer state live: DDP keeps a full copy on every process; FSDP2 shards both across processes (parameters
become DTensors); DeepSpeed partitions the optimizer state (and with ZeRO-3 the parameters) and keeps float32
master weights inside its optimizer when it computes in bf16. Checkpoints stay in one format whatever ran them
(`dvd.training.checkpoint`): the float32 trained tensors in full, plus the optimizer state — in full, keyed by
parameter name, for DDP and FSDP2 (so a run can resume on another number of processes), and in DeepSpeed's own
per-rank files for DeepSpeed. DeepSpeed's own reader unpickles those with `weights_only=False`, so any code a
tampered file holds would run: dvd gives it a reader with `weights_only=True` that allows, beside tensors and plain
containers, only the four plain DeepSpeed types its ZeRO files hold.

The functions that gather, save or restore state are collective: all processes call them, in the same order.
"""

from __future__ import annotations

import contextlib
import io
import os
import pickle
from pathlib import Path
from typing import Any

from accelerate import Accelerator
from accelerate.utils import DistributedType
from torch import Tensor, nn
from torch.distributed.checkpoint.state_dict import (
    StateDictOptions,
    get_optimizer_state_dict,
    set_optimizer_state_dict,
)
from torch.distributed.tensor import DTensor
from torch.nn.parallel import DistributedDataParallel

from dvd.errors import DVDError

SUPPORTED = {
    DistributedType.NO,
    DistributedType.MULTI_GPU,
    DistributedType.MULTI_CPU,
    DistributedType.FSDP,
    DistributedType.DEEPSPEED,
}
DEEPSPEED_DIR = "deepspeed"  # DeepSpeed's own checkpoint files, inside a dvd checkpoint folder
DEEPSPEED_TAG = "state"


def is_deepspeed(accelerator: Accelerator) -> bool:
    return accelerator.distributed_type == DistributedType.DEEPSPEED


def check_strategy(accelerator: Accelerator, grad_accum: int, grad_clip: float) -> None:
    """Refuse what the checkpoints cannot hold, and make accelerate's and DeepSpeed's settings agree with the config
    (before `accelerator.prepare`)."""
    kind = accelerator.distributed_type
    if kind not in SUPPORTED:
        raise DVDError(
            f"accelerate is configured for {kind.value}; dvd train runs on one process, DDP, FSDP (version 2) "
            "or DeepSpeed: choose one of those in `accelerate config`"
        )
    if kind == DistributedType.FSDP and not accelerator.is_fsdp2:
        raise DVDError(
            "dvd train needs FSDP version 2 (per-parameter sharding, for LoRA's mix of frozen and trained weights): "
            "set fsdp_version: 2 in your accelerate config"
        )
    if accelerator.gradient_accumulation_steps != grad_accum and not is_deepspeed(accelerator):
        raise DVDError(
            f"accelerate is set to accumulate {accelerator.gradient_accumulation_steps} micro-steps but "
            f"optim.grad_accum is {grad_accum}: drop gradient_accumulation_steps from the accelerate config"
        )
    if is_deepspeed(accelerator):
        launched = int(os.environ.get("WORLD_SIZE", "1"))
        if accelerator.num_processes != launched:
            raise DVDError(
                f"{launched} processes were launched but accelerate set DeepSpeed up for "
                f"{accelerator.num_processes} (it does so on machines without GPUs): use GPUs, one process, or DDP"
            )
        _configure_deepspeed(accelerator, grad_accum, grad_clip)


def _configure_deepspeed(accelerator: Accelerator, grad_accum: int, grad_clip: float) -> None:
    plugin = accelerator.state.deepspeed_plugin
    settings = plugin.deepspeed_config
    # Batches alternate between images and clips, so there is no one micro-batch size; DeepSpeed only counts with it.
    if settings.get("train_micro_batch_size_per_gpu", "auto") == "auto":
        settings["train_micro_batch_size_per_gpu"] = 1
    for key, ours, name in (
        ("gradient_accumulation_steps", grad_accum, "optim.grad_accum"),
        ("gradient_clipping", grad_clip, "optim.grad_clip"),
    ):
        theirs = settings.get(key, "auto")
        if theirs == "auto":
            settings[key] = ours
        elif float(theirs) != float(ours):
            raise DVDError(
                f"the DeepSpeed config sets {key} = {theirs} but {name} is {ours}: "
                f'set it to "auto" there (dvd train fills it in) or make the two equal'
            )
    accelerator.gradient_accumulation_steps = grad_accum


def without_ddp(module: nn.Module) -> nn.Module:
    """The model inside a DDP wrapper (FSDP2 shards in place and does not wrap). Not accelerate's `unwrap_model`: it
    imports DeepSpeed whenever DeepSpeed is installed, and that import prints an accelerator warning on every run."""
    return module.module if isinstance(module, DistributedDataParallel) else module


def gather_trained(module: nn.Module) -> dict[str, Tensor]:
    """The trained tensors in full, float32, on the CPU of every process (DDP and FSDP2; names as in DVDModel, whose
    DiT is `transformer` there too). DeepSpeed's come from its checkpoint instead (`deepspeed_master_weights`): with
    bf16 its module holds rounded copies, and the float32 master weights live in its optimizer."""
    trained = {}
    for name, param in without_ddp(module).named_parameters():
        if param.requires_grad:
            tensor = param.full_tensor() if isinstance(param, DTensor) else param.detach()
            trained[name] = tensor.float().cpu().contiguous()
    return trained


def deepspeed_master_weights(checkpoint: Path) -> dict[str, Tensor]:
    """Float32 trained tensors consolidated from the DeepSpeed files of a dvd checkpoint (main process)."""
    from deepspeed.utils.zero_to_fp32 import get_fp32_state_dict_from_zero_checkpoint

    # Its progress prints name the temporary checkpoint folder: not for the user's log.
    with contextlib.redirect_stdout(io.StringIO()):
        state = get_fp32_state_dict_from_zero_checkpoint(
            str(Path(checkpoint) / DEEPSPEED_DIR), tag=DEEPSPEED_TAG, exclude_frozen_parameters=True
        )
    return {name: tensor.float().contiguous() for name, tensor in state.items()}


def optimizer_state(module: nn.Module, optimizer: Any) -> dict[str, Any]:
    """The optimizer state in full, keyed by parameter name, on the main process (empty elsewhere); not DeepSpeed."""
    return get_optimizer_state_dict(
        module, optimizer.optimizer, options=StateDictOptions(full_state_dict=True, cpu_offload=True)
    )


def restore_optimizer(accelerator: Accelerator, module: nn.Module, optimizer: Any, state: dict[str, Any]) -> None:
    """Load a full, name-keyed optimizer state (every process passes the whole of it); FSDP2 keeps its shard."""
    sharded = accelerator.distributed_type == DistributedType.FSDP
    set_optimizer_state_dict(module, optimizer.optimizer, state, options=StateDictOptions(full_state_dict=sharded))


def save_deepspeed_state(module: nn.Module, folder: Path) -> None:
    """DeepSpeed's own checkpoint of the engine (its optimizer partitions, trained weights only) under `folder`."""
    module.save_checkpoint(str(folder / DEEPSPEED_DIR), tag=DEEPSPEED_TAG, exclude_frozen_parameters=True)


def load_deepspeed_state(accelerator: Accelerator, module: nn.Module, checkpoint: Path, saved_world_size: int) -> None:
    folder = Path(checkpoint) / DEEPSPEED_DIR
    if not folder.is_dir():
        raise DVDError(
            f"{checkpoint} was not written by a DeepSpeed run (no {DEEPSPEED_DIR}/ folder); resume it with the "
            "accelerate config it was trained with"
        )
    if saved_world_size != accelerator.num_processes:
        raise DVDError(
            f"{checkpoint} holds DeepSpeed optimizer partitions of {saved_world_size} processes, this run has "
            f"{accelerator.num_processes}: resume on {saved_world_size} processes"
        )
    own_engine, module.checkpoint_engine = module.checkpoint_engine, _weights_only_engine()
    try:
        module.load_checkpoint(
            str(folder),
            tag=DEEPSPEED_TAG,
            load_module_strict=False,
            load_optimizer_states=True,
            load_lr_scheduler_states=False,
        )
    finally:
        module.checkpoint_engine = own_engine  # it writes the checkpoints, as configured


def _weights_only_engine() -> Any:
    """A DeepSpeed checkpoint engine that reads with `weights_only=True`; a file that needs anything more is refused
    with DVDError instead of run."""
    import torch
    from deepspeed.runtime.checkpoint_engine import TorchCheckpointEngine
    from deepspeed.runtime.fp16.loss_scaler import DynamicLossScaler, LossScaler
    from deepspeed.runtime.zero.config import ZeroStageEnum
    from deepspeed.utils.tensor_fragment import fragment_address

    # Plain records (an enum, a dataclass, two loss scalers of numbers): unpickling them creates objects and sets
    # their fields, never calls anything else.
    allowed = [ZeroStageEnum, fragment_address, LossScaler, DynamicLossScaler]

    class WeightsOnlyEngine(TorchCheckpointEngine):
        def load(self, path: str, map_location: Any = None) -> Any:
            try:
                with torch.serialization.safe_globals(allowed):
                    return torch.load(path, map_location=map_location, weights_only=True)
            except pickle.UnpicklingError:
                raise DVDError(
                    f"{path} needs arbitrary code execution to unpickle, which dvd refuses: resume from another "
                    "checkpoint"
                ) from None

    return WeightsOnlyEngine()
