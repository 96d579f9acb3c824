"""Regenerate the patch loader's golden test data with the Python pipeline and runtime.

Run from the repository root with the project's venv (needs TensorFlow; about a minute):

    .venv/bin/python android_demo/patchloader/testdata/make_testdata.py

It converts a small CNN (``tests/conftest.py:small_cnn``) with two task patches into
``base.tflite`` + deltas, adds an fp16 delta, a hand-made delta covering every role set,
the same base in the external buffer layout, and ``gamma_v1.delta``: gamma in a format
version 1 file (scalar preprocessing), which both readers must still read. ``golden.json`` lists each (base, delta)
pair with the file holding Python's ``TFLiteBase(base).patched_bytes(delta)``; the JUnit
golden test requires the Java loader's bytes to equal it exactly.

It also converts the ``gamma`` task to int8 (``quantize="int8"``, calibrated on a few
random images) twice: with an exact and with a compact (refold codes) int8 delta, each
with its own int8 base, plus two hand-made deltas: the exact one's data as sparse edits, and the compact one with
bias codes at which wrong refold arithmetic would round differently (see ``rounding_delta``). Their
golden bytes are Python's ``TFLiteInt8Base(base).patched_bytes(delta)``.

The bad-input corpus goes to ``tests/corpus/`` (its README gives the format), read by both
the JUnit ``BadInputTest`` and ``tests/format/test_corpus.py``: ``bad.json`` lists malicious
or mismatched inputs (``bad/``), each with the error class and message the Python runtime
raises; the Java loader must throw the same class (``HeaderError`` -> ``HeaderException``)
with the same message. A case with ``"kind": "int8_delta"`` is read as an int8 delta and
applied to an int8 base.

Last, ``resize/`` (``resize_golden.py``): one decoded JPEG and the Python runtime's
``"bilinear"`` resize of it, which the Java ``ImageResampler`` must reproduce exactly.
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
CORPUS = os.path.join(REPO, "tests", "corpus")  # the bad inputs: names under bad/ live there
sys.path[:0] = [REPO, os.path.join(REPO, "tests"), HERE]

from helpers.models import make_patch, small_cnn  # noqa: E402  (the project's test fixtures)
from converters.convert import convert  # noqa: E402
from converters.tflite_rewrite import to_external_buffer_layout  # noqa: E402
from edgepatch.format.delta import Delta, decode_delta, encode_delta, read_delta  # noqa: E402
from edgepatch.format import rice  # noqa: E402
from edgepatch.errors import EdgepatchError  # noqa: E402
from edgepatch.format.int8_delta import FILE_KIND as INT8_KIND  # noqa: E402
from edgepatch.format.int8_delta import decode_int8_delta, scale_factors  # noqa: E402
from edgepatch.runtime.tflite import TFLiteBase  # noqa: E402
from edgepatch.runtime.tflite_int8 import TFLiteInt8Base  # noqa: E402
from edgepatch.format.container import FORMAT_VERSION, decode_tensor_file, encode_tensor_file  # noqa: E402
from resize_golden import write_resize_golden  # noqa: E402  (beside this script)


def home(name: str) -> str:
    """Where a file name lives: bad/ names in the corpus, the others beside this script."""
    return os.path.join(CORPUS if name.startswith("bad/") else HERE, name)


def write(name: str, data: bytes) -> str:
    path = home(name)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "wb") as handle:
        handle.write(data)
    return name


def read(name: str) -> bytes:
    with open(home(name), "rb") as handle:
        return handle.read()


def split(data: bytes) -> tuple[dict, bytes]:
    header_len = struct.unpack_from("<I", data, 12)[0]
    return json.loads(data[16:16 + header_len]), data[16 + header_len:-32]


def rebuild(header, payload: bytes, header_text: str | bytes | None = None, version: int = FORMAT_VERSION) -> bytes:
    """A file of ``version`` with this header (or raw header text) and payload, and a valid trailer."""
    if header_text is None:
        header_text = json.dumps(header, sort_keys=True, separators=(",", ":"))
    text = header_text if isinstance(header_text, bytes) else header_text.encode("utf-8")
    text += b" " * (-len(text) % 16)
    body = b"EDGEPTCH" + struct.pack("<II", version, len(text)) + text + payload
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
    task = dataclasses.replace(template.task, classes=template.task.classes[:2])  # its head has 2 outputs
    return dataclasses.replace(template, task=task, kinds=("handmade",), sites=sites, tensors=tensors)


def partial_delta(template: Delta) -> Delta:
    """A subset of gamma's sites (dw: scale+bias, pw: scale): every other site must keep the base's bytes."""
    tensors = {name: template.tensors[name] for name in ("dw/scale", "dw/bias", "pw/scale")}
    return dataclasses.replace(template, sites={"dw": "depthwise", "pw": "conv"}, tensors=tensors)


def golden_cases(ship: str) -> list[dict]:
    write("base.tflite", read_ship(ship, "base.tflite"))
    base = TFLiteBase(read("base.tflite"), "base.tflite")
    gamma = read_delta(os.path.join(ship, "gamma.delta"))
    deltas = {
        "gamma.delta": read_ship(ship, "gamma.delta"),
        "gamma_fp16.delta": encode_delta(gamma, "float16"),
        "delta_dw.delta": read_ship(ship, "delta_dw.delta"),
        "mixed.delta": encode_delta(mixed_delta(gamma, base)),
        "partial.delta": encode_delta(partial_delta(gamma)),
        "gamma_v1.delta": version_1_file(read_ship(ship, "gamma.delta")),
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


def version_1_header(header: dict, scale: float | None = None, resize: bool = False) -> dict:
    """``header`` as a version 1 writer wrote it: one scalar scale and offset (its channel 0's), RGB.

    ``resize``: keep the (version 2) resize key, which a version 1 file must not hold."""
    copy = json.loads(json.dumps(header))
    pre = copy["meta"]["task"]["preprocessing"]
    assert pre["channels"] == "rgb" and len(set(pre["scale"])) == len(set(pre["offset"])) == 1
    copy["meta"]["task"]["preprocessing"] = {"offset": pre["offset"][0],
                                             "scale": pre["scale"][0] if scale is None else scale}
    if resize:
        copy["meta"]["task"]["preprocessing"]["resize"] = pre["resize"]
    return copy


def version_1_file(data: bytes) -> bytes:
    """The same delta in a version 1 file (a fleet's old deltas)."""
    header, payload = split(data)
    return rebuild(version_1_header(header), payload, version=1)


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
    assert first["name"] == "scale"

    def scale_set(index: int, value: float) -> bytes:  # one packed site scale replaced, the trailer fixed
        data = bytearray(good)
        struct.pack_into("<f", data, start + first["offset"] + 4 * index, value)
        return resign(bytes(data))

    padded = json.loads(json.dumps(header))
    padded["payload_bytes"] += 8
    gamma = decode_delta(good)
    sha = base.sha256
    wrong = {
        "truncated_short.delta": good[:40],
        "truncated_payload.delta": good[:-100],
        "trailing_bytes.delta": good + bytes(16),
        "bad_magic.delta": b"EDGEPTCX" + good[8:],
        "bad_version.delta": good[:8] + struct.pack("<I", FORMAT_VERSION + 1) + good[12:],
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
        "preprocessing_channels_bad.delta": edited(lambda h: set_path(
            h, ["meta", "task", "preprocessing", "channels"], "BGR")),
        "preprocessing_scale_zero.delta": edited(lambda h: set_path(
            h, ["meta", "task", "preprocessing", "scale", 1], 0.0)),
        "preprocessing_offset_huge.delta": edited(lambda h: set_path(
            h, ["meta", "task", "preprocessing", "offset", 2], 2e6)),
        "v1_preprocessing_per_channel.delta": rebuild(header, payload, version=1),  # v2 meta in a v1 file
        "v1_preprocessing_scale_zero.delta": rebuild(version_1_header(header, 0.0), payload, version=1),
        "preprocessing_resize_unknown.delta": edited(lambda h: set_path(
            h, ["meta", "task", "preprocessing", "resize"], "nearest")),
        "preprocessing_resize_not_text.delta": edited(lambda h: set_path(
            h, ["meta", "task", "preprocessing", "resize"], None)),
        "v1_preprocessing_resize.delta": rebuild(version_1_header(header, resize=True), payload, version=1),
        "sha_uppercase.delta": edited(lambda h: set_path(h, ["meta", "base_sha256", "tflite"], sha.upper())),
        "missing_kernel.delta": rebuild(missing_kernel, bytes(zeroed)),
        "resolution_4096.delta": edited(lambda h: set_path(h, ["meta", "task", "resolution"], 4096)),
        "dims_zero_huge.delta": edited(lambda h: h["tensors"][0].update(shape=[0, 1 << 30, 1 << 30, 1 << 30],
                                                                        nbytes=0)),
        "class_unpaired_surrogate.delta": rebuild(None, payload, text.replace('"gamma_0"', '"\\ud800"', 1)),
        "task_name_unpaired_surrogate.delta": rebuild(None, payload, text.replace('"name":"gamma"',
                                                                                   '"name":"g\\udc00"', 1)),
        "kind_unpaired_surrogate.delta": rebuild(None, payload, text.replace('"scale_bias"', '"\\udbff"', 1)),
        "base_key_unpaired_surrogate.delta": rebuild(None, payload, text.replace('"tflite":', '"\\ud800":', 1)),
        "classes_more_than_head.delta": edited(lambda h: h["meta"]["task"]["classes"].append("ghost")),
        "classes_fewer_than_head.delta": edited(lambda h: h["meta"]["task"]["classes"].pop()),
        "site_scale_zero.delta": scale_set(3, 0.0),
        "site_scale_denormal.delta": scale_set(9, 1e-40),
        "site_scale_negative_zero.delta": scale_set(0, -0.0),
        "site_scale_huge.delta": scale_set(30, -3e38),
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
        "classes_past_base_head.delta": ({"stem": "conv"}, {"stem/scale": np.ones(8, np.float32)}),
        "site_missing.delta": ({"nonexistent": "conv"}, {"nonexistent/scale": np.ones(8, np.float32)}),
        "site_op_differs.delta": ({"stem": "depthwise"}, {"stem/scale": np.ones(8, np.float32)}),
    }
    wider = dataclasses.replace(gamma.task, classes=tuple(f"c{i}" for i in range(5)))  # more than base.tflite's 3
    for name, (sites, tensors) in mismatches.items():
        task = wider if name in ("head_too_wide.delta", "classes_past_base_head.delta") else gamma.task
        wrong[name] = encode_delta(dataclasses.replace(gamma, task=task, sites=sites, tensors=tensors))
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


INT8_MODES = ("exact", "compact")


def calibration_dir(work: str) -> str:
    """A dozen random PNGs (fixed seed) for the base and for gamma: enough for the converter's ranges."""
    from PIL import Image

    root = os.path.join(work, "calibration")
    rng = np.random.default_rng(1)
    for name in ("base", "gamma"):
        folder = os.path.join(root, name, "any_class")
        os.makedirs(folder)
        for i in range(12):
            Image.fromarray(rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)).save(os.path.join(folder, f"{i}.png"))
    return root


def convert_int8(work: str) -> dict[str, str]:
    """gamma converted to int8 once per delta mode (after convert_ship): mode -> ship dir with its own int8 base."""
    calibration = calibration_dir(work)
    ships = {}
    for mode in INT8_MODES:
        ships[mode] = os.path.join(work, f"int8_{mode}")
        convert(os.path.join(work, "base.keras"), [os.path.join(work, "gamma.patch")], ships[mode],
                formats=("tflite",), quantize="int8", calibration_dir=calibration, int8_delta=mode)
    return ships


def reencoded(good: bytes, change) -> bytes:
    """An int8 delta file whose meta and tensors ``change(meta, tensors)`` edited (a valid container)."""
    stored = decode_tensor_file(good, INT8_KIND)
    meta = json.loads(json.dumps(stored.meta))
    tensors = {name: np.array(array) for name, array in stored.tensors.items()}
    change(meta, tensors)
    return encode_tensor_file(INT8_KIND, tensors, meta)


def edits_delta(exact: bytes, base: bytes) -> bytes:
    """The exact delta with every data/N turned into a sparse edit (at/N, put/N) of the bytes that differ."""
    model = TFLiteInt8Base(base, "base").model
    sparse = []

    def change(meta, tensors):
        for name in [n for n in tensors if n.startswith("data/")]:
            index = int(name[len("data/"):])
            tensor = model.tensors[index]
            old = np.frombuffer(base, np.uint8, tensor.data_size, tensor.data_offset)
            new = tensors.pop(name)
            at = np.flatnonzero(new != old).astype(np.int32)
            tensors[f"at/{index}"], tensors[f"put/{index}"] = at, new[at]
            sparse.append(0 < at.size < new.size)

    data = reencoded(exact, change)
    assert any(sparse), "no tensor has a sparse edit"
    return data


def int8_golden_cases(ships: dict[str, str]) -> list[dict]:
    deltas = {}
    for mode, ship in ships.items():
        base_name = write(f"base_int8_{mode}.tflite", read_ship(ship, "base_int8.tflite"))
        deltas[f"gamma_{mode}.int8.delta"] = (base_name, read_ship(ship, "gamma.int8.delta"))
    base_name, exact = deltas["gamma_exact.int8.delta"]
    deltas["gamma_edits.int8.delta"] = (base_name, edits_delta(exact, read(base_name)))
    base_name, compact = deltas["gamma_compact.int8.delta"]
    deltas["gamma_rounding.int8.delta"] = (base_name, rounding_delta(compact, read(base_name)))
    cases = []
    for name, (base_name, data) in deltas.items():
        write(name, data)
        patched = bytes(TFLiteInt8Base(read(base_name), base_name).patched_bytes(decode_int8_delta(data, name)))
        expected = write(f"expected/{name[:-len('.delta')]}.tflite", patched)
        cases.append({"base": base_name, "delta": name, "kind": INT8_KIND, "expected": expected,
                      "sha256": hashlib.sha256(patched).hexdigest()})
    return cases


def _vector(data: bytes, tensor, field: str, dtype) -> np.ndarray:
    offset, count = getattr(tensor, field)
    return np.frombuffer(data, dtype, count, offset if count else 0)


def rounding_delta(compact: bytes, base: bytes) -> bytes:
    """The compact delta with bias codes that catch wrong refold arithmetic, and one entry that clamps.

    Per channel it picks the bias code (if any) whose int32 bias would round differently had
    ``b * step`` been a float32 product or the bias scale a float64 one; the last entry's step
    is so large that its biases clamp to int32 at both ends.
    """
    delta = decode_int8_delta(compact)
    tensors = TFLiteInt8Base(base, "base").model.tensors
    quantized = TFLiteInt8Base(base, "base").patched_bytes(dataclasses.replace(delta, refolds=()))
    codes = np.arange(-32768, 32768).astype(np.float64)
    pairs, steps, hits = [], [], 0
    for number, entry in enumerate(delta.refolds):
        weight, bias = tensors[entry.weight], tensors[entry.bias]
        input_scale = np.float32(_vector(quantized, tensors[entry.input], "quant_scales", np.float32)[0])
        weight_scale = _vector(base, weight, "quant_scales", np.float32) * scale_factors(entry.scale_codes)
        bias_scale = input_scale * weight_scale
        step = np.float32(entry.bias_step)
        if number == len(delta.refolds) - 1:
            step = np.float32(2.0 ** 33 * float(bias_scale.max()) / 32767)
        base_value = (np.frombuffer(base, np.int32, entry.channels, bias.data_offset).astype(np.float64)
                      * _vector(base, bias, "quant_scales", np.float32).astype(np.float64))
        bias_codes = np.array(entry.bias_codes)
        for c in range(entry.channels):
            right = np.rint((base_value[c] + codes * np.float64(step)) / np.float64(bias_scale[c]))
            float32_product = np.rint((base_value[c] + (codes.astype(np.float32) * step).astype(np.float64))
                                      / np.float64(bias_scale[c]))
            float64_scale = np.rint((base_value[c] + codes * np.float64(step))
                                    / (np.float64(input_scale) * np.float64(weight_scale[c])))
            found = np.flatnonzero((right != float32_product) | (right != float64_scale))
            if found.size:
                bias_codes[c] = codes[found[len(found) // 2]]
                hits += 1
        if number == len(delta.refolds) - 1:
            bias_codes[:2] = (32767, -32768)
        pairs.append((entry.scale_codes, bias_codes.astype(np.int16)))
        steps.append(step)
    assert hits >= 10, f"only {hits} channels have a telling bias code"

    def change(meta, tensors):
        tensors.update(rice_tensors(pairs))
        tensors["refold/bias_step"] = np.array(steps, np.float32)

    return reencoded(compact, change)


def rice_tensors(refolds) -> dict[str, np.ndarray]:
    """refold/codes and refold/rice_k for these (scale codes, bias codes) pairs, as the writer makes them."""
    runs = [(codes, rice.best_k(codes)) for pair in refolds for codes in pair]
    return {"refold/codes": np.frombuffer(rice.encode(runs), np.uint8).copy(),
            "refold/rice_k": np.array([k for _, k in runs], np.uint8).reshape(-1, 2)}


def bad_int8_deltas(good: bytes, base: bytes) -> dict[str, bytes]:
    """Int8 deltas that break one rule each of ``edgepatch.format.int8_delta`` (for the compact delta's base)."""
    stored = decode_tensor_file(good, INT8_KIND)
    quant, refold = stored.meta["quant"], stored.meta["refold"]
    pairs = [(r.scale_codes, r.bias_codes) for r in decode_int8_delta(good).refolds]
    packed = bytes(stored.tensors["refold/codes"])
    model = TFLiteInt8Base(base, "base").model
    data_name = next(n for n in stored.tensors if n.startswith("data/"))
    _, bias, source, channels = refold[0]
    input_at = sum(e[1] for e in quant if e[0] < source)  # where refold 0's input scale sits in "scale"
    assert any(e[0] == source and e[1] == 1 for e in quant)
    many_scales = refold[1][0]  # a kernel: one scale per channel
    free = next(e[0] for e in refold if f"data/{e[0]}" not in stored.tensors)  # a kernel free for edits

    def edit(change) -> bytes:
        return reencoded(good, change)

    def setitem(obj, key, value):
        obj[key] = value

    def codes(data: bytes):
        return lambda m, t: t.__setitem__("refold/codes", np.frombuffer(data, np.uint8).copy())

    def recoded(new_pairs, change_meta=lambda m: None):
        return lambda m, t: (t.update(rice_tensors(new_pairs)), change_meta(m))

    def all_ones(m, t):  # k = 0 everywhere and no 0 bit: the first quotient never ends
        t["refold/rice_k"] = np.zeros((len(refold), 2), np.uint8)
        t["refold/codes"] = np.full(len(packed), 255, np.uint8)

    def more_scales(m, t):  # quant[0] claims one more scale than the base tensor has; the sums still match
        m["quant"][0][1] += 1
        t["scale"] = np.insert(t["scale"], quant[0][1], np.float32(1))

    def k15(m, t):  # refold 0's scale run read with k = 15: a quotient of 2 makes a value above 0xFFFF
        t["refold/rice_k"][0, 0] = 15
        bits = np.concatenate([np.zeros(15 * channels, np.uint8), np.tile(np.array([1, 1, 0], np.uint8), channels)])
        t["refold/codes"] = np.packbits(np.concatenate([bits, np.unpackbits(np.frombuffer(packed, np.uint8))]))

    mean = next(op for op in model.ops if op.opcode == "MEAN")
    axes = mean.inputs[1]  # a constant no patch kind owns
    weight0 = refold[0][0]

    def weight_zero_point(m, t):  # a zero point on a symmetric (zero point 0) weight vector
        m["quant"].insert(0, [weight0, 0, model.tensors[weight0].quant_zero_points[1]])
        t["zero_point"] = np.concatenate([np.ones(m["quant"][0][2], np.int32), t["zero_point"]])

    def wider_task(m, t):
        m["task"]["classes"] = [f"c{i}" for i in range(5)]

    wider = [(np.append(pairs[0][0], 0).astype(np.int16), np.append(pairs[0][1], 0).astype(np.int16))] + pairs[1:]
    too_big = [(np.concatenate([[16256], pairs[0][0][1:]]).astype(np.int16), pairs[0][1])] + pairs[1:]
    flipped = bytearray(good)
    flipped[-40] ^= 0x01
    return {
        "int8_truncated.delta": good[:-100],
        "int8_flipped_payload_byte.delta": bytes(flipped),
        "int8_meta_unknown_key.delta": edit(lambda m, t: setitem(m, "zzz", 1)),
        "int8_meta_missing_quant.delta": edit(lambda m, t: m.pop("quant")),
        "int8_base_key_tflite.delta": edit(lambda m, t: setitem(m, "base_sha256", {"tflite": hashlib.sha256(base)
                                                                                   .hexdigest()})),
        "int8_quant_bad_entry.delta": edit(lambda m, t: setitem(m["quant"], 0, [quant[0][0], -1, 0])),
        "int8_quant_not_ascending.delta": edit(lambda m, t: setitem(m, "quant", [quant[1], quant[0]] + quant[2:])),
        "int8_quant_sum_wrong.delta": edit(lambda m, t: setitem(m["quant"][0], 1, quant[0][1] + 1)),
        "int8_tensor_name_bad.delta": edit(lambda m, t: setitem(t, "data/01", np.zeros(4, np.uint8))),
        "int8_scale_dtype.delta": edit(lambda m, t: setitem(t, "scale", t["scale"].astype(np.float16))),
        "int8_data_dtype.delta": edit(lambda m, t: setitem(t, data_name, t[data_name].view(np.int8))),
        "int8_edits_not_ascending.delta": edit(lambda m, t: t.update({f"at/{free}": np.array([5, 3], np.int32),
                                                                      f"put/{free}": np.zeros(2, np.uint8)})),
        "int8_put_missing.delta": edit(lambda m, t: setitem(t, f"at/{free}", np.array([1], np.int32))),
        "int8_at_missing.delta": edit(lambda m, t: setitem(t, f"put/{free}", np.zeros(1, np.uint8))),
        "int8_data_and_edits.delta": edit(lambda m, t: t.update({"at/" + data_name[5:]: np.array([0], np.int32),
                                                                 "put/" + data_name[5:]: np.zeros(1, np.uint8)})),
        "int8_refold_bias_has_data.delta": edit(lambda m, t: setitem(t, f"data/{bias}", np.zeros(4 * channels,
                                                                                                 np.uint8))),
        "int8_refold_meta_only.delta": edit(lambda m, t: [t.pop(n) for n in ("refold/codes", "refold/rice_k",
                                                                             "refold/bias_step")]),
        "int8_refold_tensor_missing.delta": edit(lambda m, t: t.pop("refold/rice_k")),
        "int8_refold_tensors_only.delta": edit(lambda m, t: m.pop("refold")),
        "int8_refold_null.delta": edit(lambda m, t: setitem(m, "refold", None)),
        "int8_refold_empty.delta": edit(lambda m, t: setitem(m, "refold", [])),
        "int8_refold_zero_channels.delta": edit(lambda m, t: setitem(m["refold"][0], 3, 0)),
        "int8_refold_not_ascending.delta": edit(lambda m, t: setitem(m, "refold", [refold[1], refold[0]]
                                                                      + refold[2:])),
        "int8_refold_bias_twice.delta": edit(lambda m, t: setitem(m["refold"][1], 1, bias)),
        "int8_rice_k_shape.delta": edit(lambda m, t: setitem(t, "refold/rice_k", t["refold/rice_k"].ravel())),
        "int8_bias_step_shape.delta": edit(lambda m, t: setitem(t, "refold/bias_step", np.append(
            t["refold/bias_step"], np.float32(1)))),
        "int8_bias_step_zero.delta": edit(lambda m, t: t["refold/bias_step"].__setitem__(0, 0)),
        "int8_rice_k_too_big.delta": edit(lambda m, t: t["refold/rice_k"].__setitem__((1, 1), 16)),
        "int8_codes_empty.delta": edit(codes(b"")),
        "int8_codes_huge_channels.delta": edit(lambda m, t: setitem(m["refold"][-1], 3, 1 << 40)),
        "int8_codes_remainders_cut.delta": edit(lambda m, t: t["refold/rice_k"].__setitem__((-1, 1), 15)),
        "int8_codes_quotients_cut.delta": edit(all_ones),
        "int8_codes_value_outside_int16.delta": edit(k15),
        "int8_codes_trailing_byte.delta": edit(codes(packed + b"\0")),
        "int8_codes_nonzero_padding.delta": edit(codes(packed[:-1] + bytes([packed[-1] | 1]))),
        "int8_scale_code_out_of_range.delta": edit(recoded(too_big)),
        # Valid files that do not fit the base:
        "int8_wrong_base.delta": edit(lambda m, t: setitem(m, "base_sha256", {"tflite_int8": "0" * 64})),
        "int8_quant_count_wrong.delta": edit(more_scales),
        "int8_tensor_out_of_range.delta": edit(lambda m, t: m["quant"].append([len(model.tensors) + 5, 0, 0])),
        "int8_data_wrong_size.delta": edit(lambda m, t: setitem(t, data_name, t[data_name][:-1])),
        "int8_edit_past_end.delta": edit(lambda m, t: t.update({f"at/{free}": np.array([0, 100000], np.int32),
                                                                f"put/{free}": np.ones(2, np.uint8)})),
        "int8_refold_wrong_channels.delta": edit(recoded(wider, lambda m: setitem(m["refold"][0], 3, channels + 1))),
        "int8_refold_input_not_scalar.delta": edit(lambda m, t: setitem(m["refold"][0], 2, many_scales)),
        "int8_refold_out_of_range.delta": edit(lambda m, t: setitem(m["refold"][-1], 2, len(model.tensors))),
        "int8_input_scale_zero.delta": edit(lambda m, t: t["scale"].__setitem__(input_at, 0)),
        "int8_refold_scale_tiny.delta": edit(lambda m, t: t["scale"].__setitem__(input_at, 1e-14)),
        "int8_scale_huge.delta": edit(lambda m, t: t["scale"].__setitem__(0, 3e38)),
        "int8_scale_denormal.delta": edit(lambda m, t: t["scale"].__setitem__(1, 1e-40)),
        "int8_scale_negative.delta": edit(lambda m, t: t["scale"].__setitem__(2, -0.01)),
        "int8_zero_point_huge.delta": edit(lambda m, t: t["zero_point"].__setitem__(0, -(2 ** 31))),
        "int8_zero_point_128.delta": edit(lambda m, t: t["zero_point"].__setitem__(1, 128)),
        # Valid files that write what no patch kind owns, or lie about the head:
        "int8_mean_axes_data.delta": edit(lambda m, t: setitem(t, f"data/{axes}", np.zeros(model.tensors[axes]
                                                                                         .data_size, np.uint8))),
        "int8_mean_axes_edit.delta": edit(lambda m, t: t.update({f"at/{axes}": np.array([0], np.int32),
                                                                f"put/{axes}": np.zeros(1, np.uint8)})),
        "int8_quant_on_constant.delta": edit(lambda m, t: m["quant"].insert(0, [axes, 0, 0])),
        "int8_weight_zero_point.delta": edit(weight_zero_point),
        "int8_refold_not_an_op.delta": edit(lambda m, t: setitem(m["refold"][0], 2, refold[1][2])),
        "int8_classes_past_head.delta": edit(wider_task),
        "int8_activation_scale_x100.delta": edit(lambda m, t: t["scale"].__setitem__(input_at, t["scale"][input_at]
                                                                                     * 100)),
    }


def int8_outcome(base_name: str, delta_name: str) -> dict:
    """What the Python runtime does with an int8 (base, delta): the error class and message."""
    try:
        delta = decode_int8_delta(read(delta_name), delta_name)
        TFLiteInt8Base(read(base_name), base_name).patched_bytes(delta)
    except EdgepatchError as error:
        return {"error": type(error).__name__, "message": str(error)}
    raise AssertionError(f"{base_name} + {delta_name} raised nothing")


def main() -> None:
    for old in ("bad/", "expected/", "resize/"):
        shutil.rmtree(home(old), ignore_errors=True)
    with tempfile.TemporaryDirectory() as work:
        golden = golden_cases(convert_ship(work))
        golden += int8_golden_cases(convert_int8(work))
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
    int8_base = "base_int8_compact.tflite"
    int8_cases = [{"base": int8_base, "delta": "gamma.delta", "kind": INT8_KIND}]
    for name, data in bad_int8_deltas(read("gamma_compact.int8.delta"), read(int8_base)).items():
        int8_cases.append({"base": int8_base, "delta": write(f"bad/{name}", data), "kind": INT8_KIND})
    for case in int8_cases:
        case.update(int8_outcome(case["base"], case["delta"]))
    cases += int8_cases
    with open(os.path.join(CORPUS, "bad.json"), "w") as handle:
        json.dump(cases, handle, indent=1, ensure_ascii=False)
        handle.write("\n")
    resized = write_resize_golden(os.path.join(HERE, "resize"))
    print(f"{len(golden)} golden cases written to {HERE}, {len(cases)} bad cases to {CORPUS}, "
          f"{len(resized)} resize cases to {HERE}/resize")


if __name__ == "__main__":
    main()
