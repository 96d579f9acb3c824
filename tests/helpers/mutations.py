"""Mutations of real delta files and manifests, and the oracle that judges what a reader did with them.

Shared by ``tests/test_fuzz.py`` (hypothesis drives the ``random.Random``) and
``benchmarks/fuzz_deltas.py`` (seeded ``random.Random``, >= 10,000 cases).

Delta mutations know only the container (magic, version, header length,
JSON header, payload, sha256 trailer; see ``edgepatch.format.delta``), not the delta
layer, so they keep working when the delta meta changes. Raw mutations leave
the trailer as it was; "fixed" ones recompute it, so that lies in the header
and payload reach the checks behind the checksum.

Verdicts: ``rejected`` (an EdgepatchError), ``unchanged`` (the mutation was a
no-op), ``accepted_valid`` (accepted, and the bytes pass an independent
reference check of the container and a write/read round trip),
``accepted_invalid`` (accepted although invalid: a bug), ``crash`` (any other
exception: a bug).
"""

from __future__ import annotations

import hashlib
import json
import math
import random
import struct
from dataclasses import dataclass

from edgepatch.errors import EdgepatchError

PREAMBLE, TRAILER = 16, 32
ITEMSIZE = {"float32": 4, "float16": 2, "int32": 4, "int8": 1, "uint8": 1}
FLOAT_FORMAT = {"float32": "<f", "float16": "<e"}
EVIL_INTS = [-1, 0, 1, 7, 8, 15, 16, 255, 2**31 - 1, 2**31, 2**32 - 1, 2**32, 2**53 + 1, 2**63, 2**64 + 1,
             10**30, 1 << 30, (1 << 30) + 8]
EVIL_VALUES = EVIL_INTS + [0.5, -0.0, 1e308, "", "float64", "x" * 300, "\ud800", None, True, False, [], {},
                           [1] * 5, [2**40, 2**40], [-1], [[[[[[1]]]]]], {"a": 1}]
NON_FINITE = [float("nan"), float("inf"), float("-inf")]


@dataclass(frozen=True)
class Mutation:
    kind: str
    data: bytes
    checksum_fixed: bool


def _with_trailer(body: bytes) -> bytes:
    return body + hashlib.sha256(body).digest()


def _raw(data: bytes, rng: random.Random) -> tuple[str, bytes]:
    kind = rng.choice(["bitflip", "truncate", "extend", "overwrite", "delete", "duplicate"])
    out = bytearray(data)
    if kind == "bitflip":
        for _ in range(rng.randint(1, 8)):
            position = rng.randrange(len(out))
            out[position] ^= 1 << rng.randrange(8)
    elif kind == "truncate":
        del out[rng.randrange(len(out)):]
    elif kind == "extend":
        out += bytes(rng.randrange(256) for _ in range(rng.randint(1, 64)))
    elif kind == "overwrite":
        start = rng.randrange(len(out))
        out[start:start + rng.randint(1, 16)] = bytes(rng.randrange(256) for _ in range(rng.randint(1, 16)))
    else:
        start = rng.randrange(len(out))
        stop = min(len(out), start + rng.randint(1, 64))
        out[start:stop] = out[start:stop] * 2 if kind == "duplicate" else b""
    return kind, bytes(out)


def split(data: bytes) -> tuple[dict, bytes, int]:
    """(header object, payload, version) of a valid file."""
    version, header_len = struct.unpack_from("<II", data, 8)
    return json.loads(data[PREAMBLE:PREAMBLE + header_len]), data[PREAMBLE + header_len:-TRAILER], version


def join(header, payload: bytes, rng: random.Random | None = None, version: int = 1) -> bytes:
    """A file with this header and payload: canonical JSON (or, with rng, sometimes not), space padding."""
    compact = rng is None or rng.random() < 0.7
    text = json.dumps(header, sort_keys=compact, separators=(",", ":") if compact else (", ", ": "))
    raw = text.encode("utf-8", "surrogatepass")
    raw += b" " * (-len(raw) % 16)
    return _with_trailer(b"EDGEPTCH" + struct.pack("<II", version, len(raw)) + raw + payload)


def _leaves(value, path=()):
    """Every (path, value) in a JSON value, containers included."""
    yield path, value
    if isinstance(value, dict):
        for key, item in value.items():
            yield from _leaves(item, path + (key,))
    elif isinstance(value, list):
        for index, item in enumerate(value):
            yield from _leaves(item, path + (index,))


def _set(root, path, value):
    target = root
    for key in path[:-1]:
        target = target[key]
    target[path[-1]] = value


def _header_lie(header: dict, rng: random.Random) -> str:
    entries = header.get("tensors", [])
    kind = rng.choice(["entry_field", "payload_bytes", "duplicate_name", "drop_key", "add_key", "reorder",
                       "any_leaf", "nudge_number"])
    if kind == "entry_field" and entries:
        entry = rng.choice(entries)
        entry[rng.choice(["offset", "nbytes", "shape", "dtype", "name"])] = rng.choice(EVIL_VALUES)
    elif kind == "payload_bytes":
        header["payload_bytes"] = rng.choice(EVIL_INTS)
    elif kind == "duplicate_name" and len(entries) > 1:
        rng.choice(entries)["name"] = rng.choice(entries)["name"]
    elif kind == "drop_key":
        path, _ = rng.choice([p for p in _leaves(header) if p[0] and isinstance(p[0][-1], str)])
        parent = header
        for key in path[:-1]:
            parent = parent[key]
        del parent[path[-1]]
    elif kind == "add_key":
        path, value = rng.choice([(p, v) for p, v in _leaves(header) if isinstance(v, dict)])
        value[rng.choice(["extra", "name", "dtype", "z"])] = rng.choice(EVIL_VALUES)
    elif kind == "reorder" and len(entries) > 1:
        rng.shuffle(entries)
    elif kind == "nudge_number":
        numbers = [(p, v) for p, v in _leaves(header) if type(v) is int and p]
        if numbers:
            path, value = rng.choice(numbers)
            _set(header, path, value + rng.choice([-8, -4, -2, -1, 1, 2, 4, 8, 1 << 20]))
    else:
        path, _ = rng.choice([p for p in _leaves(header) if p[0]])
        _set(header, path, rng.choice(EVIL_VALUES))
    return kind


def _payload_lie(header: dict, payload: bytes, rng: random.Random) -> bytes:
    floats = [e for e in header["tensors"] if e["dtype"] in FLOAT_FORMAT and e["nbytes"]]
    if not floats:
        return payload
    entry = rng.choice(floats)
    size = ITEMSIZE[entry["dtype"]]
    position = entry["offset"] + size * rng.randrange(entry["nbytes"] // size)
    value = rng.choice(NON_FINITE + [65504.0, 1e-8, -1e30])
    try:
        packed = struct.pack(FLOAT_FORMAT[entry["dtype"]], value)
    except OverflowError:  # too large for float16: write +Inf
        packed = struct.pack("<e", float("inf"))
    return payload[:position] + packed + payload[position + size:]


def mutate_delta(data: bytes, rng: random.Random) -> Mutation:
    """One random mutation of a valid delta file."""
    family = rng.choice(["raw", "raw_fixed", "header", "header", "payload", "preamble"])
    if family == "raw":
        kind, out = _raw(data, rng)
        return Mutation(kind, out, False)
    if family == "raw_fixed":
        kind, body = _raw(data[:-TRAILER], rng)
        return Mutation(kind + "+fixed", _with_trailer(body), True)
    header, payload, version = split(data)  # a mutant keeps its file's version, so it meets the rule it targets
    if family == "header":
        kind = _header_lie(header, rng)
        return Mutation("header_" + kind, join(header, payload, rng, version), True)
    if family == "payload":
        return Mutation("payload_non_finite", join(header, _payload_lie(header, payload, rng), version=version), True)
    fixed = join(header, payload, version=version)
    field = rng.choice([(8, "<I"), (12, "<I")])  # version, header_len
    body = bytearray(fixed[:-TRAILER])
    struct.pack_into(field[1], body, field[0], rng.choice([v for v in EVIL_INTS if 0 <= v < 2**32]))
    return Mutation("preamble_lie", _with_trailer(bytes(body)), True)


def _strict_json(raw: bytes):
    def pairs(items):
        keys = [k for k, _ in items]
        if len(set(keys)) != len(keys):
            raise ValueError("duplicate key")
        return dict(items)

    def number(text):
        value = float(text)
        if not math.isfinite(value):
            raise ValueError("overflow")
        return value

    def constant(name):
        raise ValueError(name)

    return json.loads(raw.decode("utf-8"), object_pairs_hook=pairs, parse_float=number, parse_constant=constant)


def container_valid(data: bytes) -> bool:
    """An independent reference check of the container rules (edgepatch.format.delta docstring)."""
    try:
        if not (64 <= len(data) <= 1 << 30 and data[:8] == b"EDGEPTCH"):
            return False
        version, header_len = struct.unpack_from("<II", data, 8)
        if version not in (1, 2) or header_len % 16 or not 16 <= header_len <= 1 << 20:
            return False
        header = _strict_json(data[PREAMBLE:PREAMBLE + header_len])
        if not (isinstance(header, dict) and sorted(header) == ["file_kind", "meta", "payload_bytes", "tensors"]):
            return False
        payload_bytes = header["payload_bytes"]
        if type(payload_bytes) is not int or len(data) != PREAMBLE + header_len + payload_bytes + TRAILER:
            return False
        if hashlib.sha256(data[:-TRAILER]).digest() != data[-TRAILER:] or header["file_kind"] != "delta":
            return False
        payload, end, names, used = data[PREAMBLE + header_len:-TRAILER], 0, set(), bytearray(payload_bytes)
        for entry in header["tensors"]:
            if sorted(entry) != ["dtype", "name", "nbytes", "offset", "shape"] or entry["dtype"] not in ITEMSIZE:
                return False
            name, shape, offset, nbytes = entry["name"], entry["shape"], entry["offset"], entry["nbytes"]
            if not (isinstance(name, str) and 1 <= len(name.encode("utf-8")) <= 256 and name not in names):
                return False
            if not (isinstance(shape, list) and len(shape) <= 4 and all(type(d) is int and d >= 0 for d in shape)):
                return False
            if not (type(offset) is int and type(nbytes) is int and offset % 8 == 0 and offset >= end):
                return False
            if nbytes != math.prod(shape) * ITEMSIZE[entry["dtype"]] or offset + nbytes > payload_bytes:
                return False
            names.add(name)
            end = offset + nbytes
            used[offset:end] = b"\x01" * nbytes
            if entry["dtype"] in FLOAT_FORMAT:
                values = struct.iter_unpack(FLOAT_FORMAT[entry["dtype"]], payload[offset:end])
                if not all(math.isfinite(value) for (value,) in values):
                    return False
        return all(byte == 0 for byte, mark in zip(payload, used) if not mark)
    except (ValueError, UnicodeDecodeError, UnicodeEncodeError, TypeError, KeyError, RecursionError, AttributeError):
        return False


def judge_delta(original: bytes, mutation: Mutation, decode, encode) -> str:
    """The verdict on what ``decode`` (bytes -> Delta) did with a mutated delta."""
    try:
        delta = decode(mutation.data)
    except EdgepatchError:
        return "rejected"
    if mutation.data == original:
        return "unchanged"
    if not mutation.checksum_fixed or not container_valid(mutation.data):
        return "accepted_invalid"
    try:
        return "accepted_valid" if decode(encode(delta)) == delta else "accepted_invalid"
    except EdgepatchError:
        return "accepted_invalid"  # the writer refuses what the reader accepted


def mutate_manifest(data: bytes, rng: random.Random) -> Mutation:
    """One random mutation of a valid manifest (raw bytes or a JSON-level lie)."""
    if rng.random() < 0.35:
        kind, out = _raw(data, rng)
        return Mutation("manifest_" + kind, out, False)
    document = json.loads(data)
    kind = rng.choice(["leaf", "drop_key", "add_key", "duplicate_key", "non_finite", "deep", "traversal"])
    if kind == "duplicate_key":
        text = json.dumps(document)
        return Mutation(kind, text.replace('{"bases": ', '{"model_version": "x", "bases": ', 1).encode(), False)
    if kind == "non_finite":
        return Mutation(kind, json.dumps(document).replace("1", rng.choice(["NaN", "Infinity", "1e999"]), 1).encode(),
                        False)
    if kind == "deep":
        return Mutation(kind, b'{"tasks": ' + b"[" * rng.choice([100, 5000]) + b"]" * 10, False)
    paths = [p for p, _ in _leaves(document) if p]
    if kind == "traversal":
        path = rng.choice([p for p in paths if p[-1] == "file"])
        _set(document, path, rng.choice(["../../etc/passwd", "/etc/passwd", "files/../manifest.json",
                                         "files/" + "0" * 64 + ".delta", "files\\x.delta"]))
    elif kind == "drop_key":
        path = rng.choice([p for p in paths if isinstance(p[-1], str)])
        parent = document
        for key in path[:-1]:
            parent = parent[key]
        del parent[path[-1]]
    elif kind == "add_key":
        rng.choice([v for _, v in _leaves(document) if isinstance(v, dict)])["extra"] = rng.choice(EVIL_VALUES)
    else:
        _set(document, rng.choice(paths), rng.choice(EVIL_VALUES))
    return Mutation("manifest_" + kind, json.dumps(document).encode("utf-8", "surrogatepass"), False)


def _strict_equal(a, b) -> bool:
    if type(a) is not type(b):
        return False
    if isinstance(a, dict):
        return a.keys() == b.keys() and all(_strict_equal(a[k], b[k]) for k in a)
    if isinstance(a, list):
        return len(a) == len(b) and all(_strict_equal(x, y) for x, y in zip(a, b))
    return a == b


def judge_manifest(original: bytes, mutation: Mutation, parse, encode) -> str:
    """The verdict on what ``parse`` (bytes -> Manifest) did with a mutated manifest."""
    try:
        manifest = parse(mutation.data)
    except EdgepatchError:
        return "rejected"
    if mutation.data == original:
        return "unchanged"
    try:
        same = _strict_equal(_strict_json(mutation.data), _strict_json(encode(manifest)))
    except (ValueError, UnicodeDecodeError, RecursionError, EdgepatchError):
        same = False
    return "accepted_valid" if same else "accepted_invalid"
