"""Predictions saved by any tool: one affine-invariant disparity array per sequence, found by sequence name.

For a sequence ``S`` (image benchmarks: the RGB path without extension, e.g. ``test/kitchen_0004/rgb_0001``),
the first of these that exists is used:

- ``PRED/S.npy`` — [T, H, W] (or [H, W] for a single image) float disparity, larger = nearer;
- ``PRED/S.npz`` — the same under the key ``disparity``, or as the archive's only array;
- ``PRED/S/disparity.npy`` — as written by ``dvd predict -o PRED``.

The array must be floating point and hold either exactly the evaluated frames or every frame of the sequence (the
evaluated ones are then picked out, e.g. to score the first 110 frames of a whole-video prediction). Its frames must
have the GT size or an integer multiple of it (the same aspect ratio); protocols that crop in the prediction's own
grid (``scannet_tae``, as VDA) also take any size within 2 % of the GT's aspect ratio, such as VDA's predictions at
ScanNet's colour size. Scoring brings them to the GT grid (``dvd.evaluation.scoring``). Any other size, a non-float
array or a file numpy cannot read is a skip with the reason, never a silent reinterpretation.
"""

from __future__ import annotations

import zipfile
from pathlib import Path

import numpy as np

from dvd.data.benchmarks.base import SkipSequence


def prediction_file(root: Path, sequence: str) -> Path | None:
    """The file holding ``sequence``'s prediction under ``root``, or None."""
    candidates = [root / f"{sequence}.npy", root / f"{sequence}.npz", root / sequence / "disparity.npy"]
    return next((path for path in candidates if path.is_file()), None)


def _read(path: Path) -> np.ndarray:
    """The array of a .npy/.npz file; SkipSequence naming the reason when numpy cannot read it (pickled objects,
    a damaged header, a truncated file) or it is not floating point."""
    try:
        array = _load(path)
    except (ValueError, OSError, EOFError, KeyError, zipfile.BadZipFile) as error:
        reason = str(error).splitlines()[0] if str(error) else type(error).__name__
        raise SkipSequence(f"prediction {path} cannot be read ({reason}); save it with numpy.save as float32") from None
    if array.dtype.kind != "f":
        raise SkipSequence(
            f"prediction {path} has dtype {array.dtype}, not floating point disparity; save it as float32"
        )
    return array


def _load(path: Path) -> np.ndarray:
    if path.suffix == ".npy":
        return np.load(path, mmap_mode="r", allow_pickle=False)
    with np.load(path, allow_pickle=False) as archive:
        if "disparity" in archive.files:
            return archive["disparity"]
        if len(archive.files) == 1:
            return archive[archive.files[0]]
        raise SkipSequence(
            f"prediction {path} holds {', '.join(archive.files)}: store the prediction under the key 'disparity'"
        )


ASPECT_TOLERANCE = 0.02  # relative: VDA's ScanNet colour size 968x1296 against the 480x640 GT is 0.41 % off


def _check_size(path: Path, frame_size: tuple[int, int], size: tuple[int, int], any_size: bool) -> None:
    """SkipSequence unless the prediction has the GT size, an integer multiple of it, or (``any_size``) an aspect
    ratio within ASPECT_TOLERANCE of the GT's; anything else would be stretched (a swapped aspect ratio, a crop)."""
    if frame_size == tuple(size):
        return
    factor = frame_size[0] // size[0]
    if factor >= 1 and frame_size == (factor * size[0], factor * size[1]):
        return
    aspect_error = abs(frame_size[1] * size[0] / (frame_size[0] * size[1]) - 1)
    if any_size and aspect_error <= ASPECT_TOLERANCE:
        return
    allowed = f"nor within {ASPECT_TOLERANCE:.0%} of its aspect ratio" if any_size else "nor an integer multiple of it"
    raise SkipSequence(
        f"prediction {path} has {frame_size[0]}x{frame_size[1]} frames, but the GT is {size[0]}x{size[1]} "
        f"({allowed}): save predictions at the GT size, with rows first ([T, H, W])"
    )


def load_prediction(
    root: Path,
    sequence: str,
    frame_positions: list[int],
    total_frames: int,
    size: tuple[int, int],
    any_size: bool = False,
) -> tuple[np.ndarray, list[str]]:
    """The prediction of ``sequence`` for the evaluated frames, float32 [T, H', W'] at its own size, and notes.

    ``frame_positions`` are the evaluated frames' indices among the sequence's ``total_frames``; ``size`` is the
    GT's and ``any_size`` admits any size of about its aspect ratio (see the module text). Raises SkipSequence when
    the file is missing, has another frame count or size, or holds non-finite values.
    """
    path = prediction_file(root, sequence)
    if path is None:
        raise SkipSequence(f"no prediction: expected {root / sequence}.npy, .npz or {root / sequence}/disparity.npy")
    array = _read(path)
    if array.ndim == 2:
        array = array[None]
    if array.ndim != 3:
        raise SkipSequence(f"prediction {path} has shape {array.shape}: expected [T, H, W] disparity")
    _check_size(path, array.shape[1:], size, any_size)
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
    return selected, notes
