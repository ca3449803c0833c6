"""Reading the official file formats into diffusers modules.

- The DVD checkpoint (`model.safetensors` / `dvd_1.1.safetensors`): the whole DiT under `pipe.dit.` (or
  `module.pipe.dit.` when saved from a DDP wrapper), with peft LoRA tensors beside the frozen base weights.
- The Wan2.1 base DiT (`diffusion_pytorch_model*.safetensors`, original key names, possibly sharded).
- The Wan2.1 VAE (`Wan2.1_VAE.pth`, a plain state dict in original key names).

The architecture is read from tensor shapes, so official-format files of any size load, tiny test models included.
Key renaming is diffusers' own (`convert_wan_transformer_to_diffusers`, `convert_wan_vae_to_diffusers`).
"""

from __future__ import annotations

import json
import pickle
import re
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from accelerate import init_empty_weights
from diffusers import AutoencoderKLWan, WanTransformer3DModel
from diffusers.loaders.single_file_utils import (
    convert_wan_transformer_to_diffusers,
    convert_wan_vae_to_diffusers,
)
from safetensors import SafetensorError, safe_open
from safetensors.torch import load_file

from dvd.errors import DVDError
from dvd.model.backbones.wan import Wan21Backbone
from dvd.model.lora import add_lora

DIT_PREFIXES = ("module.pipe.dit.", "pipe.dit.")
LORA_A, LORA_B, BASE_LAYER = ".lora_A.default.weight", ".lora_B.default.weight", ".base_layer."
HEAD_DIM = 128  # Wan2.1 uses 128-dim heads at every size; a config.json may say otherwise.


def check_finite(state: dict[str, torch.Tensor], source: Path | str) -> None:
    """Refuse weights holding NaN or inf, naming the first bad tensor as `state` names it: such weights would give an
    all-NaN prediction. One reduction per tensor, so a 1.3B model costs about a second."""
    for key, tensor in state.items():
        if tensor.is_floating_point() and not bool(torch.isfinite(tensor).all()):
            bad = int((~torch.isfinite(tensor)).sum())
            raise DVDError(
                f"tensor '{key}' in {source} holds {bad} NaN/inf values of {tensor.numel()}; "
                "the file is damaged: re-download or re-export it"
            )


def check_tau(value: object, where: str) -> float:
    """τ as a float in (0, 1]: the DiT runs at t = 1000·τ, and outside that range it runs at a timestep it never
    saw (e.g. `denoise_step: 5` would mean t = 5000)."""
    try:
        tau = float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        tau = float("nan")
    if not 0 < tau <= 1:  # also false for NaN
        raise DVDError(f"{where} is {value!r}: tau must be a number in (0, 1] (the timestep is 1000·tau; DVD uses 0.5)")
    return tau


def read_state_dict(path: Path) -> dict[str, torch.Tensor]:
    """Tensors of a .safetensors file or a plain (weights-only) torch pickle, all finite, with one-line errors."""
    state = _read_tensors(path)
    check_finite(state, path)
    return state


def safetensors_names(path: Path) -> list[str]:
    """The tensor names of a .safetensors file, from its header only (no tensor is read)."""
    try:
        with safe_open(str(path), framework="pt") as handle:
            return list(handle.keys())
    except (SafetensorError, OSError) as error:
        raise unreadable_safetensors(path, error) from None


def unreadable_safetensors(path: Path, error: Exception) -> DVDError:
    return DVDError(f"{path} is not a readable safetensors checkpoint ({error}); re-download it")


def _read_tensors(path: Path) -> dict[str, torch.Tensor]:
    if not path.is_file():
        raise DVDError(f"checkpoint not found: {path}")
    if path.suffix == ".safetensors":
        try:
            return load_file(path)
        except (SafetensorError, OSError) as error:
            raise unreadable_safetensors(path, error) from None
    state = load_torch_pickle(path, "use the official Wan2.1_VAE.pth or a .safetensors file")
    if isinstance(state, dict) and isinstance(state.get("state_dict"), dict):
        state = state["state_dict"]
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise DVDError(f"{path} does not hold a state dict of tensors")
    return state


def load_torch_pickle(path: Path, fix: str) -> Any:
    """A torch pickle (`torch.save`) read with `weights_only=True`: tensors, numbers, strings and plain containers,
    never code; DVDError ending in `fix` for a file that needs more (or is no torch file at all)."""
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError:
        raise DVDError(f"{path} needs arbitrary code execution to unpickle, which dvd refuses; {fix}") from None
    except Exception as error:  # noqa: BLE001 - torch raises many types for non-checkpoint files
        raise DVDError(f"{path} is not a torch checkpoint ({type(error).__name__}); {fix}") from None


def read_sharded_safetensors(paths: list[Path]) -> dict[str, torch.Tensor]:
    state: dict[str, torch.Tensor] = {}
    for path in sorted(paths):
        state.update(read_state_dict(path))
    return state


def strip_dit_prefix(state: dict[str, torch.Tensor], source: Path) -> dict[str, torch.Tensor]:
    """Keep the DiT tensors of a DVD checkpoint and drop their `pipe.dit.` / `module.pipe.dit.` prefix."""
    for prefix in DIT_PREFIXES:
        dit = {k[len(prefix) :]: v for k, v in state.items() if k.startswith(prefix)}
        if dit:
            return dit
    raise DVDError(
        f"{source} holds no DiT tensors under 'pipe.dit.' or 'module.pipe.dit.'; "
        "pass the official DVD checkpoint (model.safetensors or dvd_1.1.safetensors)"
    )


def merge_lora(state: dict[str, torch.Tensor], alpha: float | None = None) -> dict[str, torch.Tensor]:
    """Fold peft LoRA pairs into their base weights: W' = W + (alpha/r)·B·A (alpha = r unless given).

    The sum is formed in float32 and cast back once; the reference adds a bf16-rounded delta to a bf16 weight,
    which differs only at bf16 rounding level.
    """
    merged: dict[str, torch.Tensor] = {}
    for key, tensor in state.items():
        if key.endswith((LORA_A, LORA_B)):
            continue
        if BASE_LAYER not in key:
            merged[key] = tensor
            continue
        layer, param = key.split(BASE_LAYER)
        if param == "weight" and (layer + LORA_A in state or layer + LORA_B in state):
            for half in (LORA_A, LORA_B):
                if layer + half not in state:
                    raise DVDError(f"the checkpoint lacks tensor '{layer + half}'; re-download it")
            check_lora_shapes(state, layer)
            down, up = state[layer + LORA_A].float(), state[layer + LORA_B].float()
            scale = (alpha if alpha is not None else down.shape[0]) / down.shape[0]
            tensor = (tensor.float() + scale * (up @ down)).to(tensor.dtype)
        merged[f"{layer}.{param}"] = tensor
    return merged


def check_lora_shapes(state: dict[str, torch.Tensor], layer: str) -> None:
    """A LoRA pair must fit its base weight [out, in]: lora_A [r, in], lora_B [out, r]. Checked before the product,
    which would otherwise fail deep in torch or, worse, broadcast into a wrong weight."""
    base = state[layer + BASE_LAYER + "weight"]
    if base.ndim != 2:
        raise DVDError(f"tensor '{layer + BASE_LAYER}weight' has shape {tuple(base.shape)}: a LoRA base must be 2-D")
    rank = state[layer + LORA_A].shape[0] if state[layer + LORA_A].ndim else 0
    out_features, in_features = base.shape
    for half, expected in ((LORA_A, (rank, in_features)), (LORA_B, (out_features, rank))):
        shape = tuple(state[layer + half].shape)
        if shape != expected:
            raise DVDError(
                f"LoRA tensor '{layer + half}' has shape {shape}, expected {expected} to fit its base weight "
                f"'{layer + BASE_LAYER}weight' {tuple(base.shape)}; the file is damaged or of another architecture"
            )


def lora_rank(state: dict[str, torch.Tensor]) -> int | None:
    """The rank shared by every lora_A tensor; an odd one out is named (it is a damaged tensor, not a design)."""
    ranks = {k: v.shape[0] if v.ndim else 0 for k, v in state.items() if k.endswith(LORA_A)}
    if not ranks:
        return None
    common = Counter(ranks.values()).most_common(1)[0][0]
    odd = next((k for k, r in ranks.items() if r != common), None)
    if odd is not None:
        raise DVDError(
            f"LoRA tensor '{odd}' has shape {tuple(state[odd].shape)}, but the other LoRA tensors have rank {common}; "
            "the file is damaged or not a DVD checkpoint"
        )
    return common


def dit_config_from_shapes(state: dict[str, torch.Tensor], config_json: Path | None = None) -> dict:
    """The diffusers WanTransformer3DModel config implied by an original-layout DiT state dict."""
    required = ["patch_embedding.weight", "text_embedding.0.weight", "time_embedding.0.weight", "head.head.weight"]
    for key in required:
        if key not in state:
            raise DVDError(f"the DiT checkpoint lacks tensor '{key}'; it is not a Wan2.1 DiT")
    dim, in_channels, *patch = state["patch_embedding.weight"].shape
    layers = {int(k.split(".")[1]) for k in state if k.startswith("blocks.")}
    ffn_key = "blocks.0.ffn.0.weight" if "blocks.0.ffn.0.weight" in state else "blocks.0.ffn.0" + BASE_LAYER + "weight"
    if not layers or ffn_key not in state:
        raise DVDError(f"the DiT checkpoint lacks tensor '{ffn_key}'; it is not a Wan2.1 DiT")
    heads = dim // HEAD_DIM
    if config_json is not None and config_json.is_file():
        heads = int(json.loads(config_json.read_text()).get("num_heads", heads))
    if heads < 1 or dim % heads:
        raise DVDError(f"cannot split the DiT width {dim} into heads; add a config.json with 'num_heads'")
    return {
        "patch_size": tuple(patch),
        "num_attention_heads": heads,
        "attention_head_dim": dim // heads,
        "in_channels": in_channels,
        "out_channels": state["head.head.weight"].shape[0] // int(torch.tensor(patch).prod()),
        "text_dim": state["text_embedding.0.weight"].shape[1],
        "freq_dim": state["time_embedding.0.weight"].shape[1],
        "ffn_dim": state[ffn_key].shape[0],
        "num_layers": max(layers) + 1,
        "cross_attn_norm": True,
        "qk_norm": "rms_norm_across_heads",
        "eps": 1e-6,
    }


# diffusers -> original Wan names: the inverse of diffusers' converter, for messages and for writing official files.
_DIT_RENAMES = [
    ("condition_embedder.time_embedder.linear_1", "time_embedding.0"),
    ("condition_embedder.time_embedder.linear_2", "time_embedding.2"),
    ("condition_embedder.text_embedder.linear_1", "text_embedding.0"),
    ("condition_embedder.text_embedder.linear_2", "text_embedding.2"),
    ("condition_embedder.time_proj", "time_projection.1"),
    (".attn1.", ".self_attn."),
    (".attn2.", ".cross_attn."),
    (".to_out.0.", ".o."),
    (".to_q.", ".q."),
    (".to_k.", ".k."),
    (".to_v.", ".v."),
    ("ffn.net.0.proj", "ffn.0"),
    ("ffn.net.2", "ffn.2"),
    (".norm2.", ".norm3."),
    ("proj_out", "head.head"),
]


def original_dit_name(key: str) -> str:
    """The original Wan name of a diffusers DiT tensor name."""
    if key == "scale_shift_table":
        return "head.modulation"
    key = key.replace("scale_shift_table", "modulation")
    for new, old in _DIT_RENAMES:
        key = key.replace(new, old)
    return key


def diffusers_names(original_keys: list[str]) -> dict[str, str]:
    """original key -> diffusers key, as diffusers' converter renames it (it only renames, so strings will do)."""
    converted = convert_wan_transformer_to_diffusers({k: k for k in original_keys})
    return {original: new for new, original in converted.items()}


def load_strict(
    module: torch.nn.Module, state: dict[str, torch.Tensor], what: str, name: Callable[[str], str] = str
) -> None:
    """load_state_dict(strict=True, assign=True) with one-line errors naming the tensor as the file names it."""
    expected = module.state_dict()
    for key, tensor in state.items():
        if key not in expected:
            raise DVDError(f"unexpected tensor '{name(key)}' in the {what}; is this the right file?")
        if tuple(tensor.shape) != tuple(expected[key].shape):
            raise DVDError(
                f"tensor '{name(key)}' in the {what} has shape {tuple(tensor.shape)}, "
                f"expected {tuple(expected[key].shape)}; the file is damaged or of another architecture"
            )
    missing = [k for k in expected if k not in state]
    if missing:
        raise DVDError(f"the {what} lacks tensor '{name(missing[0])}' ({len(missing)} missing); re-download it")
    module.load_state_dict(state, strict=True, assign=True)


def transformer_from_original(
    state: dict[str, torch.Tensor], config_json: Path | None = None, what: str = "DiT checkpoint"
) -> WanTransformer3DModel:
    """Build a diffusers Wan DiT from an original-layout state dict (LoRA already merged)."""
    config = dit_config_from_shapes(state, config_json)
    names = diffusers_names(list(state))
    converted = {names[k]: v.float() for k, v in state.items()}
    with init_empty_weights():
        transformer = WanTransformer3DModel(**config)
    load_strict(transformer, converted, what, original_dit_name)
    return transformer


def vae_from_original(state: dict[str, torch.Tensor], source: Path) -> AutoencoderKLWan:
    """Build a diffusers Wan VAE from `Wan2.1_VAE.pth` keys; the width is read from `encoder.conv1.weight`."""
    state = {k.removeprefix("model."): v for k, v in state.items()}  # DiffSynth saves with a `model.` prefix
    for key in ("encoder.conv1.weight", "conv2.weight"):
        if key not in state:
            raise DVDError(f"{source} lacks tensor '{key}'; it is not the Wan2.1 VAE (Wan2.1_VAE.pth)")
    base_dim = state["encoder.conv1.weight"].shape[0]
    z_dim = state["conv2.weight"].shape[0]
    converted = convert_wan_vae_to_diffusers(state)
    with init_empty_weights():
        vae = AutoencoderKLWan(base_dim=base_dim, z_dim=z_dim)
    # The VAE converter is not a pure rename, so errors name tensors in diffusers' terms.
    load_strict(vae, {k: v.float() for k, v in converted.items()}, f"VAE file {source.name}")
    return vae


def transformer_with_lora(
    state: dict[str, torch.Tensor], rank: int, alpha: float | None = None, config_json: Path | None = None
) -> WanTransformer3DModel:
    """Build the DiT with its LoRA kept as separate peft layers (for fine-tuning, or to check the merge)."""
    config = dit_config_from_shapes(state, config_json)
    names = diffusers_names(list(state))
    with init_empty_weights():
        transformer = WanTransformer3DModel(**config)
    add_lora(transformer, Wan21Backbone.lora_targets, rank, alpha)
    load_strict(transformer, {names[k]: v.float() for k, v in state.items()}, "DiT checkpoint", original_dit_name)
    return transformer


def original_dit_state(transformer: WanTransformer3DModel) -> dict[str, torch.Tensor]:
    """The DiT's tensors under original Wan key names (for writing official-format files)."""
    state = {original_dit_name(k): v.detach().clone() for k, v in transformer.state_dict().items()}
    names = diffusers_names(list(state))
    assert sorted(names.values()) == sorted(transformer.state_dict()), "original names do not convert back"
    return state


def original_vae_state(vae: AutoencoderKLWan) -> dict[str, torch.Tensor]:
    """The VAE's tensors under Wan2.1_VAE.pth key names: the inverse of diffusers' converter, checked by round trip."""
    state = {}
    for key, tensor in vae.state_dict().items():
        name = key
        for new, old in [("conv_in", "conv1"), ("norm_out", "head.0"), ("conv_out", "head.2")]:
            name = name.replace(f"coder.{new}.", f"coder.{old}.")
        name = re.sub(r"^quant_conv\.", "conv1.", re.sub(r"^post_quant_conv\.", "conv2.", name))
        name = name.replace("mid_block.resnets.0.", "middle.0.").replace("mid_block.resnets.1.", "middle.2.")
        name = name.replace("mid_block.attentions.0.", "middle.1.").replace(
            "encoder.down_blocks.", "encoder.downsamples."
        )
        up = re.match(r"decoder\.up_blocks\.(\d+)\.(resnets\.(\d+)|upsamplers\.0)\.(.*)", name)
        if up:
            block = int(up.group(1))
            index = 4 * block + (int(up.group(3)) if up.group(3) is not None else 3)
            name = f"decoder.upsamples.{index}.{up.group(4)}"
        for new, old in [
            ("norm1.gamma", "residual.0.gamma"),
            ("conv1.", "residual.2."),
            ("norm2.gamma", "residual.3.gamma"),
            ("conv2.", "residual.6."),
            ("conv_shortcut.", "shortcut."),
        ]:
            if name.startswith(("encoder.", "decoder.")):
                name = re.sub(rf"(\.\d+\.){re.escape(new)}", rf"\g<1>{old}", name)
        state[name] = tensor.detach().clone()
    converted = convert_wan_vae_to_diffusers(dict(state))
    assert sorted(converted) == sorted(vae.state_dict()), "original VAE names do not convert back"
    return state
