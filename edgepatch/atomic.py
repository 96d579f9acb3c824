"""Crash-safe file and directory writes: temp, fsync, rename (stdlib only).

A reader of the target sees the old complete content or the new complete
content, never a mix, even if the writer is killed (SIGKILL) or the machine
loses power after the call returns. Used by bundles (``pack``), ``convert``'s
output, the fetch cache and key files; runtime-safe (no numpy, no TensorFlow).

Published directories (``make_stage_dir`` + ``replace_dir``) are made to be
served: directories 0755 and files 0644, whatever the umask, so a web server
running as another user can read them. Private keys are written 0600.

Stale stages. A stage directory ``.<target>.<purpose>-XXXXXXXX`` (and the
``.<target>.old-XXXXXXXX`` a replace sets aside) holds an exclusive ``flock``
for as long as its process works on it; a killed process loses it. The next
``make_stage_dir`` for the same target removes every such sibling whose lock
it can take: a directory (not a link) with exactly that name shape, which no
live process holds. Creating a stage and scanning for stale ones both hold a
lock on the parent directory, so a fresh stage is never taken for a stale one.
Where ``fcntl`` is missing nothing is locked and nothing is removed.
"""

from __future__ import annotations

import contextlib
import os
import re
import secrets
import shutil
import stat
import tempfile

from edgepatch.errors import MissingFileError, UsageError

try:
    import fcntl
except ImportError:  # not POSIX: no locks, so no stale-stage cleanup
    fcntl = None

PUBLIC_DIR_MODE = 0o755
PUBLIC_FILE_MODE = 0o644
_PURPOSE = re.compile(r"[a-z]{1,16}")
_ASIDE = "old"
_LOCKS: dict[str, int] = {}  # stage or set-aside directory -> the fd holding its flock


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


def _open_dir(path: str, follow: bool = False) -> int | None:
    try:
        return os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC | (0 if follow else os.O_NOFOLLOW))
    except OSError:  # gone, a link, or not a directory
        return None


def _try_lock(fd: int) -> bool:
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:  # held by a live process, or the file system has no locks
        return False
    return True


@contextlib.contextmanager
def _parent_locked(parent: str):
    fd = _open_dir(parent, follow=True) if fcntl else None
    try:
        if fd is not None:
            with contextlib.suppress(OSError):  # a file system without locks: go on unlocked
                fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        if fd is not None:
            os.close(fd)  # releases the lock


def _locked_temp_dir(parent: str, prefix: str) -> str:
    """A new directory under ``parent`` whose flock this process holds until ``_release``."""
    with _parent_locked(parent):
        path = tempfile.mkdtemp(prefix=prefix, dir=parent)
        fd = _open_dir(path) if fcntl else None
        if fd is not None and _try_lock(fd):
            _LOCKS[path] = fd
        elif fd is not None:
            os.close(fd)
    return path


def _release(path: str) -> None:
    fd = _LOCKS.pop(path, None)
    if fd is not None:
        os.close(fd)


def remove_stale_stages(target: str, purpose: str) -> list[str]:
    """Remove the stage (``purpose``) and set-aside directories of ``target`` left by killed runs.

    Returns:
      The directories removed (see the module docstring for what counts as stale).
    """
    target = os.path.abspath(target)
    parent, name = os.path.split(target)
    for path in [p for p in _LOCKS if not os.path.lexists(p)]:
        _release(path)  # stages this process made and a caller removed without replace_dir
    if fcntl is None or not os.path.isdir(parent):
        return []
    pattern = re.compile(rf"\.{re.escape(name)}\.(?:{purpose}|{_ASIDE})-[a-z0-9_]{{8}}")
    stale = []
    with _parent_locked(parent):
        for entry in sorted(os.listdir(parent)):
            fd = _open_dir(os.path.join(parent, entry)) if pattern.fullmatch(entry) else None
            if fd is not None and _try_lock(fd):
                stale.append((os.path.join(parent, entry), fd))
            elif fd is not None:
                os.close(fd)
    for path, fd in stale:
        shutil.rmtree(path, ignore_errors=True)
        os.close(fd)
    return [path for path, _ in stale]


def make_stage_dir(target: str, purpose: str) -> str:
    """A fresh, locked temp directory (mode 0755) beside ``target``, on the same file system.

    First removes the stale stages of earlier, killed runs for ``target`` (``remove_stale_stages``).

    Raises:
      UsageError: ``purpose`` is not 1..16 lowercase letters.
    """
    if not (isinstance(purpose, str) and _PURPOSE.fullmatch(purpose)) or purpose == _ASIDE:
        raise UsageError(f"stage purpose must be 1..16 lowercase letters other than '{_ASIDE}'; received {purpose!r}")
    target = os.path.abspath(target)
    parent = os.path.dirname(target)
    os.makedirs(parent, exist_ok=True)
    remove_stale_stages(target, purpose)
    stage = _locked_temp_dir(parent, f".{os.path.basename(target)}.{purpose}-")
    os.chmod(stage, PUBLIC_DIR_MODE)
    return stage


def discard_stage(stage: str) -> None:
    """Remove a stage that will not be published, and release its lock."""
    shutil.rmtree(stage, ignore_errors=True)
    _release(os.path.abspath(stage))


def _make_public(root: str) -> None:
    """Directories 0755 and regular files 0644 under ``root`` (links are left alone)."""
    os.chmod(root, PUBLIC_DIR_MODE)
    for directory, subdirs, files in os.walk(root):
        for name in subdirs:
            if not os.path.islink(os.path.join(directory, name)):
                os.chmod(os.path.join(directory, name), PUBLIC_DIR_MODE)
        for name in files:
            path = os.path.join(directory, name)
            if stat.S_ISREG(os.lstat(path).st_mode):
                os.chmod(path, PUBLIC_FILE_MODE)


def replace_dir(stage: str, target: str) -> None:
    """Publish the complete directory ``stage`` as ``target``, replacing what was there.

    The tree is first made world-readable (``_make_public``). The old directory
    is moved aside before the stage is renamed in, so a kill between the two
    renames leaves the target absent (never half-written); the old copy then
    sits in a ``.<name>.old-*`` sibling, which the next ``make_stage_dir``
    removes. Both directories must be on one file system.
    """
    stage, target = os.path.abspath(stage), os.path.abspath(target)
    parent = os.path.dirname(target)
    _make_public(stage)
    fsync_dir(stage)
    aside = None
    if os.path.lexists(target):
        aside = _locked_temp_dir(parent, f".{os.path.basename(target)}.{_ASIDE}-")
        os.rename(target, os.path.join(aside, "old"))
    os.rename(stage, target)
    _release(stage)
    fsync_dir(parent)
    if aside is not None:
        shutil.rmtree(aside)
        _release(aside)


def is_regular_file(path: str) -> bool:
    """True for a regular file (following symlinks); False for missing, directories, FIFOs."""
    try:
        return stat.S_ISREG(os.stat(path).st_mode)
    except OSError:
        return False


def read_small_file(path: str, limit: int, what: str = "file") -> bytes:
    """The bytes of a regular file of at most ``limit`` bytes, read with a bound.

    Devices, FIFOs and directories are refused before any read (stat before
    open, then O_NONBLOCK so a FIFO swapped in meanwhile cannot block, and
    fstat again on the open descriptor).

    Raises:
      MissingFileError: ``path`` does not exist.
      UsageError: ``path`` is not a regular file, or holds more than ``limit`` bytes.
    """
    try:
        info = os.stat(path)
    except FileNotFoundError:
        raise MissingFileError(f"{what} '{path}' does not exist") from None
    except OSError as error:
        raise UsageError(f"{what} '{path}' cannot be read: {error.strerror}") from None
    flags = os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_CLOEXEC", 0)
    fd = os.open(path, flags) if stat.S_ISREG(info.st_mode) else None
    try:
        if fd is None or not stat.S_ISREG(os.fstat(fd).st_mode):
            raise UsageError(f"{what} '{path}' is not a regular file")
        data = os.read(fd, limit + 1)
        while len(data) <= limit:
            chunk = os.read(fd, limit + 1 - len(data))
            if not chunk:
                break
            data += chunk
    finally:
        if fd is not None:
            os.close(fd)
    if len(data) > limit:
        raise UsageError(f"{what} '{path}' is larger than {limit} bytes")
    return data
