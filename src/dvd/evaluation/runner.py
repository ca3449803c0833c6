"""Running a benchmark: every sequence of a split through a predictor (saved files or the model), then scored.

Sequences that cannot be scored (too short for ``--frames``, no prediction file, an unreadable, non-float or
wrongly sized prediction, one with another frame count or NaN values, no valid GT, a fitted scale <= 0) are skipped, counted and listed with the reason on stdout and in the results;
``strict`` turns any skip into an error. Means cover the scored sequences only, and say how many those are.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from dvd.data.benchmarks.base import DatasetReader, Sequence, SkipSequence
from dvd.engine.stream import WindowReport
from dvd.engine.video import VideoEngine, VideoSettings
from dvd.errors import DVDError
from dvd.evaluation.predictions import load_prediction
from dvd.evaluation.report import summarise
from dvd.evaluation.scoring import score_sequence
from dvd.options import TAE_INTRINSICS
from dvd.pipeline.inputs import frame_as_unit_float

Predictor = Callable[[Sequence], tuple[np.ndarray, dict]]
"""Disparity [T, H, W] for a sequence (the GT size, or one `scoring.prediction_on_gt_grid` takes), plus fields to add
to its record."""


class SavedPredictions:
    """Predictions written by any tool, one file per sequence (see ``dvd.evaluation.predictions``)."""

    def __init__(self, root: Path, any_size: bool = False) -> None:
        """``any_size``: admit predictions of any size near the GT's aspect ratio (protocols that crop in the
        prediction's own grid, see ``dvd.evaluation.predictions``)."""
        self.root = Path(root)
        self.any_size = any_size
        if not self.root.is_dir():
            raise DVDError(f"predictions folder {self.root} does not exist")
        self.settings = {"predictions": str(self.root)}

    def __call__(self, sequence: Sequence) -> tuple[np.ndarray, dict]:
        pred, notes = load_prediction(
            self.root,
            sequence.name,
            sequence.positions,
            sequence.source_frames,
            sequence.depth.shape[1:],
            self.any_size,
        )
        return pred, ({"notes": notes} if notes else {})


class ModelPredictions:
    """DVD run on the sequence's RGB frames through the video engine (sliding windows + stitching).

    The model sees the frames at the data set's own resolution, each side rounded up to a multiple of the model's
    spatial stride (16 for Wan2.1) when needed (bilinear), and its output is resized back to the GT size, as the
    official evaluation does.
    """

    def __init__(self, pipeline, window: int, overlap: int, stitch: str, batch_windows: int = 1) -> None:
        self.pipeline = pipeline
        self.window, self.overlap, self.stitch, self.batch_windows = window, overlap, stitch, batch_windows
        self.settings = {"weights": pipeline.weights_id, "window": window, "overlap": overlap, "stitch": stitch}
        self.settings.update(pipeline.sampling_meta())  # a generative model's objective, steps and seed

    def __call__(self, sequence: Sequence) -> tuple[np.ndarray, dict]:
        if sequence.rgb is None:
            raise DVDError(
                f"sequence {sequence.name} has no RGB frames, so the model cannot run on it: "
                "score saved predictions with --predictions instead"
            )
        size = sequence.depth.shape[1:]
        # The minimum model size is the frames' own: the model runs at the data set's resolution.
        video = VideoSettings(*size, self.window, self.overlap, self.stitch, batch_windows=self.batch_windows)
        video = self.pipeline.fit_settings(video)
        overlap_errors: list[float] = []

        def record_seam(report: WindowReport) -> None:
            if report.overlap_mae is not None:
                overlap_errors.append(report.overlap_mae)

        engine = VideoEngine(self.pipeline.predict_windows, video, on_window=record_seam)
        started = time.perf_counter()
        pred = np.empty(sequence.depth.shape, dtype=np.float32)
        frames = (frame_as_unit_float(frame) for frame in sequence.rgb)  # one at a time: no float copy of the clip
        for index, disparity in enumerate(engine.run(frames, size)):
            pred[index] = disparity
        info = {"model_size": list(video.model_size(size)), "seconds": round(time.perf_counter() - started, 3)}
        if overlap_errors:  # model-space disparity error at the seams after alignment, as the official eval logs
            info["overlap_mae"] = float(np.mean(overlap_errors))
        return pred, info


@dataclass(frozen=True)
class FrameSelection:
    """Which frames of each sequence are evaluated: ``start, start + stride, ...``, the first ``frames`` of them
    (all when None)."""

    start: int = 0
    stride: int = 1
    frames: int | None = None


def check_layout(reader: DatasetReader) -> None:
    """Fail before any compute when sequences of the split are missing or malformed under the root."""
    names = reader.sequence_names()
    problems = []
    for name in names:
        try:
            reader.frame_ids(name)
        except DVDError as error:
            problems.append(str(error))
    if problems:
        of_split = f" of split {reader.split}" if reader.split else ""  # a generic folder has no split
        raise DVDError(
            f"{len(problems)} of {len(names)} sequences{of_split} cannot be read under {reader.root}; "
            f"first: {problems[0]}"
        )


def evaluate(
    reader: DatasetReader,
    predictor: Predictor,
    selection: FrameSelection,
    label: str,
    settings: dict,
    strict: bool = False,
    log: Callable[[str], None] = print,
    tae_intrinsics: str = TAE_INTRINSICS[0],
) -> dict:
    """Score every sequence of ``reader``'s split; returns the run document (see ``dvd.evaluation.report``).
    ``tae_intrinsics`` see ``dvd.evaluation.temporal.temporal_alignment_error``."""
    check_layout(reader)
    names = reader.sequence_names()
    records, skipped = [], []
    for number, name in enumerate(names, start=1):
        prefix = f"[{number}/{len(names)}] {name}"
        try:
            sequence = reader.load(name, selection.start, selection.stride, selection.frames)
            pred, extra = predictor(sequence)
            record = score_sequence(pred, sequence, reader, tae_intrinsics)
        except SkipSequence as skip:
            if strict:
                raise DVDError(f"sequence {name}: {skip} (without --strict it would be skipped and reported)") from None
            skipped.append({"sequence": name, "reason": str(skip)})
            log(f"{prefix}: SKIPPED, {skip}")
            continue
        notes = record.pop("notes", []) + extra.pop("notes", [])
        record.update(extra)
        if notes:
            record["notes"] = notes
        records.append(record)
        log(
            f"{prefix}: {record['frames']} frames, AbsRel {record['abs_rel']:.4f}, δ1 {record['delta1']:.4f}"
            + "".join(f" ({note})" for note in notes)
        )
    if not records:
        raise DVDError(f"none of the {len(names)} sequences could be scored; first reason: {skipped[0]['reason']}")
    if skipped:
        log(f"WARNING: {len(skipped)} of {len(names)} sequences skipped; means cover the other {len(records)}")
    run_settings = {
        **reader.settings(),
        "start": selection.start,
        "stride": selection.stride,
        "frames": selection.frames,
        "tae_intrinsics": tae_intrinsics,
        **settings,
    }
    return summarise(label, run_settings, records, skipped)
