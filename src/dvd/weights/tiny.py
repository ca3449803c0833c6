"""Tiny random DiT/VAE pairs, and writers for them in the official file formats and in diffusers' base layout.

No weights can be downloaded in tests or CI, so the loading code is exercised on models built here: the same
architecture at a small size (each backbone's "tiny" size; Wan2.1: DiT width 256 = 2 heads of 128, 2 layers, VAE
base width 8), written with the official key names (`pipe.dit.` + peft LoRA tensors, `Wan2.1_VAE.pth`) or as a
base model on the Hub is laid out (`model_index.json`, `transformer/`, `vae/`, and a tiny T5 in `text_encoder/` for
the families that embed the empty prompt with it). The original names are produced by inverting diffusers'
converters, and every written name is checked to convert back to the diffusers name.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import TYPE_CHECKING, TypeVar

import diffusers
import torch
import yaml
from diffusers import AutoencoderKLWan, WanTransformer3DModel
from safetensors.torch import save_file

from dvd.model.backbones import BACKBONES
from dvd.model.backbones.wan import TINY_DIT, TINY_WAN21_VAE
from dvd.model.dvd_model import DVDModel
from dvd.weights.formats import LORA_A, LORA_B, original_dit_state, original_vae_state

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerBase

TINY_VAE_BASE_DIM = TINY_WAN21_VAE["base_dim"]
# A one-layer T5 encoder as wide as the tiny CogVideoX and LTX-Video DiTs' contexts (text_embed_dim and
# caption_channels 16).
TINY_T5 = {"vocab_size": 32, "d_model": 16, "d_kv": 8, "d_ff": 32, "num_layers": 1, "num_heads": 2}
# The pipeline, scheduler, text encoder and tokenizer classes the Hub's base repositories name in model_index.json:
# Wan-AI/Wan2.1-T2V-1.3B-Diffusers and Wan2.2-TI2V-5B-Diffusers, THUDM/CogVideoX-5b, Lightricks/LTX-Video.
HUB_CLASSES = {
    "wan2.1": ("WanPipeline", "UniPCMultistepScheduler", "UMT5EncoderModel", "T5TokenizerFast"),
    "wan2.2": ("WanPipeline", "UniPCMultistepScheduler", "UMT5EncoderModel", "T5TokenizerFast"),
    "cogvideox": ("CogVideoXPipeline", "CogVideoXDDIMScheduler", "T5EncoderModel", "T5Tokenizer"),
    "ltx-video": ("LTXPipeline", "FlowMatchEulerDiscreteScheduler", "T5EncoderModel", "T5Tokenizer"),
}
ModuleT = TypeVar("ModuleT", bound=torch.nn.Module)
# Original-layout Linear layers that DVD's LoRA wraps.
LORA_LAYER = re.compile(r"^blocks\.\d+\.(self_attn\.[qkvo]|cross_attn\.[qkvo]|ffn\.[02])$")


def _randomised(module: ModuleT, seed: int) -> ModuleT:
    """`module` with every tensor drawn from `seed` alone (so a seed fixes the model), norms and tables off their
    trivial init."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, param in module.named_parameters():
            noise = torch.randn(param.shape, generator=generator)
            if name.endswith("bias"):
                param.copy_(0.02 * noise)
            elif param.ndim <= 1 or name.endswith("gamma"):
                param.copy_(1 + 0.1 * noise)
            elif "scale_shift_table" in name:
                param.copy_(0.1 * noise)
            else:
                param.copy_(noise / param[0].numel() ** 0.5)
    return module


def tiny_transformer(seed: int = 0) -> WanTransformer3DModel:
    return _randomised(WanTransformer3DModel(**TINY_DIT), seed)


def tiny_vae(seed: int = 0) -> AutoencoderKLWan:
    return _randomised(AutoencoderKLWan(**TINY_WAN21_VAE), seed + 1)


def build_tiny_model(seed: int = 0) -> DVDModel:
    """A tiny random DVD model, float32 on CPU (a 9-frame 64x64 window runs in well under a second)."""
    return DVDModel(tiny_transformer(seed), tiny_vae(seed))


def tiny_modules(family: str, seed: int = 0) -> tuple[torch.nn.Module, torch.nn.Module]:
    """The DiT and VAE of a backbone family's "tiny" size, drawn from `seed` like `tiny_transformer`/`tiny_vae`."""
    backbone = BACKBONES[family]
    dit, vae = backbone.sizes["tiny"]
    return _randomised(backbone.transformer_class(**dit), seed), _randomised(backbone.vae_class(**vae), seed + 1)


def write_tiny_base(
    directory: str | Path, family: str, seed: int = 0, tokenizer: PreTrainedTokenizerBase | None = None
) -> Path:
    """Write a tiny random base model of `family` in diffusers' layout, as its Hub repository holds it:
    `transformer/` and `vae/` (save_pretrained, from `tiny_modules(family, seed)`), a `model_index.json` naming the
    classes as the Hub's does (`HUB_CLASSES`), and, for a family whose empty condition comes from its text encoder,
    a tiny T5 in `text_encoder/` (needs transformers) and `tokenizer` in `tokenizer/` when one is given (without
    one, dvd tokenises "" by T5's rule). Wan's text encoder is never run by DVD, so a Wan base has none, as dvd
    downloads none."""
    directory = Path(directory)
    backbone = BACKBONES[family]
    transformer, vae = tiny_modules(family, seed)
    transformer.save_pretrained(directory / "transformer")
    vae.save_pretrained(directory / "vae")
    if backbone.condition_from_text_encoder():
        from transformers import T5Config, T5EncoderModel

        encoder = _randomised(T5EncoderModel(T5Config(**TINY_T5)), seed + 2)
        encoder.save_pretrained(directory / "text_encoder")
        if tokenizer is not None:
            tokenizer.save_pretrained(directory / "tokenizer")
    pipeline, scheduler, text_encoder, tokenizer_class = HUB_CLASSES[family]
    index = {"_class_name": pipeline, "_diffusers_version": diffusers.__version__}
    index |= {"scheduler": ["diffusers", scheduler], "text_encoder": ["transformers", text_encoder]}
    index |= {"tokenizer": ["transformers", tokenizer_class]}
    index |= {"transformer": ["diffusers", type(transformer).__name__], "vae": ["diffusers", type(vae).__name__]}
    (directory / "model_index.json").write_text(json.dumps(index, indent=2))
    return directory


def add_random_lora(state: dict[str, torch.Tensor], rank: int, generator: torch.Generator) -> dict[str, torch.Tensor]:
    """Rewrite LoRA-wrapped layers as peft saves them (base_layer + lora_A/lora_B), with a non-zero lora_B."""
    out = {}
    for key, tensor in state.items():
        layer, _, param = key.rpartition(".")
        if not LORA_LAYER.match(layer):
            out[key] = tensor
            continue
        out[f"{layer}.base_layer.{param}"] = tensor
        if param == "weight":
            fan_out, fan_in = tensor.shape
            out[layer + LORA_A] = torch.randn(rank, fan_in, generator=generator) / fan_in**0.5
            out[layer + LORA_B] = 0.05 * torch.randn(fan_out, rank, generator=generator) / rank**0.5
    return out


def write_tiny_official_weights(
    directory: str | Path,
    seed: int = 0,
    lora_rank: int = 4,
    prefix: str = "pipe.dit.",
    filename: str = "model.safetensors",
    dtype: torch.dtype = torch.float32,
) -> Path:
    """Write a tiny DVD checkpoint (full DiT + unmerged LoRA under `prefix`), model_config.yaml and Wan2.1_VAE.pth."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    generator = torch.Generator().manual_seed(seed + 2)
    dit = add_random_lora(original_dit_state(tiny_transformer(seed)), lora_rank, generator)
    save_file({prefix + k: v.to(dtype).contiguous() for k, v in dit.items()}, directory / filename)
    config = {"mode": "regression", "denoise_step": 0.5, "lora_base_model": "dit", "lora_rank": lora_rank}
    (directory / "model_config.yaml").write_text(yaml.safe_dump(config))
    torch.save(original_vae_state(tiny_vae(seed)), directory / "Wan2.1_VAE.pth")
    return directory
