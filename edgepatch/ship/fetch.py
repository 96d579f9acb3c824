"""Fetch a signed bundle over HTTP into a local cache; nothing is used before it is verified.

Runtime side: stdlib ``urllib`` + numpy + ``cryptography``, never TensorFlow.
Any static server (nginx, an object store, ``python -m http.server``) can
serve the bundle, as can ``edgepatch serve``.

Cache layout (``cache_dir``)::

    current                     {"formats": [...], "manifest_sha256": "<hex>"}: the active version
    manifests/<sha256>.json     verified manifests (the active one and the one before)
    manifests/<sha256>.sig      their signatures
    files/<sha256>.<ext>        verified content files
    files/<sha256>.<ext>.part   an interrupted download; the next fetch resumes it (Range)
    lock                        held while a fetch runs (one fetch per cache at a time)

``fetch`` steps, in order, all within its deadline (``edgepatch.ship.http``):

1. Take the lock (waiting at most until the deadline); remove temp files a
   killed fetch left.
2. GET ``manifest.sig``, ``manifest.json``, then ``manifest.sig`` again; if the
   signature changed the bundle was replaced meanwhile, so start over (at most
   ``edgepatch.ship.http.MANIFEST_ATTEMPTS`` times).
3. Verify the signature over the exact manifest bytes (``SignatureError``), then
   parse the manifest (``BundleError``) and check it names the signing key.
4. Refuse to go back (``RollbackError``): a model version lower than the
   active one, or equal to it with other manifest bytes, unless
   ``allow_downgrade``. A legacy (version 1) active label that is not numeric
   orders before every numeric version.
5. Remove ``.part`` files this manifest does not list. For each file needed
   (``Manifest.files_for(formats)``): keep a cached copy whose sha256 matches,
   else download into ``.part`` (resuming; never through a link), check size
   and sha256 (``FetchError``, ``IntegrityError``), fsync, rename.
6. Check every delta needed: a valid delta of the listed task, made for
   exactly these bases (delta errors, ``BundleError``, ``WrongBaseError``).
7. Store the manifest and signature, then replace ``current`` atomically (temp
   file, fsync, rename). Only now is the new version active.
8. Delete files and manifests used by neither the new nor the previous version.

A failure, timeout or kill before step 7 leaves ``current``, and the version it
names, untouched: the previous good version stays active. The lock is always
released (a killed process releases it too).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import stat
import time
from dataclasses import dataclass
from urllib.parse import urlsplit

from edgepatch.atomic import is_regular_file, write_bytes_atomic
from edgepatch.errors import (
    BundleError,
    FetchTimeoutError,
    IntegrityError,
    SignatureError,
    UnsafeCacheError,
    UsageError,
)
from edgepatch.format.delta import Delta
from edgepatch.format.int8_delta import Int8Delta
from edgepatch.ship.bundle import check_delta, check_deltas, check_file, check_int8_delta
from edgepatch.ship.http import Limits, Transfer, download_file, get_manifest
from edgepatch.ship.manifest import (
    BASE_FORMATS,
    FILES_DIR,
    FLOAT_FORMATS,
    INT8_FORMAT,
    MANIFEST_NAME,
    MAX_MANIFEST_BYTES,
    FileEntry,
    Manifest,
    TaskEntry,
    check_not_older,
    parse_manifest,
)
from edgepatch.ship.signing import MAX_SIGNATURE_FILE_BYTES, trusted_keys, verify_manifest

CURRENT_NAME = "current"
MANIFESTS_DIR = "manifests"
LOCK_NAME = "lock"
LOCK_POLL_S = 0.05
_HEX64 = re.compile(r"[0-9a-f]{64}")
_TEMP_FILE = re.compile(r"\..+\.[0-9a-f]{12}\.tmp")  # edgepatch.atomic.write_bytes_atomic's temp files


@dataclass(frozen=True)
class CachedBundle:
    """A verified bundle version in a cache.

    Fields:
      cache_dir: the cache directory.
      manifest: the verified manifest.
      manifest_sha256: sha256 of its bytes (the version's id in the cache).
      key_id: the trusted key that signed it.
      formats: the base formats held in the cache (with their deltas).
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

    def _delta_format(self, fmt: str | None) -> str:
        if fmt is None:
            return next((f for f in self.formats if f in FLOAT_FORMATS), INT8_FORMAT)
        if fmt not in self.formats:
            raise UsageError(f"format must be one of {list(self.formats)} (cached); received {fmt!r}")
        return fmt

    def _delta_entry(self, task: str, fmt: str | None) -> FileEntry:
        entry = self._task(task)
        return entry.int8_delta if self._delta_format(fmt) == INT8_FORMAT else entry.delta

    def delta_path(self, task: str, fmt: str | None = None) -> str:
        """The cached delta of a task for base format ``fmt`` (default: a float one if cached, else int8).

        Prefer ``load_delta``, which checks it again as it reads it.
        """
        return os.path.join(self.cache_dir, self._delta_entry(task, fmt).file)

    def load_delta(self, task: str, fmt: str | None = None) -> Delta | Int8Delta:
        """Read a task's delta for ``fmt`` and check it at the point of use: sha256, format, task, fingerprints.

        Raises:
          UsageError: unknown task or format. BundleError: the file is missing. IntegrityError: its bytes
          changed. Delta errors, WrongBaseError: as ``edgepatch.ship.bundle.check_delta``.
        """
        fmt = self._delta_format(fmt)
        entry = self._task(task)
        listed = self._delta_entry(task, fmt)
        path = os.path.join(self.cache_dir, listed.file)
        if not is_regular_file(path):
            raise BundleError(f"{path}: missing from the cache; fetch again")
        with open(path, "rb") as handle:
            data = handle.read(listed.bytes + 1)
        if hashlib.sha256(data).hexdigest() != listed.sha256:
            raise IntegrityError(f"{path}: sha256 {hashlib.sha256(data).hexdigest()}, but the manifest lists "
                                 f"{listed.sha256}")
        if fmt == INT8_FORMAT:
            return check_int8_delta(data, entry, self.manifest, path)
        return check_delta(data, entry, self.manifest, tuple(f for f in self.formats if f in FLOAT_FORMATS), path)

    def runner(self, task: str, fmt: str = "tflite", num_threads: int = 1):
        """A ready runner of ``task`` on the cached ``fmt`` base (``"tflite_int8"``: the int8 runtime)."""
        from edgepatch.runtime import load_base

        return load_base(self.base_path(fmt), num_threads).apply(self.load_delta(task, fmt))


def _is_cached(path: str, entry: FileEntry) -> bool:
    if os.path.islink(path):
        return False  # not a file fetch wrote: download it again (the rename replaces the link)
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
def _locked(cache_dir: str, transfer: Transfer):
    """Hold the cache lock; wait for another fetch at most until the deadline."""
    try:
        import fcntl
    except ImportError:  # not POSIX: no cross-process lock
        yield
        return
    path = os.path.join(cache_dir, LOCK_NAME)
    try:
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o644)
    except OSError:
        raise UnsafeCacheError(f"{path}: not a regular lock file (a symbolic link?); delete it") from None
    try:
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if transfer.expired():
                    raise FetchTimeoutError(f"{cache_dir}: another fetch held the cache lock for the whole "
                                            f"deadline of {transfer.limits.deadline:g} s") from None
                time.sleep(LOCK_POLL_S)
        yield
    finally:
        os.close(fd)  # releases the lock


def _remove_stale(cache_dir: str, manifest: Manifest | None) -> None:
    """Temp files of killed writes; with ``manifest``, also ``.part`` files it does not list."""
    listed = set() if manifest is None else {os.path.basename(entry.file) for entry in manifest.files()}
    for sub in (".", FILES_DIR, MANIFESTS_DIR):
        directory = os.path.join(cache_dir, sub)
        for name in os.listdir(directory):
            path = os.path.join(directory, name)
            stale = _TEMP_FILE.fullmatch(name) or (
                manifest is not None and sub == FILES_DIR and name.endswith(".part")
                and name.removesuffix(".part") not in listed)
            if stale and not stat.S_ISDIR(os.lstat(path).st_mode):
                os.unlink(path)


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


def _active_manifest(cache_dir: str) -> tuple[Manifest, str] | None:
    """The active version's manifest and sha256 (verified when it was fetched); None if none can be read."""
    sha = _previous_version(cache_dir)
    if sha is None:
        return None
    try:
        with open(os.path.join(cache_dir, MANIFESTS_DIR, f"{sha}.json"), "rb") as handle:
            return parse_manifest(handle.read(MAX_MANIFEST_BYTES + 1)), sha
    except (OSError, BundleError):  # a damaged cache: nothing to compare with
        return None


def _chosen_formats(manifest: Manifest, formats, source: str) -> tuple[str, ...]:
    chosen = tuple(sorted(manifest.bases)) if formats is None else tuple(sorted(set(formats)))
    missing = [fmt for fmt in chosen if fmt not in manifest.bases]
    if missing:
        raise BundleError(f"{source}: no {missing[0]} base (the bundle has: {', '.join(sorted(manifest.bases))})")
    return chosen


def _download_missing(manifest: Manifest, chosen, cache_dir: str, base_url: str, transfer: Transfer) -> int:
    downloaded = 0
    for entry in manifest.files_for(chosen):
        dest = os.path.join(cache_dir, entry.file)
        if not _is_cached(dest, entry):
            downloaded += download_file(base_url + entry.file, entry, dest, transfer)
    return downloaded


def _activate(cache_dir: str, manifest_bytes: bytes, signature: bytes, chosen) -> str:
    sha = hashlib.sha256(manifest_bytes).hexdigest()
    write_bytes_atomic(os.path.join(cache_dir, MANIFESTS_DIR, f"{sha}.sig"), signature)
    write_bytes_atomic(os.path.join(cache_dir, MANIFESTS_DIR, f"{sha}.json"), manifest_bytes)
    previous = _previous_version(cache_dir)
    pointer = {"formats": list(chosen), "manifest_sha256": sha}
    write_bytes_atomic(os.path.join(cache_dir, CURRENT_NAME), json.dumps(pointer, sort_keys=True).encode())
    _collect_garbage(cache_dir, {sha} | ({previous} if previous else set()))
    return sha


def fetch(url: str, pubkeys, cache_dir: str, formats=None, timeout: float = 30.0, *, deadline: float = 300.0,
          min_rate: float = 1024.0, min_rate_window: float = 10.0, allow_downgrade: bool = False) -> CachedBundle:
    """Download a bundle's new files into ``cache_dir``, verify everything, then make it current.

    Args:
      url: the bundle's base URL (``edgepatch serve`` or any static server), e.g. "http://127.0.0.1:8000/".
      pubkeys: trusted Ed25519 public keys: a key, a PEM path, or a list of them.
      cache_dir: the local cache (created if missing).
      formats: base formats to fetch, from "tflite", "onnx", "tflite_int8" (default: every format
        of the bundle); only the deltas for those are fetched.
      timeout: seconds any one network operation may block.
      deadline: seconds for the whole fetch, waiting for the cache lock included.
      min_rate: bytes/s a download must keep up over each ``min_rate_window`` seconds (0: no minimum).
      allow_downgrade: accept a lower model version (or the same with other content).

    Returns:
      The verified ``CachedBundle`` now active in the cache.

    Raises:
      UsageError: bad arguments. FetchError: network, HTTP or size failure; FetchTimeoutError: a bound
      exceeded. RollbackError: an older version. UnsafeCacheError: a link planted in the cache.
      SignatureError, BundleError, IntegrityError, WrongBaseError, delta errors: a bundle
      that fails verification. On any error the previous version stays active.
    """
    base_url = _check_args(url, cache_dir, formats)
    limits = Limits(timeout, deadline, min_rate, min_rate_window)
    limits.check()
    trusted = trusted_keys(pubkeys)
    cache_dir = os.path.abspath(os.fspath(cache_dir))
    for sub in (FILES_DIR, MANIFESTS_DIR):
        os.makedirs(os.path.join(cache_dir, sub), exist_ok=True)
    with Transfer(limits) as transfer, _locked(cache_dir, transfer):
        _remove_stale(cache_dir, None)
        manifest_bytes, signature = get_manifest(base_url, transfer)
        source = base_url + MANIFEST_NAME
        manifest, signer = _verified(manifest_bytes, signature, trusted, source)
        if not allow_downgrade:
            check_not_older(manifest, hashlib.sha256(manifest_bytes).hexdigest(), _active_manifest(cache_dir),
                            source)
        chosen = _chosen_formats(manifest, formats, source)
        _remove_stale(cache_dir, manifest)
        downloaded = _download_missing(manifest, chosen, cache_dir, base_url, transfer)
        check_deltas(manifest, chosen, cache_dir, base_url)
        transfer.check(base_url)
        sha = _activate(cache_dir, manifest_bytes, signature, chosen)
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
    for entry in manifest.files_for(formats):
        check_file(os.path.join(cache_dir, entry.file), entry, os.path.join(cache_dir, entry.file))
    check_deltas(manifest, formats, cache_dir, cache_dir + os.sep)
    return CachedBundle(cache_dir, manifest, current["manifest_sha256"], signer, formats)
