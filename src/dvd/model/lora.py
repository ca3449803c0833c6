"""LoRA on the DiT, as DVD places it: q, k, v, o of self- and cross-attention and both FFN layers (10 per block)."""

from __future__ import annotations

from diffusers import WanTransformer3DModel
from peft import LoraConfig, inject_adapter_in_model

# diffusers names of the official targets ["q", "k", "v", "o", "ffn.0", "ffn.2"]; attn1 is self-, attn2 cross-attention.
LORA_TARGET_MODULES = ["to_q", "to_k", "to_v", "to_out.0", "ffn.net.0.proj", "ffn.net.2"]
ADAPTER_NAME = "default"


def add_lora(transformer: WanTransformer3DModel, rank: int, alpha: float | None = None) -> WanTransformer3DModel:
    """Inject a peft LoRA adapter (alpha = rank unless given, so the scale is 1 as in the official recipe)."""
    config = LoraConfig(r=rank, lora_alpha=rank if alpha is None else alpha, target_modules=LORA_TARGET_MODULES)
    return inject_adapter_in_model(config, transformer, adapter_name=ADAPTER_NAME)
