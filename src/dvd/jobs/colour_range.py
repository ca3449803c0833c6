"""The 8/16-bit range of a whole video (the "video" colour-range rule): which frames and pixels it is measured on.

The range is `DisparityRange.fit` on every `range_stride(T)`-th frame of a video of T frames (at most RANGE_FRAMES
frames, evenly spaced from the first), each subsampled on a regular grid to about RANGE_PIXELS values: 4M values
at most, deterministic, whatever the length. `video_range` measures it on a finished [T, H, W] array or file, one
frame in memory at a time. `RangeSample` gathers the same samples from frames as they pass, before T is known, so
that the range is ready as soon as the last frame is stitched, while the frames are still being written
(`dvd.jobs.outputs` then writes the png16/mp4/sbs outputs right behind disparity.npy).
"""

from __future__ import annotations

import numpy as np

from dvd.io.writers import DisparityRange

RANGE_FRAMES = 256
RANGE_PIXELS = 1 << 14


def range_stride(count: int) -> int:
    """Every how many frames of `count` one is sampled: the smallest power of two that samples at most
    RANGE_FRAMES of them."""
    stride = 1
    while -(-count // stride) > RANGE_FRAMES:
        stride *= 2
    return stride


class RangeSample:
    """The grid samples of the frames `video_range` reads, gathered from frames [H, W] offered in order.

    While the length is unknown every `stride`-th frame is kept; when more than RANGE_FRAMES are, the stride doubles
    and every other sample goes, so memory stays within RANGE_FRAMES samples and at the end the samples are exactly
    those of `range_stride(count)`.
    """

    def __init__(self, size: tuple[int, int]) -> None:
        height, width = size
        self._step = max(1, int(np.sqrt(height * width / RANGE_PIXELS)))
        self._stride = 1
        self._samples: dict[int, np.ndarray] = {}

    def wants(self, index: int) -> bool:
        """Whether frame `index` is sampled (so that the caller prepares it only then)."""
        return index % self._stride == 0

    def add(self, index: int, frame: np.ndarray) -> None:
        """Offer frame `index`; its grid is copied out, so the frame is not kept."""
        if not self.wants(index):
            return
        self._samples[index] = np.asarray(frame)[:: self._step, :: self._step].copy()
        while len(self._samples) > RANGE_FRAMES:
            self._stride *= 2
            self._samples = {kept: grid for kept, grid in self._samples.items() if kept % self._stride == 0}

    def range(self, count: int) -> DisparityRange:
        """The range of a video of `count` frames, all of them offered; DVDError if none of them is finite."""
        picks = range(0, count, range_stride(count))
        if sorted(self._samples) != list(picks):
            raise ValueError(f"the samples are of frames {sorted(self._samples)}, not every {picks.step}-th of {count}")
        return DisparityRange.fit(np.stack([self._samples[index] for index in picks]))


def video_range(disparity: np.ndarray) -> DisparityRange:
    """The range of a whole video [T, H, W] (an array, a memmap, `NpyFrames`), reading only the frames it samples,
    one at a time."""
    count, height, width = disparity.shape
    sample = RangeSample((height, width))
    for index in range(0, count, range_stride(count)):
        sample.add(index, np.asarray(disparity[index]))
    return sample.range(count)
