"""What every training reader shares: the sample format, the skip rule, the target, the flip, clip windows and the
resize rule.

A reader lists its items at construction (so a wrong layout fails before any training step) and loads one item as
`Frames`; `DepthDataset.__getitem__` turns that into the sample dict the trainer consumes:

- ``rgb``          float32 [F,3,H,W] in [0, 1]
- ``depth_target`` float32 [F,3,H,W] in [0, 1]: truncated disparity (`dvd.data.train.target`), 3 equal channels
- ``depth``        float32 [F,H,W], metres as read (only meaningful where ``valid``), for validation metrics
- ``valid``        bool    [F,H,W]

F is 1 for image readers and the clip length (45 in the recipe) for video readers; the trainer checks that it fits
the backbone's frame rule (4n+1 for Wan), which is the model's concern, not the data's.
"""

from __future__ import annotations

import logging
from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from dvd.data.raster import resize_frames, resize_nearest
from dvd.data.train.target import truncated_disparity, usable_pixels
from dvd.errors import DVDError

logger = logging.getLogger("dvd.data.train")

FLIP_PROBABILITY = 0.5


@dataclass
class Frames:
    """One loaded sample before normalisation: rgb float32 [F,H,W,3] in [0,1], depth float32 [F,H,W] metres,
    valid bool [F,H,W] (the reader's own validity rule, e.g. a depth range)."""

    rgb: np.ndarray
    depth: np.ndarray
    valid: np.ndarray


def check_num_frames(num_frames: int) -> int:
    """A clip length a reader can give: at least one frame (`dvd.training.batches.check_fits_backbone` checks it
    against the backbone's frame rule)."""
    if isinstance(num_frames, bool) or not isinstance(num_frames, int) or num_frames < 1:
        raise DVDError(f"num_frames must be a whole number of at least 1, got {num_frames!r}")
    return num_frames


def resize_depth(depth: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Nearest-neighbour resize of depth [F,H,W]: values stay real depths, never blend across an edge. The pixels
    picked are those of torch's "nearest" on float32 maps, which the training recipe uses."""
    return resize_nearest(depth, size, index_dtype=np.float32)


def resize_sample(
    rgb: np.ndarray, depth: np.ndarray, size: tuple[int, int], antialias: bool
) -> tuple[np.ndarray, np.ndarray]:
    """Resize rgb [F,H,W,3] bilinearly (clamped to [0, 1]) and depth [F,H,W] by nearest neighbour to `size`.

    `antialias` matches PIL's bilinear downscaling, which the reference uses for Hypersim; its video readers use
    plain F.interpolate (no antialias). RGB already at `size` is returned as it is.
    """
    if rgb.shape[1:3] != tuple(size):
        rgb = resize_frames(rgb, size, antialias=antialias).clip(0.0, 1.0)
    return rgb, resize_depth(depth, size)


def clip_windows(lengths: list[int], num_frames: int, stride: int) -> list[tuple[int, int]]:
    """(sequence index, first frame) of every window of `num_frames` consecutive frames, starts `stride` apart.

    Enumerating every start replaces the reference's random start per draw: a shuffled loader then visits every
    window once per epoch (sequences weigh by their length instead of equally).
    """
    if stride < 1:
        raise DVDError(f"clip stride must be >= 1, got {stride}")
    return [(seq, start) for seq, n in enumerate(lengths) for start in range(0, n - num_frames + 1, stride)]


def keep_paired(name: str, frames: list[Path], partner: Callable[[Path], Path]) -> list[Path]:
    """The frames whose partner file (their depth) exists; leaving any out is logged, never silent."""
    kept = [p for p in frames if partner(p).is_file()]
    if len(kept) < len(frames):
        missing = next(p for p in frames if not partner(p).is_file())
        logger.warning(
            "%s: %d of %d frames have no depth file and are left out (first: %s, expected %s)",
            name,
            len(frames) - len(kept),
            len(frames),
            missing,
            partner(missing),
        )
    return kept


def _problem(frames: Frames, scope: str) -> str | None:
    """Why a sample cannot be used, or None. NaN/inf anywhere skips it, as the reference does."""
    if not np.isfinite(frames.depth).all():
        return "NaN/inf depth"
    if not np.isfinite(frames.rgb).all():
        return "NaN/inf colour"
    usable = usable_pixels(frames.depth, frames.valid)
    per_scope = usable.reshape(len(usable), -1).any(axis=1)
    if not (per_scope.any() if scope == "clip" else per_scope.all()):
        return "no valid depth pixel"
    return None


class DepthDataset(torch.utils.data.Dataset, ABC):
    """Base of every reader. Subclasses fill `self.items` in `__init__` and implement `load` and `describe`.

    A sample that cannot be used is skipped for the next index, like the reference, but never silently: each skip
    logs a warning with the running count, also kept in `self.skipped` (per process when a DataLoader uses workers).
    """

    name = "dataset"

    def __init__(self, scope: str, flip: bool) -> None:
        self.scope = scope
        self.flip = flip
        self.items: list = []
        self.skipped = 0

    @abstractmethod
    def load(self, item) -> Frames:
        """Read one item from disk (or render it)."""

    @abstractmethod
    def describe(self, item) -> str:
        """Where an item comes from, for warnings."""

    def require_items(self, expected: str) -> None:
        """Fail at construction, naming the expected layout, when nothing usable was found."""
        if not self.items:
            raise DVDError(f"{self.name}: no samples found: expected {expected}")

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        for offset in range(len(self.items)):
            item = self.items[(index + offset) % len(self.items)]
            frames = self.load(item)
            problem = _problem(frames, self.scope)
            if problem is None:
                return self.to_sample(frames)
            self.skipped += 1
            logger.warning(
                "%s: skipped %s (%s); %d sample(s) skipped so far",
                self.name,
                self.describe(item),
                problem,
                self.skipped,
            )
        raise DVDError(f"{self.name}: every sample was skipped (NaN/inf depth or no valid pixel); check the data")

    def to_sample(self, frames: Frames) -> dict[str, torch.Tensor]:
        rgb, depth, valid = frames.rgb, frames.depth, frames.valid
        # One draw per sample, so a clip is flipped as a whole.
        if self.flip and torch.rand(()).item() < FLIP_PROBABILITY:
            rgb, depth, valid = rgb[:, :, ::-1], depth[:, :, ::-1], valid[:, :, ::-1]
        target = truncated_disparity(depth, valid, self.scope)
        return {
            "rgb": torch.from_numpy(np.ascontiguousarray(rgb.transpose(0, 3, 1, 2), dtype=np.float32)),
            "depth_target": torch.from_numpy(target).unsqueeze(1).expand(-1, 3, -1, -1).contiguous(),
            "depth": torch.from_numpy(np.ascontiguousarray(depth, dtype=np.float32)),
            "valid": torch.from_numpy(np.ascontiguousarray(usable_pixels(depth, valid))),
        }


class ClipDataset(DepthDataset):
    """A reader whose items are windows of `num_frames` consecutive frames of its sequences (`clip_windows`).

    Subclasses call `__init__` first (so a wrong clip length fails before any file is listed), then
    `set_sequences` with their frame paths, and load `self.window(item)`.
    """

    def __init__(self, scope: str, flip: bool, num_frames: int) -> None:
        super().__init__(scope, flip)
        self.num_frames = check_num_frames(num_frames)
        self.sequences: list[list[Path]] = []

    def set_sequences(self, sequences: list[list[Path]], stride: int) -> None:
        self.sequences = sequences
        self.items = clip_windows([len(s) for s in sequences], self.num_frames, stride)

    def window(self, item: tuple[int, int]) -> list[Path]:
        """The frame paths of item (sequence index, first frame)."""
        sequence, start = item
        return self.sequences[sequence][start : start + self.num_frames]

    def describe(self, item: tuple[int, int]) -> str:
        sequence, start = item
        return f"{self.num_frames} frame(s) from {self.sequences[sequence][start]}"
