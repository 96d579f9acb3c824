"""int8 deltas that are well-formed but lie: what LiteRT refuses comes back as a typed error, never a crash.

The corpus (tests/corpus) pins the reader's and the loader's own checks; here the interpreter's.
"""

from __future__ import annotations

import dataclasses
import os

import numpy as np
import pytest
from conftest import REPO

from edgepatch.errors import BaseModelError, EdgepatchError
from edgepatch.format.int8_delta import decode_int8_delta
from edgepatch.runtime.tflite_int8 import TFLiteInt8Base

TESTDATA = os.path.join(REPO, "android_demo", "patchloader", "testdata")


def _read(name: str) -> bytes:
    with open(os.path.join(TESTDATA, name), "rb") as handle:
        return handle.read()


@pytest.fixture(scope="module")
def exact():
    return TFLiteInt8Base(_read("base_int8_exact.tflite"), "base_int8_exact.tflite"), decode_int8_delta(
        _read("gamma_exact.int8.delta"), "gamma_exact.int8.delta")


def _scale_position(delta, tensor: int) -> int:
    position = 0
    for index, scales, _ in delta.quant:
        if index == tensor:
            return position
        position += scales
    raise AssertionError(f"tensor {tensor} has no scales in the delta")


def test_an_interpreter_refusal_is_a_base_model_error(exact):
    base, delta = exact
    pool = next(op for op in base.model.ops if op.opcode == "MAX_POOL_2D")  # its input and output share a scale
    scales = np.array(delta.scales)
    scales[_scale_position(delta, pool.inputs[0])] *= 2  # within the bounds and the ratio, but unequal
    with pytest.raises(BaseModelError) as error:
        base.apply(dataclasses.replace(delta, scales=scales))
    message = str(error.value)
    assert message.startswith("LiteRT could not allocate the model of task 'gamma': ") and "\n" not in message


def test_random_in_bounds_activation_scales_never_crash(exact):
    base, delta = exact
    rng = np.random.default_rng(0)
    activations = [i for i, (index, scales, _) in enumerate(delta.quant)
                   if scales and base.model.tensors[index].data_offset is None]
    outcomes = set()
    for _ in range(20):
        scales = np.array(delta.scales)
        for entry in rng.choice(activations, 2, replace=False):
            scales[_scale_position(delta, delta.quant[entry][0])] *= np.float32(rng.choice([1 / 50, 50]))
        try:
            runner = base.apply(dataclasses.replace(delta, scales=scales))
            assert np.all(np.isfinite(runner.predict(np.ones((1, 32, 32, 3), np.float32))))
            outcomes.add("ran")
        except EdgepatchError as error:
            outcomes.add(type(error).__name__)
    assert "BaseModelError" in outcomes  # the interpreter refused some, as a typed error
