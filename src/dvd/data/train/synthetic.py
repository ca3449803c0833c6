"""Training samples rendered on the fly from the procedural world (`dvd.data.procedural`); no files."""

from __future__ import annotations

from dvd.data.procedural import render_clip, split_seed
from dvd.data.raster import unit_float
from dvd.data.train.base import DepthDataset, Frames, check_num_frames
from dvd.errors import DVDError


class SyntheticDataset(DepthDataset):
    """`num_samples` clips of split `split` ("train", "val" or "test"); item i is the clip of `split_seed(split, i)`.

    `num_frames=1` gives images (the first frame of each world), 4n+1 gives clips. Depth is exact everywhere, so every
    pixel is valid. `scope` defaults to "image" for F=1 and "clip" otherwise, like the reference's image and video sets.
    """

    name = "synthetic"

    def __init__(
        self,
        split: str = "train",
        num_samples: int = 1000,
        num_frames: int = 1,
        size: tuple[int, int] = (64, 96),
        flip: bool = True,
        scope: str | None = None,
    ) -> None:
        super().__init__(scope or ("image" if num_frames == 1 else "clip"), flip)
        if num_samples < 1:
            raise DVDError(f"synthetic data set needs num_samples >= 1, got {num_samples}")
        self.num_frames = check_num_frames(num_frames)
        self.size = size
        self.items = [split_seed(split, index) for index in range(num_samples)]

    def load(self, item: int) -> Frames:
        clip = render_clip(item, self.num_frames, *self.size)
        return Frames(rgb=unit_float(clip.rgb), depth=clip.depth, valid=clip.depth > 0)

    def describe(self, item: int) -> str:
        return f"synthetic seed {item}"
