"""Users' own data: folders of RGB frames with matching depth frames.

Layout::

    ROOT/<sequence>/rgb/<frame>.png|.jpg|.jpeg
    ROOT/<sequence>/depth/<frame>.npy      float depth in metres, [H,W]
                   or   <frame>.png      16-bit PNG; metres = value * depth_scale (default 0.001: millimetres)

ROOT may also be a single sequence (ROOT/rgb and ROOT/depth). A depth frame belongs to the RGB frame with the same
name stem (`0001.jpg` <-> `0001.npy`); RGB frames without depth are left out with a warning. Frames sort by name,
so number them with leading zeros. Depth 0 means "unknown"; valid pixels are `depth_range[0] < d < depth_range[1]`.
Depth maps of another size than their RGB frame are resized to it by nearest neighbour.

`num_frames=1` gives images; 4n+1 gives clips of consecutive frames within a sequence. The target's quantiles
are taken per image for images and over the whole clip for clips unless `scope` says otherwise.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np

from dvd.data.raster import RGB_SUFFIXES, existing_dir, read_npy_depth, read_png16, read_rgb, unit_float
from dvd.data.train.base import ClipDataset, Frames, keep_paired, resize_depth, resize_sample
from dvd.errors import DVDError

LAYOUT = "ROOT/<sequence>/rgb/<frame>.png|.jpg with depth in ROOT/<sequence>/depth/<frame>.npy|.png (16-bit)"


def folder_depth_path(rgb_path: Path) -> Path:
    """The depth file of an RGB frame: `.npy` when present, else the 16-bit `.png` (which may not exist)."""
    depth_dir = rgb_path.parent.parent / "depth"
    npy = depth_dir / f"{rgb_path.stem}.npy"
    return npy if npy.is_file() else depth_dir / f"{rgb_path.stem}.png"


def folder_sequences(root: Path) -> list[list[Path]]:
    sequence_dirs = [root] if (root / "rgb").is_dir() else sorted(p for p in root.iterdir() if (p / "rgb").is_dir())
    sequences = []
    for sequence_dir in sequence_dirs:
        if not (sequence_dir / "depth").is_dir():
            raise DVDError(f"{sequence_dir} has rgb/ but no depth/ folder: expected {LAYOUT}")
        frames = sorted(p for p in (sequence_dir / "rgb").iterdir() if p.suffix.lower() in RGB_SUFFIXES)
        frames = keep_paired("folder", frames, folder_depth_path)
        if frames:
            sequences.append(frames)
    return sequences


class TrainingFolder(ClipDataset):
    """Images (`num_frames=1`) or clips (4n+1 consecutive frames, starts `stride` apart) from the folder layout above,
    resized to `size` when given (bilinear RGB, nearest depth)."""

    name = "folder"

    def __init__(
        self,
        root: str | Path,
        num_frames: int = 1,
        size: tuple[int, int] | None = None,
        flip: bool = True,
        depth_scale: float = 0.001,
        depth_range: tuple[float, float] = (0.0, math.inf),
        scope: str | None = None,
        stride: int = 1,
    ) -> None:
        super().__init__(scope or ("image" if num_frames == 1 else "clip"), flip, num_frames)
        self.root = existing_dir(root, "depth folder")
        self.size = None if size is None else tuple(size)
        self.depth_scale = depth_scale
        self.depth_range = depth_range
        self.set_sequences(folder_sequences(self.root), stride)
        self.require_items(f"{LAYOUT} under {self.root}, with at least {num_frames} frames per sequence")

    def read_depth(self, rgb_path: Path) -> np.ndarray:
        path = folder_depth_path(rgb_path)
        return read_npy_depth(path) if path.suffix == ".npy" else read_png16(path) * np.float32(self.depth_scale)

    def load(self, item: tuple[int, int]) -> Frames:
        paths = self.window(item)
        rgb = unit_float(np.stack([read_rgb(p) for p in paths]))
        size = self.size or rgb.shape[1:3]
        depth = np.concatenate([resize_depth(self.read_depth(p)[None], rgb.shape[1:3]) for p in paths])
        rgb, depth = resize_sample(rgb, depth, size, antialias=True)
        with np.errstate(invalid="ignore"):
            valid = (depth > self.depth_range[0]) & (depth < self.depth_range[1])
        return Frames(rgb=rgb, depth=depth, valid=valid)
