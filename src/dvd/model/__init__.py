"""The DVD model on diffusers: the Wan2.1 DiT and VAE wired as a one-pass depth regressor."""

from dvd.model.dvd_model import DVDModel

__all__ = ["DVDModel"]
