"""File-name order: frames numbered without leading zeros still sort in time order."""

from __future__ import annotations

import re


def natural_key(name: str) -> tuple:
    """Sort key that orders digit runs by value: "f2" < "f10". Ties (f01 vs f1) fall back to the plain name."""
    parts = re.split(r"(\d+)", name)
    return tuple(int(part) if index % 2 else part.lower() for index, part in enumerate(parts)), name
