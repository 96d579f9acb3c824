"""The container of the edgepatch tensor file format (magic, version, JSON header, payload, sha256).

Specified in ``edgepatch/format/spec.rst``, sections *Container* and *Verification
order* (steps 1-10); this module implements them. ``edgepatch.format.delta`` and
``edgepatch.format.int8_delta`` add the file kinds' own rules on top.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import struct
from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np

from edgepatch.atomic import write_bytes_atomic
from edgepatch.errors import (
    ChecksumMismatchError,
    DeltaFormatError,
    HeaderError,
    MissingFileError,
    TruncatedFileError,
    UsageError,
)
from edgepatch.format.checks import check_finite, check_keys, is_int, json_type, show
from edgepatch.format.open_file import open_regular_file

MAGIC = b"EDGEPTCH"
FORMAT_VERSION = 2  # written now; 2 added per-channel preprocessing (spec: *Container*)
READABLE_VERSIONS = (1, 2)
PREAMBLE_BYTES = 16  # magic, version, header_len
TRAILER_BYTES = 32  # sha256
HEADER_ALIGN = 16
ALIGN = 8
MIN_HEADER_BYTES = 16
MAX_HEADER_BYTES = 1 << 20
MIN_FILE_BYTES = PREAMBLE_BYTES + MIN_HEADER_BYTES + TRAILER_BYTES
MAX_FILE_BYTES = 1 << 30
MAX_TENSORS = 8192
MAX_NAME_BYTES = 256
MAX_RANK = 4
MAX_TENSOR_ELEMENTS = 1 << 28
FILE_KINDS = ("delta", "patch", "int8_delta")
DTYPES = {"float32": "<f4", "float16": "<f2", "int32": "<i4", "int8": "i1", "uint8": "u1"}
FLOAT_DTYPES = ("float32", "float16")
HEADER_KEYS = ("file_kind", "meta", "payload_bytes", "tensors")
TENSOR_KEYS = ("dtype", "name", "nbytes", "offset", "shape")


@dataclass(frozen=True)
class TensorFile:
    """A decoded file: its ``meta`` object and read-only arrays in stored dtype."""

    meta: dict
    tensors: dict[str, np.ndarray]
    file_kind: str = "delta"
    version: int = FORMAT_VERSION


def _round_up(value: int, multiple: int) -> int:
    return -(-value // multiple) * multiple


def _check_kind_arg(kind, arg: str) -> None:
    if isinstance(kind, tuple) and kind and all(k in FILE_KINDS for k in kind):
        return  # a reader accepting any of several kinds
    if kind not in FILE_KINDS:
        raise UsageError(f"{arg} must be one of {', '.join(FILE_KINDS)}; received {arg}={kind!r}")


# ----------------------------------------------------- container: reading


def _reject_constant(name: str):
    raise ValueError(f"non-standard constant {name}")


def _finite_float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise ValueError(f"number {show(text)} overflows a double")
    return value


def _unique_object(pairs):
    obj = {}
    for key, value in pairs:
        if key in obj:
            raise ValueError(f"duplicate key {show(key)}")
        obj[key] = value
    return obj


def _parse_header(raw: bytes):
    """Return (header, None) or (None, message) so the error can wait for the checksum."""
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as err:
        return None, f"header is not valid UTF-8: {err.reason} at byte {err.start}"
    try:
        header = json.loads(text, object_pairs_hook=_unique_object, parse_float=_finite_float,
                            parse_constant=_reject_constant)
    except RecursionError:
        return None, "header is not valid JSON: nested too deeply"
    except ValueError as err:  # json.JSONDecodeError is a ValueError
        return None, f"header is not valid JSON: {err}"
    return header, None


def _check_file_size(size: int, source: str) -> None:
    if size < MIN_FILE_BYTES:
        raise TruncatedFileError(
            f"{source}: file is {size} bytes, shorter than the smallest valid file ({MIN_FILE_BYTES} bytes)")
    if size > MAX_FILE_BYTES:
        raise DeltaFormatError(
            f"{source}: file is {size} bytes, larger than MAX_FILE_BYTES ({MAX_FILE_BYTES})")


def _check_preamble(data: bytes, source: str, size: int | None = None) -> int:
    """Steps 3 and 4; returns header_len. ``size``: the whole file's, when only its start is in ``data``."""
    if data[:8] != MAGIC:
        raise DeltaFormatError(f"{source}: bad magic: expected {MAGIC!r}, got {data[:8]!r}")
    version, header_len = struct.unpack_from("<II", data, 8)
    if version not in READABLE_VERSIONS:
        expected = " or ".join(str(v) for v in READABLE_VERSIONS)
        raise DeltaFormatError(f"{source}: unsupported format version: expected {expected}, got {version}")
    if not MIN_HEADER_BYTES <= header_len <= MAX_HEADER_BYTES:
        raise HeaderError(
            f"{source}: header_len {header_len} is outside {MIN_HEADER_BYTES}..{MAX_HEADER_BYTES}")
    if header_len % HEADER_ALIGN:
        raise HeaderError(f"{source}: header_len {header_len} is not a multiple of {HEADER_ALIGN}")
    needed = PREAMBLE_BYTES + header_len + TRAILER_BYTES
    size = len(data) if size is None else size
    if size < needed:
        raise TruncatedFileError(
            f"{source}: file is {size} bytes, too short for header_len {header_len} "
            f"(needs at least {needed})")
    return header_len


def _check_total_size(size: int, header_len: int, payload_bytes: int, source: str) -> None:
    expected = PREAMBLE_BYTES + header_len + payload_bytes + TRAILER_BYTES
    detail = (f"file is {size} bytes, expected {expected} = 16 + header_len {header_len} "
              f"+ payload_bytes {payload_bytes} + 32")
    if size < expected:
        raise TruncatedFileError(f"{source}: truncated: {detail}")
    if size > expected:
        raise DeltaFormatError(f"{source}: {size - expected} unexpected trailing bytes: {detail}")


def _check_trailer(data: bytes, source: str) -> None:
    stored = data[-TRAILER_BYTES:].hex()
    actual = hashlib.sha256(memoryview(data)[:-TRAILER_BYTES]).hexdigest()
    if stored != actual:
        raise ChecksumMismatchError(
            f"{source}: sha256 mismatch: trailer says {stored}, content hashes to {actual}")


def _check_header(header, expect_kind: str, source: str) -> list[dict]:
    """Step 7 and 8: the header's schema; returns the tensor entries."""
    check_keys(header, HEADER_KEYS, "header", source)
    kind = header["file_kind"]
    if kind not in FILE_KINDS:
        raise HeaderError(f"{source}: file_kind must be one of {', '.join(FILE_KINDS)}, got {show(kind)}")
    if isinstance(expect_kind, tuple) and kind not in expect_kind:
        raise HeaderError(f"{source}: file_kind: expected one of {', '.join(expect_kind)}, got {kind!r}")
    if isinstance(expect_kind, str) and kind != expect_kind:
        raise HeaderError(f"{source}: file_kind: expected {expect_kind!r}, got {kind!r}")
    if not is_int(header["payload_bytes"], 0, MAX_FILE_BYTES):
        raise HeaderError(f"{source}: payload_bytes must be an integer in 0..{MAX_FILE_BYTES}, "
                          f"got {show(header['payload_bytes'])}")
    if not isinstance(header["meta"], dict):
        raise HeaderError(f"{source}: meta must be a JSON object, got {json_type(header['meta'])}")
    entries = header["tensors"]
    if not isinstance(entries, list):
        raise HeaderError(f"{source}: tensors must be a JSON array, got {json_type(entries)}")
    if len(entries) > MAX_TENSORS:
        raise HeaderError(f"{source}: {len(entries)} tensors, more than MAX_TENSORS ({MAX_TENSORS})")
    _check_entries(entries, header["payload_bytes"], source)
    return entries


def _check_name(entry: dict, index: int, seen: set, source: str) -> str:
    name = entry["name"]
    try:
        ok = isinstance(name, str) and 1 <= len(name.encode("utf-8")) <= MAX_NAME_BYTES
    except UnicodeEncodeError:  # an unpaired surrogate escape
        ok = False
    if not ok:
        raise HeaderError(f"{source}: tensors[{index}].name must be a string of 1..{MAX_NAME_BYTES} "
                          f"UTF-8 bytes, got {show(name)}")
    if name in seen:
        raise HeaderError(f"{source}: duplicate tensor name {name!r}")
    seen.add(name)
    return name


def _check_entry_numbers(entry: dict, where: str, source: str) -> None:
    if not isinstance(entry["dtype"], str) or entry["dtype"] not in DTYPES:
        raise HeaderError(f"{source}: {where}: dtype must be one of {', '.join(DTYPES)}, "
                          f"got {show(entry['dtype'])}")
    shape = entry["shape"]
    if not (isinstance(shape, list) and len(shape) <= MAX_RANK
            and all(is_int(dim, 0, MAX_FILE_BYTES) for dim in shape)):
        raise HeaderError(f"{source}: {where}: shape must be an array of at most {MAX_RANK} "
                          f"integers in 0..{MAX_FILE_BYTES}, got {show(shape)}")
    for key in ("offset", "nbytes"):
        if not is_int(entry[key], 0, MAX_FILE_BYTES):
            raise HeaderError(f"{source}: {where}: {key} must be an integer in 0..{MAX_FILE_BYTES}, "
                              f"got {show(entry[key])}")
    elements = math.prod(max(dim, 1) for dim in shape)
    if elements > MAX_TENSOR_ELEMENTS:
        raise HeaderError(f"{source}: {where}: shape {shape} has {elements} elements (zero dimensions "
                          f"counted as 1), more than MAX_TENSOR_ELEMENTS ({MAX_TENSOR_ELEMENTS})")
    needed = math.prod(shape) * np.dtype(DTYPES[entry["dtype"]]).itemsize
    if entry["nbytes"] != needed:
        raise HeaderError(f"{source}: {where}: nbytes is {entry['nbytes']}, but shape {shape} "
                          f"of {entry['dtype']} needs {needed}")


def _check_entries(entries: list, payload_bytes: int, source: str) -> None:
    seen: set[str] = set()
    previous, previous_end = None, 0
    for index, entry in enumerate(entries):
        check_keys(entry, TENSOR_KEYS, f"tensors[{index}]", source)
        name = _check_name(entry, index, seen, source)
        where = f"tensor {name!r}"
        _check_entry_numbers(entry, where, source)
        offset, end = entry["offset"], entry["offset"] + entry["nbytes"]
        if offset % ALIGN:
            raise HeaderError(f"{source}: {where}: offset {offset} is not a multiple of ALIGN ({ALIGN})")
        if offset < previous_end:
            raise HeaderError(f"{source}: {where}: offset {offset} is before the end of the previous "
                              f"tensor {previous!r} ({previous_end}); tensors must be sorted by offset "
                              f"and must not overlap")
        if end > payload_bytes:
            raise HeaderError(f"{source}: {where}: bytes {offset}..{end} run past payload_bytes "
                              f"({payload_bytes})")
        previous, previous_end = name, end


def _check_padding(payload: bytes, entries: list, source: str) -> None:
    position = 0
    for start, end in [(e["offset"], e["offset"] + e["nbytes"]) for e in entries] + [(len(payload),) * 2]:
        gap = payload[position:start]
        nonzero = len(gap) - len(gap.lstrip(b"\0"))
        if nonzero < len(gap):
            at = position + nonzero
            raise DeltaFormatError(f"{source}: payload byte {at} is 0x{payload[at]:02x}, expected 0x00 "
                                   f"(bytes outside tensors must be zero)")
        position = end


def decode_tensor_file(data: bytes, expect_kind: str, source: str = "<bytes>") -> TensorFile:
    """Verify and decode a whole file held in memory (steps 2 to 10).

    Args:
      data: the file's bytes.
      expect_kind: ``"delta"`` or ``"patch"``; the file must be of this kind.
      source: the name errors give for the data, usually its path.

    Returns:
      A ``TensorFile``; its arrays are read-only views of ``data``.

    Raises:
      DeltaFormatError (or a subclass), NonFiniteError; UsageError for a bad
      ``expect_kind``.
    """
    _check_kind_arg(expect_kind, "expect_kind")
    data = bytes(data)  # immutable (no copy if it already is): the arrays below are views of it
    _check_file_size(len(data), source)
    header_len = _check_preamble(data, source)
    start = PREAMBLE_BYTES + header_len
    header, parse_error = _parse_header(data[PREAMBLE_BYTES:start])
    if isinstance(header, dict) and is_int(header.get("payload_bytes"), 0, MAX_FILE_BYTES):
        _check_total_size(len(data), header_len, header["payload_bytes"], source)
    _check_trailer(data, source)
    if parse_error:
        raise HeaderError(f"{source}: {parse_error}")
    entries = _check_header(header, expect_kind, source)
    payload_bytes = header["payload_bytes"]
    _check_padding(data[start:start + payload_bytes], entries, source)
    tensors = {}
    for entry in entries:
        dtype = np.dtype(DTYPES[entry["dtype"]])
        flat = np.frombuffer(data, dtype=dtype, count=entry["nbytes"] // dtype.itemsize,
                             offset=start + entry["offset"])
        tensors[entry["name"]] = flat.reshape(entry["shape"])
        check_finite(entry["name"], tensors[entry["name"]], source)
    version = struct.unpack_from("<I", data, 8)[0]
    return TensorFile(meta=header["meta"], tensors=tensors, file_kind=header["file_kind"], version=version)


def read_bytes(path) -> tuple[bytes, str]:
    """Steps 1-2, then the bytes and the name for errors; reads past the header only at the promised size."""
    source = os.fsdecode(path)
    handle, size = open_regular_file(source)
    with handle:
        _check_file_size(size, source)  # before reading a byte
        head = handle.read(PREAMBLE_BYTES)
        if len(head) == PREAMBLE_BYTES:
            header_len = _check_preamble(head, source, size)
            raw = handle.read(header_len)
            header, _ = _parse_header(raw)
            head += raw
            if isinstance(header, dict) and is_int(header.get("payload_bytes"), 0, MAX_FILE_BYTES):
                _check_total_size(size, header_len, header["payload_bytes"], source)
        # One byte more than fstat saw: a file that grew since is caught by decode.
        return head + handle.read(size + 1 - len(head)), source


def read_tensor_file(path, expect_kind: str) -> TensorFile:
    """Read and verify a delta or patch file (all steps of the verification order).

    Raises MissingFileError, DeltaFormatError (or a subclass), NonFiniteError.
    """
    _check_kind_arg(expect_kind, "expect_kind")
    data, source = read_bytes(path)
    return decode_tensor_file(data, expect_kind, source)


# ----------------------------------------------------- container: writing


def _stored_array(name, array, source: str) -> np.ndarray:
    if not isinstance(array, np.ndarray):
        raise UsageError(f"{source}: tensor {show(name)} must be a numpy array, got {type(array).__name__}")
    if array.dtype.name in DTYPES:
        # little-endian, C order (not ascontiguousarray: it turns a scalar into shape [1])
        return np.asarray(array, dtype=DTYPES[array.dtype.name], order="C")
    return array  # the header check rejects its dtype by name


def _header_json(file_kind: str, meta, entries: list, payload_bytes: int, source: str) -> bytes:
    if not isinstance(meta, dict):
        raise UsageError(f"{source}: meta must be a dict, got {type(meta).__name__}")
    header = {"file_kind": file_kind, "meta": meta, "payload_bytes": payload_bytes, "tensors": entries}
    try:
        text = json.dumps(header, sort_keys=True, separators=(",", ":"), ensure_ascii=True,
                          allow_nan=False)
    except (TypeError, ValueError, RecursionError) as err:
        raise UsageError(f"{source}: meta cannot be written as JSON: {err}") from None
    reparsed, parse_error = _parse_header(text.encode("ascii"))
    if parse_error or reparsed["meta"] != meta:
        raise UsageError(f"{source}: meta does not survive a JSON round trip (use dicts with str keys, "
                         f"lists, str, int, finite float, bool, None)")
    _check_header(reparsed, file_kind, source)  # the reader's own rules
    raw = text.encode("ascii")
    return raw + b" " * (_round_up(len(raw), HEADER_ALIGN) - len(raw))


def encode_tensor_file(file_kind: str, tensors: Mapping[str, np.ndarray], meta: dict,
                       source: str = "<bytes>", version: int = FORMAT_VERSION) -> bytes:
    """Encode tensors (in insertion order) and meta as one canonical file.

    ``version``: the preamble's; only test-data generators write an older one.

    Raises UsageError for bad arguments, HeaderError for what the reader
    would reject in the header (names, dtypes, ranks, limits), NonFiniteError
    for NaN/Inf, DeltaFormatError when the file would exceed MAX_FILE_BYTES.
    """
    _check_kind_arg(file_kind, "file_kind")
    if version not in READABLE_VERSIONS:
        raise UsageError(f"{source}: version must be one of {list(READABLE_VERSIONS)}; received version={version!r}")
    if not isinstance(tensors, Mapping):
        raise UsageError(
            f"{source}: tensors must be a mapping of name to array, got {type(tensors).__name__}")
    arrays = {name: _stored_array(name, array, source) for name, array in tensors.items()}
    entries, end = [], 0
    for name, array in arrays.items():
        offset = _round_up(end, ALIGN)
        end = offset + array.nbytes
        entries.append({"dtype": array.dtype.name, "name": name, "nbytes": array.nbytes,
                        "offset": offset, "shape": list(array.shape)})
    payload_bytes = _round_up(end, ALIGN)
    if payload_bytes > MAX_FILE_BYTES:
        raise DeltaFormatError(f"{source}: payload would be {payload_bytes} bytes, larger than "
                               f"MAX_FILE_BYTES ({MAX_FILE_BYTES})")
    header = _header_json(file_kind, meta, entries, payload_bytes, source)
    for name, array in arrays.items():
        check_finite(name, array, source)
    if len(header) > MAX_HEADER_BYTES:
        raise HeaderError(f"{source}: header would be {len(header)} bytes, larger than MAX_HEADER_BYTES "
                          f"({MAX_HEADER_BYTES})")
    size = PREAMBLE_BYTES + len(header) + payload_bytes + TRAILER_BYTES
    if size > MAX_FILE_BYTES:
        raise DeltaFormatError(f"{source}: file would be {size} bytes, larger than MAX_FILE_BYTES "
                               f"({MAX_FILE_BYTES})")
    out = bytearray(size)
    out[:PREAMBLE_BYTES] = MAGIC + struct.pack("<II", version, len(header))
    start = PREAMBLE_BYTES + len(header)
    out[PREAMBLE_BYTES:start] = header
    for entry, array in zip(entries, arrays.values()):
        out[start + entry["offset"]:start + entry["offset"] + entry["nbytes"]] = array.tobytes()
    out[-TRAILER_BYTES:] = hashlib.sha256(memoryview(out)[:-TRAILER_BYTES]).digest()
    return bytes(out)


def write_tensor_file(path, file_kind: str, tensors: Mapping[str, np.ndarray], meta: dict) -> int:
    """Encode and write atomically; returns the bytes written. Raises as ``encode_tensor_file``."""
    source = os.fsdecode(path)
    return write_bytes_atomic(path, encode_tensor_file(file_kind, tensors, meta, source))
