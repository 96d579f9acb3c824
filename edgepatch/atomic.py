"""Crash-safe file and directory writes: temp, fsync, rename (stdlib only).

A reader of the target sees the old complete content or the new complete
content, never a mix, even if the writer is killed (SIGKILL) or the machine
loses power after the call returns. Used by bundles (``pack``), the fetch
cache and key files; runtime-safe (no numpy, no TensorFlow).
"""

from __future__ import annotations

import os
import secrets
import shutil
import stat
import tempfile

from edgepatch.errors import MissingFileError


def fsync_dir(directory: str) -> None:
    """Make renames inside ``directory`` durable (a no-op where POSIX O_DIRECTORY is missing)."""
    if not hasattr(os, "O_DIRECTORY"):
        return
    fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_bytes_atomic(path: str, data: bytes, mode: int = 0o666) -> int:
    """Write ``data`` to ``path`` through a temp file in the same directory; returns len(data).

    Args:
      path: the target file; its directory must exist.
      data: the complete new content.
      mode: permission bits for a new file (the umask applies; 0o600 for private keys).

    Raises:
      MissingFileError: the target's directory does not exist.
    """
    target = os.fsdecode(path)
    directory = os.path.dirname(os.path.abspath(target))
    if not os.path.isdir(directory):
        raise MissingFileError(f"{target}: directory {directory} does not exist")
    temp = os.path.join(directory, f".{os.path.basename(target)}.{secrets.token_hex(6)}.tmp")
    fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temp, target)
    except BaseException:
        if os.path.exists(temp):
            os.unlink(temp)
        raise
    fsync_dir(directory)
    return len(data)


def make_stage_dir(target: str, purpose: str) -> str:
    """A fresh temp directory beside ``target`` (same file system, so renames are atomic)."""
    parent = os.path.dirname(os.path.abspath(target))
    os.makedirs(parent, exist_ok=True)
    return tempfile.mkdtemp(prefix=f".{os.path.basename(target)}.{purpose}-", dir=parent)


def replace_dir(stage: str, target: str) -> None:
    """Move the complete directory ``stage`` to ``target``, replacing what was there.

    The old directory is first moved aside, so a kill between the two renames
    leaves the target absent (never half-written); the old copy then sits in a
    ``.<name>.old-*`` sibling. Both directories must be on one file system.
    """
    target = os.path.abspath(target)
    parent = os.path.dirname(target)
    fsync_dir(stage)
    aside = None
    if os.path.lexists(target):
        aside = tempfile.mkdtemp(prefix=f".{os.path.basename(target)}.old-", dir=parent)
        os.rename(target, os.path.join(aside, "old"))
    os.rename(stage, target)
    fsync_dir(parent)
    if aside is not None:
        shutil.rmtree(aside)


def is_regular_file(path: str) -> bool:
    """True for a regular file (following symlinks); False for missing, directories, FIFOs."""
    try:
        return stat.S_ISREG(os.stat(path).st_mode)
    except OSError:
        return False
