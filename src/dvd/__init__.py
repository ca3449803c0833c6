"""dvd: video depth estimation with DVD (Deterministic Video Depth)."""

__version__ = "0.1.0"
