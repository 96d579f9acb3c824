"""int8 base + int8 task deltas: exact agreement with each task's own int8 model, sizes, errors."""

from __future__ import annotations

import dataclasses
import os

import numpy as np
import pytest
from conftest import make_patch, small_cnn
from PIL import Image


@pytest.fixture(scope="module")
def int8_ship(tmp_path_factory):
    from converters.convert import convert

    root = tmp_path_factory.mktemp("int8")
    base = small_cnn(num_classes=3)
    base.save(str(root / "base.keras"))
    task = make_patch(base, str(root / "kappa.patch"), "kappa", 3, seed=6)
    rng = np.random.default_rng(1)
    for name in ("base", "kappa"):
        folder = root / "calibration" / name / "any_class"
        folder.mkdir(parents=True)
        for i in range(12):
            Image.fromarray(rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)).save(folder / f"{i}.png")
    result = convert(str(root / "base.keras"), [str(root / "kappa.patch")], str(root / "ship"), formats=("tflite",),
                     quantize="int8", calibration_dir=str(root / "calibration"))
    return root / "ship", task, result


def test_int8_delta_reproduces_the_task_int8_model(int8_ship):
    from edgepatch.runtime import TFLiteInt8Base, load_base, read_task_delta

    ship, task, result = int8_ship
    assert result.int8["deltas"]["kappa"]["max_abs_vs_task_int8"] == 0.0
    base = load_base(str(ship / "base_int8.tflite"))
    assert isinstance(base, TFLiteInt8Base)
    runner = base.apply(read_task_delta(str(ship / "kappa.int8.delta")))
    x = np.random.default_rng(2).uniform(-1, 1, (16, 32, 32, 3)).astype(np.float32)
    expected = np.asarray(task(x, training=False))
    got = runner.predict(x)
    assert np.max(np.abs(got - expected)) <= 0.1 * np.max(np.abs(expected))  # int8 rounding, not a wrong patch
    assert np.mean(np.argmax(got, 1) == np.argmax(expected, 1)) >= 0.8


def test_scale_patch_needs_no_new_conv_weights(int8_ship):
    """Per-channel weight quantization absorbs a positive per-channel scale: conv int8 kernels stay."""
    from edgepatch.runtime import load_base, read_task_delta

    ship, _, result = int8_ship
    assert result.int8["deltas"]["kappa"]["bytes"] == os.path.getsize(ship / "kappa.int8.delta")
    base = load_base(str(ship / "base_int8.tflite"))
    delta = read_task_delta(str(ship / "kappa.int8.delta"))
    conv_kernels = {op.inputs[1] for op in base.model.ops if op.opcode in ("CONV_2D", "DEPTHWISE_CONV_2D")}
    assert delta.data and not conv_kernels & set(delta.data)
    assert {str(base.model.tensors[i].dtype) for i in delta.data} <= {"int32", "int8"}
    assert len(delta.quant) > len(conv_kernels)  # weight scales and the task's activation ranges


def test_int8_delta_for_another_base_is_rejected(int8_ship):
    from edgepatch.errors import WrongBaseError
    from edgepatch.runtime import load_base, read_task_delta

    ship, _, _ = int8_ship
    delta = dataclasses.replace(read_task_delta(str(ship / "kappa.int8.delta")), base_sha256="cd" * 32)
    base = load_base(str(ship / "base_int8.tflite"))
    with pytest.raises(WrongBaseError) as error:
        base.apply(delta)
    assert str(error.value) == (
        f"int8 delta for task 'kappa' was made for base sha256 cdcdcdcdcdcdcdcd…, "
        f"but {ship / 'base_int8.tflite'} has sha256 {base.sha256[:16]}…"
    )


def test_float_delta_is_refused_by_the_int8_reader(int8_ship):
    from edgepatch.errors import HeaderError
    from edgepatch.int8_delta import read_int8_delta

    ship, _, _ = int8_ship
    with pytest.raises(HeaderError) as error:
        read_int8_delta(str(ship / "kappa.delta"))
    assert str(error.value) == f"{ship / 'kappa.delta'}: file_kind: expected 'int8_delta', got 'delta'"
