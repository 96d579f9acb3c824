"""The bundle manifest (``manifest.json``, version 1): what a device may download and run.

A bundle directory holds ``manifest.json``, optionally ``manifest.sig`` (see
``edgepatch.ship.signing``) and ``files/``, where every file is named by its
content: ``files/<sha256>.<ext>``, so a CDN may cache it forever.

The manifest is one UTF-8 JSON object of at most ``MAX_MANIFEST_BYTES``
(duplicate keys, NaN/Infinity and unknown keys are rejected)::

    {"bundle_version": 1,
     "model_version": "<1..128 printable ASCII>",
     "key_id": "<16 hex>" | null,          # the signing key (null: unsigned)
     "bases": {"<format>": FILE, ...},     # runtime formats: "tflite", "onnx"
     "tasks": [{"name": str, "classes": [str, ...], "resolution": int,
                "kinds": [str, ...], "delta": FILE}, ...]}

    FILE = {"file": "files/<sha256>.<ext>", "bytes": int, "sha256": "<64 hex>"}

The base fingerprint of a format is ``bases[format].sha256``: every task's
delta must name exactly that value in its ``base_sha256[format]``, for every
format of the bundle. ``ext`` is the format for bases and ``delta`` for
deltas; ``file`` must equal that name (it is never used as a free path).
Task names are unique, as are files.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass

from edgepatch.errors import BundleError

BUNDLE_VERSION = 1
MANIFEST_NAME = "manifest.json"
SIGNATURE_NAME = "manifest.sig"
FILES_DIR = "files"
MAX_MANIFEST_BYTES = 1 << 20
MAX_BUNDLE_FILE_BYTES = 1 << 32
MAX_TASKS = 1024
MAX_TEXT = 256
BASE_FORMATS = ("tflite", "onnx")  # = edgepatch.format.layouts.FORMATS, without importing the runtime
DELTA_EXT = "delta"
TOP_KEYS = ("bases", "bundle_version", "key_id", "model_version", "tasks")
FILE_KEYS = ("bytes", "file", "sha256")
TASK_KEYS = ("classes", "delta", "kinds", "name", "resolution")
_HEX64 = re.compile(r"[0-9a-f]{64}")
_KEY_ID = re.compile(r"[0-9a-f]{16}")
MODEL_VERSION_PATTERN = re.compile(r"[\x21-\x7e][\x20-\x7e]{0,127}")


@dataclass(frozen=True)
class FileEntry:
    """One content-addressed file of a bundle: ``file`` is ``files/<sha256>.<ext>``."""

    file: str
    bytes: int
    sha256: str


@dataclass(frozen=True)
class TaskEntry:
    """One task: what it classifies and which delta file holds it."""

    name: str
    classes: tuple[str, ...]
    resolution: int
    kinds: tuple[str, ...]
    delta: FileEntry


@dataclass(frozen=True)
class Manifest:
    """A parsed, validated manifest. ``bases`` maps runtime format to its file."""

    model_version: str
    key_id: str | None
    bases: dict[str, FileEntry]
    tasks: tuple[TaskEntry, ...]

    def files(self) -> list[FileEntry]:
        """Every file the bundle lists: bases first, then deltas in task order."""
        return list(self.bases.values()) + [task.delta for task in self.tasks]


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
    if not (isinstance(value, str) and 0 < len(value) <= MAX_TEXT):
        return False
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


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


def _task_entry(value, index: int, source: str) -> TaskEntry:
    where = f"tasks[{index}]"
    _check_object(value, TASK_KEYS, where, source)
    if not _is_text(value["name"]):
        raise BundleError(f"{source}: {where}.name must be a UTF-8 string of 1..{MAX_TEXT} characters, "
                          f"got {_show(value['name'])}")
    classes = _text_list(value["classes"], f"{where}.classes", source)
    if not _is_int(value["resolution"], 8, 4096):
        raise BundleError(f"{source}: {where}.resolution must be an integer in 8..4096, "
                          f"got {_show(value['resolution'])}")
    kinds = _text_list(value["kinds"], f"{where}.kinds", source)
    delta = _file_entry(value["delta"], DELTA_EXT, f"{where}.delta", source)
    return TaskEntry(value["name"], classes, value["resolution"], kinds, delta)


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
    if top["bundle_version"] != BUNDLE_VERSION or type(top["bundle_version"]) is not int:
        raise BundleError(f"{source}: bundle_version must be {BUNDLE_VERSION}, got {_show(top['bundle_version'])}")
    if not (isinstance(top["model_version"], str) and MODEL_VERSION_PATTERN.fullmatch(top["model_version"])):
        raise BundleError(f"{source}: model_version must be 1..128 printable ASCII characters, "
                          f"got {_show(top['model_version'])}")
    if not (top["key_id"] is None or (isinstance(top["key_id"], str) and _KEY_ID.fullmatch(top["key_id"]))):
        raise BundleError(f"{source}: key_id must be null or 16 lowercase hex digits, got {_show(top['key_id'])}")
    bases = top["bases"]
    if not (isinstance(bases, dict) and bases and set(bases) <= set(BASE_FORMATS)):
        raise BundleError(f"{source}: bases must be a non-empty object with keys from {list(BASE_FORMATS)}, "
                          f"got {_show(bases) if not isinstance(bases, dict) else sorted(bases)}")
    parsed_bases = {fmt: _file_entry(bases[fmt], fmt, f"bases.{fmt}", source) for fmt in sorted(bases)}
    tasks = top["tasks"]
    if not (isinstance(tasks, list) and len(tasks) <= MAX_TASKS):
        raise BundleError(f"{source}: tasks must be a list of at most {MAX_TASKS} entries, got {_show(tasks)}")
    parsed_tasks = tuple(_task_entry(task, index, source) for index, task in enumerate(tasks))
    names = [task.name for task in parsed_tasks]
    if len(set(names)) != len(names):
        raise BundleError(f"{source}: task names must be unique, got {names}")
    files = [entry.file for entry in list(parsed_bases.values()) + [t.delta for t in parsed_tasks]]
    if len(set(files)) != len(files):
        raise BundleError(f"{source}: a file is listed twice")
    return Manifest(top["model_version"], top["key_id"], parsed_bases, parsed_tasks)


def _file_json(entry: FileEntry) -> dict:
    return {"bytes": entry.bytes, "file": entry.file, "sha256": entry.sha256}


def encode_manifest(manifest: Manifest) -> bytes:
    """Canonical manifest bytes (sorted keys, 2-space indent, ASCII), checked by ``parse_manifest``.

    Raises:
      BundleError: the manifest breaks a rule of the format.
    """
    document = {
        "bundle_version": BUNDLE_VERSION,
        "model_version": manifest.model_version,
        "key_id": manifest.key_id,
        "bases": {fmt: _file_json(entry) for fmt, entry in manifest.bases.items()},
        "tasks": [{"name": t.name, "classes": list(t.classes), "resolution": t.resolution,
                   "kinds": list(t.kinds), "delta": _file_json(t.delta)} for t in manifest.tasks],
    }
    data = (json.dumps(document, sort_keys=True, indent=2, ensure_ascii=True) + "\n").encode("ascii")
    parse_manifest(data, "<new manifest>")
    return data
