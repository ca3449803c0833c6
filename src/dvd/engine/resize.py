"""The resize policy of the official DVD inference: which size the model runs at for a given source.

The model sees frames scaled so that they cover a minimum size (480x640 by default) with both sides rounded up to
a multiple of the model's spatial stride (its VAE's compression times its DiT's patch: 16 for Wan2.1, the official
model); the disparity it returns is resized back to the source size with the same bilinear filter
(`dvd.data.raster.resize_frames`).
"""

from __future__ import annotations

import math

# Wan2.1's spatial stride, the size rule of the official model, for callers that do not know the model.
DEFAULT_SPATIAL_STRIDE = 16


def model_size(
    height: int, width: int, min_height: int = 480, min_width: int = 640, stride: int = DEFAULT_SPATIAL_STRIDE
) -> tuple[int, int]:
    """(H, W) the model runs at for a (height, width) source: scale to cover (min_height, min_width) keeping the
    aspect ratio, ceil each side, then round each up to a multiple of `stride`. There is no crop, so the result can
    be larger than the minimum on one side (1080x1920 -> 480x864 at stride 16)."""
    ratio = max(min_height / height, min_width / width)
    return _round_up(math.ceil(height * ratio), stride), _round_up(math.ceil(width * ratio), stride)


def _round_up(side: int, stride: int) -> int:
    return -(-side // stride) * stride
