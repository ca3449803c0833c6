"""Turning a failed weights write into one line naming the output, whatever library did the writing.

safetensors reports a full disk as a `SafetensorError` and torch.save as a `RuntimeError`, neither an OSError, so
the CLI's handling of OSError does not see them. Wrapping a write in `write_errors(final)` names the final path
(not the hidden staging one the library was writing) and says what to do; the atomic helpers of `dvd.io.atomic`
around it remove the staging output.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from safetensors import SafetensorError

from dvd.errors import DVDError

# What torch.save's C++ writer says when the disk fills (it does not keep the OS error).
_TORCH_WRITE_FAILURES = ("file write failed", "unexpected pos", "No space left", "Disk quota")
_OS_MESSAGE = re.compile(r'message: "([^"]+)"')  # the OS error inside safetensors' Rust error text


def _reason(error: BaseException) -> str:
    if isinstance(error, OSError) and error.strerror:
        return error.strerror
    text = str(error)
    found = _OS_MESSAGE.search(text)
    return found.group(1) if found else text.splitlines()[0] if text else type(error).__name__


@contextmanager
def write_errors(final: Path) -> Iterator[None]:
    """Re-raise a disk error of the writes inside as a DVDError naming `final` and the fix."""
    try:
        yield
    except (SafetensorError, OSError) as error:
        raise DVDError(_message(final, _reason(error))) from None
    except RuntimeError as error:
        if not any(marker in str(error) for marker in _TORCH_WRITE_FAILURES):
            raise
        raise DVDError(_message(final, _reason(error))) from None


def _message(final: Path, reason: str) -> str:
    return (
        f"could not write {final} ({reason}); nothing was written there: free disk space "
        "(or check permissions, or choose another output path) and run again"
    )
