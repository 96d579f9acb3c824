"""HTTP transfers for ``fetch``: small files in memory, content files resumable on disk (stdlib ``urllib``).

``download_file`` streams into ``<dest>.part``, never more than the manifest's
size; if a ``.part`` exists it asks for the rest (``Range`` + ``If-Range``)
and starts over when the server sends the whole file. The finished file is
fsynced, its sha256 checked against the manifest (a wrong one is deleted, so
a resume never builds on bad bytes), then renamed into place.
"""

from __future__ import annotations

import hashlib
import http.client
import os
import urllib.error
import urllib.request

from edgepatch.atomic import fsync_dir, is_regular_file
from edgepatch.errors import FetchError, IntegrityError
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


def _open_url(url: str, headers: dict, timeout: float):
    request = urllib.request.Request(url, headers={"User-Agent": USER_AGENT, **headers})
    try:
        return urllib.request.urlopen(request, timeout=timeout)
    except urllib.error.HTTPError as error:
        error.close()
        raise FetchError(f"{url}: HTTP {error.code} {error.reason}") from None
    except urllib.error.URLError as error:
        raise FetchError(f"{url}: cannot connect ({error.reason})") from None
    except (OSError, http.client.HTTPException, ValueError) as error:
        raise FetchError(f"{url}: request failed ({error!r})") from None


def _get_small(url: str, limit: int, timeout: float) -> bytes:
    with _open_url(url, {}, timeout) as response:
        try:
            data = response.read(limit + 1)
        except (OSError, http.client.HTTPException) as error:
            raise FetchError(f"{url}: download failed ({error!r})") from None
    if len(data) > limit:
        raise FetchError(f"{url}: larger than {limit} bytes")
    return data


def get_manifest(base_url: str, timeout: float) -> tuple[bytes, bytes]:
    """(manifest.json, manifest.sig) as one consistent pair: the signature is read before and after.

    Raises:
      FetchError: a request failed, a file is too large, or the bundle kept changing.
    """
    for _ in range(MANIFEST_ATTEMPTS):
        signature = _get_small(base_url + SIGNATURE_NAME, MAX_SIGNATURE_FILE_BYTES, timeout)
        manifest = _get_small(base_url + MANIFEST_NAME, MAX_MANIFEST_BYTES, timeout)
        if _get_small(base_url + SIGNATURE_NAME, MAX_SIGNATURE_FILE_BYTES, timeout) == signature:
            return manifest, signature
    raise FetchError(f"{base_url}: the bundle changed during each of {MANIFEST_ATTEMPTS} attempts; try later")


def _copy_body(response, handle, start: int, total: int, url: str) -> int:
    got, extra = 0, b""
    try:
        while start + got < total:
            chunk = response.read(min(CHUNK, total - start - got))
            if not chunk:
                raise FetchError(f"{url}: connection closed after {start + got} of {total} bytes")
            handle.write(chunk)
            got += len(chunk)
        extra = response.read(1)
    except (OSError, http.client.HTTPException) as error:
        if start + got < total:
            raise FetchError(f"{url}: download stopped after {start + got} of {total} bytes ({error!r})") from None
    if extra:
        raise FetchError(f"{url}: server sent more than the {total} bytes the manifest lists")
    return got


def download_file(url: str, entry: FileEntry, dest: str, timeout: float) -> int:
    """Download (or resume) ``entry`` from ``url`` into ``dest``.part, verify it, rename it to ``dest``.

    Returns:
      The bytes transferred by this call.

    Raises:
      FetchError: the request failed, or the answer has the wrong status, range or size.
      IntegrityError: the complete file's sha256 differs from the manifest's.
    """
    part = dest + ".part"
    have = os.path.getsize(part) if is_regular_file(part) else 0
    have = have if have < entry.bytes else 0
    headers = {"Range": f"bytes={have}-", "If-Range": f'"{entry.sha256}"'} if have else {}
    with _open_url(url, headers, timeout) as response:
        if response.status == 200:
            have = 0
        elif response.status != 206 or not response.headers.get("Content-Range", "").startswith(f"bytes {have}-"):
            raise FetchError(f"{url}: unexpected answer HTTP {response.status} "
                             f"{response.headers.get('Content-Range', '')} to a request from byte {have}")
        length = response.headers.get("Content-Length")
        if length is not None and length != str(entry.bytes - have):
            raise FetchError(f"{url}: server announces {length} bytes from byte {have}; "
                             f"the manifest lists {entry.bytes} in all")
        with open(part, "r+b" if have else "wb") as handle:
            handle.seek(have)
            handle.truncate()
            got = _copy_body(response, handle, have, entry.bytes, url)
            handle.flush()
            os.fsync(handle.fileno())
    digest = hashlib.sha256()
    with open(part, "rb") as handle:
        while chunk := handle.read(CHUNK):
            digest.update(chunk)
    if digest.hexdigest() != entry.sha256:
        os.unlink(part)  # never resume from bytes that were wrong
        raise IntegrityError(f"{url}: sha256 {digest.hexdigest()}, but the manifest lists {entry.sha256}")
    os.replace(part, dest)
    fsync_dir(os.path.dirname(dest))
    return got
