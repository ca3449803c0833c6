"""The DVD model on diffusers: a video DiT and its VAE (a backbone, `dvd.model.backbones`) wired as a one-pass depth
regressor."""

from dvd.model.dvd_model import DVDModel

__all__ = ["DVDModel"]
