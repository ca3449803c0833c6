"""The inference settings a model was made for, saved with it, and how a run picks each setting.

A model trained at one size and window length predicts best at those: the tiny proof model knows 64x64 pixels and
5-frame windows, the official release 480x640 and long windows. So a model may carry its own defaults for the
sizing and window settings (`SETTINGS`): in the header of a single-file model (`dvd.weights.single_file`) and in the
`model_index.json` that `DVDPipeline.save_pretrained` writes (key `CONFIG_KEY`); `dvd.weights.about.read_defaults`
reads them. Official checkpoints, Wan2.1 bases and Hub repositories carry none and run at dvd's defaults, the
official release's (`dvd.options`).

Each setting of a run is, in this order: the value the user gave (a flag, a keyword argument, a form field), else
the model's default, else its backbone's (window and overlap: `Backbone.default_window`, `default_overlap`), else
dvd's (`ModelDefaults.resolve`).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field, replace

from dvd.errors import DVDError
from dvd.options import DEFAULT_MIN_HEIGHT, DEFAULT_MIN_WIDTH, DEFAULT_OVERLAP, DEFAULT_WINDOW

CONFIG_KEY = "defaults"  # in a single file's header (as JSON) and in model_index.json
# dvd's own defaults, those of the official release (the official open-world script's sizes and windows).
DVD_DEFAULTS: dict[str, int] = {
    "height": DEFAULT_MIN_HEIGHT,
    "width": DEFAULT_MIN_WIDTH,
    "window": DEFAULT_WINDOW,
    "overlap": DEFAULT_OVERLAP,
}
SETTINGS = tuple(DVD_DEFAULTS)


@dataclass(frozen=True)
class ModelDefaults:
    """A model's own defaults for `dvd predict`'s --height, --width, --window and --overlap; None: dvd's."""

    height: int | None = None
    width: int | None = None
    window: int | None = None
    overlap: int | None = None
    # The backbone's own (window, overlap) (`for_backbone`), for where the model sets none: not the model's, so
    # never saved.
    backbone: tuple[int, int] | None = field(default=None, compare=False)

    @classmethod
    def from_config(cls, value: object, where: str) -> ModelDefaults:
        """The defaults as saved (a mapping, its JSON text, or None for none); DVDError naming `where` otherwise."""
        if value is None:
            return cls()
        try:
            entries = json.loads(value) if isinstance(value, str) else value
        except ValueError:
            entries = None
        if not isinstance(entries, Mapping) or set(entries) - set(SETTINGS):
            raise DVDError(
                f"the model defaults in {where} are {value!r}, not a mapping of {', '.join(SETTINGS)}: "
                "re-save the model"
            )
        for name, setting in entries.items():
            if type(setting) is not int or setting < 1:
                raise DVDError(f"the model default {name} in {where} is {setting!r}, not a positive whole number")
        return cls(**entries)

    def for_backbone(self, window: int, overlap: int) -> ModelDefaults:
        """These defaults over the backbone's own window and overlap."""
        return replace(self, backbone=(window, overlap))

    def as_config(self) -> dict[str, int]:
        """The settings this model sets, as saved (JSON-ready)."""
        return {name: getattr(self, name) for name in SETTINGS if getattr(self, name) is not None}

    def resolve(self, given: Mapping[str, int | None]) -> dict[str, int]:
        """Each of `SETTINGS`: the value in `given` unless it is None (absent: None), else the model's, else the
        backbone's, else dvd's."""
        backbone = dict(zip(("window", "overlap"), self.backbone or (), strict=False))
        fallback = {**DVD_DEFAULTS, **backbone, **self.as_config()}
        chosen = {name: given.get(name) for name in SETTINGS}
        return {name: fallback[name] if value is None else value for name, value in chosen.items()}

    def describe(self) -> str:
        """The resolved defaults in a few words, e.g. '64x64, window 5, overlap 2'."""
        values = self.resolve({})
        return f"{values['height']}x{values['width']}, window {values['window']}, overlap {values['overlap']}"
