"""Pixels and depth maps as arrays: the one bilinear resize (more shared raster I/O lives here)."""

from __future__ import annotations

from typing import TypeVar

import numpy as np
import torch
import torch.nn.functional as F

Frames = TypeVar("Frames", np.ndarray, torch.Tensor)


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
