"""Which batch every micro-step trains on: a pure function of (seed, step, micro-step, rank).

Each micro-step of each process is a *slot*, numbered ``slot = (step · accum + micro) · world + rank``. The slot
number fixes the source (by weight, among those the schema allows at that step), the sample indices and the
per-sample seeds of the readers' augmentations (the flip). So:

- resuming at step k replays exactly the batches an uninterrupted run would have seen, with no loader state to save;
- the source is drawn by `SourceSampler` (weights as configured) from the slot number;
- one process with accumulation A·W sees the same samples as W processes with accumulation A (the DDP test);
- image batches (F = 1, `image_batch` samples) and clip batches (F = `clip_frames`, `video_batch` clips) never mix.
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import torch
from torch.utils.data import Dataset, Sampler

from dvd.data.train import (
    DepthDataset,
    HypersimDataset,
    SourceSampler,
    SyntheticDataset,
    TartanAirDataset,
    TrainingFolder,
    VKittiImageDataset,
    VKittiVideoDataset,
)
from dvd.errors import DVDError
from dvd.model.dvd_model import DVDModel
from dvd.training.config import DataSection, SourceSection, source_is_clip


def build_dataset(source: SourceSection, data: DataSection, flip: bool) -> DepthDataset:
    """The reader for one configured source. Readers list their files here, so a wrong layout fails before any
    training step (and `frame_size` loads one sample)."""
    frames = data.clip_frames if source_is_clip(source) else 1
    sized = {} if source.height is None else {"size": (source.height, source.width or source.height)}
    if source.width is not None and source.height is None:
        raise DVDError(f"data source {source.kind}: give height together with width")
    if source.kind == "synthetic":
        dataset = SyntheticDataset(
            split=source.split, num_samples=source.samples, num_frames=frames, flip=flip, **sized
        )
    elif source.kind == "hypersim":
        dataset = HypersimDataset(source.path, flip=flip, **sized)
    elif source.kind == "vkitti" and frames > 1:
        dataset = VKittiVideoDataset(source.path, num_frames=frames, flip=flip, **sized)
    elif source.kind == "vkitti":
        dataset = VKittiImageDataset(source.path, flip=flip, **sized)
    elif source.kind == "tartanair":
        dataset = TartanAirDataset(source.path, num_frames=frames, flip=flip, **sized)
    else:
        dataset = TrainingFolder(
            source.path,
            num_frames=frames,
            flip=flip,
            depth_scale=source.depth_scale,
            depth_range=tuple(source.depth_range),
            **sized,
        )
    return dataset


def frame_size(dataset: DepthDataset) -> tuple[int, int]:
    """(H, W) of a reader's frames, from its first sample: loading it makes data the reader cannot load fail before
    the base model loads. (A sample draws its flip from torch's generator: call this before seeding the run.)"""
    height, width = dataset[0]["rgb"].shape[-2:]
    return height, width


def check_fits_backbone(
    sources: list[SourceSection], sizes: list[tuple[int, int]], data: DataSection, model: DVDModel
) -> None:
    """The clips and frames the sources give (frames of `sizes`, by `frame_size`) must suit the backbone the
    training starts from: clips of a length its VAE encodes (its frame rule), sides multiples of its spatial
    stride."""
    rule, stride = model.frame_rule, model.spatial_stride
    if any(source_is_clip(source) for source in sources) and not rule.fits(data.clip_frames):
        nearest = " or ".join(str(count) for count in rule.nearest(data.clip_frames))
        raise DVDError(
            f"data.clip_frames is {data.clip_frames}, but the {model.family} backbone's VAE encodes clips of {rule} "
            f"frames: set data.clip_frames to {nearest}"
        )
    for source, (height, width) in zip(sources, sizes, strict=True):
        if height % stride or width % stride:
            raise DVDError(
                f"data source {source.kind} ({source.path or source.split}) gives {height}x{width} frames; the "
                f"{model.family} backbone needs multiples of {stride}: set height and width on the source"
            )


def collate(samples: list[dict[str, torch.Tensor]]) -> dict[str, torch.Tensor]:
    """Stack samples; pixels become [B,3,F,H,W] as the VAE wants them."""
    batch = {key: torch.stack([s[key] for s in samples]) for key in samples[0]}
    batch["rgb"] = batch["rgb"].permute(0, 2, 1, 3, 4).contiguous()
    batch["depth_target"] = batch["depth_target"].permute(0, 2, 1, 3, 4).contiguous()
    return batch


class SlotBatches(Dataset):
    """Map-style and unbounded: item `slot` is that slot's whole batch (draw with `SlotSampler`, `batch_size=None`)."""

    def __init__(
        self,
        datasets: list[DepthDataset],
        sources: list[SourceSection],
        data: DataSection,
        seed: int,
        world_size: int,
        grad_accum: int,
    ) -> None:
        self.datasets, self.sources, self.data, self.seed = datasets, sources, data, seed
        self.world_size, self.grad_accum = world_size, grad_accum
        self.is_clip = [source_is_clip(s) for s in sources]
        self._samplers: dict[tuple[int, ...], SourceSampler] = {}

    def slot(self, step: int, micro: int, rank: int) -> int:
        return (step * self.grad_accum + micro) * self.world_size + rank

    def step_of(self, slot: int) -> int:
        return slot // (self.grad_accum * self.world_size)

    def active_sources(self, step: int) -> list[int]:
        """Source indices the schema allows at `step`."""
        schema = self.data.schema
        if schema == "joint":
            return list(range(len(self.sources)))
        clips_now = schema == "video" or step >= self.data.image_steps
        return [i for i, clip in enumerate(self.is_clip) if clip == clips_now]

    def source_of(self, slot: int) -> int:
        """The source index a slot draws from (by weight among the sources active at its step)."""
        active = tuple(self.active_sources(self.step_of(slot)))
        if active not in self._samplers:
            self._samplers[active] = SourceSampler({str(i): self.sources[i].weight for i in active}, self.seed)
        return int(self._samplers[active].draw(slot))

    def __getitem__(self, slot: int) -> dict[str, torch.Tensor]:
        source = self.source_of(slot)
        # A stream apart from the source draw's (seed, slot) one, for the sample indices and augmentation seeds.
        rng = np.random.default_rng((self.seed, slot, 1))
        dataset = self.datasets[source]
        size = self.data.video_batch if self.is_clip[source] else self.data.image_batch
        samples = []
        for index, sample_seed in zip(rng.integers(len(dataset), size=size), rng.integers(2**62, size=size)):
            # The readers draw their flip from torch's global generator: seed it per sample, restore it after.
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(int(sample_seed))
                samples.append(dataset[int(index)])
        return collate(samples)


class SlotSampler(Sampler[int]):
    """The slots of one process from `start_step` (inclusive) to `end_step` (exclusive), in training order."""

    def __init__(self, batches: SlotBatches, rank: int, start_step: int, end_step: int) -> None:
        self.batches, self.rank, self.start_step, self.end_step = batches, rank, start_step, end_step

    def __iter__(self) -> Iterator[int]:
        for step in range(self.start_step, self.end_step):
            for micro in range(self.batches.grad_accum):
                yield self.batches.slot(step, micro, self.rank)

    def __len__(self) -> int:
        return (self.end_step - self.start_step) * self.batches.grad_accum
