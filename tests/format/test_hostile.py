"""Hostile files (issue 17): each is refused with its typed error before any large read or allocation."""

from __future__ import annotations

import os
import tracemalloc

import numpy as np
import pytest
from click.testing import CliRunner

from edgepatch.cli.main import main
from edgepatch.errors import DeltaFormatError, HeaderError, MissingFileError
from edgepatch.format.container import MAX_FILE_BYTES, MAX_TENSOR_ELEMENTS, encode_tensor_file
from edgepatch.format.delta import read_delta
from tests.helpers.mutations import join, split

META = {"task": {"name": "t", "classes": ["a", "b"], "resolution": 96,  # the 2-wide head's 2 classes
                 "preprocessing": {"channels": "rgb", "offset": [0.0, 0.0, 0.0], "scale": [1.0, 1.0, 1.0]}},
        "kinds": ["scale_bias"], "base_sha256": {"tflite": "ab" * 32},
        "sites": [["logits", "dense", 2, "bias"]]}
VALID = encode_tensor_file("delta", {"bias": np.ones(2, np.float32)}, META)


def _read_error(tmp_path, data: bytes, error):
    path = tmp_path / "evil.delta"
    path.write_bytes(data)
    with pytest.raises(error) as caught:
        read_delta(path)
    return str(caught.value).replace(str(path), "P")


def refused_with_peak_memory(path):
    """The error read_delta raises for ``path``, and the peak of Python allocations while it ran."""
    tracemalloc.start()
    try:
        with pytest.raises(DeltaFormatError) as caught:
            read_delta(path)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    return caught, peak


def test_zero_size_tensor_with_huge_dimensions_is_refused(tmp_path):
    header, payload, _ = split(VALID)
    header["tensors"][0].update(shape=[0, 1 << 30, 1 << 30, 1 << 30], nbytes=0)
    message = _read_error(tmp_path, join(header, payload), HeaderError)  # trailer recomputed
    assert MAX_TENSOR_ELEMENTS == 1 << 28
    assert message == ("P: tensor 'bias': shape [0, 1073741824, 1073741824, 1073741824] has "
                       "1237940039285380274899124224 elements (zero dimensions counted as 1), "
                       "more than MAX_TENSOR_ELEMENTS (268435456)")


@pytest.mark.parametrize("field, value, expected", [
    ("name", "\ud800", "P: meta.task.name must be a non-empty string, got '\\ud800'"),
    ("classes", ["a\udc00"], "P: meta.task.classes must be a non-empty array of unique non-empty "
                             "strings, got ['a\\udc00']"),
])
def test_unpaired_surrogate_in_task_is_refused(tmp_path, field, value, expected):
    header, payload, _ = split(VALID)
    header["meta"]["task"][field] = value
    assert _read_error(tmp_path, join(header, payload), HeaderError) == expected


def test_junk_gigabyte_is_refused_after_a_few_bytes(tmp_path):
    path = tmp_path / "junk.delta"
    with open(path, "wb") as handle:
        handle.truncate(MAX_FILE_BYTES)  # sparse: the largest size the reader lets through
    caught, peak = refused_with_peak_memory(path)
    assert str(caught.value) == f"{path}: bad magic: expected b'EDGEPTCH', got {bytes(8)!r}"
    assert peak < 1 << 20


def test_size_other_than_the_header_promises_is_refused_before_the_payload_is_read(tmp_path):
    path = tmp_path / "long.delta"
    path.write_bytes(VALID)
    with open(path, "r+b") as handle:
        handle.truncate(MAX_FILE_BYTES)
    caught, peak = refused_with_peak_memory(path)
    assert str(caught.value).startswith(f"{path}: {MAX_FILE_BYTES - len(VALID)} unexpected trailing bytes")
    assert peak < 1 << 20


@pytest.mark.parametrize("path, expected", [
    ("/dev/zero", "/dev/zero: is not a regular file"),
    ("/dev/null", "/dev/null: is not a regular file"),
])
def test_devices_are_refused_without_reading(path, expected):
    if not os.path.exists(path):
        pytest.skip(f"no {path} here")
    with pytest.raises(MissingFileError) as caught:
        read_delta(path)
    assert str(caught.value) == expected


def _surrogate_name() -> bytes:
    header, payload, _ = split(VALID)
    header["meta"]["task"]["name"] = "\ud800"
    return join(header, payload)


def _huge_empty_tensor() -> bytes:
    header, payload, _ = split(VALID)
    header["tensors"][0].update(shape=[0, 1 << 30, 1 << 30, 1 << 30], nbytes=0)
    return join(header, payload)


@pytest.mark.parametrize("make, expected", [
    (_huge_empty_tensor, "MAX_TENSOR_ELEMENTS (268435456)"),
    (_surrogate_name, "meta.task.name must be a non-empty string, got '\\ud800'"),
    (lambda: b"\0" * 4096, "bad magic"),
])
def test_inspect_prints_one_error_line_and_exits_2(tmp_path, make, expected):
    path = tmp_path / "evil.delta"
    path.write_bytes(make())
    result = CliRunner().invoke(main, ["inspect", str(path)])
    lines = result.stderr.splitlines()
    assert (result.exit_code, len(lines), result.stdout) == (2, 1, ""), result.stderr
    assert lines[0].startswith(f"error: {path}: ") and expected in lines[0]
