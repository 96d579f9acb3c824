"""Tests of the delta/patch file format (edgepatch/delta.py).

Malicious files are built here from the spec (``assemble``), not with the
encoder, so the tests double as a second, independent writer.
"""

import hashlib
import json
import os
import struct

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from edgepatch import delta as fmt
from edgepatch.delta import (
    MAX_FILE_BYTES,
    Delta,
    Preprocessing,
    TaskInfo,
    decode_delta,
    decode_tensor_file,
    encode_delta,
    encode_tensor_file,
    read_delta,
    read_tensor_file,
    task_from_json,
    task_to_json,
    write_delta,
    write_tensor_file,
)
from edgepatch.errors import (
    ChecksumMismatchError,
    DeltaFormatError,
    EdgepatchError,
    HeaderError,
    MissingFileError,
    NonFiniteError,
    ShapeMismatchError,
    TruncatedFileError,
    UsageError,
)

SHA_TFLITE = "1f" * 32
SHA_ONNX = "c0" * 32


def tiny_delta(tensors=None, sites=None, base_sha256=None) -> Delta:
    """One dense site with scale [2] and bias [2]: the golden-bytes delta."""
    return Delta(
        task=TaskInfo("flowers", ("daisy", "rose"), 96, Preprocessing(scale=0.0078125, offset=-1.0)),
        kinds=("scale_bias",),
        base_sha256=base_sha256 or {"tflite": SHA_TFLITE, "onnx": SHA_ONNX},
        sites=sites or {"logits": "dense"},
        tensors=tensors or {"logits/scale": np.array([1.5, -2.0], np.float32),
                            "logits/bias": np.array([0.25, 3.0], np.float32)})


def sample_delta() -> Delta:
    """Every site op and every role, with values that fp16 must round."""
    rng = np.random.default_rng(7)
    tensors = {
        "Conv1/scale": rng.normal(1, 0.1, [4]),
        "Conv1/bias": rng.normal(0, 1, [4]),
        "block_1_depthwise/kernel": rng.normal(0, 1, [3, 3, 4, 2]),
        "block_1_depthwise/bias": rng.normal(0, 1, [8]),
        "Conv_1/kernel": rng.normal(0, 1, [1, 1, 8, 5]),
        "logits/kernel": rng.normal(0, 1, [5, 3]),
        "logits/bias": rng.normal(0, 1, [3]),
    }
    return Delta(
        task=TaskInfo("birds", ("finch", "owl", "wren"), 128, Preprocessing(1 / 127.5, -1.0)),
        kinds=("scale_bias", "depthwise", "logits"),
        base_sha256={"tflite": SHA_TFLITE},
        sites={"Conv1": "conv", "block_1_depthwise": "depthwise", "Conv_1": "conv", "logits": "dense"},
        tensors={name: value.astype(np.float32) for name, value in tensors.items()})


TINY = encode_delta(tiny_delta())
TINY_HEADER_LEN = 560  # pinned by the golden test through the first 16 bytes
TINY_SIZE = 16 + TINY_HEADER_LEN + 16 + 32
GOLDEN_SHA256 = "94dd3fade6fad3d8beb9d11ce63aa4ac5319b082ea03d33289313445d8975401"


# ------------------------------------------------------ a writer from the spec


def entry(name, offset, shape=(2,), dtype="float32", nbytes=None):
    itemsize = {"float32": 4, "float16": 2, "int32": 4, "int8": 1, "uint8": 1}.get(str(dtype), 8)
    return {"dtype": dtype, "name": name, "offset": offset, "shape": list(shape),
            "nbytes": int(np.prod(shape)) * itemsize if nbytes is None else nbytes}


def patch_header(**top):
    """A valid patch header for PAYLOAD: float32 'a' [2] at 0 and 'b' [2] at 8."""
    header = {"file_kind": "patch", "meta": {}, "payload_bytes": 16,
              "tensors": [entry("a", 0), entry("b", 8)]}
    header.update(top)
    return header


PAYLOAD = np.array([1, 2, 3, 4], "<f4").tobytes()


def assemble(header, payload=PAYLOAD, *, magic=b"EDGEPTCH", version=1, header_len=None, pad_to=256):
    """Preamble + space-padded header + payload + a correct sha256 trailer."""
    raw = header if isinstance(header, bytes) else json.dumps(header).encode()
    size = max(pad_to, -(-len(raw) // 16) * 16)
    raw += b" " * (size - len(raw))
    body = magic + struct.pack("<II", version, len(raw) if header_len is None else header_len) + raw + payload
    return body + hashlib.sha256(body).digest()


def patched(data: bytes, offset: int, new: bytes, fix_trailer=False) -> bytes:
    out = bytearray(data)
    out[offset:offset + len(new)] = new
    if fix_trailer:
        out[-32:] = hashlib.sha256(out[:-32]).digest()
    return bytes(out)


def checksum_message(data: bytes) -> str:
    return (f"{{path}}: sha256 mismatch: trailer says {data[-32:].hex()}, "
            f"content hashes to {hashlib.sha256(data[:-32]).hexdigest()}")


def header_offset(data: bytes, text: bytes) -> int:
    return data.index(text, 16)


# ------------------------------------------------------------- round trips


@pytest.mark.parametrize("make", [tiny_delta, sample_delta], ids=["tiny", "sample"])
@pytest.mark.parametrize("dtype", ["float32", "float16"])
def test_delta_round_trip(tmp_path, make, dtype):
    original = make()
    path = tmp_path / "task.delta"
    written = write_delta(path, original, dtype=dtype)
    assert written == path.stat().st_size
    loaded = read_delta(path)
    expected = {n: a.astype(dtype).astype(np.float32) for n, a in original.tensors.items()}
    assert loaded == Delta(original.task, original.kinds, original.base_sha256, original.sites, expected)
    assert all(a.dtype == np.float32 and not a.flags.writeable for a in loaded.tensors.values())
    assert encode_delta(loaded, dtype) == path.read_bytes()  # canonical: decode then encode is identity


def test_fp16_really_rounds():
    loaded = decode_delta(encode_delta(sample_delta(), "float16"))
    assert loaded != sample_delta()
    assert len(encode_delta(sample_delta(), "float16")) < len(encode_delta(sample_delta(), "float32"))


ALL_DTYPES = [
    ("float32", np.arange(24, dtype=np.float32).reshape(2, 3, 4) / 7),
    ("float16", np.array([[0.5, -65504.0, 1e-7]], np.float16)),
    ("int32", np.array([-(2**31), 0, 2**31 - 1], np.int32)),
    ("int8", np.array([-128, 0, 127], np.int8).reshape(1, 1, 1, 3)),
    ("uint8", np.array([0, 255, 7], np.uint8)),
    ("big-endian float32", np.array([1.25, -3.5], ">f4")),
    ("transposed", np.arange(6, dtype=np.float32).reshape(2, 3).T),
    ("scalar", np.array(2.5, np.float32)),
    ("empty", np.zeros((0, 3), np.int32)),
]


@pytest.mark.parametrize("name, array", ALL_DTYPES, ids=[row[0] for row in ALL_DTYPES])
def test_every_dtype_round_trips_in_a_patch(tmp_path, name, array):
    path = tmp_path / "x.patch"
    write_tensor_file(path, "patch", {"first": np.ones(3, np.uint8), name: array}, {"step": 3})
    loaded = read_tensor_file(path, "patch")
    assert loaded.meta == {"step": 3}
    assert list(loaded.tensors) == ["first", name]
    got = loaded.tensors[name]
    assert got.dtype == array.dtype.newbyteorder("<") and got.shape == array.shape
    assert np.array_equal(got, array) and not got.flags.writeable


def test_size_is_close_to_raw_tensor_bytes():
    # MobileNetV2-1.0-like output channels: scale + bias on 52 sites.
    channels = [32, 32, 16] + [96, 96, 24, 144, 144, 24] + [144, 144, 32] * 3 + [192, 192, 64] * 4 \
        + [384, 384, 96] * 3 + [576, 576, 160] * 3 + [960, 960, 320, 1280]
    sites = {f"block_{i}_conv": "conv" for i in range(len(channels))}
    tensors = {}
    for i, c in enumerate(channels):
        tensors[f"block_{i}_conv/scale"] = np.ones(c, np.float32)
        tensors[f"block_{i}_conv/bias"] = np.zeros(c, np.float32)
    delta = Delta(tiny_delta().task, ("scale_bias",), {"tflite": SHA_TFLITE}, sites, tensors)
    size = len(encode_delta(delta))
    assert size <= 1.1 * delta.nbytes_payload + 4096, (size, delta.nbytes_payload)


# ------------------------------------------------------------- golden bytes


def test_golden_bytes():
    data = encode_delta(tiny_delta())
    assert data[:16] == b"EDGEPTCH" + b"\x01\x00\x00\x00" + b"\x30\x02\x00\x00"
    assert len(data) == TINY_SIZE
    assert hashlib.sha256(data).hexdigest() == GOLDEN_SHA256
    header = data[16:16 + TINY_HEADER_LEN]
    assert header.startswith(b'{"file_kind":"delta","meta":{"base_sha256":{"onnx":"c0c0')
    assert 0 <= len(header) - len(header.rstrip(b" ")) < 16  # padded, but no more than needed


def test_key_order_does_not_change_bytes():
    swapped = tiny_delta(base_sha256={"onnx": SHA_ONNX, "tflite": SHA_TFLITE})
    assert encode_delta(swapped) == TINY
    meta_a = {"x": 1, "y": {"b": [1, 2], "a": None}}
    meta_b = {"y": {"a": None, "b": [1, 2]}, "x": 1}
    tensors = {"t": np.ones(3, np.float32)}
    assert encode_tensor_file("patch", tensors, meta_a) == encode_tensor_file("patch", tensors, meta_b)


# ---------------------------------------------------------- malicious files


def _nan_in_tiny_bias():
    return patched(TINY, 16 + TINY_HEADER_LEN + 12, np.array([np.nan], "<f4").tobytes(), fix_trailer=True)


def delta_meta(sites=None, **changes):
    """Delta meta in its JSON form, for files made with the generic encoder."""
    meta = {"task": {"name": "t", "classes": ["a"], "resolution": 96,
                     "preprocessing": {"scale": 1.0, "offset": 0.0}},
            "kinds": ["scale_bias"], "base_sha256": {"tflite": SHA_TFLITE},
            "sites": sites or {"logits": "dense"}}
    meta.update(changes)
    return meta


def _delta_container(tensors, sites=None, **meta_changes):
    """A valid container whose delta content may be bad (the typed layer is bypassed)."""
    arrays = {name: np.asarray(value, np.float32) for name, value in tensors.items()}
    return encode_tensor_file("delta", arrays, delta_meta(sites, **meta_changes))


P = "{path}"
F32x2 = {"logits/bias": [1, 2]}
FORMAT_CASES = [
    # (id, bytes maker, reader kind, error class, message or message maker)
    ("truncated-empty", lambda: b"", "delta", TruncatedFileError,
     f"{P}: file is 0 bytes, shorter than the smallest valid file (64 bytes)"),
    ("truncated-63", lambda: TINY[:63], "delta", TruncatedFileError,
     f"{P}: file is 63 bytes, shorter than the smallest valid file (64 bytes)"),
    ("truncated-in-header", lambda: TINY[:200], "delta", TruncatedFileError,
     f"{P}: file is 200 bytes, too short for header_len 560 (needs at least 608)"),
    ("truncated-in-payload", lambda: TINY[:610], "delta", TruncatedFileError,
     f"{P}: truncated: file is 610 bytes, expected 624 = 16 + header_len 560 + payload_bytes 16 + 32"),
    ("truncated-last-byte", lambda: TINY[:-1], "delta", TruncatedFileError,
     f"{P}: truncated: file is 623 bytes, expected 624 = 16 + header_len 560 + payload_bytes 16 + 32"),
    ("extra-trailing-bytes", lambda: TINY + b"\0" * 5, "delta", DeltaFormatError,
     f"{P}: 5 unexpected trailing bytes: file is 629 bytes, expected 624 = 16 + header_len 560 "
     f"+ payload_bytes 16 + 32"),
    ("flipped-payload-byte", lambda: patched(TINY, 16 + TINY_HEADER_LEN + 3, b"\x40"), "delta",
     ChecksumMismatchError, checksum_message),
    ("flipped-trailer-byte", lambda: patched(TINY, TINY_SIZE - 1, bytes([TINY[-1] ^ 1])), "delta",
     ChecksumMismatchError, checksum_message),
    ("flipped-header-letter", lambda: patched(TINY, header_offset(TINY, b"flowers"), b"g"), "delta",
     ChecksumMismatchError, checksum_message),
    ("flipped-header-brace", lambda: patched(TINY, 16, b"["), "delta",  # JSON breaks: still a checksum error
     ChecksumMismatchError, checksum_message),
    ("flipped-payload-bytes-digit",
     lambda: patched(TINY, header_offset(TINY, b'"payload_bytes":16') + 16, b"2"), "delta",
     TruncatedFileError,
     f"{P}: truncated: file is 624 bytes, expected 634 = 16 + header_len 560 + payload_bytes 26 + 32"),
    ("wrong-magic", lambda: patched(TINY, 0, b"X"), "delta", DeltaFormatError,
     f"{P}: bad magic: expected b'EDGEPTCH', got b'XDGEPTCH'"),
    ("wrong-version", lambda: patched(TINY, 8, b"\x02"), "delta", DeltaFormatError,
     f"{P}: unsupported format version: expected 1, got 2"),
    ("header-len-huge", lambda: patched(TINY, 12, b"\xff\xff\xff\xff"), "delta", HeaderError,
     f"{P}: header_len 4294967295 is outside 16..1048576"),
    ("header-len-zero", lambda: patched(TINY, 12, b"\0\0\0\0"), "delta", HeaderError,
     f"{P}: header_len 0 is outside 16..1048576"),
    ("header-len-unaligned", lambda: patched(TINY, 12, struct.pack("<I", 561)), "delta", HeaderError,
     f"{P}: header_len 561 is not a multiple of 16"),
    ("header-len-past-file", lambda: patched(TINY, 12, struct.pack("<I", 1 << 20)), "delta",
     TruncatedFileError,
     f"{P}: file is 624 bytes, too short for header_len 1048576 (needs at least 1048624)"),
    ("payload-bytes-too-big", lambda: assemble(patch_header(payload_bytes=24)), "patch", TruncatedFileError,
     f"{P}: truncated: file is 320 bytes, expected 328 = 16 + header_len 256 + payload_bytes 24 + 32"),
    ("payload-bytes-too-small", lambda: assemble(patch_header(payload_bytes=8)), "patch", DeltaFormatError,
     f"{P}: 8 unexpected trailing bytes: file is 320 bytes, expected 312 = 16 + header_len 256 "
     f"+ payload_bytes 8 + 32"),
    ("payload-bytes-string", lambda: assemble(patch_header(payload_bytes="16")), "patch", HeaderError,
     f"{P}: payload_bytes must be an integer in 0..1073741824, got '16'"),
    ("nbytes-lie", lambda: assemble(patch_header(tensors=[entry("a", 0, nbytes=12), entry("b", 16)],
                                                 payload_bytes=24), PAYLOAD + bytes(8)),
     "patch", HeaderError, f"{P}: tensor 'a': nbytes is 12, but shape [2] of float32 needs 8"),
    ("offset-out-of-payload", lambda: assemble(patch_header(tensors=[entry("a", 0), entry("b", 16)])),
     "patch", HeaderError, f"{P}: tensor 'b': bytes 16..24 run past payload_bytes (16)"),
    ("offset-unaligned", lambda: assemble(patch_header(tensors=[entry("a", 0), entry("b", 12)])),
     "patch", HeaderError, f"{P}: tensor 'b': offset 12 is not a multiple of ALIGN (8)"),
    ("overlapping", lambda: assemble(patch_header(tensors=[entry("a", 0, shape=[4]), entry("b", 8)])),
     "patch", HeaderError, f"{P}: tensor 'b': offset 8 is before the end of the previous tensor 'a' (16); "
                           f"tensors must be sorted by offset and must not overlap"),
    ("overlapping-by-one-byte",  # 'a' ends at 9, 'b' starts at 8: aligned, yet overlapping
     lambda: assemble(patch_header(tensors=[entry("a", 0, [9], "uint8"), entry("b", 8)], payload_bytes=16),
                      patched(bytes(16), 8, PAYLOAD[:8])),
     "patch", HeaderError, f"{P}: tensor 'b': offset 8 is before the end of the previous tensor 'a' (9); "
                           f"tensors must be sorted by offset and must not overlap"),
    ("unsorted", lambda: assemble(patch_header(tensors=[entry("b", 8), entry("a", 0)])),
     "patch", HeaderError, f"{P}: tensor 'a': offset 0 is before the end of the previous tensor 'b' (16); "
                           f"tensors must be sorted by offset and must not overlap"),
    ("duplicate-names", lambda: assemble(patch_header(tensors=[entry("a", 0), entry("a", 8)])),
     "patch", HeaderError, f"{P}: duplicate tensor name 'a'"),
    ("unknown-dtype", lambda: assemble(patch_header(tensors=[entry("a", 0, [1], "float64"), entry("b", 8)])),
     "patch", HeaderError,
     f"{P}: tensor 'a': dtype must be one of float32, float16, int32, int8, uint8, got 'float64'"),
    ("dtype-not-a-string", lambda: assemble(patch_header(tensors=[entry("a", 0, dtype=["float32"], nbytes=8),
                                                                  entry("b", 8)])),
     "patch", HeaderError,
     f"{P}: tensor 'a': dtype must be one of float32, float16, int32, int8, uint8, got ['float32']"),
    ("rank-5", lambda: assemble(patch_header(tensors=[entry("a", 0, [1, 1, 1, 1, 2]), entry("b", 8)])),
     "patch", HeaderError,
     f"{P}: tensor 'a': shape must be an array of at most 4 integers in 0..1073741824, got [1, 1, 1, 1, 2]"),
    ("negative-dim", lambda: assemble(patch_header(tensors=[entry("a", 0, [-2], nbytes=8), entry("b", 8)])),
     "patch", HeaderError,
     f"{P}: tensor 'a': shape must be an array of at most 4 integers in 0..1073741824, got [-2]"),
    ("name-too-long",  # 258 UTF-8 bytes; the message clips the repr
     lambda: assemble(patch_header(tensors=[entry("é" * 129, 0), entry("b", 8)]), pad_to=1024),
     "patch", HeaderError,
     f"{P}: tensors[0].name must be a string of 1..256 UTF-8 bytes, got '{'é' * 76}..."),
    ("name-lone-surrogate", lambda: assemble(patch_header(tensors=[entry("\ud800", 0), entry("b", 8)])),
     "patch", HeaderError, f"{P}: tensors[0].name must be a string of 1..256 UTF-8 bytes, got '\\ud800'"),
    ("entry-unknown-key",
     lambda: assemble(patch_header(tensors=[dict(entry("a", 0), strides=[4]), entry("b", 8)])),
     "patch", HeaderError, f"{P}: tensors[0] has unknown key 'strides'"),
    ("too-many-tensors",
     lambda: assemble(patch_header(tensors=[entry(f"t{i}", 0, [0], "uint8") for i in range(8193)],
                                  payload_bytes=0), b""),
     "patch", HeaderError, f"{P}: 8193 tensors, more than MAX_TENSORS (8192)"),
    ("nonzero-padding", lambda: assemble(patch_header(tensors=[entry("a", 0, [1]), entry("b", 8)]),
                                         patched(PAYLOAD, 5, b"\x01")),
     "patch", DeltaFormatError,
     f"{P}: payload byte 5 is 0x01, expected 0x00 (bytes outside tensors must be zero)"),
    ("inf-payload-patch",
     lambda: assemble(patch_header(), patched(PAYLOAD, 12, np.array([np.inf], "<f4").tobytes())),
     "patch", NonFiniteError, f"{P}: tensor 'b' holds 0 NaN and 1 Inf values (first at flat index 1)"),
    ("nan-payload-delta", _nan_in_tiny_bias, "delta", NonFiniteError,
     f"{P}: tensor 'logits/bias' holds 1 NaN and 0 Inf values (first at flat index 1)"),
    ("invalid-json", lambda: assemble(b'{"file_kind":"patch" "meta":{}}'), "patch", HeaderError,
     f"{P}: header is not valid JSON: Expecting ',' delimiter: line 1 column 22 (char 21)"),
    ("not-utf8", lambda: assemble(b'{"file_kind":"\xff"}'), "patch", HeaderError,
     f"{P}: header is not valid UTF-8: invalid start byte at byte 14"),
    ("duplicate-json-key", lambda: assemble(b'{"meta":{},"meta":{}}'), "patch", HeaderError,
     f"{P}: header is not valid JSON: duplicate key 'meta'"),
    ("nan-constant", lambda: assemble(b'{"meta":{"lr":NaN}}'), "patch", HeaderError,
     f"{P}: header is not valid JSON: non-standard constant NaN"),
    ("deep-nesting", lambda: assemble(b"[" * 100_000), "patch", HeaderError,
     f"{P}: header is not valid JSON: nested too deeply"),
    ("header-not-object", lambda: assemble(b"[1, 2]"), "patch", HeaderError,
     f"{P}: header must be a JSON object, got array"),
    ("header-missing-key", lambda: assemble({"file_kind": "patch", "payload_bytes": 0, "tensors": []}, b""),
     "patch", HeaderError, f"{P}: header is missing key 'meta'"),
    ("header-unknown-key", lambda: assemble(patch_header(extra=1)), "patch", HeaderError,
     f"{P}: header has unknown key 'extra'"),
    ("unknown-file-kind", lambda: assemble(patch_header(file_kind="model")), "patch", HeaderError,
     f"{P}: file_kind must be one of delta, patch, got 'model'"),
    ("patch-read-as-delta", lambda: assemble(patch_header()), "delta", HeaderError,
     f"{P}: file_kind: expected 'delta', got 'patch'"),
    ("delta-read-as-patch", lambda: TINY, "patch", HeaderError,
     f"{P}: file_kind: expected 'patch', got 'delta'"),
]

META_CASES = [
    ("scale-length-mismatch", lambda: _delta_container({"logits/scale": [1, 2, 3], "logits/bias": [1, 2]}),
     ShapeMismatchError, f"{P}: site 'logits': output channels differ between its tensors: scale 3, bias 2"),
    ("unknown-site", lambda: _delta_container({"logits/bias": [1, 2], "fc/bias": [1, 2]}),
     HeaderError, f"{P}: tensor 'fc/bias': site 'fc' is not in meta.sites"),
    ("unknown-role", lambda: _delta_container({"logits/gamma": [1, 2]}),
     HeaderError, f"{P}: tensor 'logits/gamma': name must be '{{site}}/{{role}}' with role one of "
                  f"scale, bias, kernel"),
    ("site-without-tensors", lambda: _delta_container(F32x2, {"logits": "dense", "Conv1": "conv"}),
     HeaderError, f"{P}: site 'Conv1' is listed in meta.sites but has no tensors"),
    ("scale-and-kernel", lambda: _delta_container({"logits/scale": [1, 2], "logits/kernel": np.ones([3, 2])}),
     HeaderError, f"{P}: site 'logits' has both a scale and a kernel; a kernel replaces the base kernel "
                  f"in full, so it takes no scale"),
    ("dense-kernel-rank", lambda: _delta_container({"logits/kernel": np.ones([1, 1, 3, 2])}),
     ShapeMismatchError,
     f"{P}: tensor 'logits/kernel' of a dense site must have rank 2, got shape [1, 1, 3, 2]"),
    ("bias-rank", lambda: _delta_container({"logits/bias": np.ones([2, 1])}),
     ShapeMismatchError, f"{P}: tensor 'logits/bias' of a dense site must have rank 1, got shape [2, 1]"),
    ("depthwise-channels", lambda: _delta_container(
        {"dw/kernel": np.ones([3, 3, 4, 2]), "dw/bias": np.ones(4)}, {"dw": "depthwise"}),
     ShapeMismatchError, f"{P}: site 'dw': output channels differ between its tensors: bias 4, kernel 8"),
    ("int8-tensor", lambda: encode_tensor_file("delta", {"logits/bias": np.ones(2, np.int8)}, delta_meta()),
     HeaderError, f"{P}: tensor 'logits/bias': delta tensors must be float32 or float16, got int8"),
    ("unknown-site-op", lambda: _delta_container(F32x2, {"logits": "lstm"}),
     HeaderError, f"{P}: meta.sites['logits'] must be one of conv, depthwise, dense, got 'lstm'"),
    ("uppercase-sha", lambda: _delta_container(F32x2, base_sha256={"tflite": "AB" * 32}),
     HeaderError, f"{P}: meta.base_sha256['tflite'] must be 64 lowercase hex digits, got '{'AB' * 32}'"),
    ("empty-base", lambda: _delta_container(F32x2, base_sha256={}),
     HeaderError, f"{P}: meta.base_sha256 must be a non-empty JSON object, got {{}}"),
    ("duplicate-classes", lambda: _delta_container(F32x2, task={
        "name": "t", "classes": ["a", "a"], "resolution": 96, "preprocessing": {"scale": 1, "offset": 0}}),
     HeaderError,
     f"{P}: meta.task.classes must be a non-empty array of unique non-empty strings, got ['a', 'a']"),
    ("resolution-too-small", lambda: _delta_container(F32x2, task={
        "name": "t", "classes": ["a"], "resolution": 4, "preprocessing": {"scale": 1, "offset": 0}}),
     HeaderError, f"{P}: meta.task.resolution must be an integer in 8..4096, got 4"),
    ("empty-task-name", lambda: _delta_container(F32x2, task={
        "name": "", "classes": ["a"], "resolution": 96, "preprocessing": {"scale": 1, "offset": 0}}),
     HeaderError, f"{P}: meta.task.name must be a non-empty string, got ''"),
    ("boolean-scale", lambda: _delta_container(F32x2, task={
        "name": "t", "classes": ["a"], "resolution": 96, "preprocessing": {"scale": True, "offset": 0}}),
     HeaderError, f"{P}: meta.task.preprocessing.scale must be a finite number, got True"),
    ("meta-unknown-key", lambda: _delta_container(F32x2, notes="hi"),
     HeaderError, f"{P}: meta has unknown key 'notes'"),
]


def _expect(message, data, path):
    text = message(data) if callable(message) else message
    return text.replace("{path}", str(path))


@pytest.mark.parametrize("make, kind, error, message", [row[1:] for row in FORMAT_CASES],
                         ids=[row[0] for row in FORMAT_CASES])
def test_malicious_file(tmp_path, make, kind, error, message):
    data = make()
    path = tmp_path / "evil.bin"
    path.write_bytes(data)
    reader = read_delta if kind == "delta" else lambda p: read_tensor_file(p, "patch")
    with pytest.raises(error) as caught:
        reader(path)
    assert str(caught.value) == _expect(message, data, path)


@pytest.mark.parametrize("make, error, message", [row[1:] for row in META_CASES],
                         ids=[row[0] for row in META_CASES])
def test_bad_delta_meta(tmp_path, make, error, message):
    data = make()
    assert decode_tensor_file(data, "delta").meta  # the container itself is valid
    path = tmp_path / "evil.delta"
    path.write_bytes(data)
    with pytest.raises(error) as caught:
        read_delta(path)
    assert str(caught.value) == _expect(message, data, path)


def test_missing_file(tmp_path):
    with pytest.raises(MissingFileError) as caught:
        read_delta(tmp_path / "nope.delta")
    assert str(caught.value) == f"{tmp_path / 'nope.delta'}: no such file"
    with pytest.raises(MissingFileError) as caught:
        read_tensor_file(tmp_path, "patch")
    assert str(caught.value) == f"{tmp_path}: is a directory, not a file"
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    with pytest.raises(MissingFileError) as caught:
        read_delta(fifo)  # must not block in open()
    assert str(caught.value) == f"{fifo}: is not a regular file"


def test_huge_file_is_rejected_before_reading(tmp_path):
    path = tmp_path / "huge.delta"
    with open(path, "wb") as handle:
        handle.truncate(MAX_FILE_BYTES + 1)  # sparse: costs no disk, and reading it would take seconds
    with pytest.raises(DeltaFormatError) as caught:
        read_delta(path)
    assert str(caught.value) == f"{path}: file is 1073741825 bytes, larger than MAX_FILE_BYTES (1073741824)"


def test_in_memory_errors_name_the_source():
    with pytest.raises(TruncatedFileError) as caught:
        decode_delta(TINY[:10])
    assert str(caught.value) == "<bytes>: file is 10 bytes, shorter than the smallest valid file (64 bytes)"
    with pytest.raises(UsageError) as caught:
        decode_tensor_file(TINY, "model")
    assert str(caught.value) == "expect_kind must be one of delta, patch; received expect_kind='model'"


# ------------------------------------------------------------ write side


def test_write_rejects_nan_and_leaves_nothing(tmp_path):
    bad = tiny_delta(tensors={"logits/scale": np.array([1, 1], np.float32),
                              "logits/bias": np.array([0, np.nan], np.float32)})
    path = tmp_path / "task.delta"
    with pytest.raises(NonFiniteError) as caught:
        write_delta(path, bad)
    assert str(caught.value) == (
        f"{path}: tensor 'logits/bias' holds 1 NaN and 0 Inf values (first at flat index 1)")
    assert os.listdir(tmp_path) == []


def test_write_rejects_fp16_overflow(tmp_path):
    big = tiny_delta(tensors={"logits/scale": np.array([1, 70000], np.float32),
                              "logits/bias": np.array([0, 0], np.float32)})
    path = tmp_path / "task.delta"
    write_delta(path, big, dtype="float32")  # fine in float32
    with pytest.raises(NonFiniteError) as caught:
        write_delta(path, big, dtype="float16")
    assert str(caught.value) == (
        f"{path}: tensor 'logits/scale': value 70000.0 at flat index 1 overflows float16 (max 65504)")
    assert os.listdir(tmp_path) == ["task.delta"] and read_delta(path) == big  # the old file is untouched


def test_write_failure_after_temp_file_cleans_up(tmp_path, monkeypatch):
    def failing_replace(src, dst):
        raise OSError("disk on fire")
    monkeypatch.setattr(fmt.os, "replace", failing_replace)
    with pytest.raises(OSError, match="disk on fire"):
        write_delta(tmp_path / "task.delta", tiny_delta())
    assert os.listdir(tmp_path) == []


WRITE_CASES = [
    ("bad-dtype-arg", dict(dtype="int8"), UsageError,
     "dtype must be one of float32, float16; received dtype='int8'"),
    ("scale-length-mismatch", dict(tensors={"logits/scale": np.ones(3, np.float32),
                                            "logits/bias": np.ones(2, np.float32)}), ShapeMismatchError,
     "{path}: site 'logits': output channels differ between its tensors: scale 3, bias 2"),
    ("int-tensor", dict(tensors={"logits/bias": np.ones(2, np.int32)}), ShapeMismatchError,
     "{path}: tensor 'logits/bias': expected a float numpy array, got int32"),
    ("unknown-site", dict(tensors={"fc/bias": np.ones(2, np.float32)}), HeaderError,
     "{path}: tensor 'fc/bias': site 'fc' is not in meta.sites"),
    ("bad-sha", dict(base_sha256={"tflite": "xyz"}), HeaderError,
     "{path}: meta.base_sha256['tflite'] must be 64 lowercase hex digits, got 'xyz'"),
]


@pytest.mark.parametrize("changes, error, message", [row[1:] for row in WRITE_CASES],
                         ids=[row[0] for row in WRITE_CASES])
def test_write_validates(tmp_path, changes, error, message):
    changes = dict(changes)
    dtype = changes.pop("dtype", "float32")
    path = tmp_path / "task.delta"
    with pytest.raises(error) as caught:
        write_delta(path, tiny_delta(**changes), dtype=dtype)
    assert str(caught.value) == message.replace("{path}", str(path))
    assert os.listdir(tmp_path) == []


def test_write_into_missing_directory(tmp_path):
    path = tmp_path / "no" / "task.delta"
    with pytest.raises(MissingFileError) as caught:
        write_delta(path, tiny_delta())
    assert str(caught.value) == f"{path}: directory {tmp_path / 'no'} does not exist"


def test_patch_meta_must_survive_json(tmp_path):
    with pytest.raises(UsageError) as caught:
        write_tensor_file(tmp_path / "x.patch", "patch", {}, {"shape": (1, 2)})
    assert str(caught.value) == (f"{tmp_path / 'x.patch'}: meta does not survive a JSON round trip "
                                 f"(use dicts with str keys, lists, str, int, finite float, bool, None)")
    assert os.listdir(tmp_path) == []


def test_task_json_round_trip_and_validation():
    task = tiny_delta().task
    as_json = task_to_json(task)
    assert as_json == {"name": "flowers", "classes": ["daisy", "rose"], "resolution": 96,
                       "preprocessing": {"scale": 0.0078125, "offset": -1.0}}
    assert task_from_json(as_json) == task
    with pytest.raises(HeaderError) as caught:
        task_to_json(TaskInfo("t", ("a",), 5000, task.preprocessing), "x.patch")
    assert str(caught.value) == "x.patch: meta.task.resolution must be an integer in 8..4096, got 5000"
    with pytest.raises(HeaderError) as caught:
        task_from_json({"name": "t", "classes": ["a"], "resolution": 96}, "y.patch")
    assert str(caught.value) == "y.patch: meta.task is missing key 'preprocessing'"


# ------------------------------------------------------------ fuzzing


SAMPLE = encode_delta(sample_delta(), "float16")
SAMPLE_DELTA = decode_delta(SAMPLE)
_mutation = st.one_of(
    st.tuples(st.just("flip"), st.integers(0, 8 * len(SAMPLE) - 1)),
    st.tuples(st.just("truncate"), st.integers(0, len(SAMPLE))),
    st.tuples(st.just("overwrite"), st.integers(0, len(SAMPLE) - 1), st.binary(min_size=1, max_size=8)),
)


def _mutate(data: bytes, mutations) -> bytes:
    out = bytearray(data)
    for mutation in mutations:
        if not out:
            break
        if mutation[0] == "flip":
            bit = mutation[1] % (8 * len(out))
            out[bit // 8] ^= 1 << (bit % 8)
        elif mutation[0] == "truncate":
            del out[mutation[1]:]
        else:
            at = mutation[1] % len(out)
            out[at:at + len(mutation[2])] = mutation[2][:len(out) - at]
    return bytes(out)


@settings(max_examples=200, deadline=None)
@given(st.lists(_mutation, min_size=1, max_size=3))
def test_mutated_files_fail_typed_or_are_unchanged(mutations):
    data = _mutate(SAMPLE, mutations)
    if data == SAMPLE:
        assert decode_delta(data) == SAMPLE_DELTA
    else:
        with pytest.raises(EdgepatchError):
            decode_delta(data)


HEADER_END = 16 + struct.unpack_from("<I", SAMPLE, 12)[0]


@settings(max_examples=200, deadline=None)
@given(st.integers(16, HEADER_END - 1), st.binary(min_size=1, max_size=4))
def test_resigned_header_edits_never_crash(at, new):
    """With a valid checksum the parser and validators see the edit: typed error or a delta."""
    data = patched(SAMPLE[:HEADER_END], at, new[:HEADER_END - at]) + SAMPLE[HEADER_END:]
    data = patched(data, 0, b"", fix_trailer=True)
    try:
        assert isinstance(decode_delta(data), Delta)
    except EdgepatchError:
        pass


SAMPLE_HEADER = json.loads(SAMPLE[16:HEADER_END])
_ODD_VALUES = [None, True, False, 0, -1, 1.5, -0.0, 1e308, 2**31, "", "x", "float16", "int8", "dense",
               "depthwise", "1f" * 32, [], {}]
_json_values = st.one_of(
    st.sampled_from(_ODD_VALUES), st.integers(-2, 2**31),
    st.lists(st.sampled_from(_ODD_VALUES) | st.integers(-1, 9), max_size=5),
    st.dictionaries(st.sampled_from(["name", "dtype", "shape", "a"]), st.sampled_from(_ODD_VALUES),
                    max_size=3))


def _json_paths(node, path=()):
    children = node.items() if isinstance(node, dict) else enumerate(node) if isinstance(node, list) else ()
    for key, child in children:
        yield path + (key,)
        yield from _json_paths(child, path + (key,))


SAMPLE_HEADER_PATHS = list(_json_paths(SAMPLE_HEADER))


@settings(max_examples=200, deadline=None)
@given(st.sampled_from(SAMPLE_HEADER_PATHS), _json_values)
def test_replaced_header_values_never_crash(path, value):
    """Any JSON value anywhere in a re-signed header: a typed error or a delta, never a crash."""
    header = json.loads(json.dumps(SAMPLE_HEADER))
    parent = header
    for key in path[:-1]:
        parent = parent[key]
    parent[path[-1]] = value
    data = assemble(json.dumps(header).encode(), SAMPLE[HEADER_END:-32], pad_to=16)
    try:
        assert isinstance(decode_delta(data), Delta)
    except EdgepatchError:
        pass
