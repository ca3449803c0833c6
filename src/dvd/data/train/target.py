"""The training target: depth turned into 2-98 % truncated disparity in [0, 1], as the reference recipe does.

disp = 1 / depth; lo, hi = the 2 % and 98 % quantiles of disp over the valid pixels of the scope (linear
interpolation, numpy's default rule, which is the one torch.quantile uses);
n = clip((disp - lo) / (hi - lo + 1e-5), 0, 1).

The scope is either each image on its own ("image") or every valid pixel of the whole clip together ("clip").

Invalid pixels (outside `valid`, or with depth <= 0 or non-finite) get 0, the "farthest" value. The reference never
masks the output: it leaves invalid pixels to the formula, which sends far ones (VKITTI sky at 655 m) to 0 because
their disparity is below the 2 % quantile, and would send missing depth (0 m, infinite disparity) to 1. Writing 0
reproduces the first case and turns the second, a "nearest" artefact, into "far".
"""

from __future__ import annotations

import numpy as np

SCOPES = ("image", "clip")
LOW_QUANTILE = 0.02
HIGH_QUANTILE = 0.98
EPSILON = 1e-5


def usable_pixels(depth: np.ndarray, valid: np.ndarray | None = None) -> np.ndarray:
    """Pixels the target can use: inside `valid` (when given), finite and with depth > 0."""
    with np.errstate(invalid="ignore"):
        usable = np.isfinite(depth) & (depth > 0)
    return usable if valid is None else usable & valid


def truncated_disparity(
    depth: np.ndarray,
    valid: np.ndarray | None = None,
    scope: str = "image",
    low: float = LOW_QUANTILE,
    high: float = HIGH_QUANTILE,
) -> np.ndarray:
    """Normalised disparity float32 in [0, 1], the shape of `depth` ([H,W] or [F,H,W] metres); invalid pixels are 0.

    `scope="image"` takes the quantiles of each [H,W] frame separately, `scope="clip"` over all frames together.
    Raises ValueError when a scope has no usable pixel (data-set readers skip such samples before calling this).
    """
    if scope not in SCOPES:
        raise ValueError(f"unknown scope {scope!r}: expected one of {SCOPES}")
    frames = depth[None] if depth.ndim == 2 else depth
    usable = usable_pixels(frames, None if valid is None else valid.reshape(frames.shape))
    groups = [slice(None)] if scope == "clip" else [slice(k, k + 1) for k in range(len(frames))]
    out = np.zeros(frames.shape, np.float32)
    for group in groups:
        mask = usable[group]
        if not mask.any():
            raise ValueError("no usable depth pixel in the normalisation scope")
        disp = 1.0 / frames[group][mask].astype(np.float32)
        lo, hi = np.quantile(disp, [low, high])
        out[group][mask] = np.clip((disp - lo) / (hi - lo + EPSILON), 0.0, 1.0)
    return out.reshape(depth.shape)
