"""A stand-in for the model `dvd predict` loads, for tests of everything around it."""

from __future__ import annotations

from collections.abc import Callable
from types import SimpleNamespace

import pytest
import torch

from dvd.model.backbone import FrameRule
from dvd.pipeline.dvd_pipeline import DVDPipeline
from dvd.weights import load as weights_load


class StandInPipe:
    """What `dvd predict` reads of a DVDPipeline besides `predict_windows`, which a stand-in defines: the weights'
    names, and the device, dtype, backbone family, frame rule and spatial stride of a Wan2.1 model. Its settings are
    fitted to that model by the pipeline's own `fit_settings`; like a regression model it has no sampling (the
    pipeline's own `set_sampling` and `sampling_meta` say so)."""

    weights_id = "fake"
    weights_kind = None  # a stand-in, not the proof model (whose runs print a note)
    model = SimpleNamespace(
        device=torch.device("cpu"),
        dtype=torch.float32,
        transformer=torch.nn.Linear(1, 1),
        family="wan2.1",
        frame_rule=FrameRule(4),
        spatial_stride=16,
    )
    fit_settings = DVDPipeline.fit_settings
    sampling = None
    set_sampling = DVDPipeline.set_sampling
    sampling_meta = DVDPipeline.sampling_meta


def stub_model(monkeypatch: pytest.MonkeyPatch, from_pretrained: Callable[..., object]) -> None:
    """`dvd predict` takes its model from `from_pretrained(cls, *args, **kwargs)` instead of DVDPipeline's, and
    skips the weights lookup that comes before it (for the default weights, the Hub): a stand-in needs no files."""
    monkeypatch.setattr(DVDPipeline, "from_pretrained", classmethod(from_pretrained))
    monkeypatch.setattr(weights_load, "locate_weights", lambda source=None: source)
