"""TartanAir clips (image_left/right png + depth_left/right npy), as the reference recipe reads them.

Layout (the official download, unchanged)::

    ROOT/<environment>/<Easy|Hard>/<P000>/image_left/000000_left.png
    ROOT/<environment>/<Easy|Hard>/<P000>/depth_left/000000_left_depth.npy      (float32 metres, [480, 640])

and the same with `right`. Every `image_<side>` folder (searched recursively) with a sibling `depth_<side>` is a
sequence. Depth is clamped to [0, 50] m first (so the far sky becomes 50 m), then resized by nearest to `size`
(native 480x640 in the recipe, so no resize). Clips are `num_frames` consecutive frames (45 in the recipe); the
target's quantiles use every pixel of the whole clip.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from dvd.data.raster import existing_dir, read_npy_depth, read_rgb, unit_float
from dvd.data.train.base import ClipDataset, Frames, keep_paired, resize_sample

TARTANAIR_SIZE = (480, 640)
MAX_DEPTH = 50.0
LAYOUT = (
    "ROOT/<environment>/<Easy|Hard>/<P000>/image_left/000000_left.png with depth in "
    ".../depth_left/000000_left_depth.npy"
)


def tartanair_depth_path(rgb_path: Path) -> Path:
    side = rgb_path.parent.name.removeprefix("image_")
    return rgb_path.parent.parent / f"depth_{side}" / f"{rgb_path.stem}_depth.npy"


def tartanair_sequences(root: Path) -> list[list[Path]]:
    sequences = []
    for image_dir in sorted(p for side in ("left", "right") for p in root.rglob(f"image_{side}") if p.is_dir()):
        side = image_dir.name.removeprefix("image_")
        if (image_dir.parent / f"depth_{side}").is_dir():
            frames = keep_paired("tartanair", sorted(image_dir.glob(f"*_{side}.png")), tartanair_depth_path)
            if frames:
                sequences.append(frames)
    return sequences


class TartanAirDataset(ClipDataset):
    """Clips of `num_frames` consecutive frames, every start `stride` apart, at `size`."""

    name = "tartanair"

    def __init__(
        self,
        root: str | Path,
        num_frames: int = 45,
        size: tuple[int, int] = TARTANAIR_SIZE,
        flip: bool = True,
        stride: int = 1,
    ) -> None:
        super().__init__("clip", flip, num_frames)
        self.root = existing_dir(root, "TartanAir")
        self.size = tuple(size)
        self.set_sequences(tartanair_sequences(self.root), stride)
        self.require_items(f"{LAYOUT} under {self.root}, with at least {num_frames} frames per sequence")

    def load(self, item: tuple[int, int]) -> Frames:
        paths = self.window(item)
        rgb = unit_float(np.stack([read_rgb(p) for p in paths]))
        # Clamping first, as the reference does, turns infinite sky into 50 m; NaN survives and skips the clip.
        depth = np.clip(np.stack([read_npy_depth(tartanair_depth_path(p)) for p in paths]), 0.0, MAX_DEPTH)
        rgb, depth = resize_sample(rgb, depth, self.size, antialias=False)
        return Frames(rgb=rgb, depth=depth, valid=np.ones(depth.shape, bool))
