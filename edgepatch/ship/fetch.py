"""Fetch a signed bundle over HTTP into a local cache; nothing is used before it is verified.

Runtime side: stdlib ``urllib`` + numpy + ``cryptography``, never TensorFlow.

Cache layout (``cache_dir``)::

    current                     {"formats": [...], "manifest_sha256": "<hex>"}: the active version
    manifests/<sha256>.json     verified manifests (the active one and the one before)
    manifests/<sha256>.sig      their signatures
    files/<sha256>.<ext>        verified content files
    files/<sha256>.<ext>.part   an interrupted download; the next fetch resumes it (Range)
    lock                        held while a fetch runs (one fetch per cache at a time)

``fetch`` steps, in order:

1. GET ``manifest.sig``, ``manifest.json``, then ``manifest.sig`` again; if the
   signature changed the bundle was replaced meanwhile, so start over (at most
   ``edgepatch.ship.http.MANIFEST_ATTEMPTS`` times).
2. Verify the signature over the exact manifest bytes (``SignatureError``), then
   parse the manifest (``BundleError``) and check it names the signing key.
3. For each file needed (the bases of ``formats`` and every delta): keep a
   cached copy whose sha256 matches, else download into ``.part`` (resuming),
   check size and sha256 (``FetchError``, ``IntegrityError``), fsync, rename.
4. Check every delta: a valid delta of the listed task, made for exactly these
   bases (delta errors, ``BundleError``, ``WrongBaseError``).
5. Store the manifest and signature, then replace ``current`` atomically (temp
   file, fsync, rename). Only now is the new version active.
6. Delete files and manifests used by neither the new nor the previous version.

A failure or kill before step 5 leaves ``current``, and the version it names,
untouched: the previous good version stays active.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
from dataclasses import dataclass
from urllib.parse import urlsplit

from edgepatch.atomic import is_regular_file, write_bytes_atomic
from edgepatch.ship.bundle import check_delta, check_file
from edgepatch.format.delta import Delta
from edgepatch.ship.http import download_file, get_manifest
from edgepatch.errors import BundleError, IntegrityError, SignatureError, UsageError
from edgepatch.ship.manifest import (
    BASE_FORMATS,
    FILES_DIR,
    MANIFEST_NAME,
    MAX_MANIFEST_BYTES,
    FileEntry,
    Manifest,
    TaskEntry,
    parse_manifest,
)
from edgepatch.ship.signing import MAX_SIGNATURE_FILE_BYTES, trusted_keys, verify_manifest

CURRENT_NAME = "current"
MANIFESTS_DIR = "manifests"
_HEX64 = re.compile(r"[0-9a-f]{64}")


@dataclass(frozen=True)
class CachedBundle:
    """A verified bundle version in a cache.

    Fields:
      cache_dir: the cache directory.
      manifest: the verified manifest.
      manifest_sha256: sha256 of its bytes (the version's id in the cache).
      key_id: the trusted key that signed it.
      formats: the base formats held in the cache.
      downloaded_bytes: bytes downloaded by the ``fetch`` that returned this (0 from ``open_cached``).
    """

    cache_dir: str
    manifest: Manifest
    manifest_sha256: str
    key_id: str
    formats: tuple[str, ...]
    downloaded_bytes: int = 0

    def base_path(self, fmt: str = "tflite") -> str:
        """The cached base file of a format (pass it to ``edgepatch.runtime.load_base``)."""
        if fmt not in self.formats:
            raise UsageError(f"format must be one of {list(self.formats)} (cached); received {fmt!r}")
        return os.path.join(self.cache_dir, self.manifest.bases[fmt].file)

    def _task(self, name: str) -> TaskEntry:
        for entry in self.manifest.tasks:
            if entry.name == name:
                return entry
        raise UsageError(f"task must be one of {[t.name for t in self.manifest.tasks]}; received {name!r}")

    def delta_path(self, task: str) -> str:
        """The cached delta file of a task. Prefer ``load_delta``, which checks it again as it reads it."""
        return os.path.join(self.cache_dir, self._task(task).delta.file)

    def load_delta(self, task: str) -> Delta:
        """Read a task's delta and check it at the point of use: sha256, then format, task and fingerprints.

        Raises:
          UsageError: unknown task. BundleError: the file is missing. IntegrityError: its bytes changed.
          Delta errors, WrongBaseError: as ``edgepatch.ship.bundle.check_delta``.
        """
        entry = self._task(task)
        path = os.path.join(self.cache_dir, entry.delta.file)
        if not is_regular_file(path):
            raise BundleError(f"{path}: missing from the cache; fetch again")
        with open(path, "rb") as handle:
            data = handle.read(entry.delta.bytes + 1)
        if hashlib.sha256(data).hexdigest() != entry.delta.sha256:
            raise IntegrityError(f"{path}: sha256 {hashlib.sha256(data).hexdigest()}, but the manifest lists "
                                 f"{entry.delta.sha256}")
        return check_delta(data, entry, self.manifest, self.formats, path)


def _is_cached(path: str, entry: FileEntry) -> bool:
    try:
        check_file(path, entry, path)
    except BundleError:  # missing, or damaged (IntegrityError): download it again
        return False
    return True


def _check_args(url: str, cache_dir: str, formats) -> str:
    try:
        parts = urlsplit(url) if isinstance(url, str) else None
    except ValueError:  # e.g. an unclosed IPv6 bracket
        parts = None
    if parts is None or parts.scheme not in ("http", "https") or not parts.netloc:
        raise UsageError(f"url must be an http:// or https:// URL of a bundle; received {url!r}")
    if not (isinstance(cache_dir, (str, os.PathLike)) and os.fspath(cache_dir)):
        raise UsageError(f"cache_dir must be a directory path; received {cache_dir!r}")
    if formats is not None and (isinstance(formats, str) or not set(formats) <= set(BASE_FORMATS) or not formats):
        raise UsageError(f"formats must be a non-empty list from {list(BASE_FORMATS)}; received {formats!r}")
    return url if url.endswith("/") else url + "/"


@contextlib.contextmanager
def _locked(cache_dir: str):
    try:
        import fcntl
    except ImportError:  # not POSIX: no cross-process lock
        yield
        return
    with open(os.path.join(cache_dir, "lock"), "a+b") as handle:
        fcntl.flock(handle.fileno(), fcntl.LOCK_EX)
        yield


def _read_current(cache_dir: str) -> dict | None:
    path = os.path.join(cache_dir, CURRENT_NAME)
    if not is_regular_file(path):
        return None
    try:
        with open(path, "rb") as handle:
            current = json.loads(handle.read(4096).decode("utf-8"))
        if not (isinstance(current, dict) and set(current) == {"formats", "manifest_sha256"}
                and isinstance(current["manifest_sha256"], str) and _HEX64.fullmatch(current["manifest_sha256"])
                and isinstance(current["formats"], list) and all(isinstance(f, str) for f in current["formats"])):
            raise ValueError("not a pointer")
        return current
    except (ValueError, UnicodeDecodeError):
        raise BundleError(f"{path}: not a cache pointer file; delete the cache and fetch again") from None


def _previous_version(cache_dir: str) -> str | None:
    try:
        current = _read_current(cache_dir)
    except BundleError:  # a damaged pointer must not block a good update
        return None
    return current["manifest_sha256"] if current else None


def _collect_garbage(cache_dir: str, keep_manifests: set[str]) -> None:
    keep_files = set()
    for sha in keep_manifests:
        try:
            with open(os.path.join(cache_dir, MANIFESTS_DIR, f"{sha}.json"), "rb") as handle:
                keep_files |= {os.path.basename(f.file) for f in parse_manifest(handle.read()).files()}
        except (OSError, BundleError):
            continue  # a damaged previous version: nothing of it to keep
    for name in os.listdir(os.path.join(cache_dir, FILES_DIR)):
        if name.removesuffix(".part") not in keep_files:
            os.unlink(os.path.join(cache_dir, FILES_DIR, name))
    for name in os.listdir(os.path.join(cache_dir, MANIFESTS_DIR)):
        if name.split(".")[0] not in keep_manifests:
            os.unlink(os.path.join(cache_dir, MANIFESTS_DIR, name))


def _verified(manifest_bytes: bytes, signature: bytes, trusted: dict, source: str) -> tuple[Manifest, str]:
    signer = verify_manifest(manifest_bytes, signature, trusted, source)
    manifest = parse_manifest(manifest_bytes, source)
    if manifest.key_id != signer:
        raise SignatureError(f"{source}: names key_id {manifest.key_id}, but is signed by key {signer}")
    return manifest, signer


def _check_deltas(manifest: Manifest, cache_dir: str, formats: tuple[str, ...], source_prefix: str) -> None:
    for task in manifest.tasks:
        with open(os.path.join(cache_dir, task.delta.file), "rb") as handle:
            check_delta(handle.read(task.delta.bytes + 1), task, manifest, formats, source_prefix + task.delta.file)


def fetch(url: str, pubkeys, cache_dir: str, formats=None, timeout: float = 30.0) -> CachedBundle:
    """Download a bundle's new files into ``cache_dir``, verify everything, then make it current.

    Args:
      url: the bundle's base URL (``edgepatch serve``), e.g. "http://127.0.0.1:8000/".
      pubkeys: trusted Ed25519 public keys: a key, a PEM path, or a list of them.
      cache_dir: the local cache (created if missing).
      formats: base formats to fetch (default: every format of the bundle).
      timeout: seconds per network operation.

    Returns:
      The verified ``CachedBundle`` now active in the cache.

    Raises:
      UsageError: bad arguments. FetchError: network, HTTP or size failure.
      SignatureError, BundleError, IntegrityError, WrongBaseError, delta errors: a bundle
      that fails verification. On any error the previous version stays active.
    """
    base_url = _check_args(url, cache_dir, formats)
    trusted = trusted_keys(pubkeys)
    cache_dir = os.path.abspath(os.fspath(cache_dir))
    for sub in (FILES_DIR, MANIFESTS_DIR):
        os.makedirs(os.path.join(cache_dir, sub), exist_ok=True)
    with _locked(cache_dir):
        manifest_bytes, signature = get_manifest(base_url, timeout)
        manifest, signer = _verified(manifest_bytes, signature, trusted, base_url + MANIFEST_NAME)
        chosen = tuple(sorted(manifest.bases)) if formats is None else tuple(sorted(set(formats)))
        missing = [fmt for fmt in chosen if fmt not in manifest.bases]
        if missing:
            raise BundleError(f"{base_url}{MANIFEST_NAME}: no {missing[0]} base (the bundle has: "
                              f"{', '.join(sorted(manifest.bases))})")
        downloaded = 0
        for entry in [manifest.bases[fmt] for fmt in chosen] + [task.delta for task in manifest.tasks]:
            dest = os.path.join(cache_dir, entry.file)
            if not _is_cached(dest, entry):
                downloaded += download_file(base_url + entry.file, entry, dest, timeout)
        _check_deltas(manifest, cache_dir, chosen, base_url)
        sha = hashlib.sha256(manifest_bytes).hexdigest()
        write_bytes_atomic(os.path.join(cache_dir, MANIFESTS_DIR, f"{sha}.sig"), signature)
        write_bytes_atomic(os.path.join(cache_dir, MANIFESTS_DIR, f"{sha}.json"), manifest_bytes)
        previous = _previous_version(cache_dir)
        pointer = {"formats": list(chosen), "manifest_sha256": sha}
        write_bytes_atomic(os.path.join(cache_dir, CURRENT_NAME), json.dumps(pointer, sort_keys=True).encode())
        _collect_garbage(cache_dir, {sha} | ({previous} if previous else set()))
    return CachedBundle(cache_dir, manifest, sha, signer, chosen, downloaded)


def open_cached(cache_dir: str, pubkeys) -> CachedBundle:
    """The active version of a cache, verified again (signature, hashes, fingerprints).

    Args:
      cache_dir: a cache written by ``fetch``.
      pubkeys: trusted Ed25519 public keys, as for ``fetch``.

    Raises:
      BundleError: nothing fetched yet, or a damaged cache. IntegrityError: a file changed.
      SignatureError: the cached manifest is not signed by a trusted key.
    """
    trusted = trusted_keys(pubkeys)
    cache_dir = os.path.abspath(os.fspath(cache_dir))
    current = _read_current(cache_dir)
    if current is None:
        raise BundleError(f"{cache_dir}: no bundle fetched yet")
    stem = os.path.join(cache_dir, MANIFESTS_DIR, current["manifest_sha256"])
    for path in (stem + ".json", stem + ".sig"):
        if not is_regular_file(path):
            raise BundleError(f"{path}: missing from the cache; fetch again")
    with open(stem + ".json", "rb") as handle:
        manifest_bytes = handle.read(MAX_MANIFEST_BYTES + 1)
    with open(stem + ".sig", "rb") as handle:
        signature = handle.read(MAX_SIGNATURE_FILE_BYTES + 1)
    if hashlib.sha256(manifest_bytes).hexdigest() != current["manifest_sha256"]:
        raise IntegrityError(f"{stem}.json: sha256 differs from its name; fetch again")
    manifest, signer = _verified(manifest_bytes, signature, trusted, stem + ".json")
    formats = tuple(current["formats"])
    if not (formats and set(formats) <= set(manifest.bases)):
        raise BundleError(f"{os.path.join(cache_dir, CURRENT_NAME)}: formats {list(formats)} not in the manifest")
    for entry in [manifest.bases[fmt] for fmt in formats] + [task.delta for task in manifest.tasks]:
        check_file(os.path.join(cache_dir, entry.file), entry, os.path.join(cache_dir, entry.file))
    _check_deltas(manifest, cache_dir, formats, cache_dir + os.sep)
    return CachedBundle(cache_dir, manifest, current["manifest_sha256"], signer, formats)
