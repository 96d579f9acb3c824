"""Tests of the delta/patch file format (edgepatch/format/delta.py).

Malicious files are built here from the spec (``assemble``), not with the
encoder, so the tests double as a second, independent writer.
"""

import dataclasses
import hashlib
import json
import os
import struct

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from edgepatch.format import delta as fmt
from edgepatch.format.delta import (
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
TINY_HEADER_LEN = 624  # pinned by the golden test through the first 16 bytes
TINY_SIZE = 16 + TINY_HEADER_LEN + 16 + 32
GOLDEN_SHA256 = "044af5c0d8ba913c51066bd69d030e47c44aba8b0e995073cab117b212712f95"


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
    assert list(loaded.sites) == list(original.sites)  # site order survives
    assert all(a.dtype == np.float32 and not a.flags.writeable for a in loaded.tensors.values())
    assert encode_delta(loaded, dtype) == path.read_bytes()  # canonical: decode then encode is identity


def test_sample_is_packed_by_role():
    stored = decode_tensor_file(encode_delta(sample_delta()), "delta")
    assert stored.meta["sites"] == [["Conv1", "conv", 4, "scale+bias"],
                                    ["block_1_depthwise", "depthwise", 8, "kernel+bias"],
                                    ["Conv_1", "conv", 5, "kernel"],
                                    ["logits", "dense", 3, "kernel+bias"]]
    assert list(stored.tensors) == ["scale", "bias", "block_1_depthwise/kernel", "Conv_1/kernel",
                                    "logits/kernel"]
    tensors = sample_delta().tensors
    assert np.array_equal(stored.tensors["scale"], tensors["Conv1/scale"])
    assert np.array_equal(stored.tensors["bias"], np.concatenate(
        [tensors["Conv1/bias"], tensors["block_1_depthwise/bias"], tensors["logits/bias"]]))


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


# (name, op, output channels) of every BatchNormalization-folded conv of Keras'
# MobileNetV2(alpha=1.0, include_top=False): 52 sites, 17,056 channels.
MOBILENET_V2_SITES = [
    ("Conv1", "conv", 32), ("expanded_conv_depthwise", "depthwise", 32),
    ("expanded_conv_project", "conv", 16),
    ("block_1_expand", "conv", 96), ("block_1_depthwise", "depthwise", 96), ("block_1_project", "conv", 24),
    ("block_2_expand", "conv", 144), ("block_2_depthwise", "depthwise", 144), ("block_2_project", "conv", 24),
    ("block_3_expand", "conv", 144), ("block_3_depthwise", "depthwise", 144), ("block_3_project", "conv", 32),
    ("block_4_expand", "conv", 192), ("block_4_depthwise", "depthwise", 192), ("block_4_project", "conv", 32),
    ("block_5_expand", "conv", 192), ("block_5_depthwise", "depthwise", 192), ("block_5_project", "conv", 32),
    ("block_6_expand", "conv", 192), ("block_6_depthwise", "depthwise", 192), ("block_6_project", "conv", 64),
    ("block_7_expand", "conv", 384), ("block_7_depthwise", "depthwise", 384), ("block_7_project", "conv", 64),
    ("block_8_expand", "conv", 384), ("block_8_depthwise", "depthwise", 384), ("block_8_project", "conv", 64),
    ("block_9_expand", "conv", 384), ("block_9_depthwise", "depthwise", 384), ("block_9_project", "conv", 64),
    ("block_10_expand", "conv", 384), ("block_10_depthwise", "depthwise", 384),
    ("block_10_project", "conv", 96),
    ("block_11_expand", "conv", 576), ("block_11_depthwise", "depthwise", 576),
    ("block_11_project", "conv", 96),
    ("block_12_expand", "conv", 576), ("block_12_depthwise", "depthwise", 576),
    ("block_12_project", "conv", 96),
    ("block_13_expand", "conv", 576), ("block_13_depthwise", "depthwise", 576),
    ("block_13_project", "conv", 160),
    ("block_14_expand", "conv", 960), ("block_14_depthwise", "depthwise", 960),
    ("block_14_project", "conv", 160),
    ("block_15_expand", "conv", 960), ("block_15_depthwise", "depthwise", 960),
    ("block_15_project", "conv", 160),
    ("block_16_expand", "conv", 960), ("block_16_depthwise", "depthwise", 960),
    ("block_16_project", "conv", 320),
    ("Conv_1", "conv", 1280),
]
MOBILENET_V2_BASE_BYTES = 8_884_656  # the float32 MobileNetV2 1.0 base


def mobilenet_v2_delta() -> Delta:
    """scale_bias on all 52 conv sites plus a 5-class logits head, as a flowers task ships."""
    rng = np.random.default_rng(3)
    sites, tensors = {}, {}
    for name, op, channels in MOBILENET_V2_SITES:
        sites[name] = op
        tensors[f"{name}/scale"] = rng.normal(1, 0.1, channels).astype(np.float32)
        tensors[f"{name}/bias"] = rng.normal(0, 1, channels).astype(np.float32)
    sites["logits"] = "dense"
    tensors["logits/kernel"] = rng.normal(0, 0.1, [1280, 5]).astype(np.float32)
    tensors["logits/bias"] = rng.normal(0, 0.1, [5]).astype(np.float32)
    task = TaskInfo("flowers", ("daisy", "dandelion", "roses", "sunflowers", "tulips"), 224,
                    Preprocessing(1 / 127.5, -1.0))
    return Delta(task, ("scale_bias", "logits"), {"tflite": SHA_TFLITE, "onnx": SHA_ONNX}, sites, tensors)


def test_mobilenet_v2_delta_is_small():
    assert len(MOBILENET_V2_SITES) == 52 and sum(c for _, _, c in MOBILENET_V2_SITES) == 17_056
    delta = mobilenet_v2_delta()
    fp16, fp32 = encode_delta(delta, "float16"), encode_delta(delta, "float32")
    assert len(fp16) <= MOBILENET_V2_BASE_BYTES // 100, len(fp16)  # the 1 % acceptance target
    assert len(fp32) <= 1.1 * delta.nbytes_payload + 4096, (len(fp32), delta.nbytes_payload)
    assert struct.unpack_from("<I", fp16, 12)[0] <= 4096  # the header, once ~11.5 KB
    assert list(decode_tensor_file(fp16, "delta").tensors) == ["scale", "bias", "logits/kernel"]
    loaded = decode_delta(fp16)
    assert list(loaded.sites) == list(delta.sites)
    assert all(np.array_equal(loaded.tensors[n], a.astype(np.float16).astype(np.float32))
               for n, a in delta.tensors.items())


# ------------------------------------------------------------- golden bytes


TINY_HEADER = (
    b'{"file_kind":"delta","meta":{"base_sha256":{"onnx":"' + b"c0" * 32 + b'","tflite":"' + b"1f" * 32
    + b'"},"kinds":["scale_bias"],"sites":[["logits","dense",2,"scale+bias"]],"task":{"classes":'
    b'["daisy","rose"],"name":"flowers","preprocessing":{"channels":"rgb","offset":[-1.0,-1.0,-1.0],'
    b'"resize":"bilinear","scale":[0.0078125,0.0078125,0.0078125]},"resolution":96}},"payload_bytes":16,"tensors":[{"dtype":"float32","name":"scale","nbytes":8,'
    b'"offset":0,"shape":[2]},{"dtype":"float32","name":"bias","nbytes":8,"offset":8,"shape":[2]}]}'
)


def test_golden_bytes():
    data = encode_delta(tiny_delta())
    assert data[:16] == b"EDGEPTCH" + b"\x02\x00\x00\x00" + b"\x70\x02\x00\x00"
    assert len(data) == TINY_SIZE
    assert hashlib.sha256(data).hexdigest() == GOLDEN_SHA256
    header = data[16:16 + TINY_HEADER_LEN]
    assert header == TINY_HEADER + b" " * (TINY_HEADER_LEN - len(TINY_HEADER))
    assert 0 <= TINY_HEADER_LEN - len(TINY_HEADER) < 16  # padded, but no more than needed
    assert data[16 + TINY_HEADER_LEN:-32] == np.array([1.5, -2.0, 0.25, 3.0], "<f4").tobytes()


def test_key_order_does_not_change_bytes():
    swapped = tiny_delta(base_sha256={"onnx": SHA_ONNX, "tflite": SHA_TFLITE})
    assert encode_delta(swapped) == TINY
    bias_first = tiny_delta(tensors={"logits/bias": np.array([0.25, 3.0], np.float32),
                                     "logits/scale": np.array([1.5, -2.0], np.float32)})
    assert encode_delta(bias_first) == TINY  # packing follows the site order, not the dict order
    meta_a = {"x": 1, "y": {"b": [1, 2], "a": None}}
    meta_b = {"y": {"a": None, "b": [1, 2]}, "x": 1}
    tensors = {"t": np.ones(3, np.float32)}
    assert encode_tensor_file("patch", tensors, meta_a) == encode_tensor_file("patch", tensors, meta_b)


def test_site_order_changes_bytes_and_survives():
    reordered = dataclasses.replace(sample_delta(), sites=dict(reversed(sample_delta().sites.items())))
    data = encode_delta(reordered)
    assert data != encode_delta(sample_delta())
    assert list(decode_delta(data).sites) == ["logits", "Conv_1", "block_1_depthwise", "Conv1"]
    assert decode_delta(data) == reordered


def test_decoded_vectors_are_read_only_slices():
    loaded = decode_delta(encode_delta(sample_delta(), "float16"))
    scale, bias = loaded.tensors["Conv1/scale"], loaded.tensors["logits/bias"]
    assert scale.shape == (4,) and bias.shape == (3,) and scale.dtype == bias.dtype == np.float32
    with pytest.raises(ValueError):
        bias[0] = 1.0


def test_stored_tensors_may_differ_in_dtype():
    data = encode_tensor_file("delta", {"scale": np.array([1.5, 2], np.float16),
                                        "bias": np.array([0.25, 3], np.float32)},
                              delta_meta([["logits", "dense", 2, "scale+bias"]]))
    loaded = decode_delta(data)
    assert loaded.sites == {"logits": "dense"} and list(loaded.tensors) == ["logits/scale", "logits/bias"]
    assert all(a.dtype == np.float32 and not a.flags.writeable for a in loaded.tensors.values())
    assert np.array_equal(loaded.tensors["logits/scale"], [1.5, 2])


# ---------------------------------------------------------- malicious files


def _nan_in_tiny_bias():
    return patched(TINY, 16 + TINY_HEADER_LEN + 12, np.array([np.nan], "<f4").tobytes(), fix_trailer=True)


UNIFORM_JSON = {"channels": "rgb", "offset": [0.0, 0.0, 0.0], "scale": [1.0, 1.0, 1.0]}


def delta_meta(sites=None, **changes):
    """Delta meta in its JSON form, for files made with the generic encoder."""
    meta = {"task": {"name": "t", "classes": ["a", "b"], "resolution": 96,  # the 2-wide head's 2 classes
                     "preprocessing": UNIFORM_JSON},
            "kinds": ["scale_bias"], "base_sha256": {"tflite": SHA_TFLITE},
            "sites": [["logits", "dense", 2, "bias"]] if sites is None else sites}
    meta.update(changes)
    return meta


def _delta_container(tensors, sites=None, **meta_changes):
    """A valid container whose delta content may be bad (the typed layer is bypassed)."""
    arrays = {name: np.asarray(value, np.float32) for name, value in tensors.items()}
    return encode_tensor_file("delta", arrays, delta_meta(sites, **meta_changes))


P = "{path}"
F32x2 = {"bias": [1, 2]}  # what the default meta.sites declares
FORMAT_CASES = [
    # (id, bytes maker, reader kind, error class, message or message maker)
    ("truncated-empty", lambda: b"", "delta", TruncatedFileError,
     f"{P}: file is 0 bytes, shorter than the smallest valid file (64 bytes)"),
    ("truncated-63", lambda: TINY[:63], "delta", TruncatedFileError,
     f"{P}: file is 63 bytes, shorter than the smallest valid file (64 bytes)"),
    ("truncated-in-header", lambda: TINY[:200], "delta", TruncatedFileError,
     f"{P}: file is 200 bytes, too short for header_len 624 (needs at least 672)"),
    ("truncated-in-payload", lambda: TINY[:676], "delta", TruncatedFileError,
     f"{P}: truncated: file is 676 bytes, expected 688 = 16 + header_len 624 + payload_bytes 16 + 32"),
    ("truncated-last-byte", lambda: TINY[:-1], "delta", TruncatedFileError,
     f"{P}: truncated: file is 687 bytes, expected 688 = 16 + header_len 624 + payload_bytes 16 + 32"),
    ("extra-trailing-bytes", lambda: TINY + b"\0" * 5, "delta", DeltaFormatError,
     f"{P}: 5 unexpected trailing bytes: file is 693 bytes, expected 688 = 16 + header_len 624 "
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
     f"{P}: truncated: file is 688 bytes, expected 698 = 16 + header_len 624 + payload_bytes 26 + 32"),
    ("wrong-magic", lambda: patched(TINY, 0, b"X"), "delta", DeltaFormatError,
     f"{P}: bad magic: expected b'EDGEPTCH', got b'XDGEPTCH'"),
    ("wrong-version", lambda: patched(TINY, 8, b"\x03"), "delta", DeltaFormatError,
     f"{P}: unsupported format version: expected 1 or 2, got 3"),
    ("version-zero", lambda: patched(TINY, 8, b"\x00"), "delta", DeltaFormatError,
     f"{P}: unsupported format version: expected 1 or 2, got 0"),
    ("header-len-huge", lambda: patched(TINY, 12, b"\xff\xff\xff\xff"), "delta", HeaderError,
     f"{P}: header_len 4294967295 is outside 16..1048576"),
    ("header-len-zero", lambda: patched(TINY, 12, b"\0\0\0\0"), "delta", HeaderError,
     f"{P}: header_len 0 is outside 16..1048576"),
    ("header-len-unaligned", lambda: patched(TINY, 12, struct.pack("<I", 609)), "delta", HeaderError,
     f"{P}: header_len 609 is not a multiple of 16"),
    ("header-len-past-file", lambda: patched(TINY, 12, struct.pack("<I", 1 << 20)), "delta",
     TruncatedFileError,
     f"{P}: file is 688 bytes, too short for header_len 1048576 (needs at least 1048624)"),
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
    ("nan-payload-delta", _nan_in_tiny_bias, "delta", NonFiniteError,  # the packed tensor is named
     f"{P}: tensor 'bias' holds 1 NaN and 0 Inf values (first at flat index 1)"),
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
     f"{P}: file_kind must be one of delta, patch, int8_delta, got 'model'"),
    ("patch-read-as-delta", lambda: assemble(patch_header()), "delta", HeaderError,
     f"{P}: file_kind: expected 'delta', got 'patch'"),
    ("delta-read-as-patch", lambda: TINY, "patch", HeaderError,
     f"{P}: file_kind: expected 'patch', got 'delta'"),
]

ROLES_RULE = ("roles must be one of 'scale', 'bias', 'scale+bias', 'kernel', 'kernel+bias' "
              "(a kernel takes no scale)")
TWO_SITES = [["a", "conv", 3, "scale+bias"], ["b", "conv", 4, "bias"]]
TWO_KERNELS = [["a", "dense", 2, "kernel"], ["b", "dense", 2, "kernel"]]
NOT_IN_DELTA = "('scale', 'bias', then '{site}/kernel' per meta.sites roles)"

META_CASES = [
    # meta.sites structure
    ("sites-as-object", lambda: _delta_container(F32x2, {"logits": "dense"}),
     HeaderError, f"{P}: meta.sites must be an array of 1..8192 entries, got {{'logits': 'dense'}}"),
    ("sites-empty", lambda: _delta_container(F32x2, []),
     HeaderError, f"{P}: meta.sites must be an array of 1..8192 entries, got 0 entries"),
    ("site-entry-short", lambda: _delta_container(F32x2, [["logits", "dense", 2]]),
     HeaderError,
     f"{P}: meta.sites[0] must be an array [name, op, channels, roles], got ['logits', 'dense', 2]"),
    ("site-name-empty", lambda: _delta_container(F32x2, [["", "dense", 2, "bias"]]),
     HeaderError, f"{P}: meta.sites[0]: name must be a string of 1..249 UTF-8 bytes, got ''"),
    ("site-name-too-long", lambda: _delta_container(F32x2, [["x" * 250, "dense", 2, "bias"]]),
     HeaderError, f"{P}: meta.sites[0]: name must be a string of 1..249 UTF-8 bytes, got '{'x' * 76}..."),
    ("duplicate-site-name", lambda: _delta_container(
        {"bias": [1, 2, 3, 4]}, [["logits", "dense", 2, "bias"], ["logits", "conv", 2, "bias"]]),
     HeaderError, f"{P}: meta.sites[1]: duplicate site name 'logits'"),
    ("unknown-site-op", lambda: _delta_container(F32x2, [["logits", "lstm", 2, "bias"]]),
     HeaderError, f"{P}: meta.sites[0] ('logits'): op must be one of conv, depthwise, dense, got 'lstm'"),
    ("zero-channels", lambda: _delta_container({"bias": []}, [["logits", "dense", 0, "bias"]]),
     HeaderError, f"{P}: meta.sites[0] ('logits'): channels must be an integer in 1..1073741824, got 0"),
    ("float-channels", lambda: _delta_container(F32x2, [["logits", "dense", 2.0, "bias"]]),
     HeaderError, f"{P}: meta.sites[0] ('logits'): channels must be an integer in 1..1073741824, got 2.0"),
    ("unknown-role-string", lambda: _delta_container(F32x2, [["logits", "dense", 2, "gamma"]]),
     HeaderError, f"{P}: meta.sites[0] ('logits'): {ROLES_RULE}, got 'gamma'"),
    ("roles-out-of-order", lambda: _delta_container(
        {"scale": [1, 2], "bias": [1, 2]}, [["logits", "dense", 2, "bias+scale"]]),
     HeaderError, f"{P}: meta.sites[0] ('logits'): {ROLES_RULE}, got 'bias+scale'"),
    ("scale-and-kernel", lambda: _delta_container(
        {"scale": [1, 2], "logits/kernel": np.ones([3, 2])}, [["logits", "dense", 2, "scale+kernel"]]),
     HeaderError, f"{P}: meta.sites[0] ('logits'): {ROLES_RULE}, got 'scale+kernel'"),
    # the rest of meta
    ("uppercase-sha", lambda: _delta_container(F32x2, base_sha256={"tflite": "AB" * 32}),
     HeaderError, f"{P}: meta.base_sha256['tflite'] must be 64 lowercase hex digits, got '{'AB' * 32}'"),
    ("empty-base", lambda: _delta_container(F32x2, base_sha256={}),
     HeaderError, f"{P}: meta.base_sha256 must be a non-empty JSON object, got {{}}"),
    ("duplicate-classes", lambda: _delta_container(F32x2, task={
        "name": "t", "classes": ["a", "a"], "resolution": 96, "preprocessing": UNIFORM_JSON}),
     HeaderError,
     f"{P}: meta.task.classes must be a non-empty array of unique non-empty strings, got ['a', 'a']"),
    ("resolution-too-small", lambda: _delta_container(F32x2, task={
        "name": "t", "classes": ["a"], "resolution": 4, "preprocessing": UNIFORM_JSON}),
     HeaderError, f"{P}: meta.task.resolution must be an integer in 8..1024, got 4"),
    ("empty-task-name", lambda: _delta_container(F32x2, task={
        "name": "", "classes": ["a"], "resolution": 96, "preprocessing": UNIFORM_JSON}),
     HeaderError, f"{P}: meta.task.name must be a non-empty string, got ''"),
    ("boolean-scale", lambda: _delta_container(F32x2, task={
        "name": "t", "classes": ["a"], "resolution": 96, "preprocessing": {**UNIFORM_JSON,
                                                                                "scale": [1, True, 1]}}),
     HeaderError, f"{P}: meta.task.preprocessing.scale[1] must be a finite number, got True"),
    ("meta-unknown-key", lambda: _delta_container(F32x2, notes="hi"),
     HeaderError, f"{P}: meta has unknown key 'notes'"),
    # the stored tensors against meta.sites
    ("int8-tensor", lambda: encode_tensor_file("delta", {"bias": np.ones(2, np.int8)}, delta_meta()),
     HeaderError, f"{P}: tensor 'bias': delta tensors must be float32 or float16, got int8"),
    ("per-site-name", lambda: _delta_container({"logits/bias": [1, 2]}),
     HeaderError,
     f"{P}: tensor 'logits/bias' does not belong in a delta: expected one of ['bias'] {NOT_IN_DELTA}"),
    ("scale-without-a-scale-site", lambda: _delta_container({"scale": [1, 2], "bias": [1, 2]}),
     HeaderError, f"{P}: tensor 'scale' does not belong in a delta: expected one of ['bias'] {NOT_IN_DELTA}"),
    ("kernel-of-a-bias-only-site",
     lambda: _delta_container({"bias": [1, 2], "logits/kernel": np.ones([3, 2])}),
     HeaderError,
     f"{P}: tensor 'logits/kernel' does not belong in a delta: expected one of ['bias'] {NOT_IN_DELTA}"),
    ("other-tensor-name", lambda: _delta_container({"bias": [1, 2], "gamma": [1, 2]}),
     HeaderError, f"{P}: tensor 'gamma' does not belong in a delta: expected one of ['bias'] {NOT_IN_DELTA}"),
    ("packed-rank", lambda: _delta_container({"bias": np.ones([2, 1])}),
     ShapeMismatchError, f"{P}: tensor 'bias' must have rank 1, got shape [2, 1]"),
    ("packed-too-short", lambda: _delta_container({"scale": [1, 2, 3], "bias": np.ones(6)}, TWO_SITES),
     ShapeMismatchError,
     f"{P}: tensor 'bias' has 6 values, but meta.sites declares 7: site 'b' (4 channels) needs values 3..7"),
    ("packed-too-long", lambda: _delta_container({"scale": [1, 2, 3], "bias": np.ones(8)}, TWO_SITES),
     ShapeMismatchError,
     f"{P}: tensor 'bias' has 8 values, but meta.sites declares 7: the last site with a bias, 'b', "
     f"ends at value 7"),
    ("packed-lies-about-first-site",
     lambda: _delta_container({"scale": [1, 2], "bias": np.ones(7)}, TWO_SITES),
     ShapeMismatchError,
     f"{P}: tensor 'scale' has 2 values, but meta.sites declares 3: site 'a' (3 channels) needs values 0..3"),
    ("dense-kernel-rank", lambda: _delta_container(
        {"logits/kernel": np.ones([1, 1, 3, 2])}, [["logits", "dense", 2, "kernel"]]),
     ShapeMismatchError,
     f"{P}: tensor 'logits/kernel' of a dense site must have rank 2, got shape [1, 1, 3, 2]"),
    ("kernel-channels", lambda: _delta_container(
        {"bias": [1, 2], "logits/kernel": np.ones([3, 4])}, [["logits", "dense", 2, "kernel+bias"]]),
     ShapeMismatchError,
     f"{P}: tensor 'logits/kernel' has 4 output channels (shape [3, 4]), but meta.sites declares 2 "
     f"for site 'logits'"),
    ("depthwise-channels", lambda: _delta_container(
        {"bias": np.ones(4), "dw/kernel": np.ones([3, 3, 4, 2])}, [["dw", "depthwise", 4, "kernel+bias"]]),
     ShapeMismatchError,
     f"{P}: tensor 'dw/kernel' has 8 output channels (shape [3, 3, 4, 2]), but meta.sites declares 4 "
     f"for site 'dw'"),
    ("missing-tensor", lambda: _delta_container({"scale": [1, 2]}, [["logits", "dense", 2, "scale+bias"]]),
     HeaderError, f"{P}: tensor 'bias' is missing: meta.sites gives site 'logits' the roles 'scale+bias'"),
    ("packed-out-of-order", lambda: _delta_container(
        {"bias": [1, 2], "scale": [1, 2]}, [["logits", "dense", 2, "scale+bias"]]),
     HeaderError, f"{P}: tensors[0] is 'bias', expected 'scale': a delta stores 'scale', 'bias', then each "
                  f"kernel in meta.sites order"),
    ("kernels-out-of-order", lambda: _delta_container(
        {"b/kernel": np.ones([3, 2]), "a/kernel": np.ones([3, 2])}, TWO_KERNELS),
     HeaderError, f"{P}: tensors[0] is 'b/kernel', expected 'a/kernel': a delta stores 'scale', 'bias', then "
                  f"each kernel in meta.sites order"),
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
    assert str(caught.value) == "expect_kind must be one of delta, patch, int8_delta; received expect_kind='model'"


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


ONE = np.ones(2, np.float32)
WRITE_CASES = [
    ("bad-dtype-arg", dict(dtype="int8"), UsageError,
     "dtype must be one of float32, float16; received dtype='int8'"),
    ("scale-length-mismatch", dict(tensors={"logits/scale": np.ones(3, np.float32),
                                            "logits/bias": ONE}), ShapeMismatchError,
     "{path}: site 'logits': output channels differ between its tensors: scale 3, bias 2"),
    ("int-tensor", dict(tensors={"logits/bias": np.ones(2, np.int32)}), ShapeMismatchError,
     "{path}: tensor 'logits/bias': expected a float numpy array, got int32"),
    ("unknown-site", dict(tensors={"fc/bias": ONE}), HeaderError,
     "{path}: tensor 'fc/bias': site 'fc' is not in sites"),
    ("unknown-role", dict(tensors={"logits/gamma": ONE}), HeaderError,
     "{path}: tensor 'logits/gamma': name must be '{site}/{role}' with role one of scale, bias, kernel"),
    ("site-without-tensors", dict(sites={"logits": "dense", "Conv1": "conv"}), HeaderError,
     "{path}: site 'Conv1' is listed in sites but has no tensors"),
    ("scale-and-kernel", dict(tensors={"logits/scale": ONE, "logits/kernel": np.ones([3, 2], np.float32)}),
     HeaderError, "{path}: site 'logits' has both a scale and a kernel; a kernel replaces the base kernel "
                  "in full, so it takes no scale"),
    ("dense-kernel-rank", dict(tensors={"logits/kernel": np.ones([1, 1, 3, 2], np.float32)}),
     ShapeMismatchError,
     "{path}: tensor 'logits/kernel' of a dense site must have rank 2, got shape [1, 1, 3, 2]"),
    ("bias-rank", dict(tensors={"logits/bias": np.ones([2, 1], np.float32)}), ShapeMismatchError,
     "{path}: tensor 'logits/bias' of a dense site must have rank 1, got shape [2, 1]"),
    ("depthwise-channels", dict(sites={"dw": "depthwise"}, tensors={
        "dw/kernel": np.ones([3, 3, 4, 2], np.float32), "dw/bias": np.ones(4, np.float32)}),
     ShapeMismatchError, "{path}: site 'dw': output channels differ between its tensors: bias 4, kernel 8"),
    ("unknown-site-op", dict(sites={"logits": "lstm"}), HeaderError,
     "{path}: sites['logits'] must be one of conv, depthwise, dense, got 'lstm'"),
    ("zero-channels", dict(tensors={"logits/bias": np.ones(0, np.float32)}), HeaderError,
     "{path}: meta.sites[0] ('logits'): channels must be an integer in 1..1073741824, got 0"),
    ("site-name-too-long", dict(sites={"é" * 125: "dense"}, tensors={"é" * 125 + "/bias": ONE}),
     HeaderError,
     "{path}: meta.sites[0]: name must be a string of 1..249 UTF-8 bytes, got '" + "é" * 76 + "..."),
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
                       "preprocessing": {"channels": "rgb", "offset": [-1.0, -1.0, -1.0], "resize": "bilinear",
                                         "scale": [0.0078125, 0.0078125, 0.0078125]}}
    assert task_from_json(as_json) == task
    with pytest.raises(HeaderError) as caught:
        task_to_json(TaskInfo("t", ("a",), 5000, task.preprocessing), "x.patch")
    assert str(caught.value) == "x.patch: meta.task.resolution must be an integer in 8..1024, got 5000"
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
