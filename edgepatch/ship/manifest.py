"""The bundle manifest (``manifest.json``, version 2): what a device may download and run.

A bundle directory holds ``manifest.json``, optionally ``manifest.sig`` (see
``edgepatch.ship.signing``) and ``files/``, where every file is named by its
content: ``files/<sha256>.<ext>``, so a CDN may cache it forever. Any static
server or object store can serve it (nothing is computed per request).

The manifest is one UTF-8 JSON object of at most ``MAX_MANIFEST_BYTES``
(duplicate keys, NaN/Infinity and unknown keys are rejected)::

    {"bundle_version": 2,
     "model_version": "<integers joined by dots, e.g. 3 or 2024.6.1>",
     "key_id": "<16 hex>" | null,          # the signing key (null: unsigned)
     "bases": {"<format>": FILE, ...},     # "tflite", "onnx" (float), "tflite_int8"
     "tasks": [{"name": str, "classes": [str, ...], "resolution": int,
                "kinds": [str, ...],
                "delta": FILE,             # iff the bundle has a float base
                "int8_delta": FILE}, ...]} # iff the bundle has the tflite_int8 base

    FILE = {"file": "files/<sha256>.<ext>", "bytes": int, "sha256": "<64 hex>"}

``ext`` is ``BASE_EXT[format]`` for bases (``int8.tflite`` for the int8
base), ``delta`` for float deltas and ``int8.delta`` for int8 deltas;
``file`` must equal that name (it is never used as a free path). Task names
are unique, as are files. ``kinds`` are the float delta's patch kinds, or
``["int8"]`` in a bundle with only the int8 base.

The base fingerprint of a format is ``bases[format].sha256``: every float
delta must name exactly that value in its ``base_sha256[format]`` for every
float format of the bundle, and every int8 delta that of ``tflite_int8``.

Model versions are ordered numerically, component by component, missing
trailing components counting as 0 (``version_key``): 1.10 > 1.9, 2 == 2.0.
A device refuses to go back to a lower version (``edgepatch.ship.fetch``).

Versions. ``bundle_version`` 2 added the int8 files and numeric model
versions; a version 1 manifest (float only, any printable ``model_version``)
is still read, and written back as version 1. A reader of version 1 refuses
a version 2 manifest with "bundle_version must be 1, got 2".
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass

from edgepatch.errors import BundleError, RollbackError
from edgepatch.format.checks import is_text

BUNDLE_VERSION = 2
LEGACY_BUNDLE_VERSION = 1
MANIFEST_NAME = "manifest.json"
SIGNATURE_NAME = "manifest.sig"
FILES_DIR = "files"
MAX_MANIFEST_BYTES = 1 << 20
MAX_BUNDLE_FILE_BYTES = 1 << 32
MAX_TASKS = 1024
MAX_TEXT = 256
FLOAT_FORMATS = ("tflite", "onnx")  # = edgepatch.format.layouts.FORMATS, without importing the runtime
INT8_FORMAT = "tflite_int8"  # = edgepatch.format.int8_delta.BASE_FORMAT
BASE_FORMATS = FLOAT_FORMATS + (INT8_FORMAT,)
BASE_EXT = {"tflite": "tflite", "onnx": "onnx", INT8_FORMAT: "int8.tflite"}
DELTA_EXT = "delta"
INT8_DELTA_EXT = "int8.delta"
INT8_KINDS = ("int8",)
TOP_KEYS = ("bases", "bundle_version", "key_id", "model_version", "tasks")
FILE_KEYS = ("bytes", "file", "sha256")
TASK_KEYS = ("classes", "kinds", "name", "resolution")  # + "delta" and/or "int8_delta"
_HEX64 = re.compile(r"[0-9a-f]{64}")
_KEY_ID = re.compile(r"[0-9a-f]{16}")
MODEL_VERSION_PATTERN = re.compile(r"[\x21-\x7e][\x20-\x7e]{0,127}")  # bundle_version 1 (legacy labels)
NUMERIC_VERSION_PATTERN = re.compile(r"[0-9]{1,18}(?:\.[0-9]{1,18}){0,15}")
MAX_MODEL_VERSION = 128


def version_key(model_version) -> tuple[int, ...] | None:
    """The numeric order key of a model version ("2024.6.1" -> (2024, 6, 1)); None if not numeric.

    Trailing zero components are dropped, so "2" and "2.0" are equal versions.
    """
    if not (isinstance(model_version, str) and len(model_version) <= MAX_MODEL_VERSION
            and NUMERIC_VERSION_PATTERN.fullmatch(model_version)):
        return None
    parts = [int(part) for part in model_version.split(".")]
    while len(parts) > 1 and parts[-1] == 0:
        parts.pop()
    return tuple(parts)


@dataclass(frozen=True)
class FileEntry:
    """One content-addressed file of a bundle: ``file`` is ``files/<sha256>.<ext>``."""

    file: str
    bytes: int
    sha256: str


@dataclass(frozen=True)
class TaskEntry:
    """One task: what it classifies and which delta files hold it (None: the bundle has no such base)."""

    name: str
    classes: tuple[str, ...]
    resolution: int
    kinds: tuple[str, ...]
    delta: FileEntry | None
    int8_delta: FileEntry | None = None


@dataclass(frozen=True)
class Manifest:
    """A parsed, validated manifest. ``bases`` maps runtime format to its file."""

    model_version: str
    key_id: str | None
    bases: dict[str, FileEntry]
    tasks: tuple[TaskEntry, ...]
    bundle_version: int = BUNDLE_VERSION

    def files(self) -> list[FileEntry]:
        """Every file the bundle lists: bases first, then each task's deltas in task order."""
        return self.files_for(tuple(self.bases))

    def files_for(self, formats) -> list[FileEntry]:
        """The files a device needs for ``formats``: those bases, then the deltas made for them."""
        floats = any(fmt in FLOAT_FORMATS for fmt in formats)
        deltas = [entry for task in self.tasks
                  for entry in ((task.delta if floats else None), (task.int8_delta if INT8_FORMAT in formats else None))
                  if entry is not None]
        return [self.bases[fmt] for fmt in self.bases if fmt in formats] + deltas


def content_name(sha256: str, ext: str) -> str:
    """The bundle-relative name of a content-addressed file."""
    return f"{FILES_DIR}/{sha256}.{ext}"


def _show(value) -> str:
    text = json.dumps(value) if isinstance(value, (str, int, float, bool, type(None))) else type(value).__name__
    return text if len(text) <= 60 else text[:57] + "..."


def _reject_duplicates(pairs):
    keys = [key for key, _ in pairs]
    duplicates = sorted({key for key in keys if keys.count(key) > 1})
    if duplicates:
        raise ValueError(f"duplicate key {duplicates[0]!r}")
    return dict(pairs)


def _reject_constant(name: str):
    raise ValueError(f"{name} is not JSON")


def _check_object(value, keys, where: str, source: str) -> None:
    if not isinstance(value, dict):
        raise BundleError(f"{source}: {where} must be a JSON object, got {_show(value)}")
    if sorted(value) != sorted(keys):
        missing = [k for k in keys if k not in value]
        unknown = sorted(k for k in value if k not in keys)
        raise BundleError(f"{source}: {where} must have exactly the keys {list(keys)}; "
                          f"missing {missing}, unknown {unknown}")


def _is_int(value, low: int, high: int) -> bool:
    return type(value) is int and low <= value <= high


def _is_text(value) -> bool:
    """A string of 1..MAX_TEXT characters that UTF-8 can encode (no unpaired surrogate)."""
    return is_text(value) and len(value) <= MAX_TEXT


def _text_list(value, where: str, source: str) -> tuple[str, ...]:
    if not (isinstance(value, list) and value and all(_is_text(v) for v in value)):
        raise BundleError(f"{source}: {where} must be a non-empty list of UTF-8 strings of 1..{MAX_TEXT} characters")
    if len(set(value)) != len(value):
        raise BundleError(f"{source}: {where} has duplicates")
    return tuple(value)


def _file_entry(value, ext: str, where: str, source: str) -> FileEntry:
    _check_object(value, FILE_KEYS, where, source)
    if not (isinstance(value["sha256"], str) and _HEX64.fullmatch(value["sha256"])):
        raise BundleError(f"{source}: {where}.sha256 must be 64 lowercase hex digits, got {_show(value['sha256'])}")
    if not _is_int(value["bytes"], 1, MAX_BUNDLE_FILE_BYTES):
        raise BundleError(f"{source}: {where}.bytes must be an integer in 1..{MAX_BUNDLE_FILE_BYTES}, "
                          f"got {_show(value['bytes'])}")
    expected = content_name(value["sha256"], ext)
    if value["file"] != expected:
        raise BundleError(f"{source}: {where}.file must be {expected!r}, got {_show(value['file'])}")
    return FileEntry(expected, value["bytes"], value["sha256"])


def delta_keys(formats) -> tuple[str, ...]:
    """The delta keys every task has in a bundle with bases ``formats``."""
    return (("delta",) if any(fmt in FLOAT_FORMATS for fmt in formats) else ()) + \
        (("int8_delta",) if INT8_FORMAT in formats else ())


def _task_entry(value, index: int, formats, source: str) -> TaskEntry:
    where = f"tasks[{index}]"
    keys = delta_keys(formats)
    _check_object(value, TASK_KEYS + keys, where, source)
    if not _is_text(value["name"]):
        raise BundleError(f"{source}: {where}.name must be a UTF-8 string of 1..{MAX_TEXT} characters, "
                          f"got {_show(value['name'])}")
    classes = _text_list(value["classes"], f"{where}.classes", source)
    if not _is_int(value["resolution"], 8, 4096):
        raise BundleError(f"{source}: {where}.resolution must be an integer in 8..4096, "
                          f"got {_show(value['resolution'])}")
    kinds = _text_list(value["kinds"], f"{where}.kinds", source)
    if "delta" not in keys and kinds != INT8_KINDS:
        raise BundleError(f"{source}: {where}.kinds must be {list(INT8_KINDS)} in a bundle with only the "
                          f"{INT8_FORMAT} base, got {list(kinds)}")
    delta = _file_entry(value["delta"], DELTA_EXT, f"{where}.delta", source) if "delta" in keys else None
    int8_delta = (_file_entry(value["int8_delta"], INT8_DELTA_EXT, f"{where}.int8_delta", source)
                  if "int8_delta" in keys else None)
    return TaskEntry(value["name"], classes, value["resolution"], kinds, delta, int8_delta)


def _load_json(data: bytes, source: str):
    if len(data) > MAX_MANIFEST_BYTES:
        raise BundleError(f"{source}: manifest is {len(data)} bytes, more than MAX_MANIFEST_BYTES "
                          f"({MAX_MANIFEST_BYTES})")
    try:
        return json.loads(data.decode("utf-8"), object_pairs_hook=_reject_duplicates,
                          parse_constant=_reject_constant)
    except UnicodeDecodeError as error:
        raise BundleError(f"{source}: manifest is not UTF-8 ({error.reason} at byte {error.start})") from None
    except RecursionError:
        raise BundleError(f"{source}: manifest JSON is nested too deeply") from None
    except ValueError as error:
        raise BundleError(f"{source}: manifest is not valid JSON ({error})") from None


def _check_versions(top, source: str) -> None:
    bundle_version = top["bundle_version"]
    if type(bundle_version) is not int or bundle_version not in (LEGACY_BUNDLE_VERSION, BUNDLE_VERSION):
        raise BundleError(f"{source}: bundle_version must be {BUNDLE_VERSION} (or {LEGACY_BUNDLE_VERSION}), "
                          f"got {_show(bundle_version)}")
    model_version = top["model_version"]
    if bundle_version == LEGACY_BUNDLE_VERSION:
        if not (isinstance(model_version, str) and MODEL_VERSION_PATTERN.fullmatch(model_version)):
            raise BundleError(f"{source}: model_version must be 1..128 printable ASCII characters, "
                              f"got {_show(model_version)}")
    elif version_key(model_version) is None:
        raise BundleError(f"{source}: model_version must be integers joined by dots (at most "
                          f"{MAX_MODEL_VERSION} characters), got {_show(model_version)}")


def _parse_bases(bases, bundle_version: int, source: str) -> dict[str, FileEntry]:
    allowed = FLOAT_FORMATS if bundle_version == LEGACY_BUNDLE_VERSION else BASE_FORMATS
    if not (isinstance(bases, dict) and bases and set(bases) <= set(allowed)):
        raise BundleError(f"{source}: bases must be a non-empty object with keys from {list(allowed)}, "
                          f"got {_show(bases) if not isinstance(bases, dict) else sorted(bases)}")
    return {fmt: _file_entry(bases[fmt], BASE_EXT[fmt], f"bases.{fmt}", source) for fmt in sorted(bases)}


def parse_manifest(data: bytes, source: str = MANIFEST_NAME) -> Manifest:
    """Parse and validate manifest bytes (size, JSON, every key, type, range and name).

    Args:
      data: the bytes of manifest.json.
      source: names the manifest in error messages (a path or URL).

    Raises:
      BundleError: the first rule broken, with the key and the received value.
    """
    top = _load_json(data, source)
    _check_object(top, TOP_KEYS, "the manifest", source)
    _check_versions(top, source)
    if not (top["key_id"] is None or (isinstance(top["key_id"], str) and _KEY_ID.fullmatch(top["key_id"]))):
        raise BundleError(f"{source}: key_id must be null or 16 lowercase hex digits, got {_show(top['key_id'])}")
    parsed_bases = _parse_bases(top["bases"], top["bundle_version"], source)
    tasks = top["tasks"]
    if not (isinstance(tasks, list) and len(tasks) <= MAX_TASKS):
        raise BundleError(f"{source}: tasks must be a list of at most {MAX_TASKS} entries, got {_show(tasks)}")
    parsed_tasks = tuple(_task_entry(task, index, tuple(parsed_bases), source) for index, task in enumerate(tasks))
    names = [task.name for task in parsed_tasks]
    if len(set(names)) != len(names):
        raise BundleError(f"{source}: task names must be unique, got {names}")
    manifest = Manifest(top["model_version"], top["key_id"], parsed_bases, parsed_tasks, top["bundle_version"])
    files = [entry.file for entry in manifest.files()]
    if len(set(files)) != len(files):
        raise BundleError(f"{source}: a file is listed twice")
    return manifest


def _file_json(entry: FileEntry) -> dict:
    return {"bytes": entry.bytes, "file": entry.file, "sha256": entry.sha256}


def _task_json(task: TaskEntry) -> dict:
    document = {"name": task.name, "classes": list(task.classes), "resolution": task.resolution,
                "kinds": list(task.kinds)}
    for key, entry in (("delta", task.delta), ("int8_delta", task.int8_delta)):
        if entry is not None:
            document[key] = _file_json(entry)
    return document


def encode_manifest(manifest: Manifest) -> bytes:
    """Canonical manifest bytes (sorted keys, 2-space indent, ASCII), checked by ``parse_manifest``.

    Raises:
      BundleError: the manifest breaks a rule of the format.
    """
    document = {
        "bundle_version": manifest.bundle_version,
        "model_version": manifest.model_version,
        "key_id": manifest.key_id,
        "bases": {fmt: _file_json(entry) for fmt, entry in manifest.bases.items()},
        "tasks": [_task_json(task) for task in manifest.tasks],
    }
    data = (json.dumps(document, sort_keys=True, indent=2, ensure_ascii=True) + "\n").encode("ascii")
    parse_manifest(data, "<new manifest>")
    return data


def check_not_older(manifest: Manifest, sha: str, active: tuple[Manifest, str] | None, source: str) -> None:
    """Refuse a manifest (with bytes of sha256 ``sha``) that would go back from ``active`` (manifest, sha256).

    Raises:
      RollbackError: a lower model version, or the same one with other manifest bytes.
    """
    if active is None or version_key(active[0].model_version) is None:
        return  # nothing active, or a legacy label: any numbered version may follow it
    new, old = manifest.model_version, active[0].model_version
    hint = "(pass allow_downgrade=True to go back on purpose)"
    if version_key(new) is None:
        raise RollbackError(f"{source}: model version {new!r} is not numeric, so it cannot follow the active {old}; "
                            f"the active version stays {hint}")
    if version_key(new) < version_key(old):
        raise RollbackError(f"{source}: model version {new} is older than the active {old}; "
                            f"the active version stays {hint}")
    if version_key(new) == version_key(old) and sha != active[1]:
        raise RollbackError(f"{source}: model version {new} equals the active {old}, but the manifest differs; "
                            f"publish a higher version; the active version stays {hint}")
