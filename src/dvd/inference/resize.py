"""The resize policy of the official DVD inference (reference §1.2) and the one bilinear resize used both ways.

The model sees frames scaled so that they cover a minimum size (480x640 by default) with both sides rounded up to
a multiple of 16; the disparity it returns is resized back to the source size with the same bilinear filter.
"""

from __future__ import annotations

import math
from typing import TypeVar

import numpy as np
import torch
import torch.nn.functional as F

Frames = TypeVar("Frames", np.ndarray, torch.Tensor)


def model_size(height: int, width: int, min_height: int = 480, min_width: int = 640) -> tuple[int, int]:
    """(H, W) the model runs at for a (height, width) source: scale to cover (min_height, min_width) keeping the
    aspect ratio, ceil each side, then round each up to a multiple of 16. There is no crop, so the result can be
    larger than the minimum on one side (1080x1920 -> 480x864)."""
    ratio = max(min_height / height, min_width / width)
    return _round_up_to_16(math.ceil(height * ratio)), _round_up_to_16(math.ceil(width * ratio))


def _round_up_to_16(side: int) -> int:
    return (side + 15) // 16 * 16


def resize_frames(frames: Frames, size: tuple[int, int]) -> Frames:
    """Resize a stack of frames to size=(H, W): bilinear, align_corners=False, no antialiasing, in float32.

    `frames` is [T, H, W, C] or, for single-channel maps such as disparity, [T, H, W]; numpy arrays or torch
    tensors (kept on their device). Returns the same type and layout, float32, or the input itself untouched when
    it already has that size (as the reference does).
    """
    if frames.ndim not in (3, 4):
        raise ValueError(f"expected frames [T,H,W] or [T,H,W,C], got shape {tuple(frames.shape)}")
    if tuple(frames.shape[1:3]) == tuple(size):
        return frames
    tensor = torch.from_numpy(np.ascontiguousarray(frames)) if isinstance(frames, np.ndarray) else frames
    channels_first = tensor.unsqueeze(1) if tensor.ndim == 3 else tensor.permute(0, 3, 1, 2)
    resized = F.interpolate(
        channels_first.to(torch.float32), size=tuple(size), mode="bilinear", align_corners=False, antialias=False
    )
    resized = resized.squeeze(1) if tensor.ndim == 3 else resized.permute(0, 2, 3, 1)
    resized = resized.contiguous()
    return resized.numpy() if isinstance(frames, np.ndarray) else resized
