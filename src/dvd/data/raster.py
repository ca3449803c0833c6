"""Pixels and depth maps as arrays: the file formats every data set shares, the crops and the resizes.

One reader per format and one rule per resize, so training and evaluation read the same file to the same array:
RGB is uint8 [H,W,3] here (`unit_float` gives the [0,1] float32 that the training readers and Sintel use), depth
maps are float32 metres.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, TypeVar

import numpy as np
from PIL import Image

from dvd.errors import DVDError

if TYPE_CHECKING:
    import torch

# torch is imported by the resizes only, so that the readers of `dvd.io` (which convert colour here) stay light.
Frames = TypeVar("Frames", np.ndarray, "torch.Tensor")

RGB_SUFFIXES = (".png", ".jpg", ".jpeg")
PNG16_MODES = ("I;16", "I;16B", "I")
KB_SIZE = (352, 1216)


def existing_dir(root: str | Path, what: str) -> Path:
    """``root`` as a Path, or DVDError when it is not a folder (a wrong root fails before anything is listed)."""
    path = Path(root)
    if not path.is_dir():
        raise DVDError(
            f"{what} root {path} does not exist or is not a directory: pass the folder that holds the data set"
        )
    return path


def require_file(path: Path, hint: str = "check the data set root and its layout (docs/evaluation.md)") -> Path:
    """``path`` itself, or DVDError naming it and ``hint`` when it is not a file."""
    if not path.is_file():
        raise DVDError(f"missing file {path}: {hint}")
    return path


def read_rgb(path: Path) -> np.ndarray:
    """uint8 [H, W, 3] from any 8-bit image file (grey or RGBA images are converted)."""
    with Image.open(require_file(path)) as image:
        return np.asarray(image.convert("RGB"))


INTEGER_COLOUR_SCALES = {np.dtype(np.uint8): 255.0, np.dtype(np.uint16): 65535.0}


def unit_float(rgb: np.ndarray) -> np.ndarray:
    """uint8 or uint16 colour as float32 in [0, 1], the range the model and its training targets work in; float32
    colour (already in that range) is returned as it is."""
    if rgb.dtype == np.float32:
        return rgb
    return rgb.astype(np.float32) / np.float32(INTEGER_COLOUR_SCALES[rgb.dtype])


def read_png16(path: Path) -> np.ndarray:
    """The raw integer values of a 16-bit single-channel PNG as float32 [H, W] (scaling is the caller's unit)."""
    with Image.open(require_file(path)) as image:
        if image.mode not in PNG16_MODES:
            raise DVDError(f"{path} is a {image.mode} image: expected a 16-bit single-channel PNG of depth")
        return np.asarray(image, dtype=np.float32)


def read_png_depth(path: Path, units_per_metre: float) -> np.ndarray:
    """A 16-bit depth PNG divided by ``units_per_metre``: float32 metres [H, W] (0 stays 0 = invalid)."""
    return read_png16(path) / np.float32(units_per_metre)


def read_npy(path: Path) -> np.ndarray:
    """The array of a ``.npy`` file as stored (no pickles: a data set holds numbers, never code)."""
    return np.load(require_file(path), allow_pickle=False)


def read_npy_depth(path: Path) -> np.ndarray:
    """float32 [H, W] from a ``.npy`` depth map; a leading or trailing axis of size 1 is dropped."""
    depth = read_npy(path)
    if depth.ndim == 3 and 1 in (depth.shape[0], depth.shape[-1]):
        depth = depth.reshape(depth.shape[1:] if depth.shape[0] == 1 else depth.shape[:-1])
    if depth.ndim != 2:
        raise DVDError(f"{path} holds an array of shape {depth.shape}: expected a 2-D depth map [H,W]")
    return depth.astype(np.float32)


def read_mask_png(path: Path) -> np.ndarray:
    """Boolean [H, W]: non-zero pixels are True."""
    with Image.open(require_file(path)) as image:
        return np.asarray(image.convert("L")) > 0


def read_matte_png(path: Path) -> np.ndarray:
    """Foreground matte float32 [H, W] in [0, 1] from an 8-bit PNG."""
    with Image.open(require_file(path)) as image:
        return np.asarray(image.convert("L"), dtype=np.float32) / 255.0


def kb_crop(frames: np.ndarray, size: tuple[int, int] = KB_SIZE) -> np.ndarray:
    """The KITTI-benchmark crop of [T, H, W] or [T, H, W, C] frames to ``size``: the bottom rows and the centred
    columns (352x1216 by default)."""
    height, width = frames.shape[1:3]
    if height < size[0] or width < size[1]:
        raise DVDError(f"KITTI frame of {height}x{width} is smaller than the {size[0]}x{size[1]} benchmark crop")
    top, left = height - size[0], (width - size[1]) // 2
    return frames[:, top : top + size[0], left : left + size[1]]


def resize_nearest(
    array: np.ndarray,
    size: tuple[int, int],
    exact: bool = False,
    channels_last: bool = False,
    index_dtype: type[np.floating] = np.float64,
) -> np.ndarray:
    """Nearest-neighbour resize of [..., H, W] (or [..., H, W, C] with ``channels_last``) to ``size`` (H, W).

    Values are copied, never blended, so depth stays real depth across an edge. ``exact`` takes source index
    ``floor((i + 0.5) * in / out)`` (torch "nearest-exact", torchvision NEAREST_EXACT), otherwise
    ``floor(i * in / out)`` (torch's legacy "nearest"). The products are evaluated in ``index_dtype``: float64 as
    the benchmark protocols compute them; float32 gives exactly the pixels torch's legacy "nearest" picks on
    float32 maps, as the training recipe resizes depth. The two differ by one pixel for some sizes.
    """
    axis = array.ndim - (3 if channels_last else 2)
    offset = index_dtype(0.5 if exact else 0.0)
    out = array
    for step, (out_size, in_size) in enumerate(zip(size, array.shape[axis : axis + 2])):
        scale = index_dtype(in_size) / index_dtype(out_size)
        index = np.floor((np.arange(out_size, dtype=index_dtype) + offset) * scale).astype(np.int64)
        out = np.take(out, np.minimum(index, in_size - 1), axis=axis + step)
    return out


def resize_frames(frames: Frames, size: tuple[int, int], antialias: bool = False) -> Frames:
    """Resize a stack of frames to size=(H, W): bilinear, align_corners=False, in float32.

    `frames` is [T, H, W, C] or, for single-channel maps such as disparity, [T, H, W]; numpy arrays or torch
    tensors (kept on their device). Returns the same type and layout, float32, or the input itself untouched when
    it already has that size (as the reference does). Inference and evaluation use no antialiasing; `antialias`
    matches PIL's bilinear downscaling, which the training recipe uses for Hypersim and folders of images.
    """
    if frames.ndim not in (3, 4):
        raise ValueError(f"expected frames [T,H,W] or [T,H,W,C], got shape {tuple(frames.shape)}")
    if tuple(frames.shape[1:3]) == tuple(size):
        return frames
    import torch
    import torch.nn.functional as F

    tensor = torch.from_numpy(np.ascontiguousarray(frames)) if isinstance(frames, np.ndarray) else frames
    channels_first = tensor.unsqueeze(1) if tensor.ndim == 3 else tensor.permute(0, 3, 1, 2)
    resized = F.interpolate(
        channels_first.to(torch.float32), size=tuple(size), mode="bilinear", align_corners=False, antialias=antialias
    )
    resized = resized.squeeze(1) if tensor.ndim == 3 else resized.permute(0, 2, 3, 1)
    resized = resized.contiguous()
    return resized.numpy() if isinstance(frames, np.ndarray) else resized


def resize_pixels(frame: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """One RGB frame [H, W, 3] resized to size=(H, W) by the rule of `resize_frames` (bilinear, align_corners=False,
    no antialias), kept in its own type. float32 frames get exactly `resize_frames`' values. uint8 frames go
    through torch's own uint8 bilinear kernel (fixed-point weights, the path torchvision takes for uint8 video):
    within one level (1/255) of the float result, against half a level for a float resize rounded to 8 bits, at
    under half its cost (2.2 vs 5.9 ms of CPU for 1280x720 -> 864x480). uint16 frames are interpolated in float32
    and rounded back (within half a level). A frame of that size already is returned untouched.

    The engine keeps video frames in their 8 bits at model size: a quarter of the memory of float32, and each
    window goes to the device as uint8 and is converted there.
    """
    if frame.ndim != 3 or frame.shape[-1] != 3:
        raise ValueError(f"expected one RGB frame [H,W,3], got shape {frame.shape}")
    if tuple(frame.shape[:2]) == tuple(size):
        return frame
    if frame.dtype not in INTEGER_COLOUR_SCALES:
        return resize_frames(frame[None], size)[0]
    import torch
    import torch.nn.functional as F

    # Channels-last all the way: no transposed copy of the frame, and torch's channels-last bilinear kernels.
    pixels = torch.from_numpy(np.ascontiguousarray(frame)).permute(2, 0, 1)[None]
    if pixels.dtype == torch.uint8:
        resized = F.interpolate(pixels, size=tuple(size), mode="bilinear", align_corners=False)
    else:
        values = pixels.to(torch.float32, memory_format=torch.channels_last)
        resized = F.interpolate(values, size=tuple(size), mode="bilinear", align_corners=False)
        # A bilinear blend stays within its inputs' range, so rounding cannot leave the type's range.
        resized = resized.round_().to(pixels.dtype)
    return resized.permute(0, 2, 3, 1)[0].contiguous().numpy()
