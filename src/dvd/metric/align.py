"""Disparity to metres: one robust scale and shift per shot, fitted on the keyframes a metric model saw.

DVD's disparity is affine-invariant and temporally stable; a metric image model's depth has a unit but flickers.
Within a shot DVD's disparity is one affine map away from inverse depth, so ``1 / depth ≈ scale · disparity +
shift`` with one (scale, shift) for the whole shot: fitted on K keyframes, the metric model's per-frame errors
average out, and the result keeps DVD's stability. The fit is the project's one least-squares fit
(`dvd.engine.scale_shift`), each keyframe weighing the same, made robust by iterated trimming: pixels whose
log ratio of fitted to metric inverse depth lies beyond `TRIM` robust standard deviations (1.4826 · median
absolute deviation) from the median are dropped and the fit repeated.

Pixels enter the fit where both models have depth: finite metric depth > 0 (inside --depth-range when given), and
DVD disparity above `SKY_FRACTION` of the frame's 99th percentile (DVD gives the sky and very far range ~0
disparity, while metric models put the sky at an arbitrary large depth).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from dvd.engine.scale_shift import ScaleShiftFit
from dvd.errors import DVDError

FIT_PIXELS = 200_000  # at most this many pixels per keyframe enter the fit (a regular grid): bounded memory
SKY_FRACTION = 0.02
TRIM = 3.0
ITERATIONS = 5
# An aligned inverse depth whose variation over the keyframes is below this fraction of its mean carries no depth
# structure: the view is flat (constant depth) or the two models disagree.
MIN_RELATIVE_SPREAD = 1e-3
MIN_SIGMA = 1e-4  # a near-exact fit is not trimmed down to its rounding noise


@dataclass(frozen=True)
class ShotFit:
    """``1 / metres = scale · disparity + shift`` for output frames [start, end)."""

    start: int
    end: int
    scale: float
    shift: float
    keyframes: tuple[int, ...]
    pixels: int  # pixels that entered the final fit
    inliers: float  # their fraction of the valid pixels
    residual: float  # median |aligned depth - metric depth| / metric depth over them

    def depth(self, disparity: np.ndarray) -> np.ndarray:
        """Metres, float32; 0 where the aligned inverse depth is not positive (beyond the fitted range: the sky)."""
        inverse = self.scale * disparity.astype(np.float32) + np.float32(self.shift)
        with np.errstate(divide="ignore"):
            return np.where(inverse > 0, 1.0 / inverse, 0.0).astype(np.float32)

    def as_meta(self) -> dict:
        return {
            "start": self.start,
            "end": self.end,
            "scale": self.scale,
            "shift": self.shift,
            "keyframes": list(self.keyframes),
            "pixels": self.pixels,
            "inlier_fraction": round(self.inliers, 4),
            "residual_abs_rel": round(self.residual, 5),
        }


def shot_ranges(meta: dict, frames: int) -> list[tuple[int, int]]:
    """The shots of meta.json's "shots" as (start, end) output frame ranges, or the whole video as one."""
    shots = [(int(shot["start"]), int(shot["end"])) for shot in meta.get("shots") or ()]
    return [(start, end) for start, end in shots if end > start] or [(0, frames)]


def keyframe_indices(start: int, end: int, count: int) -> list[int]:
    """`count` frames spread evenly over [start, end): the centres of `count` equal parts (all frames if fewer)."""
    frames = end - start
    count = min(count, frames)
    return sorted({start + int((2 * part + 1) * frames // (2 * count)) for part in range(count)})


def fit_grid(height: int, width: int) -> int:
    """The grid step that keeps at most FIT_PIXELS pixels of a frame."""
    return max(1, math.ceil(math.sqrt(height * width / FIT_PIXELS)))


def fit_pixels(
    disparity: np.ndarray, metres: np.ndarray, depth_range: tuple[float, float] | None
) -> tuple[np.ndarray, np.ndarray]:
    """One keyframe's fit pixels (already on the fit grid): (DVD disparity, metric inverse depth), 1-D float64."""
    disparity = disparity.astype(np.float64)
    metres = metres.astype(np.float64)
    valid = np.isfinite(metres) & (metres > 0) & np.isfinite(disparity)
    if depth_range is not None:
        valid &= (metres >= depth_range[0]) & (metres <= depth_range[1])
    if valid.any():
        valid &= disparity > SKY_FRACTION * np.percentile(disparity[valid], 99)
    return disparity[valid], 1.0 / metres[valid]


def fit_shot(
    start: int, end: int, keyframes: Sequence[int], pixels: Sequence[tuple[np.ndarray, np.ndarray]], where: str
) -> ShotFit:
    """The robust fit of one shot from its keyframes' `fit_pixels`; DVDError when it is degenerate. `where` names
    the input in messages."""
    keep = [np.ones(len(d), bool) for d, _ in pixels]
    total = sum(len(d) for d, _ in pixels)
    span = f"frames {start}-{end - 1} of {where}"
    if total == 0:
        raise DVDError(
            f"metric alignment of {span}: no keyframe pixel has depth in both models (the metric model gave no "
            "finite depth > 0, or none inside --depth-range): widen or drop --depth-range, or check the model"
        )
    for iteration in range(ITERATIONS):
        fit = ScaleShiftFit()
        for (d, m), k in zip(pixels, keep):
            if k.any():
                fit.add(d[k], m[k], weight=1.0 / k.sum())  # every keyframe weighs the same
        scale, shift = fit.least_squares()
        # Log ratios: an outlier 3x too near and one 3x too far are equally far off, whatever the depth.
        ratios = [np.log(np.maximum(scale * d + shift, m * 1e-6) / m) for d, m in pixels]
        kept = np.concatenate([r[k] for r, k in zip(ratios, keep)])
        kept_disparity = np.concatenate([d[k] for (d, _), k in zip(pixels, keep)])
        kept_inverse = np.concatenate([m[k] for (_, m), k in zip(pixels, keep)])
        spread = scale * float(np.std(kept_disparity)) / float(np.mean(kept_inverse))
        if not spread > MIN_RELATIVE_SPREAD:
            raise DVDError(
                f"metric alignment of {span} is degenerate (scale {scale:.3g}): DVD's disparity and the metric "
                "model's depth share no depth variation there (a flat, constant-depth view, or models that disagree); "
                "run this input without --metric"
            )
        centre = float(np.median(kept))
        sigma = max(1.4826 * float(np.median(np.abs(kept - centre))), MIN_SIGMA)
        new_keep = [np.abs(r - centre) <= TRIM * sigma for r in ratios]
        if iteration == ITERATIONS - 1 or all(np.array_equal(a, b) for a, b in zip(new_keep, keep)):
            break  # `keep` stays the set this fit was made on
        keep = new_keep
    inliers = sum(int(k.sum()) for k in keep)
    # Residual in depth: |1/(s d + t) - 1/m| / (1/m) = |m / (s d + t) - 1| over the kept pixels.
    with np.errstate(divide="ignore"):
        errors = [np.abs(m[k] / (scale * d[k] + shift) - 1) for (d, m), k in zip(pixels, keep)]
    depth_errors = np.concatenate(errors)
    return ShotFit(
        start,
        end,
        float(scale),
        float(shift),
        tuple(keyframes),
        inliers,
        inliers / total,
        float(np.median(depth_errors)) if depth_errors.size else math.nan,
    )
