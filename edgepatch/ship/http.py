"""HTTP transfers for ``fetch``: small files in memory, content files resumable on disk (stdlib ``urllib``).

Every request of one fetch goes through one ``Transfer``, which bounds it:

* ``timeout``: seconds any one connect or read may block;
* ``deadline``: seconds for the whole fetch. Each socket's timeout is capped
  by the time left, and when the deadline passes a timer shuts every open
  socket, so even a server that drips headers one byte at a time is cut off;
* ``min_rate`` over ``min_rate_window``: a body that arrives slower than
  ``min_rate`` bytes/s over any whole window is abandoned.

Exceeding a bound raises ``FetchTimeoutError``. Proxies from the environment
are honoured as by ``urllib``.

``download_file`` streams into ``<dest>.part``, never more than the manifest's
size, opened without following links (a planted symlink is refused, nothing
is written through it). If a ``.part`` exists it asks for the rest
(``Range``) and starts over when the server sends the whole file. No
``If-Range`` is sent: the URL names the content (its sha256), and static
servers compare ``If-Range`` with their own ETags, which would defeat every
resume. The finished file is fsynced, its sha256 checked against the manifest
(a wrong one is deleted, so a resume never builds on bad bytes), then renamed
into place.
"""

from __future__ import annotations

import functools
import hashlib
import http.client
import os
import socket
import stat
import threading
import time
import urllib.error
import urllib.request
import weakref
from dataclasses import dataclass

from edgepatch.atomic import fsync_dir
from edgepatch.errors import FetchError, FetchTimeoutError, IntegrityError, UnsafeCacheError, UsageError
from edgepatch.ship.manifest import (
    MANIFEST_NAME,
    MAX_MANIFEST_BYTES,
    SIGNATURE_NAME,
    FileEntry,
)
from edgepatch.ship.signing import MAX_SIGNATURE_FILE_BYTES

CHUNK = 256 * 1024
MANIFEST_ATTEMPTS = 3
USER_AGENT = "edgepatch-fetch/1"


@dataclass(frozen=True)
class Limits:
    """The bounds of one fetch (see the module docstring); seconds and bytes per second."""

    timeout: float = 30.0
    deadline: float = 300.0
    min_rate: float = 1024.0
    min_rate_window: float = 10.0

    def check(self) -> None:
        for name in ("timeout", "deadline", "min_rate_window"):
            value = getattr(self, name)
            if not (isinstance(value, (int, float)) and not isinstance(value, bool) and 0 < value < 1e7):
                raise UsageError(f"{name} must be a number of seconds in (0, 1e7); received {value!r}")
        if not (isinstance(self.min_rate, (int, float)) and not isinstance(self.min_rate, bool)
                and 0 <= self.min_rate < 1e12):
            raise UsageError(f"min_rate must be a number of bytes/s in [0, 1e12); received {self.min_rate!r}")


class _Tracked:
    """A connection whose socket the transfer tracks, so the deadline can shut it."""

    def __init__(self, *args, transfer, **kwargs):
        super().__init__(*args, **kwargs)
        self._transfer = transfer

    def connect(self):
        super().connect()
        self._transfer.track(self.sock)


class _Connection(_Tracked, http.client.HTTPConnection):
    pass


class _TLSConnection(_Tracked, http.client.HTTPSConnection):
    pass


class _Handler(urllib.request.HTTPHandler):
    def __init__(self, transfer):
        super().__init__()
        self._transfer = transfer

    def http_open(self, req):
        return self.do_open(functools.partial(_Connection, transfer=self._transfer), req)


class _TLSHandler(urllib.request.HTTPSHandler):
    def __init__(self, transfer):
        super().__init__()
        self._transfer = transfer

    def https_open(self, req):
        return self.do_open(functools.partial(_TLSConnection, transfer=self._transfer), req,
                            context=self._context)


class Transfer:
    """The HTTP side of one fetch: an opener whose sockets the deadline can cut. Use it as a context manager."""

    def __init__(self, limits: Limits):
        limits.check()
        self.limits = limits
        self.ends_at = time.monotonic() + limits.deadline
        self._sockets = weakref.WeakSet()
        self._lock = threading.Lock()
        self._expired = False
        self._timer = threading.Timer(limits.deadline, self._expire)
        self._timer.daemon = True
        self._opener = urllib.request.build_opener(_Handler(self), _TLSHandler(self))

    def __enter__(self):
        self._timer.start()
        return self

    def __exit__(self, *exc):
        self._timer.cancel()

    def track(self, sock) -> None:
        with self._lock:
            self._sockets.add(sock)
            expired = self._expired
        if expired:
            _shut(sock)

    def _expire(self) -> None:
        with self._lock:
            self._expired = True
            sockets = list(self._sockets)
        for sock in sockets:
            _shut(sock)

    def expired(self) -> bool:
        return self._expired or time.monotonic() >= self.ends_at

    def check(self, url: str, progress: str = "") -> None:
        """Raise ``FetchTimeoutError`` if the deadline has passed."""
        if self.expired():
            raise FetchTimeoutError(f"{url}: the fetch deadline of {self.limits.deadline:g} s passed{progress}")

    def open(self, url: str, headers: dict):
        self.check(url)
        request = urllib.request.Request(url, headers={"User-Agent": USER_AGENT, **headers})
        timeout = max(0.01, min(self.limits.timeout, self.ends_at - time.monotonic()))
        try:
            return self._opener.open(request, timeout=timeout)
        except urllib.error.HTTPError as error:
            error.close()
            raise FetchError(f"{url}: HTTP {error.code} {error.reason}") from None
        except urllib.error.URLError as error:
            self.check(url)
            raise FetchError(f"{url}: cannot connect ({error.reason})") from None
        except (OSError, http.client.HTTPException, ValueError) as error:
            self.check(url)
            raise FetchError(f"{url}: request failed ({error!r})") from None

    def chunks(self, response, url: str, budget: int, done: int = 0, total: int | None = None):
        """Yield the body in chunks, at most ``budget`` bytes, checking the deadline and the minimum rate.

        ``done``/``total`` only word the errors (bytes before this body, and the whole size).
        """
        limits, got = self.limits, 0
        window_start, window_bytes = time.monotonic(), 0
        while got < budget:
            progress = f" after {done + got} of {total} bytes" if total else f" after {got} bytes"
            try:
                chunk = response.read1(min(CHUNK, budget - got))
            except (OSError, http.client.HTTPException) as error:
                self.check(url, progress)
                raise FetchError(f"{url}: download stopped{progress} ({error!r})") from None
            self.check(url, progress)
            if not chunk:
                return
            got += len(chunk)
            window_bytes += len(chunk)
            yield chunk
            elapsed = time.monotonic() - window_start
            if elapsed >= limits.min_rate_window:
                if window_bytes < limits.min_rate * elapsed:
                    raise FetchTimeoutError(f"{url}: {window_bytes / elapsed:.0f} bytes/s over {elapsed:.1f} s, "
                                            f"below the minimum of {limits.min_rate:g}{progress}")
                window_start, window_bytes = time.monotonic(), 0


def _shut(sock) -> None:
    try:
        sock.shutdown(socket.SHUT_RDWR)
    except OSError:  # already closed
        pass


def _get_small(transfer: Transfer, url: str, limit: int) -> bytes:
    with transfer.open(url, {}) as response:
        data = b"".join(transfer.chunks(response, url, limit + 1))
    if len(data) > limit:
        raise FetchError(f"{url}: larger than {limit} bytes")
    return data


def get_manifest(base_url: str, transfer: Transfer) -> tuple[bytes, bytes]:
    """(manifest.json, manifest.sig) as one consistent pair: the signature is read before and after.

    Raises:
      FetchError: a request failed, a file is too large, or the bundle kept changing.
      FetchTimeoutError: a bound of ``transfer`` was exceeded.
    """
    for _ in range(MANIFEST_ATTEMPTS):
        signature = _get_small(transfer, base_url + SIGNATURE_NAME, MAX_SIGNATURE_FILE_BYTES)
        manifest = _get_small(transfer, base_url + MANIFEST_NAME, MAX_MANIFEST_BYTES)
        if _get_small(transfer, base_url + SIGNATURE_NAME, MAX_SIGNATURE_FILE_BYTES) == signature:
            return manifest, signature
    raise FetchError(f"{base_url}: the bundle changed during each of {MANIFEST_ATTEMPTS} attempts; try later")


def open_part(part: str):
    """Open (or create) a ``.part`` file for reading and writing, never through a link.

    Raises:
      UnsafeCacheError: it is a symbolic link or not a regular file.
    """
    flags = os.O_RDWR | os.O_CREAT | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_CLOEXEC", 0)
    try:
        fd = os.open(part, flags, 0o644)
    except OSError as error:
        kind = "a symbolic link" if os.path.islink(part) else f"not a regular file ({error.strerror})"
        raise UnsafeCacheError(f"{part}: {kind}; fetch writes only files it creates (delete it)") from None
    if not stat.S_ISREG(os.fstat(fd).st_mode):
        os.close(fd)
        raise UnsafeCacheError(f"{part}: not a regular file; fetch writes only files it creates (delete it)")
    return os.fdopen(fd, "r+b")


def _check_answer(response, url: str, have: int, entry: FileEntry) -> int:
    """The byte the body starts at (``have``, or 0 for a whole file), after checking status and sizes."""
    if response.status == 200:
        have = 0
    elif response.status != 206 or not response.headers.get("Content-Range", "").startswith(f"bytes {have}-"):
        raise FetchError(f"{url}: unexpected answer HTTP {response.status} "
                         f"{response.headers.get('Content-Range', '')} to a request from byte {have}")
    length = response.headers.get("Content-Length")
    if length is not None and length != str(entry.bytes - have):
        raise FetchError(f"{url}: server announces {length} bytes from byte {have}; "
                         f"the manifest lists {entry.bytes} in all")
    return have


def _copy_body(transfer: Transfer, response, handle, start: int, total: int, url: str) -> int:
    got = 0
    for chunk in transfer.chunks(response, url, total - start, start, total):
        handle.write(chunk)
        got += len(chunk)
    if start + got < total:
        raise FetchError(f"{url}: connection closed after {start + got} of {total} bytes")
    try:
        extra = response.read1(1)
    except (OSError, http.client.HTTPException):
        extra = b""  # the body was complete; a reset after it does not matter
    if extra:
        raise FetchError(f"{url}: server sent more than the {total} bytes the manifest lists")
    return got


def download_file(url: str, entry: FileEntry, dest: str, transfer: Transfer) -> int:
    """Download (or resume) ``entry`` from ``url`` into ``dest``.part, verify it, rename it to ``dest``.

    Returns:
      The bytes transferred by this call.

    Raises:
      UnsafeCacheError: the ``.part`` file is a link or not a regular file.
      FetchError: the request failed, or the answer has the wrong status, range or size.
      FetchTimeoutError: a bound of ``transfer`` was exceeded.
      IntegrityError: the complete file's sha256 differs from the manifest's.
    """
    part = dest + ".part"
    with open_part(part) as handle:
        have = os.fstat(handle.fileno()).st_size
        have = have if have < entry.bytes else 0
        with transfer.open(url, {"Range": f"bytes={have}-"} if have else {}) as response:
            have = _check_answer(response, url, have, entry)
            handle.seek(have)
            handle.truncate()
            got = _copy_body(transfer, response, handle, have, entry.bytes, url)
        handle.flush()
        os.fsync(handle.fileno())
        handle.seek(0)
        digest = hashlib.sha256()
        while chunk := handle.read(CHUNK):
            digest.update(chunk)
    if digest.hexdigest() != entry.sha256:
        os.unlink(part)  # never resume from bytes that were wrong
        raise IntegrityError(f"{url}: sha256 {digest.hexdigest()}, but the manifest lists {entry.sha256}")
    os.replace(part, dest)
    fsync_dir(os.path.dirname(dest))
    return got
