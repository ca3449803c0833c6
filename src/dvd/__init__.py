"""dvd: video depth estimation with DVD (Deterministic Video Depth).

Outputs are affine-invariant disparity: larger values are nearer; scale and shift are unknown.
"""

from dvd.inference.pipeline import DVDPipeline
from dvd.model import DVDModel

__version__ = "0.1.0"
__all__ = ["DVDModel", "DVDPipeline", "__version__"]
