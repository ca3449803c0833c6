"""The built-in synthetic benchmark: clips of the procedural world of ``dvd.data.procedural`` with exact depth,
intrinsics and camera poses, rendered on demand (no download, no root).

Default split ``synthetic_test``: clips 0-3 of the synthetic "test" split, 61 frames each at 96x128, range
(1e-3, 20) m (every rendered depth lies inside the room, well within it). Frames are rendered only when asked for,
so ``--frames 9`` renders 9 frames per clip.
"""

from __future__ import annotations

import numpy as np

from dvd.data.benchmarks.base import DatasetReader, Frame, Sequence
from dvd.data.procedural import render_frames, split_seed
from dvd.errors import DVDError

CLIP_FRAMES = 61
HEIGHT, WIDTH = 96, 128


def _seed(sequence: str) -> int:
    split, _, index = sequence.rpartition("_")
    if not index.isdigit():
        raise DVDError(f"synthetic sequence names look like test_0003, got {sequence!r}")
    return split_seed(split, int(index))


class Synthetic(DatasetReader):
    name = "synthetic"
    min_depth, max_depth = 1e-3, 20.0
    default_split = "synthetic_test"
    needs_root = False

    def frame_ids(self, sequence: str) -> list[str]:
        _seed(sequence)
        return [f"{k:04d}" for k in range(CLIP_FRAMES)]

    def read_frame(self, sequence: str, frame_id: str) -> Frame:
        loaded = self.load_frames(sequence, [frame_id])
        return Frame(loaded.depth[0], loaded.rgb[0], intrinsics=loaded.intrinsics[0], pose=loaded.poses[0])

    def load_frames(self, sequence: str, ids: list[str]) -> Sequence:
        clip = render_frames(_seed(sequence), [int(fid) for fid in ids], HEIGHT, WIDTH)
        # The renderer puts pixel (i, j) at image coordinates (j + 0.5, i + 0.5); the metrics use (j, i).
        shifted = clip.intrinsics.copy()
        shifted[:2, 2] -= 0.5
        return Sequence(
            sequence,
            list(ids),
            clip.depth,
            clip.rgb,
            intrinsics=np.broadcast_to(shifted, (len(ids), 3, 3)),
            poses=clip.poses,
        )
