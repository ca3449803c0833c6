"""`dvd train`: the DVD training recipe from one config file (one process here; many via `accelerate launch`)."""

from __future__ import annotations

import argparse
import json

DESCRIPTION = (
    "Fine-tune the DVD depth regressor (LoRA or full) from a YAML/TOML config: frozen VAE, DiT at t = 1000*tau, "
    "L2 + latent manifold rectification loss, joint image/clip batches, atomic checkpoints, validation (AbsRel, "
    "delta1) and an export that `dvd predict --weights` loads. Multi-GPU: "
    "`accelerate launch -m dvd.train --config FILE` (DDP, FSDP2 or DeepSpeed, as `accelerate config` sets up; "
    "examples in configs/accelerate/). "
    "configs/tiny-synthetic.yaml runs in minutes on a CPU with no download."
)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", required=True, help="training config (.yaml, .yml or .toml)")
    parser.add_argument(
        "--base",
        metavar="HUB_ID_OR_DIR",
        help="the model to start from (sets model.weights): a base video model in diffusers' layout, local or a Hub "
        "id, whose model_index.json (or transformer/config.json) names a supported backbone (Wan2.1, Wan2.2 "
        "TI2V-5B, CogVideoX, LTX-Video), Wan2.1's original layout, or any weights `dvd predict` loads",
    )
    parser.add_argument(
        "--resume",
        nargs="?",
        const="latest",
        default=None,
        metavar="CHECKPOINT",
        help="continue a killed or finished run: from the latest checkpoint of train.output_dir, "
        "or from the given checkpoints/step-N folder",
    )
    parser.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override a config value, e.g. --set train.max_steps=200 --set loss.kind=l2 (repeatable)",
    )


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("train", help="train / fine-tune DVD from a config file", description=DESCRIPTION)
    add_arguments(parser)
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    # Imported here, not at the top: torch and diffusers take seconds to load, and --help should not wait.
    from dvd.training.config import load_config
    from dvd.training.trainer import train

    # A JSON string is a YAML string, so a path or id that looks like a number or a boolean stays text.
    base = [f"model.weights={json.dumps(args.base)}"] if args.base else []
    config = load_config(args.config, [*args.overrides, *base])
    result = train(config, resume=args.resume)
    if result.exports:
        print(
            f"trained to step {result.step}; weights for `dvd predict --weights`: "
            + ", ".join(str(p) for p in result.exports)
        )
    return 0
