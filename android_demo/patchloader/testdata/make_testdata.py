"""Regenerate the patch loader's golden test data with the Python pipeline and runtime.

Run from the repository root with the project's venv (needs TensorFlow; about a minute):

    .venv/bin/python android_demo/patchloader/testdata/make_testdata.py

It converts a small CNN (``tests/conftest.py:small_cnn``) with two task patches into
``base.tflite`` + deltas, adds an fp16 delta, a hand-made delta covering every role set,
and the same base in the external buffer layout. ``golden.json`` lists each (base, delta)
pair with the file holding Python's ``TFLiteBase(base).patched_bytes(delta)``; the JUnit
golden test requires the Java loader's bytes to equal it exactly.

``bad.json`` lists malicious or mismatched inputs (``bad/``), each with the error class
and message the Python runtime raises; the JUnit test requires the Java loader to throw
the same class (``HeaderError`` -> ``HeaderException``) with the same message.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import shutil
import struct
import sys
import tempfile

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(os.path.dirname(os.path.dirname(HERE)))
sys.path[:0] = [REPO, os.path.join(REPO, "tests")]

from conftest import make_patch, small_cnn  # noqa: E402  (the project's test fixtures)
from converters.convert import convert  # noqa: E402
from converters.tflite_rewrite import to_external_buffer_layout  # noqa: E402
from edgepatch.delta import Delta, decode_delta, encode_delta, read_delta  # noqa: E402
from edgepatch.errors import EdgepatchError  # noqa: E402
from edgepatch.runtime.tflite import TFLiteBase  # noqa: E402


def write(name: str, data: bytes) -> str:
    path = os.path.join(HERE, name)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "wb") as handle:
        handle.write(data)
    return name


def read(name: str) -> bytes:
    with open(os.path.join(HERE, name), "rb") as handle:
        return handle.read()


def split(data: bytes) -> tuple[dict, bytes]:
    header_len = struct.unpack_from("<I", data, 12)[0]
    return json.loads(data[16:16 + header_len]), data[16 + header_len:-32]


def rebuild(header, payload: bytes, header_text: str | bytes | None = None) -> bytes:
    """A file with this header (or raw header text) and payload, and a valid trailer."""
    if header_text is None:
        header_text = json.dumps(header, sort_keys=True, separators=(",", ":"))
    text = header_text if isinstance(header_text, bytes) else header_text.encode("utf-8")
    text += b" " * (-len(text) % 16)
    body = b"EDGEPTCH" + struct.pack("<II", 1, len(text)) + text + payload
    return body + hashlib.sha256(body).digest()


def resign(data: bytes) -> bytes:
    return data[:-32] + hashlib.sha256(data[:-32]).digest()


def convert_ship(work: str) -> str:
    base = small_cnn(num_classes=3)
    base.save(os.path.join(work, "base.keras"))
    patches = []
    for name, classes, seed, kinds in (("gamma", 3, 4, ("scale_bias", "logits")),
                                       ("delta_dw", 2, 5, ("scale_bias", "depthwise", "logits"))):
        path = os.path.join(work, f"{name}.patch")
        make_patch(base, path, name, classes, seed=seed, kinds=kinds)
        patches.append(path)
    ship = os.path.join(work, "ship")
    convert(os.path.join(work, "base.keras"), patches, ship, formats=("tflite",))
    return ship


def mixed_delta(template: Delta, base: TFLiteBase) -> Delta:
    """Every role set on one delta: scale only, bias only (dense, padded), kernel only, kernel+bias."""
    rng = np.random.default_rng(7)
    slots = base.sites
    tensors = {
        "stem/scale": rng.uniform(0.5, 1.5, slots["stem"].kernel.shape[0]).astype(np.float32),
        "pw/bias": rng.normal(0, 0.3, slots["pw"].bias.shape[0]).astype(np.float32),
        "dw/kernel": rng.normal(0, 0.3, (3, 3, 8, 2)).astype(np.float32),
        "plain_conv/kernel": rng.normal(0, 0.1, (3, 3, 8, 12)).astype(np.float32),
        "plain_conv/bias": rng.normal(0, 0.1, 12).astype(np.float32),
        "classifier/bias": rng.normal(0, 0.5, 2).astype(np.float32),
    }
    sites = {"stem": "conv", "pw": "conv", "dw": "depthwise", "plain_conv": "conv", "classifier": "dense"}
    return dataclasses.replace(template, kinds=("handmade",), sites=sites, tensors=tensors)


def golden_cases(ship: str) -> list[dict]:
    write("base.tflite", read_ship(ship, "base.tflite"))
    base = TFLiteBase(read("base.tflite"), "base.tflite")
    gamma = read_delta(os.path.join(ship, "gamma.delta"))
    deltas = {
        "gamma.delta": read_ship(ship, "gamma.delta"),
        "gamma_fp16.delta": encode_delta(gamma, "float16"),
        "delta_dw.delta": read_ship(ship, "delta_dw.delta"),
        "mixed.delta": encode_delta(mixed_delta(gamma, base)),
    }
    external = to_external_buffer_layout(read("base.tflite"))
    write("base_external.tflite", external)
    for name in ("gamma", "delta_dw"):
        delta = read_delta(os.path.join(ship, f"{name}.delta"))
        moved = dataclasses.replace(delta, base_sha256={"tflite": hashlib.sha256(external).hexdigest()})
        deltas[f"{name}_external.delta"] = encode_delta(moved)
    cases = []
    for name, data in deltas.items():
        write(name, data)
        base_name = "base_external.tflite" if "external" in name else "base.tflite"
        patched = bytes(TFLiteBase(read(base_name), base_name).patched_bytes(decode_delta(data, name)))
        expected = write(f"expected/{name[:-len('.delta')]}.tflite", patched)
        cases.append({"base": base_name, "delta": name, "expected": expected,
                      "sha256": hashlib.sha256(patched).hexdigest()})
    return cases


def read_ship(ship: str, name: str) -> bytes:
    with open(os.path.join(ship, name), "rb") as handle:
        return handle.read()


def bad_deltas(good: bytes, base: TFLiteBase) -> dict[str, bytes]:
    header, payload = split(good)
    text = json.dumps(header, sort_keys=True, separators=(",", ":"))

    def edited(change) -> bytes:
        copy = json.loads(json.dumps(header))
        change(copy)
        return rebuild(copy, payload)

    def set_path(obj, path, value):
        for key in path[:-1]:
            obj = obj[key]
        obj[path[-1]] = value

    first = header["tensors"][0]
    start = 16 + struct.unpack_from("<I", good, 12)[0]
    nan_file = bytearray(good)
    struct.pack_into("<f", nan_file, start + first["offset"], float("nan"))
    flipped_payload = bytearray(good)
    flipped_payload[start + 4] ^= 0x01
    flipped_header = bytearray(good)
    flipped_header[20] ^= 0x20
    missing_kernel = json.loads(json.dumps(header))
    kernel_entry = missing_kernel["tensors"].pop()
    zeroed = bytearray(payload)
    zeroed[kernel_entry["offset"]:kernel_entry["offset"] + kernel_entry["nbytes"]] = bytes(kernel_entry["nbytes"])
    padded = json.loads(json.dumps(header))
    padded["payload_bytes"] += 8
    gamma = decode_delta(good)
    sha = base.sha256
    wrong = {
        "truncated_short.delta": good[:40],
        "truncated_payload.delta": good[:-100],
        "trailing_bytes.delta": good + bytes(16),
        "bad_magic.delta": b"EDGEPTCX" + good[8:],
        "bad_version.delta": good[:8] + struct.pack("<I", 2) + good[12:],
        "header_len_unaligned.delta": good[:12] + struct.pack("<I", 17) + good[16:],
        "header_len_huge.delta": good[:12] + struct.pack("<I", 1 << 21) + good[16:],
        "flipped_payload_byte.delta": bytes(flipped_payload),
        "flipped_header_byte.delta": bytes(flipped_header),
        "invalid_json.delta": rebuild(None, payload, "x" + text[1:]),
        "invalid_utf8.delta": rebuild(None, payload, text[:-1].encode() + b',"\xff":1}'),
        "duplicate_key.delta": rebuild(None, payload, '{"file_kind":"delta",' + text[1:]),
        "nan_constant.delta": rebuild(None, payload, text[:-1] + ',"x":NaN}'),
        "number_overflow.delta": rebuild(None, payload, text.replace('"resolution":', '"resolution":1e999,"r":', 1)),
        "deep_nesting.delta": rebuild(None, payload, text[:-1] + ',"x":' + "[" * 5000 + "]" * 5000 + "}"),
        "file_kind_patch.delta": edited(lambda h: h.update(file_kind="patch")),
        "unknown_top_key.delta": edited(lambda h: h.update(zzz=1)),
        "payload_bytes_bool.delta": rebuild(None, payload, text.replace(f'"payload_bytes":{header["payload_bytes"]}',
                                                                         '"payload_bytes":true')),
        "nbytes_wrong.delta": edited(lambda h: h["tensors"][0].update(nbytes=first["nbytes"] + 8)),
        "offset_unaligned.delta": edited(lambda h: h["tensors"][0].update(offset=4)),
        "dtype_int32.delta": edited(lambda h: h["tensors"][0].update(dtype="int32")),
        "nonzero_padding.delta": rebuild(padded, payload + b"\x01" * 8),
        "nan_value.delta": resign(bytes(nan_file)),
        "site_roles_bad.delta": edited(lambda h: set_path(h, ["meta", "sites", 0, 3], "kernel+scale")),
        "site_channels_bad.delta": edited(lambda h: set_path(h, ["meta", "sites", 0, 2],
                                                             h["meta"]["sites"][0][2] + 1)),
        "site_duplicate.delta": edited(lambda h: h["meta"]["sites"].append(list(h["meta"]["sites"][0]))),
        "resolution_bool.delta": edited(lambda h: set_path(h, ["meta", "task", "resolution"], True)),
        "sha_uppercase.delta": edited(lambda h: set_path(h, ["meta", "base_sha256", "tflite"], sha.upper())),
        "missing_kernel.delta": rebuild(missing_kernel, bytes(zeroed)),
        # Valid files that do not fit base.tflite:
        "wrong_base.delta": encode_delta(dataclasses.replace(gamma, base_sha256={"tflite": "0" * 64})),
        "onnx_only.delta": encode_delta(dataclasses.replace(gamma, base_sha256={"onnx": sha})),
    }
    tensor = np.zeros
    mismatches = {
        "wrong_shape_kernel.delta": ({"classifier": "dense"}, {"classifier/kernel": tensor((13, 3), np.float32),
                                                               "classifier/bias": tensor(3, np.float32)}),
        "wrong_shape_scale.delta": ({"stem": "conv"}, {"stem/scale": np.ones(9, np.float32)}),
        "wrong_shape_bias.delta": ({"pw": "conv"}, {"pw/bias": tensor(7, np.float32)}),
        "wrong_shape_dw_kernel.delta": ({"dw": "depthwise"}, {"dw/kernel": tensor((3, 3, 8, 1), np.float32)}),
        "head_too_wide.delta": ({"classifier": "dense"}, {"classifier/kernel": tensor((12, 5), np.float32),
                                                          "classifier/bias": tensor(5, np.float32)}),
        "site_missing.delta": ({"nonexistent": "conv"}, {"nonexistent/scale": np.ones(8, np.float32)}),
        "site_op_differs.delta": ({"stem": "depthwise"}, {"stem/scale": np.ones(8, np.float32)}),
    }
    for name, (sites, tensors) in mismatches.items():
        wrong[name] = encode_delta(dataclasses.replace(gamma, sites=sites, tensors=tensors))
    return wrong


def bad_bases(good_base: bytes, delta: bytes) -> dict[str, bytes]:
    import tensorflow as tf

    plain = tf.lite.TFLiteConverter.from_keras_model(small_cnn(num_classes=3)).convert()
    not_identifier = bytearray(good_base)
    not_identifier[4:8] = b"XXXX"
    return {
        "base_not_tflite.tflite": delta,
        "base_wrong_identifier.tflite": bytes(not_identifier),
        "base_truncated.tflite": good_base[:len(good_base) // 2],
        "base_tiny.tflite": good_base[:6],
        "base_no_sites.tflite": plain,
    }


def outcome(base_name: str, delta_name: str | None) -> dict:
    """What the Python runtime does with (base, delta): the error class and message."""
    try:
        delta = decode_delta(read(delta_name), delta_name) if delta_name else None
        base = TFLiteBase(read(base_name), base_name)
        if delta is not None:
            base.patched_bytes(delta)
    except EdgepatchError as error:
        return {"error": type(error).__name__, "message": str(error)}
    raise AssertionError(f"{base_name} + {delta_name} raised nothing")


def main() -> None:
    for old in ("bad", "expected"):
        shutil.rmtree(os.path.join(HERE, old), ignore_errors=True)
    with tempfile.TemporaryDirectory() as work:
        golden = golden_cases(convert_ship(work))
    with open(os.path.join(HERE, "golden.json"), "w") as handle:
        json.dump(golden, handle, indent=1)
        handle.write("\n")
    base = TFLiteBase(read("base.tflite"), "base.tflite")
    cases = []
    for name, data in bad_deltas(read("gamma.delta"), base).items():
        cases.append({"base": "base.tflite", "delta": write(f"bad/{name}", data)})
    for name, data in bad_bases(read("base.tflite"), read("gamma.delta")).items():
        cases.append({"base": write(f"bad/{name}", data), "delta": None})
    for case in cases:
        case.update(outcome(case["base"], case["delta"]))
    with open(os.path.join(HERE, "bad.json"), "w") as handle:
        json.dump(cases, handle, indent=1, ensure_ascii=False)
        handle.write("\n")
    print(f"{len(golden)} golden cases, {len(cases)} bad cases written to {HERE}")


if __name__ == "__main__":
    main()
