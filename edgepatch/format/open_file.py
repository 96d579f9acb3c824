"""Opening a file the readers take: without blocking, and only if it is a regular file (spec step 1)."""

from __future__ import annotations

import os
import stat

from edgepatch.errors import MissingFileError


def open_regular_file(source: str):
    """Open without blocking (a FIFO would block a plain open) and refuse anything but a regular file."""
    try:
        fd = os.open(source, os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0))
    except FileNotFoundError:
        raise MissingFileError(f"{source}: no such file") from None
    except IsADirectoryError:
        raise MissingFileError(f"{source}: is a directory, not a file") from None
    info = os.fstat(fd)
    if not stat.S_ISREG(info.st_mode):
        os.close(fd)
        kind = "is a directory, not a file" if stat.S_ISDIR(info.st_mode) else "is not a regular file"
        raise MissingFileError(f"{source}: {kind}")
    return os.fdopen(fd, "rb"), info.st_size
