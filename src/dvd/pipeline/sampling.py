"""How a generative DVD model samples its windows: the number of Euler steps, the seed, and each window's noise.

A window's noise comes from a generator seeded with a hash of the run's seed and the window's own pixels (its frames
at the model size, as the model receives them). The same seed therefore draws the same noise for the same window
whichever batch it rides in (`--batch-windows`), whichever process predicts it (windows shared over processes) and
whether or not the run was resumed, so a prediction depends on the seed, the input and the weights alone, as dvd's
determinism contract asks; another seed draws other noise for every window.
"""

from __future__ import annotations

import hashlib
import numbers
from dataclasses import dataclass

import numpy as np
import torch

from dvd.errors import DVDError
from dvd.model.flow_matching import DEFAULT_STEPS, GENERATIVE

DEFAULT_SEED = 0
MAX_SEED = 2**63 - 1


@dataclass(frozen=True)
class Sampling:
    """`steps` Euler steps from noise drawn with `seed` (`dvd predict --steps --seed`)."""

    steps: int = DEFAULT_STEPS
    seed: int = DEFAULT_SEED

    def __post_init__(self) -> None:
        if not _whole(self.steps) or self.steps < 1:
            raise DVDError(
                f"the sampling steps (--steps, num_inference_steps) are {self.steps!r}: give a whole number of Euler "
                "steps, at least 1"
            )
        if not _whole(self.seed) or not 0 <= self.seed <= MAX_SEED:
            raise DVDError(f"the seed (--seed) is {self.seed!r}: give a whole number from 0 to {MAX_SEED}")

    def as_meta(self) -> dict[str, object]:
        """What meta.json records (and a resumed run must match)."""
        return {"objective": GENERATIVE, "steps": self.steps, "seed": self.seed}


def _whole(value: object) -> bool:
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def seed_from(generator: torch.Generator) -> int:
    """One seed drawn from a caller's generator (diffusers' `generator=` argument), once per call."""
    return int(torch.randint(0, MAX_SEED, (), generator=generator, device=generator.device))


def window_generator(seed: int, window: np.ndarray) -> torch.Generator:
    """The CPU generator of one window's noise: seeded from `seed` and the window's shape, dtype and pixels."""
    digest = hashlib.blake2b(digest_size=8, key=seed.to_bytes(8, "little"))
    digest.update(f"{window.shape}{window.dtype}".encode())
    digest.update(np.ascontiguousarray(window).data)
    return torch.Generator().manual_seed(int.from_bytes(digest.digest(), "little"))
