"""Reading the raster files of the benchmark data sets, and the nearest-neighbour resizes their protocols prescribe
(bilinear resizes go through `dvd.inference.resize.resize_frames`, the one bilinear filter of dvd)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

from dvd.errors import DVDError

SINTEL_TAG = 202021.25


def require_file(path: Path, hint: str = "check the data set root and its layout (README, `dvd eval`)") -> Path:
    """``path`` itself, or DVDError naming it and ``hint`` when it is not a file."""
    if not path.is_file():
        raise DVDError(f"missing file {path}: {hint}")
    return path


def read_rgb(path: Path) -> np.ndarray:
    """uint8 [H, W, 3]."""
    with Image.open(require_file(path)) as image:
        return np.asarray(image.convert("RGB"))


def read_png_depth(path: Path, units_per_metre: float) -> np.ndarray:
    """A 16-bit depth PNG divided by ``units_per_metre``: float32 metres [H, W] (0 stays 0 = invalid)."""
    with Image.open(require_file(path)) as image:
        raw = np.asarray(image)
    if raw.ndim != 2:
        raise DVDError(f"{path} is not a single-channel depth PNG (shape {raw.shape})")
    return raw.astype(np.float32) / np.float32(units_per_metre)


def read_mask_png(path: Path) -> np.ndarray:
    """Boolean [H, W]: non-zero pixels are True."""
    with Image.open(require_file(path)) as image:
        return np.asarray(image.convert("L")) > 0


def read_matte_png(path: Path) -> np.ndarray:
    """Foreground matte float32 [H, W] in [0, 1] from an 8-bit PNG."""
    with Image.open(require_file(path)) as image:
        return np.asarray(image.convert("L"), dtype=np.float32) / 255.0


def read_npy(path: Path) -> np.ndarray:
    return np.load(require_file(path), allow_pickle=False)


def read_sintel_depth(path: Path) -> np.ndarray:
    """MPI Sintel ``.dpt``: float32 tag 202021.25, int32 width, int32 height, then row-major float32 depth."""
    with open(require_file(path), "rb") as handle:
        tag = np.fromfile(handle, dtype="<f4", count=1)
        size = np.fromfile(handle, dtype="<i4", count=2)
        if tag.size != 1 or tag[0] != SINTEL_TAG or size.size != 2:
            raise DVDError(f"{path} is not a Sintel .dpt depth file (wrong tag or truncated header)")
        width, height = int(size[0]), int(size[1])
        depth = np.fromfile(handle, dtype="<f4", count=width * height)
    if depth.size != width * height:
        raise DVDError(f"{path} is truncated: expected {width}x{height} depth values, found {depth.size}")
    return depth.reshape(height, width)


def read_raw_float_depth(path: Path, height: int, width: int) -> np.ndarray:
    """Headerless little-endian float32 depth of a known size (ETH3D); inf becomes 0 (invalid)."""
    depth = np.fromfile(require_file(path), dtype="<f4")
    if depth.size != height * width:
        raise DVDError(f"{path} holds {depth.size} floats, expected {height}x{width}: not an ETH3D depth file")
    depth = depth.reshape(height, width).copy()
    depth[np.isinf(depth)] = 0.0
    return depth


def resize_nearest(array: np.ndarray, size: tuple[int, int], exact: bool, channels_last: bool = False) -> np.ndarray:
    """Nearest-neighbour resize of [..., H, W] (or [..., H, W, C] with ``channels_last``) to ``size`` (H, W).

    ``exact`` takes source index ``floor((i + 0.5) * in / out)`` (torch "nearest-exact", torchvision NEAREST_EXACT);
    otherwise ``floor(i * in / out)`` (torch's legacy "nearest").
    """
    axis = array.ndim - (3 if channels_last else 2)
    offset = 0.5 if exact else 0.0
    out = array
    for step, (out_size, in_size) in enumerate(zip(size, array.shape[axis : axis + 2])):
        index = np.floor((np.arange(out_size) + offset) * (in_size / out_size)).astype(np.int64)
        out = np.take(out, np.minimum(index, in_size - 1), axis=axis + step)
    return out
