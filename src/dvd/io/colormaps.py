"""Colour maps for depth visualisation, built the way the official DVD code builds its Spectral_r table.

A map is a 256-entry uint8 RGB table; values in [0, 1] index it by truncation, `uint8(clip(v * 255, 0, 255))`, as
the official demo does. The tables come from matplotlib, sampled at `linspace(0, 1, 256)` and truncated to uint8, so
they equal the official visualisation's table exactly. "gray" is the identity ramp, which is what the official
`--grayscale` output writes.
"""

from __future__ import annotations

from functools import cache

import numpy as np

from dvd.errors import DVDError
from dvd.options import COLORMAPS, DEFAULT_COLORMAP


@cache
def colormap_table(name: str) -> np.ndarray:
    """The uint8 [256, 3] RGB table of colour map `name` (one of COLORMAPS). Read-only; cached."""
    if name not in COLORMAPS:
        raise DVDError(f"unknown colour map '{name}': choose one of {', '.join(COLORMAPS)}")
    if name == "gray":
        table = np.repeat(np.arange(256, dtype=np.uint8)[:, None], 3, axis=1)
    else:
        # Imported here: matplotlib costs ~0.3 s to import and only the visual outputs need it.
        import matplotlib

        samples = matplotlib.colormaps[name](np.linspace(0.0, 1.0, 256))[:, :3]
        table = (samples * 255).astype(np.uint8)
    table.flags.writeable = False
    return table


def colorize(values: np.ndarray, name: str = DEFAULT_COLORMAP) -> np.ndarray:
    """Map values in [0, 1] (any shape; outside is clipped) to uint8 RGB of shape values.shape + (3,).

    With Spectral_r, 0 (far) is blue and 1 (near) is red.
    """
    # In place and with np.take: the same numbers as clip(v * 255).astype(uint8) and table[index], in a fraction of
    # the time on a 720p frame (fancy indexing of a 2-D index is ~4x slower than take along axis 0).
    scaled = np.multiply(values, np.float32(255.0), out=np.empty(np.shape(values), np.float32), dtype=np.float32)
    index = np.clip(scaled, 0.0, 255.0, out=scaled).astype(np.uint8)
    return np.take(colormap_table(name), index, axis=0)
