"""Reading training frames from disk and reshaping them: the file formats and resize rules the readers share."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from dvd.errors import DVDError

RGB_SUFFIXES = (".png", ".jpg", ".jpeg")


def existing_dir(root: str | Path, what: str) -> Path:
    path = Path(root)
    if not path.is_dir():
        raise DVDError(f"{what} root {path} is not a directory: pass the folder that holds the data set")
    return path


def read_rgb(path: Path) -> np.ndarray:
    """float32 [H,W,3] in [0,1] from an 8-bit image file."""
    with Image.open(path) as image:
        return np.asarray(image.convert("RGB"), dtype=np.float32) / 255.0


def read_png16(path: Path) -> np.ndarray:
    """The raw integer values of a 16-bit single-channel PNG as float32 [H,W]."""
    with Image.open(path) as image:
        if image.mode not in ("I;16", "I;16B", "I"):
            raise DVDError(f"{path} is a {image.mode} image: expected a 16-bit single-channel PNG of depth")
        return np.asarray(image, dtype=np.float32)


def read_npy(path: Path) -> np.ndarray:
    """float32 [H,W] from a .npy depth map (a trailing or leading axis of size 1 is dropped)."""
    depth = np.load(path)
    if depth.ndim == 3 and 1 in (depth.shape[0], depth.shape[-1]):
        depth = depth.reshape(depth.shape[1:] if depth.shape[0] == 1 else depth.shape[:-1])
    if depth.ndim != 2:
        raise DVDError(f"{path} holds an array of shape {depth.shape}: expected a 2-D depth map [H,W]")
    return depth.astype(np.float32)


def resize_depth(depth: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Nearest-neighbour resize of depth [F,H,W]: values stay real depths, never blends across an edge."""
    if depth.shape[1:3] == tuple(size):
        return depth
    frames = torch.from_numpy(np.ascontiguousarray(depth))[:, None]
    return F.interpolate(frames, size=tuple(size), mode="nearest")[:, 0].numpy()


def resize(rgb: np.ndarray, depth: np.ndarray, size: tuple[int, int], antialias: bool) -> tuple[np.ndarray, np.ndarray]:
    """Resize rgb [F,H,W,3] bilinearly (align_corners=False) and depth [F,H,W] by nearest neighbour to `size`.

    `antialias` matches PIL's bilinear downscaling, which the reference uses for Hypersim; its video readers use
    plain F.interpolate (no antialias). Each array already at `size` is returned as it is.
    """
    if rgb.shape[1:3] != tuple(size):
        colour = F.interpolate(
            torch.from_numpy(np.ascontiguousarray(rgb)).permute(0, 3, 1, 2),
            size=tuple(size),
            mode="bilinear",
            align_corners=False,
            antialias=antialias,
        )
        rgb = colour.clamp(0, 1).permute(0, 2, 3, 1).numpy()
    return rgb, resize_depth(depth, size)


def kb_crop(rgb: np.ndarray, depth: np.ndarray, size: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
    """KITTI-benchmark crop to `size`: the bottom rows and the centred columns; frames smaller than `size` are first
    scaled up (keeping their aspect) just enough to cover it."""
    height, width = rgb.shape[1:3]
    scale = max(size[0] / height, size[1] / width)
    if scale > 1:
        rgb, depth = resize(rgb, depth, (int(np.ceil(height * scale)), int(np.ceil(width * scale))), antialias=False)
        height, width = rgb.shape[1:3]
    top, left = height - size[0], (width - size[1]) // 2
    return rgb[:, top:, left : left + size[1]], depth[:, top:, left : left + size[1]]
