"""Flags that several subcommands share, so that they read and behave the same everywhere."""

from __future__ import annotations

import argparse

COMPUTE_DTYPES = ("float32", "bfloat16", "float16")


def add_device_arguments(group: argparse._ActionsContainer) -> None:
    """--device and --dtype of every command that runs the model (predict, app, bench, eval)."""
    group.add_argument(
        "--device", default=None, help="cpu, cuda, cuda:1, mps (default: cuda if available, then mps, then cpu)"
    )
    group.add_argument(
        "--dtype",
        default=None,
        choices=COMPUTE_DTYPES,
        help="compute precision (default: bfloat16 on CUDA, as the official code; float32 elsewhere)",
    )
