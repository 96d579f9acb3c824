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
4. every delta: a valid delta file (``edgepatch.format.delta`` or
   ``edgepatch.format.int8_delta`` errors), describing the task the manifest
   lists (``BundleError``), made for exactly the bases of the bundle
   (``WrongBaseError``): a float delta for every float base, an int8 delta
   for the ``tflite_int8`` base.

A packed bundle is world-readable (directories 0755, files 0644), so any
static server can serve it. Runtime-safe: imports no TensorFlow (``fetch``
reuses the checks).
"""

from __future__ import annotations

import hashlib
import os
import shutil
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from edgepatch.atomic import (
    discard_stage,
    fsync_dir,
    is_regular_file,
    make_stage_dir,
    replace_dir,
    write_bytes_atomic,
)
from edgepatch.format.delta import Delta, decode_delta
from edgepatch.format.int8_delta import Int8Delta, decode_int8_delta
from edgepatch.errors import (
    BundleError,
    IntegrityError,
    MissingFileError,
    SignatureError,
    UsageError,
    WrongBaseError,
)
from edgepatch.ship.manifest import (
    BASE_EXT,
    BASE_FORMATS,
    DELTA_EXT,
    FILES_DIR,
    FLOAT_FORMATS,
    INT8_DELTA_EXT,
    INT8_FORMAT,
    INT8_KINDS,
    MANIFEST_NAME,
    MAX_BUNDLE_FILE_BYTES,
    MAX_MANIFEST_BYTES,
    MAX_MODEL_VERSION,
    SIGNATURE_NAME,
    FileEntry,
    Manifest,
    TaskEntry,
    content_name,
    encode_manifest,
    parse_manifest,
    version_key,
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
SHIP_BASE_NAMES = {"tflite": "base.tflite", "onnx": "base.onnx", INT8_FORMAT: "base_int8.tflite"}  # convert's


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


def _check_listed(task: TaskEntry, found: dict, source: str) -> None:
    listed = {"name": task.name, "classes": task.classes, "resolution": task.resolution, "kinds": task.kinds}
    for field, got in found.items():
        if listed[field] != got:
            raise BundleError(f"{source}: the manifest lists task {field} {listed[field]!r}, the delta has {got!r}")


def check_delta(data: bytes, task: TaskEntry, manifest: Manifest, formats: Sequence[str], source: str) -> Delta:
    """Decode a float delta and check it is the manifest's task, made for the bundle's bases in ``formats``.

    Raises:
      DeltaFormatError (or a subclass), NonFiniteError, ShapeMismatchError: not a valid delta.
      BundleError: the delta's task, classes, resolution or kinds differ from the manifest.
      WrongBaseError: the delta lacks or differs in the fingerprint of a base in ``formats``.
    """
    delta = decode_delta(data, source)
    _check_listed(task, {"name": delta.task.name, "classes": delta.task.classes,
                         "resolution": delta.task.resolution, "kinds": delta.kinds}, source)
    for fmt in formats:
        fingerprint = delta.base_sha256.get(fmt)
        if fingerprint is None:
            raise WrongBaseError(f"{source}: delta for task '{task.name}' has no {fmt} base fingerprint "
                                 f"(it has: {', '.join(sorted(delta.base_sha256))})")
        if fingerprint != manifest.bases[fmt].sha256:
            raise WrongBaseError(f"{source}: delta for task '{task.name}' was made for {fmt} base sha256 "
                                 f"{fingerprint}, but the bundle's {fmt} base is {manifest.bases[fmt].sha256}")
    return delta


def check_int8_delta(data: bytes, task: TaskEntry, manifest: Manifest, source: str) -> Int8Delta:
    """Decode an int8 delta and check it is the manifest's task, made for the bundle's int8 base.

    Raises:
      DeltaFormatError (or a subclass), NonFiniteError: not a valid int8 delta.
      BundleError: the delta's task, classes or resolution differ from the manifest.
      WrongBaseError: it was made for another int8 base.
    """
    delta = decode_int8_delta(data, source)
    _check_listed(task, {"name": delta.task.name, "classes": delta.task.classes,
                         "resolution": delta.task.resolution}, source)
    base = manifest.bases[INT8_FORMAT].sha256
    if delta.base_sha256 != base:
        raise WrongBaseError(f"{source}: int8 delta for task '{task.name}' was made for {INT8_FORMAT} base "
                             f"sha256 {delta.base_sha256}, but the bundle's {INT8_FORMAT} base is {base}")
    return delta


def check_deltas(manifest: Manifest, formats: Sequence[str], root: str, source_prefix: str) -> None:
    """Check every delta that ``formats`` need (see ``Manifest.files_for``), read from ``root``.

    Raises:
      As ``check_delta`` and ``check_int8_delta``; errors name ``source_prefix + file``.
    """
    floats = tuple(fmt for fmt in formats if fmt in FLOAT_FORMATS)
    for task in manifest.tasks:
        if floats:
            check_delta(_read_listed(root, task.delta), task, manifest, floats, source_prefix + task.delta.file)
        if INT8_FORMAT in formats:
            check_int8_delta(_read_listed(root, task.int8_delta), task, manifest, source_prefix + task.int8_delta.file)


def _read_listed(root: str, entry: FileEntry) -> bytes:
    with open(os.path.join(root, entry.file), "rb") as handle:
        return handle.read(entry.bytes + 1)


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
    check_deltas(manifest, tuple(manifest.bases), bundle_dir, bundle_dir + os.sep)
    files = manifest.files()
    return BundleReport(bundle_dir, manifest, signer, len(files), sum(f.bytes for f in files))


def ship_inputs(ship_dir: str) -> tuple[dict[str, str], list[str]]:
    """The bases (``SHIP_BASE_NAMES``) and ``*.delta`` files (float and int8, sorted) of a ``convert`` output.

    Raises:
      MissingFileError: ``ship_dir`` is not a directory, or holds no base.
    """
    if not os.path.isdir(ship_dir):
        raise MissingFileError(f"{ship_dir}: no such directory")
    bases = {fmt: os.path.join(ship_dir, name) for fmt, name in SHIP_BASE_NAMES.items()
             if is_regular_file(os.path.join(ship_dir, name))}
    if not bases:
        raise MissingFileError(f"{ship_dir}: no base ({', '.join(SHIP_BASE_NAMES.values())})")
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


def _check_pack_args(bases, model_version) -> None:
    if not (isinstance(bases, Mapping) and bases and set(bases) <= set(BASE_FORMATS)):
        raise UsageError(f"bases must map formats from {list(BASE_FORMATS)} to files; received {dict(bases)!r}")
    if version_key(model_version) is None:
        raise UsageError(f"model version must be an integer or integers joined by dots (compared numerically; "
                         f"at most {MAX_MODEL_VERSION} characters), e.g. 3 or 2024.6.1; received {model_version!r}")


def _delta_task(path: str, data: bytes, draft: Manifest) -> TaskEntry:
    """The manifest entry of one delta file (float, or int8 for ``*.int8.delta``), checked against ``draft``."""
    sha = hashlib.sha256(data).hexdigest()
    if path.endswith(f".{INT8_DELTA_EXT}"):
        if INT8_FORMAT not in draft.bases:
            raise UsageError(f"{path}: an int8 delta, but no {INT8_FORMAT} base ({SHIP_BASE_NAMES[INT8_FORMAT]})")
        info = decode_int8_delta(data, path).task
        task = TaskEntry(info.name, info.classes, info.resolution, INT8_KINDS, None,
                         FileEntry(content_name(sha, INT8_DELTA_EXT), len(data), sha))
        check_int8_delta(data, task, draft, path)
        return task
    floats = sorted(fmt for fmt in draft.bases if fmt in FLOAT_FORMATS)
    if not floats:
        raise UsageError(f"{path}: a float delta, but no float base ({SHIP_BASE_NAMES['tflite']}, "
                         f"{SHIP_BASE_NAMES['onnx']})")
    delta = decode_delta(data, path)
    task = TaskEntry(delta.task.name, delta.task.classes, delta.task.resolution, delta.kinds,
                     FileEntry(content_name(sha, DELTA_EXT), len(data), sha))
    check_delta(data, task, draft, floats, path)
    return task


def _merge_tasks(float_tasks: dict, int8_tasks: dict, formats) -> list[TaskEntry]:
    """One entry per task name, with its float and int8 delta; every task needs each kind the bases need."""
    merged = []
    for name in list(float_tasks) + [n for n in int8_tasks if n not in float_tasks]:
        plain, int8 = float_tasks.get(name), int8_tasks.get(name)
        if plain is None and any(fmt in FLOAT_FORMATS for fmt in formats):
            raise UsageError(f"task '{name}' has an int8 delta but no float delta ({name}.{DELTA_EXT}); "
                             f"a bundle with float bases needs both")
        if int8 is None and INT8_FORMAT in formats:
            raise UsageError(f"task '{name}' has no int8 delta ({name}.{INT8_DELTA_EXT}), but the bundle has the "
                             f"{INT8_FORMAT} base ({SHIP_BASE_NAMES[INT8_FORMAT]})")
        if plain and int8 and (plain.classes, plain.resolution) != (int8.classes, int8.resolution):
            raise UsageError(f"task '{name}': the float and int8 deltas list other classes or resolutions")
        first = plain or int8
        merged.append(TaskEntry(name, first.classes, first.resolution, first.kinds,
                                plain and plain.delta, int8 and int8.int8_delta))
    return merged


def pack_bundle(bases: Mapping[str, str], deltas: Sequence[str], out_dir: str, model_version: str,
                signing_key: str | None = None) -> BundleReport:
    """Build a bundle directory from base files and their deltas; replace ``out_dir`` atomically.

    Args:
      bases: runtime format ("tflite", "onnx", "tflite_int8") -> base file.
      deltas: delta files: per task a float delta made for every float base given and, with a
        "tflite_int8" base, an int8 delta (``*.int8.delta``) made for it.
      out_dir: the bundle directory; an existing one must be a bundle (or empty).
      model_version: an integer or integers joined by dots, e.g. "2024.6.1" (devices compare it
        numerically and refuse to go back).
      signing_key: a PEM Ed25519 private key (``write_keypair``); None packs unsigned.

    Raises:
      UsageError: bad formats, model_version, duplicate or unpaired tasks, or out_dir.
      MissingFileError, KeyFileError: an input or the key is missing or malformed.
      Delta errors, WrongBaseError: a delta is invalid or made for other bases.
    """
    _check_pack_args(bases, model_version)
    out_dir = os.path.abspath(out_dir)
    _check_out_dir(out_dir, list(bases.values()) + list(deltas))
    private = None if signing_key is None else load_private_key(signing_key)
    signer = None if private is None else key_id(private.public_key())
    files, base_entries = {}, {}
    for fmt in sorted(bases):
        data = _read_input(bases[fmt])
        sha = hashlib.sha256(data).hexdigest()
        base_entries[fmt] = FileEntry(content_name(sha, BASE_EXT[fmt]), len(data), sha)
        files[base_entries[fmt].file] = data
    draft = Manifest(model_version, signer, base_entries, ())
    float_tasks, int8_tasks = {}, {}  # task name -> entry
    for path in deltas:
        data = _read_input(path)
        task = _delta_task(path, data, draft)
        group = int8_tasks if task.int8_delta else float_tasks
        if task.name in group:
            raise UsageError(f"{path}: a second delta for task '{task.name}'; task names must be unique")
        group[task.name] = task
        files[(task.delta or task.int8_delta).file] = data
    tasks = _merge_tasks(float_tasks, int8_tasks, tuple(base_entries))
    manifest = Manifest(model_version, signer, base_entries, tuple(tasks))
    manifest_bytes = encode_manifest(manifest)
    signature = None if private is None else sign_manifest(manifest_bytes, private)
    stage = make_stage_dir(out_dir, "pack")
    try:
        _write_stage(stage, files, manifest_bytes, signature)
        replace_dir(stage, out_dir)
    except BaseException:
        discard_stage(stage)
        raise
    return BundleReport(out_dir, manifest, signer, len(files), sum(len(d) for d in files.values()))
