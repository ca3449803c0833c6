"""The resize policy of the official DVD inference: which size the model runs at for a given source.

The model sees frames scaled so that they cover a minimum size (480x640 by default) with both sides rounded up to
a multiple of 16; the disparity it returns is resized back to the source size with the same bilinear filter
(`dvd.data.raster.resize_frames`).
"""

from __future__ import annotations

import math


def model_size(height: int, width: int, min_height: int = 480, min_width: int = 640) -> tuple[int, int]:
    """(H, W) the model runs at for a (height, width) source: scale to cover (min_height, min_width) keeping the
    aspect ratio, ceil each side, then round each up to a multiple of 16. There is no crop, so the result can be
    larger than the minimum on one side (1080x1920 -> 480x864)."""
    ratio = max(min_height / height, min_width / width)
    return _round_up_to_16(math.ceil(height * ratio)), _round_up_to_16(math.ceil(width * ratio))


def _round_up_to_16(side: int) -> int:
    return (side + 15) // 16 * 16
