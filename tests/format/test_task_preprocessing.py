"""Per-channel preprocessing in meta.task (format version 2), and version 1 files still read."""

from __future__ import annotations

import json
import os
import struct

import numpy as np
import pytest
from conftest import REPO

from edgepatch.errors import DeltaFormatError, HeaderError, UsageError
from edgepatch.format.container import FORMAT_VERSION, READABLE_VERSIONS, decode_tensor_file, encode_tensor_file
from edgepatch.format.delta import decode_delta, encode_delta, read_delta
from edgepatch.format.task import Preprocessing, TaskInfo, task_from_json, task_to_json

TESTDATA = os.path.join(REPO, "android_demo", "patchloader", "testdata")
CAFFE = Preprocessing(1.0, (-103.939, -116.779, -123.68), "bgr")


def _task(pre) -> dict:
    return {"name": "t", "classes": ["a", "b"], "resolution": 32, "preprocessing": pre}


def test_versions():
    assert (FORMAT_VERSION, READABLE_VERSIONS) == (2, (1, 2))


def test_uniform_constructor_normalises_to_three_channels():
    pre = Preprocessing(1 / 127.5, -1.0)
    assert pre == Preprocessing((1 / 127.5,) * 3, [-1.0, -1.0, -1.0], "rgb")
    assert pre.scale == (1 / 127.5,) * 3 and pre.offset == (-1.0,) * 3 and pre.channels == "rgb"
    assert isinstance(hash(pre), int)  # still usable as a key


def test_apply_reorders_then_scales_per_channel_in_float32():
    pixels = np.random.default_rng(0).integers(0, 256, (2, 4, 4, 3)).astype(np.uint8)
    out = CAFFE.apply(pixels)
    assert out.dtype == np.float32 and out.shape == pixels.shape
    expected = pixels[..., ::-1].astype(np.float32) + np.array([-103.939, -116.779, -123.68], np.float32)
    assert np.array_equal(out, expected)
    torch_like = Preprocessing((0.5, 2.0, 4.0), (1.0, 2.0, 3.0))
    assert np.array_equal(torch_like.apply(np.array([10, 20, 30], np.uint8)), np.array([6, 42, 123], np.float32))


def test_uniform_apply_is_bit_identical_to_the_scalar_rule():
    pixels = np.random.default_rng(1).integers(0, 256, (8, 8, 3)).astype(np.float32)
    assert np.array_equal(Preprocessing(1 / 127.5, -1.0).apply(pixels), pixels * (1 / 127.5) + -1.0)


def test_json_form_round_trips():
    task = TaskInfo("t", ("a", "b"), 32, CAFFE)
    as_json = task_to_json(task)
    assert as_json["preprocessing"] == {"channels": "bgr", "offset": [-103.939, -116.779, -123.68],
                                        "resize": "bilinear", "scale": [1.0, 1.0, 1.0]}
    assert task_from_json(json.loads(json.dumps(as_json))) == task


BAD = [
    ({"channels": "BGR", "offset": [0, 0, 0], "scale": [1, 1, 1]},
     "meta.task.preprocessing.channels must be one of 'rgb', 'bgr', got 'BGR'"),
    ({"channels": ["rgb"], "offset": [0, 0, 0], "scale": [1, 1, 1]},
     "meta.task.preprocessing.channels must be one of 'rgb', 'bgr', got ['rgb']"),
    ({"channels": "rgb", "offset": [0, 0, 0], "scale": 1.0},
     "meta.task.preprocessing.scale must be an array of 3 numbers, got 1.0"),
    ({"channels": "rgb", "offset": [0, 0], "scale": [1, 1, 1]},
     "meta.task.preprocessing.offset must be an array of 3 numbers, got [0, 0]"),
    ({"channels": "rgb", "offset": [0, 0, 0], "scale": [1, 0.0, 1]},
     "meta.task.preprocessing.scale[1] must have 1e-30 <= |scale| <= 1e6, got 0.0"),
    ({"channels": "rgb", "offset": [0, 0, 0], "scale": [1, 1, 5e-324]},
     "meta.task.preprocessing.scale[2] must have 1e-30 <= |scale| <= 1e6, got 5e-324"),
    ({"channels": "rgb", "offset": [0, 0, 0], "scale": [-2e6, 1, 1]},
     "meta.task.preprocessing.scale[0] must have 1e-30 <= |scale| <= 1e6, got -2000000.0"),
    ({"channels": "rgb", "offset": [0, 0, -1e7], "scale": [1, 1, 1]},
     "meta.task.preprocessing.offset[2] must have |offset| <= 1e6, got -10000000.0"),
    ({"channels": "rgb", "offset": [0, "0", 0], "scale": [1, 1, 1]},
     "meta.task.preprocessing.offset[1] must be a finite number, got '0'"),
    ({"channels": "rgb", "offset": [0, 0, 0], "scale": [1, 10 ** 400, 1]},
     f"meta.task.preprocessing.scale[1] must be a finite number, got {str(10 ** 400)[:77]}..."),
    ({"offset": [0, 0, 0], "scale": [1, 1, 1]}, "meta.task.preprocessing is missing key 'channels'"),
    ({"channels": "rgb", "offset": [0, 0, 0], "resize": "nearest", "scale": [1, 1, 1]},
     "meta.task.preprocessing.resize must be one of 'bilinear', got 'nearest'"),
    ({"channels": "rgb", "offset": [0, 0, 0], "resize": ["bilinear"], "scale": [0, 1, 1]},  # resize before scale
     "meta.task.preprocessing.resize must be one of 'bilinear', got ['bilinear']"),
    ({"channels": "bgr!", "offset": [0, 0, 0], "resize": None, "scale": [1, 1, 1]},  # channels before resize
     "meta.task.preprocessing.channels must be one of 'rgb', 'bgr', got 'bgr!'"),
    ({"channels": "rgb", "offset": [0, 0, 0], "resize": "bilinear", "scale": [1, 1, 1], "zoom": 2},
     "meta.task.preprocessing has unknown key 'zoom'"),
]


@pytest.mark.parametrize("pre,message", BAD, ids=[m.split(" must")[0].split(" is ")[0] + str(i)
                                                  for i, (_, m) in enumerate(BAD)])
def test_bad_preprocessing_is_one_exact_header_error(pre, message):
    with pytest.raises(HeaderError) as caught:
        task_from_json(_task(pre), "x.delta")
    assert str(caught.value) == f"x.delta: {message}"


def test_the_writer_refuses_what_the_reader_refuses():
    with pytest.raises(HeaderError) as caught:
        task_to_json(TaskInfo("t", ("a",), 32, Preprocessing(0.0, 0.0)), "w.patch")
    assert str(caught.value) == "w.patch: meta.task.preprocessing.scale[0] must have 1e-30 <= |scale| <= 1e6, got 0.0"
    with pytest.raises(HeaderError) as caught:
        task_to_json(TaskInfo("t", ("a",), 32, Preprocessing(1.0, 0.0, "rgba")), "w.patch")
    assert str(caught.value) == "w.patch: meta.task.preprocessing.channels must be one of 'rgb', 'bgr', got 'rgba'"
    with pytest.raises(HeaderError) as caught:
        task_to_json(TaskInfo("t", ("a",), 32, Preprocessing((1.0, 1.0), 0.0)), "w.patch")
    assert str(caught.value) == "w.patch: meta.task.preprocessing.scale must be an array of 3 numbers, got [1.0, 1.0]"


def test_resize_is_recorded_and_defaults_to_bilinear():
    assert CAFFE.resize == "bilinear" and task_to_json(TaskInfo("t", ("a",), 32, CAFFE))["preprocessing"]["resize"] \
        == "bilinear"
    without = {"channels": "rgb", "offset": [0, 0, 0], "scale": [1, 1, 1]}  # a version 2 file written before the key
    assert task_from_json(_task(without), "x.delta").preprocessing.resize == "bilinear"
    assert task_from_json(_task({"offset": 0, "scale": 1}), "old.delta", version=1).preprocessing.resize == "bilinear"
    with pytest.raises(HeaderError) as caught:  # a version 1 file has no resize key: bilinear is implied
        task_from_json(_task({"offset": 0, "resize": "bilinear", "scale": 1}), "old.delta", version=1)
    assert str(caught.value) == "old.delta: meta.task.preprocessing has unknown key 'resize'"
    with pytest.raises(HeaderError) as caught:
        task_to_json(TaskInfo("t", ("a",), 32, Preprocessing(1.0, 0.0, "rgb", "area")), "w.patch")
    assert str(caught.value) == "w.patch: meta.task.preprocessing.resize must be one of 'bilinear', got 'area'"


def test_version_1_task_is_scalar_and_rgb():
    v1 = _task({"offset": -1.0, "scale": 0.0078125})
    assert task_from_json(v1, "old.delta", version=1) == TaskInfo("t", ("a", "b"), 32, Preprocessing(0.0078125, -1.0))
    with pytest.raises(HeaderError) as caught:  # a version 2 form is not valid in a version 1 file
        task_from_json(_task({"channels": "rgb", "offset": -1.0, "scale": 0.0078125}), "old.delta", version=1)
    assert str(caught.value) == "old.delta: meta.task.preprocessing has unknown key 'channels'"
    with pytest.raises(HeaderError) as caught:
        task_from_json(_task({"offset": -1.0, "scale": 0}), "old.delta", version=1)
    assert str(caught.value) == "old.delta: meta.task.preprocessing.scale must have 1e-30 <= |scale| <= 1e6, got 0"
    with pytest.raises(HeaderError) as caught:  # and a version 1 form is not valid in a version 2 file
        task_from_json(v1, "new.delta")
    assert str(caught.value) == "new.delta: meta.task.preprocessing is missing key 'channels'"


def test_golden_version_1_delta_reads_as_its_version_2_twin():
    old, new = read_delta(os.path.join(TESTDATA, "gamma_v1.delta")), read_delta(os.path.join(TESTDATA, "gamma.delta"))
    with open(os.path.join(TESTDATA, "gamma_v1.delta"), "rb") as handle:
        assert struct.unpack_from("<I", handle.read(12), 8)[0] == 1
    assert old == new and old.task.preprocessing == Preprocessing(1 / 127.5, -1.0)


def test_encoder_writes_version_2_and_can_write_version_1_for_test_data():
    meta = {"x": 1}
    current = encode_tensor_file("patch", {}, meta)
    assert struct.unpack_from("<I", current, 8)[0] == 2 and decode_tensor_file(current, "patch").version == 2
    old = encode_tensor_file("patch", {}, meta, version=1)
    assert struct.unpack_from("<I", old, 8)[0] == 1 and decode_tensor_file(old, "patch").version == 1
    with pytest.raises(UsageError) as caught:
        encode_tensor_file("patch", {}, meta, "p", version=3)
    assert str(caught.value) == "p: version must be one of [1, 2]; received version=3"


def test_a_version_1_reader_would_refuse_a_new_file_at_the_version_check():
    data = bytearray(encode_delta(read_delta(os.path.join(TESTDATA, "gamma.delta"))))
    data[8:12] = struct.pack("<I", 3)
    with pytest.raises(DeltaFormatError) as caught:
        decode_delta(bytes(data), "future.delta")
    assert str(caught.value) == "future.delta: unsupported format version: expected 1 or 2, got 3"


def test_version_1_int8_delta_reads_too():
    from edgepatch.format.int8_delta import FILE_KIND, decode_int8_delta

    with open(os.path.join(TESTDATA, "gamma_compact.int8.delta"), "rb") as handle:
        current = handle.read()
    stored = decode_tensor_file(current, FILE_KIND)
    meta = json.loads(json.dumps(stored.meta))
    meta["task"]["preprocessing"] = {"offset": -1.0, "scale": 1 / 127.5}
    old = encode_tensor_file(FILE_KIND, dict(stored.tensors), meta, version=1)
    new_delta, old_delta = decode_int8_delta(current), decode_int8_delta(old, "old.int8.delta")
    assert old_delta.task == new_delta.task and old_delta.quant == new_delta.quant
    assert old_delta.refolds[0].bias_step == new_delta.refolds[0].bias_step
