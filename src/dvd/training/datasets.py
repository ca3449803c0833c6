"""Training data sets: one import for the readers and the weighted source sampler.

Every reader is a torch Dataset of dicts (see `dvd.training.datasets_base`): ``rgb`` and ``depth_target`` float32
[F,3,H,W] in [0,1], ``depth`` float32 [F,H,W] metres and ``valid`` bool [F,H,W]. The readers:

- `SyntheticDataset`   the built-in procedural world, no files (`datasets_synthetic`)
- `HypersimDataset`    images, Apple's layout (`datasets_hypersim`)
- `VKittiImageDataset` Virtual KITTI 2 frames, KITTI-benchmark crop (`datasets_vkitti`)
- `VKittiVideoDataset` Virtual KITTI 2 clips, resized (`datasets_vkitti`)
- `TartanAirDataset`   TartanAir clips (`datasets_tartanair`)
- `FolderDataset`      your own rgb/ + depth/ folders, images or clips (`datasets_folder`)
"""

from __future__ import annotations

from dvd.training.datasets_base import DepthDataset, Frames, check_num_frames, clip_windows
from dvd.training.datasets_folder import FolderDataset
from dvd.training.datasets_hypersim import HypersimDataset, planar_from_distance
from dvd.training.datasets_mixture import DEFAULT_SOURCE_WEIGHTS, SourceSampler
from dvd.training.datasets_synthetic import SyntheticDataset
from dvd.training.datasets_tartanair import TartanAirDataset
from dvd.training.datasets_vkitti import VKittiImageDataset, VKittiVideoDataset

__all__ = [
    "DEFAULT_SOURCE_WEIGHTS",
    "DepthDataset",
    "FolderDataset",
    "Frames",
    "HypersimDataset",
    "SourceSampler",
    "SyntheticDataset",
    "TartanAirDataset",
    "VKittiImageDataset",
    "VKittiVideoDataset",
    "check_num_frames",
    "clip_windows",
    "planar_from_distance",
]
