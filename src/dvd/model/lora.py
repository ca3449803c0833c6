"""LoRA on the DiT, where the backbone places it (`Backbone.lora_targets`; Wan: 10 linear layers per block)."""

from __future__ import annotations

from collections.abc import Sequence

from peft import LoraConfig, inject_adapter_in_model
from torch import nn

ADAPTER_NAME = "default"


def add_lora(transformer: nn.Module, targets: Sequence[str], rank: int, alpha: float | None = None) -> nn.Module:
    """Inject a peft LoRA adapter on the modules named `targets` (alpha = rank unless given, so the scale is 1 as in
    the official recipe)."""
    config = LoraConfig(r=rank, lora_alpha=rank if alpha is None else alpha, target_modules=list(targets))
    return inject_adapter_in_model(config, transformer, adapter_name=ADAPTER_NAME)
