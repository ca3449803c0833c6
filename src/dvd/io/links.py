"""A file put somewhere else without copying its bytes where the file system allows it."""

from __future__ import annotations

import errno
import os
import shutil
from pathlib import Path

# Why a hard link may be refused where a copy works: another file system, one without hard links, a link limit.
_LINK_REFUSED = (errno.EXDEV, errno.EPERM, errno.EMLINK, errno.ENOTSUP, errno.EACCES)


def link_or_copy(source: Path, destination: Path, follow_symlinks: bool = True) -> Path:
    """`destination` as a hard link to `source`'s file, or a copy of it where no link can be made. For files that
    are only read afterwards: a hard link shares the file, so writing to one would change both."""
    try:
        os.link(source, destination, follow_symlinks=follow_symlinks)
    except OSError as error:
        if error.errno not in _LINK_REFUSED:
            raise
        shutil.copyfile(source, destination, follow_symlinks=follow_symlinks)
    return Path(destination)
