"""A base model in diffusers' layout, as `Backbone.from_base` reads it: the DiT and VAE (`transformer/`, `vae/`), and
the T5 embedding of the empty prompt (`text_encoder/`, with `tokenizer/` where present) for families whose DiT was
trained on T5 contexts.

The empty-prompt embedding is computed once, when training starts from the base model, exactly as the family's
pipeline computes a prompt's: token ids padded to `max_length`, the encoder run on all of them without a mask (so
the padding shapes the embedding), in the dtype the encoder's weights are stored in. It is then saved with the DVD
model: predicting never loads T5.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TypeVar

import torch
from torch import nn

from dvd.errors import DVDError

ModuleT = TypeVar("ModuleT", bound=nn.Module)
TEXT_ENCODER = "text_encoder"
TOKENIZER = "tokenizer"


def load_component(folder: Path, name: str, cls: type[ModuleT]) -> ModuleT:
    """`folder/name` (e.g. `transformer`) as `cls`, float32; DVDError when it is missing or holds another class."""
    config_path = folder / name / "config.json"
    if not config_path.is_file():
        raise DVDError(f"{folder} has no {name}/config.json: pass the base model's folder in diffusers' layout")
    try:
        found = json.loads(config_path.read_text()).get("_class_name")
    except (json.JSONDecodeError, AttributeError):
        raise DVDError(f"{config_path} is not a JSON object: re-download the base model's {name}/") from None
    if found != cls.__name__:
        raise DVDError(
            f"{folder / name} holds a {found}, not the {cls.__name__} this backbone needs: "
            "pass a base model whose transformer/ and vae/ belong together"
        )
    return from_safetensors(cls, folder / name, torch_dtype=torch.float32)


def from_safetensors(cls: type[ModuleT], directory: Path, **kwargs: Any) -> ModuleT:
    """`cls.from_pretrained(directory)` from safetensors only: a pickled .bin can run code, and dvd loads none."""
    try:
        return cls.from_pretrained(directory, use_safetensors=True, **kwargs)
    except OSError as error:
        raise DVDError(
            f"{directory} could not be loaded from safetensors ({_first_line(error)}): download its .safetensors files"
        ) from None


def empty_prompt_embedding(folder: Path, max_length: int, family: str) -> tuple[torch.Tensor, torch.Tensor]:
    """The T5 embedding of "" padded to `max_length` tokens, [max_length, dim] float32 on the CPU, and its
    attention mask [max_length] (True on the tokens of "", False on the padding), as the family's pipeline makes
    them with `_get_t5_prompt_embeds("")`."""
    encoder_dir = folder / TEXT_ENCODER
    if not (encoder_dir / "config.json").is_file():
        raise DVDError(
            f"{folder} has no {TEXT_ENCODER}/: a {family} DiT runs on the T5 embedding of the empty prompt, which dvd "
            f"computes once from the base model's text encoder; download the base model's {TEXT_ENCODER}/ "
            f"(and {TOKENIZER}/) into {folder}"
        )
    try:
        from transformers import T5EncoderModel
    except ImportError:
        raise DVDError(
            f"computing the {family} empty-prompt embedding needs transformers: pip install 'transformers>=5,<6'"
        ) from None
    ids, mask = _empty_prompt_ids(folder, max_length)
    # In the dtype its weights are stored in: T5-XXL has 4.7e9 parameters, which float32 could double in memory.
    with _quiet_transformers():
        encoder = from_safetensors(T5EncoderModel, encoder_dir, dtype="auto").eval()
    with torch.no_grad():
        embedding = encoder(ids.unsqueeze(0))[0][0].float()
    if not bool(torch.isfinite(embedding).all()):
        raise DVDError(f"{encoder_dir} embeds the empty prompt as NaN/inf: its weights are damaged; re-download it")
    return embedding, mask


def _empty_prompt_ids(folder: Path, max_length: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Token ids and mask of "" padded to `max_length`: from `tokenizer/` where the base model has one, else T5's
    rule (no beginning-of-sequence token, "" has no pieces: the end-of-sequence token, then padding) with the ids
    of the text encoder's config."""
    tokenizer_dir = folder / TOKENIZER
    if tokenizer_dir.is_dir():
        from transformers import AutoTokenizer

        try:
            tokenizer = AutoTokenizer.from_pretrained(tokenizer_dir)
        except (OSError, ValueError, ImportError) as error:
            raise DVDError(
                f"{tokenizer_dir} could not be loaded ({_first_line(error)}): pip install sentencepiece, or "
                f"re-download the base model's {TOKENIZER}/"
            ) from None
        tokens = tokenizer(
            "",
            padding="max_length",
            max_length=max_length,
            truncation=True,
            add_special_tokens=True,
            return_tensors="pt",
        )
        return tokens.input_ids[0], tokens.attention_mask[0].bool()
    from transformers import T5Config

    config = T5Config.from_pretrained(folder / TEXT_ENCODER)
    ids = torch.full((max_length,), config.pad_token_id, dtype=torch.long)
    ids[0] = config.eos_token_id
    mask = torch.zeros(max_length, dtype=torch.bool)
    mask[0] = True
    return ids, mask


@contextmanager
def _quiet_transformers() -> Iterator[None]:
    """transformers' progress bar off while it loads: it would draw on stderr between dvd's own lines (a load takes
    seconds; dvd train reports its own progress), and put itself before a one-line error."""
    from transformers.utils import logging

    shown = logging.is_progress_bar_enabled()
    logging.disable_progress_bar()
    try:
        yield
    finally:
        if shown:
            logging.enable_progress_bar()


def _first_line(error: Exception) -> str:
    text = str(error).strip()
    return text.splitlines()[0] if text else type(error).__name__
