"""The generic layout anyone can fill, and the one the tests use.

::

    ROOT/<sequence>/depth/<frame>.npy     float32 [H, W] depth in metres; 0, NaN and inf mean "no GT"
    ROOT/<sequence>/rgb/<frame>.png       optional, same frame names: enables rgb_boundary_f1
    ROOT/<sequence>/mask/<frame>.png      optional: non-zero pixels are evaluated, others ignored
    ROOT/<sequence>/matte/<frame>.png     optional foreground matte (8-bit): enables boundary_recall
    ROOT/<sequence>/intrinsics.npy        optional [3, 3] or [T, 3, 3] pinhole matrices  } both: enables TAE
    ROOT/<sequence>/poses.npy             optional [T, 4, 4] camera-to-world (OpenCV)    }

Frames are ordered by name, numbers compared numerically (frame2 before frame10). Sequences are every folder
under ROOT, sorted by name, unless ``--split FILE`` lists them. The depth range comes from the command line.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from dvd.data.benchmarks.base import DatasetReader, Frame, Sequence
from dvd.data.naming import natural_key
from dvd.data.raster import read_mask_png, read_matte_png, read_npy, read_npy_depth, read_rgb
from dvd.errors import DVDError


class BenchmarkFolder(DatasetReader):
    name = "folder"

    def __init__(self, root: Path | None, split: str | None, min_depth: float, max_depth: float) -> None:
        self.min_depth, self.max_depth = min_depth, max_depth
        super().__init__(root, split)

    def list_entries(self) -> list[list[str]]:
        if self.split is not None:
            return super().list_entries()
        folders = sorted(
            (p for p in self.root.iterdir() if p.is_dir() and not p.name.startswith(".")),
            key=lambda p: natural_key(p.name),
        )
        if not folders:
            raise DVDError(f"no sequence folders in {self.root}: expected {self.root}/<sequence>/depth/*.npy")
        return [[folder.name] for folder in folders]

    def frame_ids(self, sequence: str) -> list[str]:
        depth = self.root / sequence / "depth"
        if not depth.is_dir():
            raise DVDError(
                f"{self.root / sequence} has no depth/ folder: every folder under {self.root} must be "
                "a sequence holding depth/<frame>.npy"
            )
        ids = sorted((p.stem for p in depth.glob("*.npy")), key=natural_key)
        if not ids:
            raise DVDError(f"no depth frames in {depth}: expected <frame>.npy files (float32 metres)")
        for extra in ("rgb", "mask", "matte"):
            folder = self.root / sequence / extra
            if folder.is_dir():
                missing = sorted(set(ids) - {p.stem for p in folder.glob("*.png")}, key=natural_key)
                if missing:
                    raise DVDError(
                        f"{folder} lacks {len(missing)} of the depth frames (first: {missing[0]}.png): "
                        f"give one {extra} PNG per depth frame, or remove {extra}/"
                    )
        return ids

    def read_frame(self, sequence: str, frame_id: str) -> Frame:
        folder = self.root / sequence
        depth = read_npy_depth(folder / "depth" / f"{frame_id}.npy")
        optional = {name: folder / name / f"{frame_id}.png" for name in ("rgb", "mask", "matte")}
        present = {name: path for name, path in optional.items() if path.parent.is_dir()}
        return Frame(
            depth=depth,
            rgb=read_rgb(present["rgb"]) if "rgb" in present else None,
            mask=read_mask_png(present["mask"]) if "mask" in present else None,
            matte=read_matte_png(present["matte"]) if "matte" in present else None,
        )

    def load_frames(self, sequence: str, ids: list[str]) -> Sequence:
        loaded = super().load_frames(sequence, ids)
        folder = self.root / sequence
        intrinsics_file, poses_file = folder / "intrinsics.npy", folder / "poses.npy"
        if intrinsics_file.is_file() and poses_file.is_file():
            position = {fid: k for k, fid in enumerate(self.frame_ids(sequence))}
            index, total = [position[fid] for fid in ids], len(position)
            intrinsics, poses = read_npy(intrinsics_file), read_npy(poses_file)
            if intrinsics.shape == (3, 3):
                intrinsics = np.broadcast_to(intrinsics, (total, 3, 3))
            if intrinsics.shape != (total, 3, 3) or poses.shape != (total, 4, 4):
                raise DVDError(
                    f"{folder}: intrinsics.npy must be [3,3] or [{total},3,3] and poses.npy "
                    f"[{total},4,4] for its {total} frames; got {intrinsics.shape} and {poses.shape}"
                )
            loaded.intrinsics, loaded.poses = intrinsics[index], poses[index]
        return loaded
