"""Training data sets: one import for the readers, the weighted source sampler and the target.

Every reader is a torch Dataset of dicts (see `dvd.data.train.base`): ``rgb`` and ``depth_target`` float32
[F,3,H,W] in [0,1], ``depth`` float32 [F,H,W] metres and ``valid`` bool [F,H,W]. The readers:

- `SyntheticDataset`   the built-in procedural world, no files (`synthetic`)
- `HypersimDataset`    images, Apple's layout (`hypersim`)
- `VKittiImageDataset` Virtual KITTI 2 frames, KITTI-benchmark crop (`vkitti`)
- `VKittiVideoDataset` Virtual KITTI 2 clips, resized (`vkitti`)
- `TartanAirDataset`   TartanAir clips (`tartanair`)
- `TrainingFolder`     your own rgb/ + depth/ folders, images or clips (`folder`)
"""

from __future__ import annotations

from dvd.data.train.base import DepthDataset, Frames, check_num_frames, clip_windows
from dvd.data.train.folder import TrainingFolder
from dvd.data.train.hypersim import HypersimDataset, planar_from_distance
from dvd.data.train.mixture import SourceSampler
from dvd.data.train.synthetic import SyntheticDataset
from dvd.data.train.target import truncated_disparity, usable_pixels
from dvd.data.train.tartanair import TartanAirDataset
from dvd.data.train.vkitti import VKittiImageDataset, VKittiVideoDataset

__all__ = [
    "DepthDataset",
    "Frames",
    "HypersimDataset",
    "SourceSampler",
    "SyntheticDataset",
    "TartanAirDataset",
    "TrainingFolder",
    "VKittiImageDataset",
    "VKittiVideoDataset",
    "check_num_frames",
    "clip_windows",
    "planar_from_distance",
    "truncated_disparity",
    "usable_pixels",
]
