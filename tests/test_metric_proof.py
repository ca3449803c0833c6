"""The metric-alignment proof (benchmarks/metric_proof.py) at a tiny size: on the procedural world, DVD aligned on
keyframes of a flickering metric model keeps DVD's stability and the metric model's unit."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

from dvd.pipeline.dvd_pipeline import DVDPipeline

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "metric_proof.py"

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def proof():
    spec = importlib.util.spec_from_file_location("metric_proof", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_aligned_depth_flickers_far_less_than_the_metric_frames(proof, tmp_path):
    pipe = DVDPipeline.from_pretrained("proof", device="cpu")
    rows = proof.measure(pipe, scene=0, frames=8, keyframes=4, work=tmp_path)
    noisy = rows["metric model, every frame (noisy)"]
    aligned = rows["DVD (proof) aligned on 4 keyframes"]
    floor = rows["DVD (proof) aligned to the truth (floor)"]
    ideal = rows["ideal relative model aligned on 4 keyframes"]
    # Flicker: the aligned video is as stable as DVD's disparity, the metric frames are not.
    assert aligned["tae"] < noisy["tae"] / 3 and ideal["tae"] < noisy["tae"] / 5
    # Accuracy: fitted on 4 noisy keyframes, the alignment loses almost nothing against a fit to the exact depth;
    # with an accurate relative model it beats the metric model's own frames (the proof model itself is coarse).
    assert aligned["abs_rel"] < floor["abs_rel"] + 0.02
    assert ideal["abs_rel"] < noisy["abs_rel"] / 2 and ideal["rel_temporal_diff"] < noisy["rel_temporal_diff"] / 5
