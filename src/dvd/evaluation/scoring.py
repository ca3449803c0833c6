"""Scoring one sequence: the valid mask, the alignment, then every metric the data available allows."""

from __future__ import annotations

import numpy as np

from dvd.data.benchmarks.base import DatasetReader, Sequence, SkipSequence
from dvd.evaluation.alignment import align_to_depth
from dvd.evaluation.boundary import boundary_f1, boundary_recall, rgb_boundary_f1
from dvd.evaluation.metrics import DEPTH_METRICS, depth_metrics
from dvd.evaluation.temporal import relative_temporal_diff, temporal_alignment_error

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


def _crop(array: np.ndarray | None, margins: tuple[int, int, int, int]) -> np.ndarray | None:
    if array is None:
        return None
    top, bottom, left, right = margins
    return array[:, top : array.shape[1] - bottom, left : array.shape[2] - right]


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


def score_sequence(pred_disparity: np.ndarray, sequence: Sequence, reader: DatasetReader) -> dict:
    """All metrics of one sequence as a JSON-ready record. ``pred_disparity`` [T, H, W] at the GT size.

    Raises SkipSequence when no pixel of any frame is valid, or when the fitted scale is not positive.
    """
    if pred_disparity.shape != sequence.depth.shape:
        raise ValueError(f"prediction {pred_disparity.shape} and GT {sequence.depth.shape} differ in shape")
    pred, depth = pred_disparity, sequence.depth
    rgb, mask, matte = sequence.rgb, sequence.mask, sequence.matte
    if reader.eval_crop is not None:
        pred, depth, rgb, mask, matte = (_crop(a, reader.eval_crop) for a in (pred, depth, rgb, mask, matte))
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
    if len(depth) > 1:
        record["rel_temporal_diff"] = relative_temporal_diff(aligned, gt, valid)
        if sequence.intrinsics is not None and sequence.poses is not None:
            if np.isfinite(sequence.poses).all():
                record["tae"] = temporal_alignment_error(aligned, sequence.intrinsics, sequence.poses)
            else:
                record.setdefault("notes", []).append("TAE not computed: some camera poses are not finite")
    return record
