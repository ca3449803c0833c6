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

from dvd.training.datasets_base import DepthDataset, Frames, check_num_frames, clip_windows, keep_paired
from dvd.training.datasets_io import existing_dir, read_npy, read_rgb, resize

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


class TartanAirDataset(DepthDataset):
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
        super().__init__("clip", flip)
        self.root = existing_dir(root, "TartanAir")
        self.size = tuple(size)
        self.num_frames = check_num_frames(num_frames)
        self.sequences = tartanair_sequences(self.root)
        self.items = clip_windows([len(s) for s in self.sequences], self.num_frames, stride)
        self.require_items(f"{LAYOUT} under {self.root}, with at least {num_frames} frames per sequence")

    def load(self, item: tuple[int, int]) -> Frames:
        sequence, start = item
        paths = self.sequences[sequence][start : start + self.num_frames]
        rgb = np.stack([read_rgb(p) for p in paths])
        # Clamping first, as the reference does, turns infinite sky into 50 m; NaN survives and skips the clip.
        depth = np.clip(np.stack([read_npy(tartanair_depth_path(p)) for p in paths]), 0.0, MAX_DEPTH)
        rgb, depth = resize(rgb, depth, self.size, antialias=False)
        return Frames(rgb=rgb, depth=depth, valid=np.ones(depth.shape, bool))

    def describe(self, item: tuple[int, int]) -> str:
        sequence, start = item
        return f"{self.num_frames} frames from {self.sequences[sequence][start]}"
