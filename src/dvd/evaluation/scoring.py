"""Scoring one sequence: the valid mask, the alignment, then every metric the data available allows."""

from __future__ import annotations

import numpy as np

from dvd.data.benchmarks.base import DatasetReader, Sequence, SkipSequence
from dvd.data.raster import resize_frames
from dvd.evaluation.alignment import align_for_tae, align_to_depth
from dvd.evaluation.boundary import boundary_f1, boundary_recall, rgb_boundary_f1
from dvd.evaluation.metrics import DEPTH_METRICS, depth_metrics
from dvd.evaluation.temporal import relative_temporal_diff, temporal_alignment_error
from dvd.options import TAE_INTRINSICS

SHORT_FRAMES = (50, 200)  # the paper's short partition, inclusive; long is > 200
OPTIONAL_METRICS: tuple[str, ...] = ("boundary_f1", "rgb_boundary_f1", "boundary_recall", "tae", "rel_temporal_diff")
ALL_METRICS: tuple[str, ...] = DEPTH_METRICS + OPTIONAL_METRICS


def partition(kind: str, frames: int) -> str:
    """ "image" for image benchmarks; else "short" (50-200 frames), "long" (> 200) or "very_short" (< 50)."""
    if kind == "image":
        return "image"
    if frames > SHORT_FRAMES[1]:
        return "long"
    return "short" if frames >= SHORT_FRAMES[0] else "very_short"


def _crop(array: np.ndarray | None, margins: tuple[int, int, int, int] | None) -> np.ndarray | None:
    if array is None or margins is None:
        return array
    top, bottom, left, right = margins
    return array[:, top : array.shape[1] - bottom, left : array.shape[2] - right]


def prediction_on_gt_grid(pred: np.ndarray, size: tuple[int, int], reader: DatasetReader) -> tuple[np.ndarray, list]:
    """The prediction [T, H', W'] on the scored grid: the GT ``size`` less the protocol's crop, and notes.

    A prediction at another size is resized bilinearly (half-pixel centres, no antialias, as ``cv2.resize``); with
    ``reader.crop_in_prediction_grid`` (VDA's order) the crop's pixel counts are cut from the prediction's own grid
    first, otherwise the prediction is resized to the GT size and then cropped like the GT.
    """
    crop = reader.eval_crop
    if pred.shape[1:] == tuple(size):
        return _crop(pred, crop), []
    own = f"{pred.shape[1]}x{pred.shape[2]}"
    if crop is not None and reader.crop_in_prediction_grid:
        top, bottom, left, right = crop
        target = (size[0] - top - bottom, size[1] - left - right)
        note = f"prediction {own} cropped in its own grid, then resized bilinearly to {target[0]}x{target[1]}"
        return resize_frames(_crop(pred, crop), target), [note]
    note = f"prediction resized bilinearly from {own} to the GT size {size[0]}x{size[1]}"
    return _crop(resize_frames(pred, size), crop), [note]


def valid_mask(depth: np.ndarray, mask: np.ndarray | None, reader: DatasetReader) -> np.ndarray:
    """Pixels scored: finite, positive GT, inside the protocol's mask and (unless the protocol says otherwise)
    strictly inside its depth range."""
    with np.errstate(invalid="ignore"):
        valid = np.isfinite(depth) & (depth > 0)
        if reader.range_in_mask:
            valid &= (depth > reader.min_depth) & (depth < reader.max_depth)
    if mask is not None:
        valid &= mask
    return valid


def check_scale(scale: float) -> None:
    """A fitted scale <= 0 means the prediction does not rank pixels by nearness: a negative scale would turn an
    inverted prediction (depth, or negated disparity) into a perfect score, and a zero one scores a constant."""
    if scale < 0:
        raise SkipSequence(
            f"the fitted scale is {scale:.4g}: the prediction is anti-correlated with the GT disparity (is it depth "
            "rather than disparity?); dvd eval expects disparity, larger = nearer: save 1/depth instead"
        )
    if scale == 0:
        raise SkipSequence(
            "the fitted scale is 0: the prediction is constant over the valid pixels or carries no depth signal"
        )


def score_sequence(
    pred_disparity: np.ndarray, sequence: Sequence, reader: DatasetReader, tae_intrinsics: str = TAE_INTRINSICS[0]
) -> dict:
    """All metrics of one sequence as a JSON-ready record. ``pred_disparity`` [T, H', W'], at the GT size or one
    that ``prediction_on_gt_grid`` brings to it; ``tae_intrinsics`` see ``temporal_alignment_error``.

    The depth metrics use the DVD protocol's alignment (``align_to_depth`` over the valid pixels, mask included);
    TAE uses Video Depth Anything's (``align_for_tae``: raw prediction clipped to >= 1e-3, fit over the in-range GT
    without the mask) and applies the mask in its frame-to-frame comparison instead, as VDA's eval_tae.py.
    Raises SkipSequence when no pixel of any frame is valid, or when the fitted scale is not positive.
    """
    if len(pred_disparity) != len(sequence.depth):
        raise ValueError(f"prediction {pred_disparity.shape} and GT {sequence.depth.shape} differ in frame count")
    pred, grid_notes = prediction_on_gt_grid(pred_disparity, sequence.depth.shape[1:], reader)
    depth = sequence.depth
    rgb, mask, matte = sequence.rgb, sequence.mask, sequence.matte
    depth, rgb, mask, matte = (_crop(a, reader.eval_crop) for a in (depth, rgb, mask, matte))
    nonfinite = int(np.count_nonzero(~np.isfinite(depth)))
    valid = valid_mask(depth, mask, reader)
    frames_with_gt = valid.any(axis=(1, 2))
    if not frames_with_gt.any():
        raise SkipSequence("no valid GT pixel in any frame (check the depth range and the GT files)")
    gt = np.where(valid, depth, 0.0).astype(np.float32)
    aligned, scale, shift = align_to_depth(pred, gt, valid, reader.min_depth, reader.max_depth)
    check_scale(scale)

    record: dict = {
        "sequence": sequence.name,
        "frames": len(depth),
        "partition": partition(reader.kind, len(depth)),
        "empty_frames": int(np.count_nonzero(~frames_with_gt)),
        "valid_pixels": int(np.count_nonzero(valid)),
        "nonfinite_gt_pixels": nonfinite,
        "scale": scale,
        "shift": shift,
    }
    record.update(depth_metrics(aligned, gt, valid))
    keep = frames_with_gt
    record["boundary_f1"] = boundary_f1(aligned[keep], gt[keep], valid[keep])
    if rgb is not None:
        record["rgb_boundary_f1"] = rgb_boundary_f1(aligned, rgb, valid)
    if matte is not None:
        record["boundary_recall"] = boundary_recall(aligned, matte)
    if grid_notes:
        record["notes"] = grid_notes
    if len(depth) > 1:
        record["rel_temporal_diff"] = relative_temporal_diff(aligned, gt, valid)
        if sequence.intrinsics is not None and sequence.poses is not None:
            del aligned  # the TAE alignment below needs its own copy of the clip
            tae = _tae(pred, depth, mask, sequence, reader, tae_intrinsics)
            if isinstance(tae, str):
                record.setdefault("notes", []).append(tae)
            else:
                record["tae"] = tae
    return record


def _tae(
    pred: np.ndarray,
    depth: np.ndarray,
    mask: np.ndarray | None,
    sequence: Sequence,
    reader: DatasetReader,
    intrinsics_rule: str,
) -> float | str:
    """TAE as VDA computes it, or a note saying why it is not computed. A sequence with any non-finite pose gets
    no TAE (VDA counts such a pair as 0 error and keeps it in the mean, which would flatter the sequence)."""
    if not np.isfinite(sequence.poses).all():
        return "TAE not computed: some camera poses are not finite"
    in_range = valid_mask(depth, None, reader)
    aligned, scale, _ = align_for_tae(pred, depth, in_range, reader.min_depth, reader.max_depth)
    if scale <= 0:
        return f"TAE not computed: its fit (prediction clipped to >= 1e-3, no mask) gives scale {scale:.4g}"
    return temporal_alignment_error(aligned, sequence.intrinsics, sequence.poses, mask, intrinsics_rule)
