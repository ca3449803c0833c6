"""Image-video joint training: every micro-step of every process (a *slot*) draws its data source by weight.

The official recipe's weights are Hypersim 9 : VKITTI-image 1 : TartanAir 40 : VKITTI-video 10 (15 % / 1.7 % /
66.7 % / 16.7 %; `configs/dvd-paper.yaml`). The draw of slot k is a pure function of (seed, k): a resumed run draws
exactly what an uninterrupted one would have, with no sampler state to checkpoint.
"""

from __future__ import annotations

import math
from collections.abc import Mapping

import numpy as np

from dvd.errors import DVDError


class SourceSampler:
    """Draws source names with probability weight / sum(weights); a zero weight is never drawn."""

    def __init__(self, weights: Mapping[str, float], seed: int = 42) -> None:
        values = list(weights.values())
        if not values or not all(math.isfinite(w) and w >= 0 for w in values) or sum(values) <= 0:
            raise DVDError(
                f"source weights {dict(weights)} are not usable: give finite weights >= 0 with a positive sum"
            )
        self.names = list(weights)
        self.seed = seed
        self._cumulative = np.cumsum(np.asarray(values, dtype=np.float64))

    @property
    def probabilities(self) -> dict[str, float]:
        shares = np.diff(self._cumulative, prepend=0.0) / self._cumulative[-1]
        return dict(zip(self.names, shares.tolist(), strict=True))

    def draw(self, step: int) -> str:
        """The source of slot number `step` (>= 0)."""
        u = np.random.default_rng((self.seed, step)).random() * self._cumulative[-1]
        # Source i owns [cumulative[i-1], cumulative[i]); a zero-width interval can never contain u.
        return self.names[int(np.searchsorted(self._cumulative, u, side="right"))]
