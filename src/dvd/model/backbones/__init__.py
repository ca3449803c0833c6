"""Every backbone family dvd runs, by the name a trained model records (`Backbone.family`), in the order
`dvd.model.backbone.backbone_for` asks them."""

from __future__ import annotations

from dvd.model.backbone import Backbone
from dvd.model.backbones.cogvideox import CogVideoXBackbone
from dvd.model.backbones.ltx import LTXVideoBackbone
from dvd.model.backbones.wan import Wan21Backbone, Wan22Backbone

# Nothing else in dvd lists the families.
FAMILIES: tuple[type[Backbone], ...] = (Wan21Backbone, Wan22Backbone, CogVideoXBackbone, LTXVideoBackbone)

BACKBONES: dict[str, type[Backbone]] = {backbone.family: backbone for backbone in FAMILIES}

__all__ = ["BACKBONES"]
