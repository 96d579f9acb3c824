"""Bad deltas meet the runtime: each gets its own typed error with an exact message."""

from __future__ import annotations

import dataclasses
import os
import shutil

import numpy as np
import pytest

from edgepatch.format.delta import read_delta, write_delta
from edgepatch.errors import (
    ChecksumMismatchError,
    MissingFileError,
    NonFiniteError,
    ShapeMismatchError,
    TruncatedFileError,
    WrongBaseError,
)
from edgepatch.runtime import OnnxBase, TFLiteBase, load_base

FORMATS = ["tflite", "onnx"]


@pytest.fixture()
def delta_copy(small_ship, tmp_path):
    ship, _ = small_ship
    path = tmp_path / "gamma.delta"
    shutil.copy(ship / "gamma.delta", path)
    return path


def test_truncated_delta(delta_copy):
    data = delta_copy.read_bytes()
    delta_copy.write_bytes(data[:-40])
    with pytest.raises(TruncatedFileError) as error:
        read_delta(str(delta_copy))
    size = len(data) - 40
    assert str(error.value).startswith(f"{delta_copy}: truncated: file is {size} bytes, expected {len(data)} = 16 + header_len")


def test_flipped_payload_byte(delta_copy):
    data = bytearray(delta_copy.read_bytes())
    data[-100] ^= 0x01
    delta_copy.write_bytes(bytes(data))
    with pytest.raises(ChecksumMismatchError) as error:
        read_delta(str(delta_copy))
    assert str(error.value).startswith(f"{delta_copy}: sha256 mismatch: trailer says ")


@pytest.mark.parametrize("fmt", FORMATS)
def test_delta_for_another_base(small_ship, fmt, tmp_path):
    ship, _ = small_ship
    delta = read_delta(str(ship / "gamma.delta"))
    other = dataclasses.replace(delta, base_sha256={k: "ab" * 32 for k in delta.base_sha256})
    base = load_base(str(ship / f"base.{fmt}"))
    with pytest.raises(WrongBaseError) as error:
        base.apply(other)
    assert str(error.value) == (
        f"delta for task 'gamma' was made for {fmt} base sha256 abababababababab…, "
        f"but {ship / f'base.{fmt}'} has sha256 {base.sha256[:16]}…"
    )


@pytest.mark.parametrize("fmt", FORMATS)
def test_tensor_of_the_wrong_shape(small_ship, fmt):
    ship, _ = small_ship
    delta = read_delta(str(ship / "gamma.delta"))
    tensors = dict(delta.tensors)
    tensors["pw/scale"] = np.ones(5, np.float32)
    tensors["pw/bias"] = np.zeros(5, np.float32)
    base = load_base(str(ship / f"base.{fmt}"))
    with pytest.raises(ShapeMismatchError) as error:
        base.apply(dataclasses.replace(delta, tensors=tensors))
    assert str(error.value) == f"`pw/scale`: delta has 5 channels, base {ship / f'base.{fmt}'} has 8"


BASES = {
    "tflite": lambda data, source: TFLiteBase(data, source),
    "onnx": lambda data, source: OnnxBase(data, source),
    "onnx-adapter": lambda data, source: OnnxBase(data, source, swap_mode="adapter"),
}


@pytest.mark.parametrize("kind", BASES)
def test_finite_scale_that_overflows_the_refold(small_ship, kind):
    ship, _ = small_ship
    delta = read_delta(str(ship / "gamma.delta"))
    fmt = kind.split("-")[0]
    path = str(ship / f"base.{fmt}")
    # Site scales are at most 1e12 (the spec's bound), and the small base's kernel values are below 1,
    # where no allowed scale can overflow; a base with the stem kernel times 1e28 (a conv: output
    # channels on axis 0 in both layouts) has some.
    original = load_base(path)
    data, slot = bytearray(original.bytes), original.sites["stem"].kernel
    kernel = np.frombuffer(data, np.float32, slot.count, slot.offset).reshape(slot.shape[0], -1)
    kernel *= np.float32(1e28)
    scale = np.full(slot.shape[0], 1e12, np.float32)
    first = int(np.flatnonzero(np.abs(kernel).max(axis=1) * np.float64(scale[0]) > np.finfo(np.float32).max)[0])
    base = BASES[kind](bytes(data), "big.base")
    tensors, sites = {**delta.tensors, "stem/scale": scale}, {**delta.sites, "stem": "conv"}
    patched = dataclasses.replace(delta, tensors=tensors, sites=sites, base_sha256={fmt: base.sha256})
    with pytest.raises(NonFiniteError) as error:
        base.apply(patched)
    assert str(error.value) == f"`stem/scale`: channel {first} times the base kernel of big.base overflows float32"
    base = BASES[kind](original.bytes, path)
    patched = dataclasses.replace(patched, base_sha256={fmt: base.sha256})
    for lie in (0.0, 1e-40, 1e-13, -2e12):  # zero, denormal, below and above the spec's bounds
        scale = np.full(slot.shape[0], lie, np.float32)
        with pytest.raises(NonFiniteError) as error:
            base.apply(dataclasses.replace(patched, tensors={**tensors, "stem/scale": scale}))
        assert str(error.value) == ("`stem/scale`: channel 0 has a scale outside 1e-12 <= |scale| <= 1e12 "
                                    "(zero, denormal or huge)")
    tiny = np.full(slot.shape[0], 2e-12, np.float32)  # near the smallest scale allowed: the product stays finite
    runner = base.apply(dataclasses.replace(patched, tensors={**tensors, "stem/scale": tiny}))
    size = delta.task.resolution
    assert np.all(np.isfinite(runner.predict(np.ones((1, size, size, 3), np.float32))))


@pytest.mark.parametrize("kind", BASES)
def test_weights_that_overflow_activations_fail_at_predict(small_ship, kind):
    ship, _ = small_ship
    delta = read_delta(str(ship / "gamma.delta"))
    path = str(ship / f"base.{kind.split('-')[0]}")
    huge = np.full(delta.tensors["pw/bias"].shape, np.finfo(np.float32).max, np.float32)
    runner = BASES[kind](open(path, "rb").read(), path).apply(
        dataclasses.replace(delta, tensors={**delta.tensors, "pw/bias": huge}))  # finite: a valid delta
    size = delta.task.resolution
    with pytest.raises(NonFiniteError) as error:
        runner.predict(np.ones((2, size, size, 3), np.float32))
    assert str(error.value) == ("task 'gamma' computed NaN or Inf logits for 2 of 2 images: "
                                "its weights overflow float32 at run time")


def test_missing_files(small_ship, tmp_path):
    ship, _ = small_ship
    with pytest.raises(MissingFileError) as error:
        read_delta(str(tmp_path / "absent.delta"))
    assert str(error.value) == f"{tmp_path / 'absent.delta'}: no such file"
    with pytest.raises(MissingFileError) as error:
        load_base(str(tmp_path / "absent.tflite"))
    assert str(error.value) == f"base model '{tmp_path / 'absent.tflite'}' does not exist"


def test_rewritten_delta_roundtrip_still_applies(small_ship, tmp_path):
    ship, task_model = small_ship
    path = tmp_path / "again.delta"
    write_delta(str(path), read_delta(str(ship / "gamma.delta")))
    assert path.read_bytes() == (ship / "gamma.delta").read_bytes()
    assert os.path.getsize(path) > 0


@pytest.mark.parametrize("make, reason", [(lambda p: os.mkfifo(p), "is not a regular file"),
                                          (lambda p: os.mkdir(p), "is a directory, not a file")])
def test_a_base_that_is_not_a_regular_file_is_refused_without_blocking(tmp_path, make, reason):
    from edgepatch.runtime import load_base

    path = tmp_path / "base.tflite"
    make(str(path))
    with pytest.raises(MissingFileError) as error:
        load_base(str(path))
    assert str(error.value) == f"{path}: {reason}"


@pytest.mark.parametrize("kind", BASES)
def test_more_classes_than_the_base_head_is_refused(small_ship, kind):
    ship, _ = small_ship
    delta = read_delta(str(ship / "gamma.delta"))
    path = str(ship / f"base.{kind.split('-')[0]}")
    base = BASES[kind](open(path, "rb").read(), path)
    no_head = {name: op for name, op in delta.sites.items() if op != "dense"}
    tensors = {name: value for name, value in delta.tensors.items() if name.split("/")[0] in no_head}
    four = dataclasses.replace(delta.task, classes=("a", "b", "c", "ghost"))  # the base head has 3 outputs
    with pytest.raises(ShapeMismatchError) as error:
        base.apply(dataclasses.replace(delta, task=four, sites=no_head, tensors=tensors))
    assert str(error.value) == f"task 'gamma' has 4 classes, but the head of {path} has 3 outputs"
    two = dataclasses.replace(delta.task, classes=("a", "b"))  # fewer: the base head's first two outputs
    runner = base.apply(dataclasses.replace(delta, task=two, sites=no_head, tensors=tensors))
    size = delta.task.resolution
    assert runner.predict(np.ones((1, size, size, 3), np.float32)).shape == (1, 2)


def test_a_delta_whose_head_disagrees_with_its_classes_cannot_be_written(small_ship, tmp_path):
    ship, _ = small_ship
    delta = read_delta(str(ship / "gamma.delta"))
    for classes in (("a", "b"), ("a", "b", "c", "ghost")):
        lie = dataclasses.replace(delta, task=dataclasses.replace(delta.task, classes=classes))
        with pytest.raises(ShapeMismatchError) as error:
            write_delta(tmp_path / "lie.delta", lie)
        assert str(error.value) == (f"{tmp_path / 'lie.delta'}: site 'classifier' is the task's head with 3 "
                                    f"outputs, but meta.task.classes names {len(classes)} classes")
    assert not (tmp_path / "lie.delta").exists()


def test_a_runner_that_computes_fewer_outputs_than_classes_is_refused():
    from edgepatch.format.task import Preprocessing, TaskInfo
    from edgepatch.runtime.runner import TaskRunner

    class Narrow(TaskRunner):
        def _run(self, images):
            return np.zeros((len(images), 2), np.float32)

    runner = Narrow(TaskInfo("t", ("a", "b", "c"), 8, Preprocessing(1.0, 0.0)), 0.0)
    with pytest.raises(ShapeMismatchError) as error:
        runner.predict(np.zeros((1, 8, 8, 3), np.float32))
    assert str(error.value) == "task 't' has 3 classes, but the model computes 2 outputs"


def test_litert_refusing_a_model_is_a_typed_error():
    from edgepatch.errors import BaseModelError
    from edgepatch.runtime.tflite import TFLiteRunner

    with pytest.raises(BaseModelError) as error:
        TFLiteRunner(b"not a tflite model at all", None, 0.0, 1)
    assert str(error.value).startswith("LiteRT could not create an interpreter for the model of the base task: ")
    assert "\n" not in str(error.value)
