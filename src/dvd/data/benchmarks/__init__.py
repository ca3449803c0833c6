"""Benchmark data sets on disk (KITTI, ScanNet, Bonn, Sintel, NYUv2, DIODE, ETH3D), the generic folder layout and
the built-in synthetic split, each as a :class:`DatasetReader` that yields :class:`Sequence` objects."""

from dvd.data.benchmarks.base import DatasetReader, Frame, Sequence, SkipSequence
from dvd.data.benchmarks.registry import DATASET_NAMES, READERS, open_dataset

__all__ = ["DATASET_NAMES", "READERS", "DatasetReader", "Frame", "Sequence", "SkipSequence", "open_dataset"]
