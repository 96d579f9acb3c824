"""Bundles: one base (per runtime format) plus task deltas, ready to ship.

``pack_bundle`` writes a bundle directory (layout and manifest in
``edgepatch.ship.manifest``) atomically: everything is staged in a temporary
sibling directory, fsynced, and renamed into place, so a killed pack leaves
the old complete bundle or nothing. ``verify_bundle`` checks one, in this
order, stopping at the first failure:

1. ``manifest.sig`` against the exact bytes of ``manifest.json`` and the
   trusted keys (``SignatureError``), unless verification is integrity-only;
2. the manifest's format (``BundleError``) and, when signed, that it names
   the signing key id (``SignatureError``);
3. every listed file: present (``BundleError``), then its size and sha256
   (``IntegrityError``);
4. every delta: a valid delta file (``edgepatch.format.delta`` errors), describing
   the task the manifest lists (``BundleError``), made for exactly the bases
   of the bundle (``WrongBaseError``).

Runtime-safe: imports no TensorFlow (``fetch`` reuses the checks).
"""

from __future__ import annotations

import hashlib
import os
import shutil
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from edgepatch.atomic import (
    fsync_dir,
    is_regular_file,
    make_stage_dir,
    replace_dir,
    write_bytes_atomic,
)
from edgepatch.format.delta import Delta, decode_delta
from edgepatch.errors import (
    BundleError,
    IntegrityError,
    MissingFileError,
    SignatureError,
    UsageError,
    WrongBaseError,
)
from edgepatch.ship.manifest import (
    BASE_FORMATS,
    DELTA_EXT,
    FILES_DIR,
    MANIFEST_NAME,
    MAX_BUNDLE_FILE_BYTES,
    MAX_MANIFEST_BYTES,
    MODEL_VERSION_PATTERN,
    SIGNATURE_NAME,
    FileEntry,
    Manifest,
    TaskEntry,
    content_name,
    encode_manifest,
    parse_manifest,
)
from edgepatch.ship.signing import (
    MAX_SIGNATURE_FILE_BYTES,
    key_id,
    load_private_key,
    sign_manifest,
    trusted_keys,
    verify_manifest,
)

CHUNK = 1 << 20


@dataclass(frozen=True)
class BundleReport:
    """What ``pack_bundle`` wrote or ``verify_bundle`` checked.

    Fields:
      path: the bundle directory.
      manifest: the parsed manifest.
      key_id: the key that signed it (checked), or None for an unsigned or integrity-only check.
      files: the number of content files.
      bytes: their total size.
    """

    path: str
    manifest: Manifest
    key_id: str | None
    files: int
    bytes: int


def _sha256_file(path: str) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while chunk := handle.read(CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def check_file(path: str, entry: FileEntry, source: str) -> None:
    """Check that ``path`` holds exactly the file ``entry`` lists (size first, then sha256).

    Raises:
      BundleError: the file is missing or not a regular file.
      IntegrityError: wrong size or sha256.
    """
    if not is_regular_file(path):
        raise BundleError(f"{source}: missing (the manifest lists {entry.file})")
    size = os.path.getsize(path)
    if size != entry.bytes:
        raise IntegrityError(f"{source}: {size} bytes, but the manifest lists {entry.bytes}")
    actual = _sha256_file(path)
    if actual != entry.sha256:
        raise IntegrityError(f"{source}: sha256 {actual}, but the manifest lists {entry.sha256}")


def check_delta(data: bytes, task: TaskEntry, manifest: Manifest, formats: Sequence[str], source: str) -> Delta:
    """Decode a delta and check it is the manifest's task, made for the bundle's bases in ``formats``.

    Raises:
      DeltaFormatError (or a subclass), NonFiniteError, ShapeMismatchError: not a valid delta.
      BundleError: the delta's task, classes, resolution or kinds differ from the manifest.
      WrongBaseError: the delta lacks or differs in the fingerprint of a base in ``formats``.
    """
    delta = decode_delta(data, source)
    listed = (task.name, task.classes, task.resolution, task.kinds)
    found = (delta.task.name, delta.task.classes, delta.task.resolution, delta.kinds)
    for field, want, got in zip(("name", "classes", "resolution", "kinds"), listed, found):
        if want != got:
            raise BundleError(f"{source}: the manifest lists task {field} {want!r}, the delta has {got!r}")
    for fmt in formats:
        fingerprint = delta.base_sha256.get(fmt)
        if fingerprint is None:
            raise WrongBaseError(f"{source}: delta for task '{task.name}' has no {fmt} base fingerprint "
                                 f"(it has: {', '.join(sorted(delta.base_sha256))})")
        if fingerprint != manifest.bases[fmt].sha256:
            raise WrongBaseError(f"{source}: delta for task '{task.name}' was made for {fmt} base sha256 "
                                 f"{fingerprint}, but the bundle's {fmt} base is {manifest.bases[fmt].sha256}")
    return delta


def _read_at_most(path: str, limit: int) -> bytes:
    """Up to ``limit + 1`` bytes: enough for the reader's own size check to fail on a larger file."""
    with open(path, "rb") as handle:
        return handle.read(limit + 1)


def _signed_manifest(bundle_dir: str, trusted) -> tuple[bytes, str | None]:
    """The manifest bytes and, unless ``trusted`` is None, the id of the trusted key that signed them."""
    manifest_path = os.path.join(bundle_dir, MANIFEST_NAME)
    if not is_regular_file(manifest_path):
        raise BundleError(f"{manifest_path}: no such file; {bundle_dir} is not a bundle")
    data = _read_at_most(manifest_path, MAX_MANIFEST_BYTES)
    if trusted is None:
        return data, None
    signature_path = os.path.join(bundle_dir, SIGNATURE_NAME)
    if not is_regular_file(signature_path):
        raise SignatureError(f"{signature_path}: no such file; the bundle is unsigned")
    signature = _read_at_most(signature_path, MAX_SIGNATURE_FILE_BYTES)
    return data, verify_manifest(data, signature, trusted, manifest_path)


def verify_bundle(bundle_dir: str, pubkeys=None) -> BundleReport:
    """Verify a bundle directory: signature, manifest, every file's hash, every delta's fingerprints.

    Args:
      bundle_dir: the bundle directory.
      pubkeys: trusted public keys (see ``signing.trusted_keys``); None checks integrity only
        and ignores ``manifest.sig``.

    Raises:
      MissingFileError: ``bundle_dir`` is not a directory.
      SignatureError, BundleError, IntegrityError, WrongBaseError, delta errors: in the order of
      the module docstring.
    """
    if not os.path.isdir(bundle_dir):
        raise MissingFileError(f"{bundle_dir}: no such bundle directory")
    data, signer = _signed_manifest(bundle_dir, None if pubkeys is None else trusted_keys(pubkeys))
    manifest_path = os.path.join(bundle_dir, MANIFEST_NAME)
    manifest = parse_manifest(data, manifest_path)
    if signer is not None and manifest.key_id != signer:
        raise SignatureError(f"{manifest_path}: names key_id {manifest.key_id}, but is signed by key {signer}")
    for entry in manifest.files():
        check_file(os.path.join(bundle_dir, entry.file), entry, os.path.join(bundle_dir, entry.file))
    for task in manifest.tasks:
        path = os.path.join(bundle_dir, task.delta.file)
        with open(path, "rb") as handle:
            check_delta(handle.read(task.delta.bytes + 1), task, manifest, tuple(manifest.bases), path)
    files = manifest.files()
    return BundleReport(bundle_dir, manifest, signer, len(files), sum(f.bytes for f in files))


def ship_inputs(ship_dir: str) -> tuple[dict[str, str], list[str]]:
    """The ``base.<format>`` files and ``*.delta`` files (sorted) of a ``convert`` output directory.

    Raises:
      MissingFileError: ``ship_dir`` is not a directory, or holds no base.
    """
    if not os.path.isdir(ship_dir):
        raise MissingFileError(f"{ship_dir}: no such directory")
    bases = {fmt: os.path.join(ship_dir, f"base.{fmt}") for fmt in BASE_FORMATS
             if is_regular_file(os.path.join(ship_dir, f"base.{fmt}"))}
    if not bases:
        raise MissingFileError(f"{ship_dir}: no base ({', '.join(f'base.{f}' for f in BASE_FORMATS)})")
    deltas = sorted(os.path.join(ship_dir, name) for name in os.listdir(ship_dir) if name.endswith(f".{DELTA_EXT}"))
    return bases, deltas


def _check_out_dir(out_dir: str, inputs: list[str]) -> None:
    if os.path.lexists(out_dir) and not os.path.isdir(out_dir):
        raise UsageError(f"--out {out_dir} exists and is not a directory")
    for path in inputs:
        if os.path.commonpath([os.path.realpath(out_dir), os.path.realpath(path)]) == os.path.realpath(out_dir):
            raise UsageError(f"--out {out_dir} contains the input {path}; choose another directory")
    if os.path.isdir(out_dir) and os.listdir(out_dir) and not os.path.exists(os.path.join(out_dir, MANIFEST_NAME)):
        raise UsageError(f"--out {out_dir} is a non-empty directory without {MANIFEST_NAME}; "
                         f"refusing to replace what is not a bundle")


def _read_input(path: str) -> bytes:
    if not is_regular_file(path):
        raise MissingFileError(f"{path}: no such file")
    size = os.path.getsize(path)
    if size == 0 or size > MAX_BUNDLE_FILE_BYTES:
        raise BundleError(f"{path}: {size} bytes; a bundle file must have 1..{MAX_BUNDLE_FILE_BYTES}")
    with open(path, "rb") as handle:
        return handle.read()


def _write_stage(stage: str, files: dict[str, bytes], manifest: bytes, signature: bytes | None) -> None:
    os.mkdir(os.path.join(stage, FILES_DIR))
    for name, data in files.items():
        write_bytes_atomic(os.path.join(stage, name), data)
    write_bytes_atomic(os.path.join(stage, MANIFEST_NAME), manifest)
    if signature is not None:
        write_bytes_atomic(os.path.join(stage, SIGNATURE_NAME), signature)
    fsync_dir(os.path.join(stage, FILES_DIR))


def pack_bundle(bases: Mapping[str, str], deltas: Sequence[str], out_dir: str, model_version: str,
                signing_key: str | None = None) -> BundleReport:
    """Build a bundle directory from base files and their deltas; replace ``out_dir`` atomically.

    Args:
      bases: runtime format ("tflite", "onnx") -> base file.
      deltas: delta files, one per task; each must be made for every base given.
      out_dir: the bundle directory; an existing one must be a bundle (or empty).
      model_version: 1..128 printable ASCII characters, e.g. "2024.06.1".
      signing_key: a PEM Ed25519 private key (``write_keypair``); None packs unsigned.

    Raises:
      UsageError: bad formats, model_version, duplicate task names or out_dir.
      MissingFileError, KeyFileError: an input or the key is missing or malformed.
      Delta errors, WrongBaseError: a delta is invalid or made for other bases.
    """
    if not (isinstance(bases, Mapping) and bases and set(bases) <= set(BASE_FORMATS)):
        raise UsageError(f"bases must map formats from {list(BASE_FORMATS)} to files; received {dict(bases)!r}")
    if not (isinstance(model_version, str) and MODEL_VERSION_PATTERN.fullmatch(model_version)):
        raise UsageError(f"model version must be 1..128 printable ASCII characters, not starting with a "
                         f"space; received {model_version!r}")
    out_dir = os.path.abspath(out_dir)
    _check_out_dir(out_dir, list(bases.values()) + list(deltas))
    private = None if signing_key is None else load_private_key(signing_key)
    signer = None if private is None else key_id(private.public_key())
    files, base_entries, tasks = {}, {}, []
    for fmt in sorted(bases):
        data = _read_input(bases[fmt])
        base_entries[fmt] = FileEntry(content_name(hashlib.sha256(data).hexdigest(), fmt), len(data),
                                      hashlib.sha256(data).hexdigest())
        files[base_entries[fmt].file] = data
    draft = Manifest(model_version, signer, base_entries, ())
    for path in deltas:
        data = _read_input(path)
        delta = decode_delta(data, path)
        if any(t.name == delta.task.name for t in tasks):
            raise UsageError(f"{path}: a second delta for task '{delta.task.name}'; task names must be unique")
        sha = hashlib.sha256(data).hexdigest()
        task = TaskEntry(delta.task.name, delta.task.classes, delta.task.resolution, delta.kinds,
                         FileEntry(content_name(sha, DELTA_EXT), len(data), sha))
        check_delta(data, task, draft, sorted(bases), path)
        tasks.append(task)
        files[task.delta.file] = data
    manifest = Manifest(model_version, signer, base_entries, tuple(tasks))
    manifest_bytes = encode_manifest(manifest)
    signature = None if private is None else sign_manifest(manifest_bytes, private)
    stage = make_stage_dir(out_dir, "pack")
    try:
        _write_stage(stage, files, manifest_bytes, signature)
        replace_dir(stage, out_dir)
    except BaseException:
        shutil.rmtree(stage, ignore_errors=True)
        raise
    return BundleReport(out_dir, manifest, signer, len(files), sum(len(d) for d in files.values()))
