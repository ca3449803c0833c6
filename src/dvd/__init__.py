"""dvd: video depth estimation with DVD (Deterministic Video Depth).

Outputs are affine-invariant disparity: larger values are nearer; scale and shift are unknown.
"""

from __future__ import annotations

import importlib

__version__ = "0.1.0"
__all__ = ["DVDModel", "DVDPipeline", "__version__"]

# Imported on first use: the model pulls in diffusers (seconds), which readers, writers and metrics do not need.
_LAZY = {"DVDPipeline": "dvd.pipeline.dvd_pipeline", "DVDModel": "dvd.model"}


def __getattr__(name: str):
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'dvd' has no attribute {name!r}")
