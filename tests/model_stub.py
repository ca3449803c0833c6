"""A stand-in for the model `dvd predict` loads, for tests of everything around it."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from dvd.pipeline.dvd_pipeline import DVDPipeline
from dvd.weights import load as weights_load


def stub_model(monkeypatch: pytest.MonkeyPatch, from_pretrained: Callable[..., object]) -> None:
    """`dvd predict` takes its model from `from_pretrained(cls, *args, **kwargs)` instead of DVDPipeline's, and
    skips the weights lookup that comes before it (for the default weights, the Hub): a stand-in needs no files."""
    monkeypatch.setattr(DVDPipeline, "from_pretrained", classmethod(from_pretrained))
    monkeypatch.setattr(weights_load, "locate_weights", lambda source=None: source)
