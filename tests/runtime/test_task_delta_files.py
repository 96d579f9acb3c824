"""A task delta, float or int8, is read and verified once (runtime/files.py); `inspect` describes both."""

import numpy as np
import pytest

from edgepatch.apps.inspect import describe_file
from edgepatch.errors import HeaderError
from edgepatch.format import container
from edgepatch.format.delta import Delta, Preprocessing, TaskInfo, write_delta
from edgepatch.format.int8_delta import Int8Delta, Refold, write_int8_delta
from edgepatch.format.container import write_tensor_file
from edgepatch.runtime import read_task_delta

TASK = TaskInfo("kappa", ("a", "b", "c"), 32, Preprocessing(1 / 127.5, -1.0))
UNIFORM_TF = {"channels": "rgb", "scale": [1 / 127.5] * 3, "offset": [-1.0] * 3}  # as inspect shows it
INT8_BASE_SHA = "ab" * 32


def float_delta() -> Delta:
    return Delta(task=TASK, kinds=("scale_bias",), base_sha256={"tflite": "cd" * 32}, sites={"logits": "dense"},
                 tensors={"logits/scale": np.array([1.5, 2.0, 0.5], np.float32),
                          "logits/bias": np.array([0.1, 0.2, 0.3], np.float32)})


def int8_delta() -> Int8Delta:
    refold = Refold(weight=5, bias=6, input=2, scale_codes=np.array([1, -2], np.int16),
                    bias_codes=np.array([0, 3], np.int16), bias_step=0.25)
    return Int8Delta(task=TASK, base_sha256=INT8_BASE_SHA, quant=((3, 2, 0), (9, 1, 1)),
                     scales=np.array([0.5, 0.25, 0.125], np.float32), zero_points=np.array([-3], np.int32),
                     data={4: np.arange(8, dtype=np.uint8)},
                     edits={7: (np.array([1, 5], np.int32), np.array([9, 10], np.uint8))}, refolds=(refold,))


@pytest.fixture
def reads(monkeypatch):
    """Counts how often a file's bytes are read (every reader goes through container.read_bytes)."""
    calls = []
    original = container.read_bytes

    def counting(path):
        calls.append(str(path))
        return original(path)

    monkeypatch.setattr(container, "read_bytes", counting)
    return calls


@pytest.mark.parametrize("make, write, kind", [(float_delta, write_delta, Delta),
                                               (int8_delta, write_int8_delta, Int8Delta)])
def test_a_task_delta_is_read_once(tmp_path, reads, make, write, kind):
    path = tmp_path / "task.delta"
    write(str(path), make())
    delta = read_task_delta(str(path))
    assert isinstance(delta, kind) and delta.task == TASK
    assert reads == [str(path)]


def test_a_file_of_another_kind_is_refused_after_one_read(tmp_path, reads):
    path = tmp_path / "x.delta"
    write_tensor_file(str(path), "patch", {}, {})
    with pytest.raises(HeaderError) as error:
        read_task_delta(str(path))
    assert str(error.value) == f"{path}: file_kind: expected one of delta, int8_delta, got 'patch'"
    assert reads == [str(path)]


def test_inspect_describes_an_int8_delta(tmp_path, reads):
    path = tmp_path / "kappa.int8.delta"
    size = write_int8_delta(str(path), int8_delta())
    (tmp_path / "base_int8.tflite").write_bytes(bytes(4 * size))
    info = describe_file(str(path))
    assert info == {
        "kind": "int8_delta", "path": str(path), "task": "kappa", "classes": ["a", "b", "c"], "resolution": 32,
        "preprocessing": UNIFORM_TF,
        "kinds": ["int8"], "dtype": ["float32", "int32", "uint8"], "quant_tensors": 2, "data_tensors": 1,
        "edited_tensors": 1, "refolds": 1, "bytes": size, "base_sha256": {"tflite_int8": INT8_BASE_SHA},
        "base": str(tmp_path / "base_int8.tflite"), "base_bytes": 4 * size, "percent_of_base": 25.0,
    }
    assert reads == [str(path)]


def test_inspect_describes_a_float_delta_from_one_read(tmp_path, reads):
    path = tmp_path / "kappa.delta"
    size = write_delta(str(path), float_delta(), "float16")
    info = describe_file(str(path))
    assert info == {
        "kind": "delta", "path": str(path), "task": "kappa", "classes": ["a", "b", "c"], "resolution": 32,
        "preprocessing": UNIFORM_TF,
        "kinds": ["scale_bias"], "dtype": ["float16"], "sites": 1, "tensors": 2, "parameters": 6,
        "parameters_by_role": {"scale": 3, "bias": 3}, "parameters_by_site": {"logits": 6}, "bytes": size,
        "base_sha256": {"tflite": "cd" * 32},
    }
    assert reads == [str(path)]


def test_inspect_shows_per_channel_preprocessing_in_one_human_line(tmp_path):
    import dataclasses

    from edgepatch.apps.inspect import render

    caffe = TaskInfo("kappa", ("a", "b", "c"), 32, Preprocessing(1.0, (-103.939, -116.779, -123.68), "bgr"))
    path = tmp_path / "kappa.delta"
    write_delta(str(path), dataclasses.replace(float_delta(), task=caffe))
    info = describe_file(str(path))
    assert info["preprocessing"] == {"channels": "bgr", "scale": [1.0] * 3, "offset": [-103.939, -116.779, -123.68]}
    assert "  preprocessing: bgr, input = pixel * [1, 1, 1] + [-103.939, -116.779, -123.68]" in render(info).split("\n")
