"""Predictions saved by any tool: one affine-invariant disparity array per sequence, found by sequence name.

For a sequence ``S`` (image benchmarks: the RGB path without extension, e.g. ``test/kitchen_0004/rgb_0001``),
the first of these that exists is used:

- ``PRED/S.npy`` — [T, H, W] (or [H, W] for a single image) float disparity, larger = nearer;
- ``PRED/S.npz`` — the same under the key ``disparity``, or as the archive's only array;
- ``PRED/S/disparity.npy`` — as written by ``dvd predict -o PRED``.

The array must hold either exactly the evaluated frames or every frame of the sequence (the evaluated ones are
then picked out, e.g. to score the first 110 frames of a whole-video prediction). A prediction of another size is
resized to the GT size with bilinear filtering (half-pixel centres, no antialias); the record says so.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from dvd.data.benchmarks.base import SkipSequence
from dvd.data.raster import resize_frames
from dvd.errors import DVDError


def prediction_file(root: Path, sequence: str) -> Path | None:
    """The file holding ``sequence``'s prediction under ``root``, or None."""
    candidates = [root / f"{sequence}.npy", root / f"{sequence}.npz", root / sequence / "disparity.npy"]
    return next((path for path in candidates if path.is_file()), None)


def _read(path: Path) -> np.ndarray:
    if path.suffix == ".npy":
        return np.load(path, mmap_mode="r", allow_pickle=False)
    with np.load(path, allow_pickle=False) as archive:
        if "disparity" in archive.files:
            return archive["disparity"]
        if len(archive.files) == 1:
            return archive[archive.files[0]]
        raise DVDError(f"{path} holds {', '.join(archive.files)}: store the prediction under the key 'disparity'")


def load_prediction(
    root: Path, sequence: str, frame_positions: list[int], total_frames: int, size: tuple[int, int]
) -> tuple[np.ndarray, list[str]]:
    """The prediction of ``sequence`` for the evaluated frames, float32 [T, H, W] at ``size``, and notes.

    ``frame_positions`` are the evaluated frames' indices among the sequence's ``total_frames``. Raises
    SkipSequence when the file is missing, has another frame count or holds non-finite values.
    """
    path = prediction_file(root, sequence)
    if path is None:
        raise SkipSequence(f"no prediction: expected {root / sequence}.npy, .npz or {root / sequence}/disparity.npy")
    array = _read(path)
    if array.ndim == 2:
        array = array[None]
    if array.ndim != 3:
        raise SkipSequence(f"prediction {path} has shape {array.shape}: expected [T, H, W] disparity")
    notes = []
    count = len(frame_positions)
    if len(array) == count:
        selected = np.array(array, dtype=np.float32)  # a writable copy, not the read-only memory map
    elif len(array) == total_frames:
        selected = np.array(array[frame_positions], dtype=np.float32)
        notes.append(f"prediction covers all {total_frames} frames; the {count} evaluated ones were picked out")
    else:
        raise SkipSequence(
            f"prediction {path} has {len(array)} frames, but {count} are evaluated (of {total_frames} in the sequence)"
        )
    bad = int(np.count_nonzero(~np.isfinite(selected)))
    if bad:
        raise SkipSequence(f"prediction {path} has {bad} NaN/inf values")
    if selected.shape[1:] != tuple(size):
        notes.append(
            f"prediction resized bilinearly from {selected.shape[1]}x{selected.shape[2]} "
            f"to the GT size {size[0]}x{size[1]}"
        )
        selected = resize_frames(selected, size)
    return selected, notes
