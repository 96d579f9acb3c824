"""The Java patch loader (android_demo/patchloader) against the Python runtime.

Python converts small bases and deltas; the Java command-line front end patches them.
The Java bytes must equal ``TFLiteBase(base).patched_bytes(delta)`` exactly, LiteRT must
run them with the Keras task model's outputs, and Java must reject bad files with the
same error class and message as Python. Int8 bases and deltas (exact and compact) too:
the Java bytes must equal ``TFLiteInt8Base(base).patched_bytes(delta)``, run in LiteRT
exactly like Python's, and several hundred damaged int8 deltas must get Python's outcome
(the same patched bytes, or the same error class and message). Skipped only when no JDK
(``javac``) is present.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import shutil
import struct
import subprocess

import numpy as np
import pytest
from conftest import REPO
from helpers.models import make_patch, small_cnn

from edgepatch.format.container import FORMAT_VERSION
from edgepatch.format.delta import encode_delta, read_delta
from edgepatch.errors import EdgepatchError
from edgepatch.format.int8_delta import read_int8_delta
from edgepatch.runtime import read_task_delta
from edgepatch.runtime.tflite import TFLiteBase, interpreter_class
from edgepatch.runtime.tflite_file import parse_tflite
from edgepatch.runtime.tflite_int8 import TFLiteInt8Base

LOADER = os.path.join(REPO, "android_demo", "patchloader")
JAVAC = shutil.which("javac")
pytestmark = pytest.mark.skipif(
    JAVAC is None or shutil.which("java") is None,
    reason="no JDK: javac/java not on PATH (android_demo/build_and_test.sh installs one with apt)",
)
PARITY = {"float32": 1e-4, "float16": 5e-2}  # max-abs logit error, per unit of max(1, max |logit|)


def _sources(folder: str) -> list[str]:
    root = os.path.join(LOADER, "src", folder, "java")
    return sorted(os.path.join(d, f) for d, _, files in os.walk(root) for f in files if f.endswith(".java"))


@pytest.fixture(scope="module")
def classpath(tmp_path_factory) -> str:
    """The loader and its CLI, compiled as build_and_test.sh does (Java 8 API, warnings are errors)."""
    out = tmp_path_factory.mktemp("patchloader_classes")
    for folder, extra in (("main", []), ("tools", [str(out)])):
        subprocess.run([JAVAC, "--release", "8", "-encoding", "UTF-8", "-Xlint:all", "-Xlint:-options", "-Werror",
                        "-d", str(out), "-cp", os.pathsep.join(extra or [str(out)]), *_sources(folder)],
                       check=True, capture_output=True, text=True)
    return str(out)


def patchcli(classpath: str, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(["java", "-cp", classpath, "dev.edgepatch.patchloader.tools.PatchCli", *args],
                          capture_output=True, text=True, timeout=120)


def java_patched(classpath: str, base: str, delta: str, out: str) -> bytes:
    result = patchcli(classpath, "apply", base, delta, out)
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["base_sha256"] == hashlib.sha256(_read(base)).hexdigest()
    return _read(out)


def python_patched(base: str, delta: str) -> bytes:
    return bytes(TFLiteBase(_read(base), base).patched_bytes(read_delta(delta)))


def litert_logits(model: bytes, images: np.ndarray, classes: int) -> np.ndarray:
    interpreter = interpreter_class()(model_content=model)
    index = interpreter.get_input_details()[0]["index"]
    interpreter.resize_tensor_input(index, list(images.shape))
    interpreter.allocate_tensors()
    interpreter.set_tensor(index, images)
    interpreter.invoke()
    return interpreter.get_tensor(interpreter.get_output_details()[0]["index"])[:, :classes]


@dataclasses.dataclass
class Case:
    base: str
    delta: str
    keras_model: object
    dtype: str = "float32"


def _read(path) -> bytes:
    with open(path, "rb") as handle:
        return handle.read()


def _write(path, data: bytes) -> str:
    with open(path, "wb") as handle:
        handle.write(data)
    return str(path)


def _moved_to(delta_path: str, base: bytes, out) -> str:
    """The same delta, fingerprinted for another base file (the external-layout copy)."""
    delta = read_delta(delta_path)
    moved = dataclasses.replace(delta, base_sha256={"tflite": hashlib.sha256(base).hexdigest()})
    return _write(out, encode_delta(moved))


@pytest.fixture(scope="module")
def cases(small_ship, tmp_path_factory) -> dict[str, Case]:
    """S/B+logits (fp32, fp16), S/B+depthwise+logits with a padded head, each also on an external-layout base."""
    from converters.convert import convert
    from converters.tflite_rewrite import to_external_buffer_layout

    ship, gamma_model = small_ship
    root = tmp_path_factory.mktemp("android_cases")
    base = small_cnn(num_classes=3, seed=1)
    base.save(str(root / "base.keras"))
    dw_model = make_patch(base, str(root / "dw.patch"), "dw_task", 2, seed=8,
                          kinds=("scale_bias", "depthwise", "logits"))
    dw_ship = root / "dw_ship"
    convert(str(root / "base.keras"), [str(root / "dw.patch")], str(dw_ship), formats=("tflite",))

    gamma_base, gamma_delta = str(ship / "base.tflite"), str(ship / "gamma.delta")
    fp16 = _write(root / "gamma_fp16.delta", encode_delta(read_delta(gamma_delta), "float16"))
    external = _write(root / "dw_external.tflite", to_external_buffer_layout(_read(dw_ship / "base.tflite")))
    dw_external = _moved_to(str(dw_ship / "dw_task.delta"), _read(external), root / "dw_external.delta")
    return {
        "sb_fp32": Case(gamma_base, gamma_delta, gamma_model),
        "sb_fp16": Case(gamma_base, fp16, gamma_model, "float16"),
        "depthwise": Case(str(dw_ship / "base.tflite"), str(dw_ship / "dw_task.delta"), dw_model),
        "depthwise_external_layout": Case(external, dw_external, dw_model),
    }


@pytest.mark.parametrize("name", ["sb_fp32", "sb_fp16", "depthwise", "depthwise_external_layout"])
def test_java_bytes_equal_python_and_run_like_keras(classpath, cases, name, tmp_path):
    from converters.convert import parity_inputs

    case = cases[name]
    java = java_patched(classpath, case.base, case.delta, str(tmp_path / "java.tflite"))
    python = python_patched(case.base, case.delta)
    assert len(java) == len(python)
    if java != python:
        first = next(i for i, (a, b) in enumerate(zip(java, python)) if a != b)
        pytest.fail(f"{name}: Java and Python bytes differ first at offset {first}")
    assert java != _read(case.base), "the delta changed nothing"

    delta = read_delta(case.delta)
    images = parity_inputs(delta.task.resolution)
    expected = np.asarray(case.keras_model(images, training=False))
    got = litert_logits(java, images, len(delta.task.classes))
    error = float(np.max(np.abs(got - expected)))
    assert error <= PARITY[case.dtype] * max(1.0, float(np.max(np.abs(expected)))), f"{name}: max-abs {error}"


def _split(data: bytes) -> tuple[bytes, bytes]:
    header_len = struct.unpack_from("<I", data, 12)[0]
    return data[16:16 + header_len].rstrip(b" "), data[16 + header_len:-32]


def _rebuilt(header: bytes, payload: bytes) -> bytes:
    header += b" " * (-len(header) % 16)
    body = b"EDGEPTCH" + struct.pack("<II", FORMAT_VERSION, len(header)) + header + payload
    return body + hashlib.sha256(body).digest()


def _bad_headers(text: bytes) -> dict[str, bytes]:
    """Header texts Python rejects for many reasons; each file gets a valid checksum."""
    obj = json.loads(text)
    pos = text.index(b'"resolution":') + len(b'"resolution":')
    first_tensor = json.dumps(obj["tensors"][0], sort_keys=True, separators=(",", ":")).encode()
    edits = {
        "empty": b"",
        "not_object": b"[1, 2]",
        "newlines": b"{\n\n  \"file_kind\": x}",
        "trailing_comma": text[:-1] + b",}",
        "missing_colon": b'{"file_kind" "delta"}',
        "unterminated": b'{"file_kind": "del',
        "control_char": b'{"file_kind": "de\tlta"}',
        "bad_escape": b'{"file_kind": "\\x41"}',
        "bad_unicode_escape": b'{"file_kind": "\\u00G1"}',
        "bom": b"\xef\xbb\xbf" + text,
        "extra_data": text + b" {}",
        "leading_zero": text[:pos] + b"032" + text[pos + 2:],
        "float_resolution": text[:pos] + b"32.0" + text[pos + 2:],
        "exponent_resolution": text[:pos] + b"3e1" + text[pos + 2:],
        "huge_int": text[:pos] + b"9" * 5000 + text[pos + 2:],
        "big_int": text[:pos] + b"9" * 40 + text[pos + 2:],
        "infinity": text[:pos] + b"Infinity" + text[pos + 2:],
        "negative_zero": text[:pos] + b"-0" + text[pos + 2:],
        "lone_surrogate_key": text[:-1] + b',"\\udcff":1}',
        "emoji_key": text[:-1] + b',"\xf0\x9f\x98\x80":1}',
        "non_ascii_key": text[:-1] + b',"\xc3\xa9t\xc3\xa9":1}',
        "odd_key": text[:-1] + b',"it\'s\\t\\u00a0\\u200b\\udb80\\udc00\\\\\\u0085":1}',
        "quoted_key": text[:-1] + b',"it\'s \\"q\\"":1}',
        "overlong_utf8": text[:-1] + b',"\xc0\xaf":1}',
        "surrogate_utf8": text[:-1] + b',"\xed\xa0\x80":1}',
        "truncated_utf8": text + b"\xe2\x82",
        "bad_continuation": text[:-1] + b',"\xe2\x28\xa1":1}',
        "above_unicode": text[:-1] + b',"\xf4\x90\x80\x80":1}',
        "null_meta": text.replace(b'"meta":{', b'"meta":null,"m":{', 1),
        "tensor_unknown_key": text.replace(first_tensor, first_tensor[:-1] + b',"zz":1}', 1),
        "tensor_name_empty": text.replace(b'"name":"scale"', b'"name":""', 1),
        "shape_negative": text.replace(first_tensor, first_tensor.replace(b'"shape":[', b'"shape":[-1,', 1), 1),
        "duplicate_nested": text.replace(b'"task":{', b'"task":{"name":"x",', 1),
        "deep": text[:-1] + b',"deep":' + b"[" * 3000 + b"]" * 3000 + b"}",
    }
    return edits


def _python_outcome(path: str) -> dict:
    try:
        read_task_delta(path)  # patchcli verify reads either kind of delta
    except EdgepatchError as error:
        return {"error": type(error).__name__.replace("Error", "Exception"), "message": str(error)}
    return {"task": "ok"}


def test_java_rejects_bad_headers_with_pythons_class_and_message(classpath, small_ship, tmp_path):
    ship, _ = small_ship
    text, payload = _split(_read(ship / "gamma.delta"))
    paths = [_write(tmp_path / f"{name}.delta", _rebuilt(header, payload))
             for name, header in _bad_headers(text).items()]
    paths += [str(tmp_path / "missing.delta"), str(tmp_path), str(ship / "gamma.delta")]
    result = patchcli(classpath, "verify", *paths)
    lines = [json.loads(line) for line in result.stdout.splitlines()]
    assert [line["file"] for line in lines] == paths, result.stderr
    mismatches = []
    for path, java in zip(paths, lines):
        python = _python_outcome(path)
        java_outcome = {"error": java["error"], "message": java["message"]} if "error" in java else {"task": "ok"}
        if java_outcome != python:
            mismatches.append(f"{os.path.basename(path)}:\n  Python {python}\n  Java   {java_outcome}")
    assert not mismatches, "\n".join(mismatches)
    assert lines[-1] == {"file": paths[-1], "task": "gamma"}
    assert result.returncode == 1


def test_java_rejects_wrong_base_and_wrong_shape_like_python(classpath, cases, tmp_path):
    case = cases["sb_fp32"]
    other = cases["depthwise"]
    gamma = read_delta(case.delta)
    sha = hashlib.sha256(_read(case.base)).hexdigest()
    stem = TFLiteBase.from_file(case.base).sites["stem"].kernel
    # A base whose stem kernel has values above 3.4e26, where the largest scale allowed (1e12) overflows the re-fold.
    big = bytearray(_read(case.base))
    np.frombuffer(big, np.float32, stem.count, stem.offset)[:] *= np.float32(1e28)
    big_base = _write(tmp_path / "big.tflite", bytes(big))
    inputs = {
        "other_base": (case.base, other.delta),
        "wrong_shape": (case.base, _write(tmp_path / "wrong_shape.delta", encode_delta(dataclasses.replace(
            gamma, base_sha256={"tflite": sha}, sites={"stem": "conv"},
            tensors={"stem/scale": np.ones(stem.shape[0] + 1, np.float32)})))),
        "overflowing_scale": (big_base, _write(tmp_path / "overflowing_scale.delta", encode_delta(dataclasses.replace(
            gamma, base_sha256={"tflite": hashlib.sha256(big).hexdigest()}, sites={"stem": "conv"},
            tensors={"stem/scale": np.full(stem.shape[0], 1e12, np.float32)})))),
        "truncated": (case.base, _write(tmp_path / "truncated.delta", _read(case.delta)[:-1])),
        "corrupted": (case.base, _write(tmp_path / "corrupted.delta", bytes(
            b ^ (1 if i == 700 else 0) for i, b in enumerate(_read(case.delta))))),
    }
    for name, (base, delta) in inputs.items():
        result = patchcli(classpath, "apply", base, delta, str(tmp_path / "out.tflite"))
        try:
            python_patched(base, delta)
            pytest.fail(f"{name}: Python accepted it")
        except EdgepatchError as error:
            expected = f"error: {type(error).__name__.replace('Error', 'Exception')}: {error}"
        assert (result.returncode, result.stderr.strip()) == (1, expected), name
        assert not os.path.exists(tmp_path / "out.tflite"), name


def test_cli_usage_errors_exit_2(classpath):
    result = patchcli(classpath, "apply", "only-one-argument")
    assert result.returncode == 2
    assert result.stderr.startswith("usage: patchcli apply BASE.tflite TASK.delta OUT.tflite")


@pytest.fixture(scope="module")
def int8_ships(small_ship, tmp_path_factory) -> dict[str, tuple[str, str]]:
    """small_ship's gamma converted to int8, once per delta mode: mode -> (int8 base, int8 delta)."""
    from helpers.models import write_calibration

    from converters.convert import convert

    ship, _ = small_ship
    root = tmp_path_factory.mktemp("android_int8")
    write_calibration(str(root), ("base", "gamma"))
    ships = {}
    for mode in ("exact", "compact"):
        convert(str(ship.parent / "base.keras"), [str(ship.parent / "gamma.patch")], str(root / mode),
                formats=("tflite",), quantize="int8", calibration_dir=str(root / "calibration"), int8_delta=mode)
        ships[mode] = (str(root / mode / "base_int8.tflite"), str(root / mode / "gamma.int8.delta"))
    return ships


def python_int8_patched(base: str, delta: str) -> bytes:
    return bytes(TFLiteInt8Base(_read(base), base).patched_bytes(read_int8_delta(delta)))


@pytest.mark.parametrize("mode", ["exact", "compact"])
def test_java_int8_bytes_equal_python_and_run_identically_in_litert(classpath, int8_ships, small_ship, mode,
                                                                      tmp_path):
    from converters.convert import parity_inputs

    base, delta = int8_ships[mode]
    refolds = read_int8_delta(delta).refolds
    assert bool(refolds) == (mode == "compact"), "the compact delta re-folds from codes, the exact one does not"
    java = java_patched(classpath, base, delta, str(tmp_path / "java.tflite"))
    python = python_int8_patched(base, delta)
    assert len(java) == len(python)
    if java != python:
        first = next(i for i, (a, b) in enumerate(zip(java, python)) if a != b)
        pytest.fail(f"int8 {mode}: Java and Python bytes differ first at offset {first}")

    images = parity_inputs(32)
    got = litert_logits(java, images, 3)
    assert np.array_equal(got, litert_logits(python, images, 3))
    assert not np.array_equal(got, litert_logits(_read(base), images, 3)), "the delta changed no output"
    expected = np.asarray(small_ship[1](images, training=False))
    assert np.max(np.abs(got - expected)) <= 0.1 * np.max(np.abs(expected))  # int8 rounding, not a wrong patch


def _resigned(data: bytes) -> bytes:
    return bytes(data[:-32]) + hashlib.sha256(bytes(data[:-32])).digest()


def _int8_mutants(good: bytes, count: int, seed: int) -> dict[str, bytes]:
    """Damaged copies of an int8 delta, each with a valid container: payload bit flips, meta integers
    moved off by one (or far), and extreme scales, bias steps and Rice parameters."""
    from edgepatch.format.container import decode_tensor_file, encode_tensor_file

    rng = np.random.default_rng(seed)
    start = 16 + struct.unpack_from("<I", good, 12)[0]
    mutants = {}
    for i in range(count):
        data = bytearray(good)
        for _ in range(int(rng.integers(1, 4))):
            data[int(rng.integers(start, len(good) - 32))] ^= 1 << int(rng.integers(8))
        mutants[f"flip{i}"] = _resigned(data)
    stored = decode_tensor_file(good, "int8_delta")

    def edited(change) -> bytes:
        meta = json.loads(json.dumps(stored.meta))
        tensors = {name: np.array(array) for name, array in stored.tensors.items()}
        change(meta, tensors)
        return encode_tensor_file("int8_delta", tensors, meta)

    def set_meta(key, row, column, value):
        return lambda meta, tensors: meta[key][row].__setitem__(column, value)

    def set_tensor(name, index, value):
        return lambda meta, tensors: tensors[name].reshape(-1).__setitem__(index, value)

    for key in ("quant", "refold"):
        for row, entry in enumerate(stored.meta[key]):
            for column, value in enumerate(entry):
                for new in {value + 1, max(value - 1, 0), 0, 1 << 40} - {value}:
                    mutants[f"{key}_{row}_{column}_{new}"] = edited(set_meta(key, row, column, new))
    extremes = {"scale": (0, -1, 1e-30, 1e30, 3e38), "refold/bias_step": (1e-30, 1e30, 3e38, -1),
                "refold/rice_k": (0, 15, 16)}
    for name, values in extremes.items():
        for index in range(stored.tensors[name].size):
            for value in values:
                mutants[f"{name.replace('/', '_')}_{index}_{value}"] = edited(set_tensor(name, index, value))
    return mutants


def _python_int8_outcome(base: TFLiteInt8Base, path: str) -> dict:
    try:
        return {"sha256": hashlib.sha256(base.patched_bytes(read_task_delta(path))).hexdigest()}
    except EdgepatchError as error:
        return {"error": type(error).__name__.replace("Error", "Exception"), "message": str(error)}
    except Exception as error:  # noqa: BLE001 - a Python bug, reported below, not a Java one
        return {"python_crash": f"{type(error).__name__}: {error}"}


def test_java_gives_pythons_outcome_for_damaged_int8_deltas(classpath, int8_ships, tmp_path):
    base_path, delta = int8_ships["compact"]
    mutants = _int8_mutants(_read(delta), count=300, seed=3)
    paths = [_write(tmp_path / f"{name}.delta", data) for name, data in mutants.items()]
    result = patchcli(classpath, "verify", "--base", base_path, *paths)
    lines = [json.loads(line) for line in result.stdout.splitlines()]
    assert [line["file"] for line in lines] == paths, result.stderr
    base = TFLiteInt8Base(_read(base_path), base_path)
    mismatches, crashes, outcomes, messages = [], [], set(), []
    for path, java in zip(paths, lines):
        python = _python_int8_outcome(base, path)
        java_outcome = {k: java[k] for k in ("error", "message") if k in java} or {"sha256": java["sha256"]}
        if "python_crash" in python:
            crashes.append(os.path.basename(path))
            if "error" not in java:
                mismatches.append(f"{os.path.basename(path)}: Python crashed ({python}), Java accepted it")
        elif java_outcome != python:
            mismatches.append(f"{os.path.basename(path)}:\n  Python {python}\n  Java   {java_outcome}")
        outcomes.add(python.get("error", "applied" if "sha256" in python else "crash"))
        messages.append(python.get("message", python.get("python_crash", "applied")))
    assert not mismatches, "\n".join(mismatches[:10])
    # The damage reaches every stage: header rules and Rice codes, shapes, recomputed scales, and applying.
    assert {"HeaderException", "ShapeMismatchException", "NonFiniteException", "applied"} <= outcomes, outcomes
    assert len(crashes) <= len(paths) // 10, crashes


def test_java_rejects_mixed_kinds_and_a_wrong_int8_base(classpath, cases, int8_ships, tmp_path):
    float_base, float_delta = cases["sb_fp32"].base, cases["sb_fp32"].delta
    exact_base, exact_delta = int8_ships["exact"]
    # Another int8 base: one weight byte changed (conversion is deterministic, so both ships share one base).
    other = bytearray(_read(int8_ships["compact"][0]))
    largest = max(parse_tflite(bytes(other), "other").tensors, key=lambda t: t.data_size if t.data_offset else 0)
    other[largest.data_offset] ^= 1
    compact_base = _write(tmp_path / "other_int8.tflite", bytes(other))
    out = str(tmp_path / "out.tflite")
    expected = {
        (exact_base, float_delta): f"error: WrongBaseException: float delta for task 'gamma' needs a float base; "
                                   f"{exact_base} is an int8 base (it takes int8 deltas)",
        (float_base, exact_delta): f"error: WrongBaseException: int8 delta for task 'gamma' needs an int8 base; "
                                   f"{float_base} is a float base (it takes float deltas)",
    }
    try:
        python_int8_patched(compact_base, exact_delta)
        pytest.fail("Python applied an int8 delta to another int8 base")
    except EdgepatchError as error:
        expected[(compact_base, exact_delta)] = f"error: {type(error).__name__.replace('Error', 'Exception')}: {error}"
    for (base, delta), message in expected.items():
        result = patchcli(classpath, "apply", base, delta, out)
        assert (result.returncode, result.stderr.strip()) == (1, message)
