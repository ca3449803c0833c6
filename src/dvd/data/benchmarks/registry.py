"""Benchmark readers by name, for the command line and the runner."""

from __future__ import annotations

from pathlib import Path

from dvd.data.benchmarks.base import DatasetReader
from dvd.data.benchmarks.bonn import Bonn
from dvd.data.benchmarks.folder import BenchmarkFolder
from dvd.data.benchmarks.image_sets import ETH3D, Diode, NYUv2
from dvd.data.benchmarks.kitti import KittiEigen, KittiVideo
from dvd.data.benchmarks.scannet import ScanNet, ScanNetTAE
from dvd.data.benchmarks.sintel import Sintel
from dvd.data.benchmarks.synthetic import Synthetic
from dvd.errors import DVDError
from dvd.options import DATASET_NAMES  # the readers' names, then BenchmarkFolder's

READERS: dict[str, type[DatasetReader]] = {
    reader.name: reader
    for reader in (KittiVideo, KittiEigen, ScanNet, ScanNetTAE, Bonn, Sintel, NYUv2, Diode, ETH3D, Synthetic)
}


def open_dataset(
    name: str,
    root: Path | None,
    split: str | None = None,
    min_depth: float | None = None,
    max_depth: float | None = None,
) -> DatasetReader:
    """The reader of benchmark ``name`` over ``root``; ``min_depth`` / ``max_depth`` override the protocol's range
    (and are required for the generic ``folder`` layout)."""
    if name == BenchmarkFolder.name:
        if min_depth is None or max_depth is None:
            raise DVDError("the generic folder layout needs --min-depth and --max-depth (metres)")
        reader: DatasetReader = BenchmarkFolder(root, split, min_depth, max_depth)
    elif name in READERS:
        reader = READERS[name](root, split)
        if min_depth is not None:
            reader.min_depth = min_depth
        if max_depth is not None:
            reader.max_depth = max_depth
    else:
        raise DVDError(f"unknown data set {name!r}: choose one of {', '.join(DATASET_NAMES)}")
    if not 0 <= reader.min_depth < reader.max_depth:
        raise DVDError(f"depth range ({reader.min_depth}, {reader.max_depth}) is empty: need 0 <= min < max")
    return reader
