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
    # The small base's kernel values are all below 1, where no finite float32 scale can overflow;
    # a base with the stem kernel times 8 (a conv: output channels on axis 0 in both layouts) has some.
    original = load_base(path)
    data, slot = bytearray(original.bytes), original.sites["stem"].kernel
    kernel = np.frombuffer(data, np.float32, slot.count, slot.offset).reshape(slot.shape[0], -1)
    kernel *= 8
    first = int(np.flatnonzero(np.abs(kernel).max(axis=1) > 1)[0])
    base = BASES[kind](bytes(data), "big.base")
    scale = np.full(slot.shape[0], np.finfo(np.float32).max, np.float32)
    tensors, sites = {**delta.tensors, "stem/scale": scale}, {**delta.sites, "stem": "conv"}
    patched = dataclasses.replace(delta, tensors=tensors, sites=sites, base_sha256={fmt: base.sha256})
    with pytest.raises(NonFiniteError) as error:
        base.apply(patched)
    assert str(error.value) == f"`stem/scale`: channel {first} times the base kernel of big.base overflows float32"
    tiny = np.full(slot.shape[0], 1e-30, np.float32)  # the product only underflows towards 0
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
