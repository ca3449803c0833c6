"""Finding and converting checkpoints: official DVD, Wan2.1 original/diffusers layouts, our own format, the Hub."""

from dvd.weights.load import DEFAULT_DVD_REPO, DEFAULT_WAN_REPO, LoadedWeights, load_weights

__all__ = ["DEFAULT_DVD_REPO", "DEFAULT_WAN_REPO", "LoadedWeights", "load_weights"]
