"""What every benchmark reader provides: named sequences of frames with GT depth and the protocol's settings."""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import ClassVar

import numpy as np

from dvd.data.benchmarks.splits import read_split
from dvd.data.raster import existing_dir
from dvd.errors import DVDError


class SkipSequence(Exception):
    """A sequence the protocol cannot score (too short, no GT, ...): counted and reported, never silently dropped."""


@dataclass
class Frame:
    """One frame as a reader returns it. ``depth`` float32 metres [H, W]; 0, NaN and inf mean "no GT"."""

    depth: np.ndarray
    rgb: np.ndarray | None = None  # uint8 [H, W, 3], or float32 in [0, 1]
    mask: np.ndarray | None = None  # bool [H, W]: the protocol's evaluation mask (crop, mask file)
    matte: np.ndarray | None = None  # float32 [H, W] foreground matte in [0, 1], for boundary_recall
    intrinsics: np.ndarray | None = None  # [3, 3] at the depth's resolution
    pose: np.ndarray | None = None  # [4, 4] camera-to-world, OpenCV axes


@dataclass
class Sequence:
    """The frames of one sequence stacked: depth [T, H, W], rgb [T, H, W, 3], mask / matte [T, H, W],
    intrinsics [T, 3, 3], poses [T, 4, 4]; optional fields are None when the data set has none."""

    name: str
    frame_ids: list[str]
    depth: np.ndarray
    rgb: np.ndarray | None = None
    mask: np.ndarray | None = None
    matte: np.ndarray | None = None
    intrinsics: np.ndarray | None = None
    poses: np.ndarray | None = None
    positions: list[int] = field(default_factory=list)  # indices of these frames among the sequence's frames
    source_frames: int = 0  # how many frames the whole sequence has


def stack_frames(name: str, frame_ids: list[str], frames: list[Frame]) -> Sequence:
    """Stack per-frame fields; a field must be present in all frames or in none."""
    stacked: dict[str, np.ndarray | None] = {}
    for key in ("depth", "rgb", "mask", "matte", "intrinsics", "pose"):
        values = [getattr(frame, key) for frame in frames]
        present = [value is not None for value in values]
        if any(present) and not all(present):
            missing = [fid for fid, has in zip(frame_ids, present) if not has]
            raise DVDError(
                f"sequence {name}: {key} is missing for frames {', '.join(missing[:5])}: "
                f"give {key} for every frame or for none"
            )
        shapes = {np.shape(value) for value in values}
        if len(shapes) > 1:
            raise DVDError(
                f"sequence {name}: {key} changes shape between frames ({sorted(shapes)}): "
                "all frames of a sequence must have one size"
            )
        stacked[key] = np.stack(values) if all(present) else None
    depth = stacked["depth"].astype(np.float32, copy=False)
    for key in ("rgb", "mask", "matte"):
        if stacked[key] is not None and stacked[key].shape[1:3] != depth.shape[1:]:
            raise DVDError(
                f"sequence {name}: {key} is {stacked[key].shape[1:3]} but depth is {depth.shape[1:]}: "
                "they must have the same size"
            )
    return Sequence(
        name,
        frame_ids,
        depth,
        stacked["rgb"],
        stacked["mask"],
        stacked["matte"],
        stacked["intrinsics"],
        stacked["pose"],
    )


class DatasetReader(ABC):
    """A benchmark on disk. Subclasses set the protocol (class attributes) and read frames.

    Protocol attributes: ``min_depth`` / ``max_depth`` (metres; GT outside is not evaluated and predictions are
    clipped to it), ``range_in_mask`` (False: the range only clips predictions, as DIODE), ``kind`` ("video": one
    alignment per sequence; "image": each entry is a 1-frame sequence), ``default_split`` (a pinned list under
    ``dvd/data/benchmarks/splits``), ``eval_crop`` (rows/cols cut from predictions and GT before scoring, as
    (top, bottom, left, right)), ``crop_in_prediction_grid`` (a prediction not at the GT size is cropped by
    ``eval_crop`` in its own pixel grid and then resized to the cropped GT, as VDA's TAE script; otherwise it is
    resized to the GT size first), ``start`` / ``frames`` (the default frame selection).
    """

    name: ClassVar[str]
    kind: ClassVar[str] = "video"
    min_depth: float  # class defaults; `open_dataset` may override them per instance
    max_depth: float
    range_in_mask: ClassVar[bool] = True
    default_split: ClassVar[str | None] = None
    eval_crop: ClassVar[tuple[int, int, int, int] | None] = None
    crop_in_prediction_grid: ClassVar[bool] = False
    start: ClassVar[int] = 0
    frames: ClassVar[int | None] = None
    needs_root: ClassVar[bool] = True

    def __init__(self, root: Path | None, split: str | None = None) -> None:
        if self.needs_root:
            if root is None:
                raise DVDError(f"--dataset {self.name} needs --root: the folder holding the data set")
            root = existing_dir(root, "data set")
        self.root = root
        self.split = split or self.default_split
        self.entries = self.list_entries()

    def list_entries(self) -> list[list[str]]:
        """The split's lines, each a list of fields; the first field names the sequence."""
        if self.split is None:
            raise DVDError(f"--dataset {self.name} has no default split: pass --split FILE")
        entries = read_split(self.split)
        if not entries:
            raise DVDError(f"split {self.split} lists no sequence")
        return entries

    def sequence_names(self) -> list[str]:
        return [entry[0] for entry in self.entries]

    @abstractmethod
    def frame_ids(self, sequence: str) -> list[str]:
        """The sequence's frame identifiers in temporal order; DVDError when its files are not where expected."""

    @abstractmethod
    def read_frame(self, sequence: str, frame_id: str) -> Frame:
        """Load one frame."""

    def load(self, sequence: str, start: int, stride: int, frames: int | None) -> Sequence:
        """Frames ``start, start + stride, ...`` of ``sequence``, the first ``frames`` of them (all when None).

        Raises SkipSequence when the sequence has fewer frames than asked for (the official script silently
        evaluated the next sequence twice instead).
        """
        all_ids = self.frame_ids(sequence)
        positions = list(range(start, len(all_ids), stride))
        if frames is not None:
            if len(positions) < frames:
                raise SkipSequence(
                    f"has {len(positions)} frames from frame {start} with stride {stride}, "
                    f"fewer than the {frames} asked for"
                )
            positions = positions[:frames]
        if not positions:
            raise SkipSequence(f"has no frame from frame {start} ({len(all_ids)} frames in all)")
        loaded = self.load_frames(sequence, [all_ids[p] for p in positions])
        loaded.positions, loaded.source_frames = positions, len(all_ids)
        return loaded

    def load_frames(self, sequence: str, ids: list[str]) -> Sequence:
        return stack_frames(sequence, ids, [self.read_frame(sequence, fid) for fid in ids])

    def settings(self) -> dict:
        """The protocol as recorded in result files (inf written as a string, which JSON cannot hold)."""

        def number(value: float) -> float | str:
            return value if math.isfinite(value) else str(value)

        return {
            "dataset": self.name,
            "kind": self.kind,
            "split": self.split,
            "min_depth": number(self.min_depth),
            "max_depth": number(self.max_depth),
            "range_in_mask": self.range_in_mask,
            "eval_crop": list(self.eval_crop) if self.eval_crop else None,
            "crop_in_prediction_grid": self.crop_in_prediction_grid,
        }


class ImageListReader(DatasetReader):
    """An image benchmark listed by a split file of ``<rgb path> <depth path> [<mask path>]`` lines; each line is
    a one-frame sequence named by its RGB path without extension."""

    kind = "image"

    def list_entries(self) -> list[list[str]]:
        entries = []
        for fields in super().list_entries():
            if len(fields) < 2:
                raise DVDError(f"split {self.split}: line {' '.join(fields)!r} needs an RGB and a depth path")
            entries.append([str(Path(fields[0]).with_suffix(""))] + fields)
        return entries

    def paths(self, sequence: str) -> list[Path]:
        """The entry's file paths (RGB, depth, then any more) under the root."""
        return [self.root / rel for rel in self._fields[sequence]]

    @cached_property
    def _fields(self) -> dict[str, list[str]]:
        return {entry[0]: entry[1:] for entry in self.entries}

    def frame_ids(self, sequence: str) -> list[str]:
        missing = [path for path in self.paths(sequence) if not path.is_file()]
        if missing:
            raise DVDError(
                f"{self.name}: missing {missing[0]}; the root must hold the files named in the split "
                f"{self.split}, relative to it"
            )
        return [Path(sequence).name]
