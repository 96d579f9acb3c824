"""Fast swaps: reused buffers never change a live runner, and ONNX adapter mode matches rebuild."""

from __future__ import annotations

import dataclasses
import gc

import numpy as np
import pytest

from edgepatch.errors import BaseModelError, UsageError
from edgepatch.runtime import OnnxBase, TFLiteBase, read_delta
from edgepatch.runtime.buffers import writable_bytes


def _inputs(resolution=32, count=2, seed=3):
    return np.random.default_rng(seed).uniform(-1, 1, (count, resolution, resolution, 3)).astype(np.float32)


def _other_task(delta):
    """The same task with every scale and bias changed: a second delta for the same base."""
    tensors = {name: value * (1.5 if name.endswith("/scale") else 1.0) + (0.3 if name.endswith("/bias") else 0.0)
               for name, value in delta.tensors.items()}
    return dataclasses.replace(delta, tensors={k: v.astype(np.float32) for k, v in tensors.items()})


BASES = {
    "tflite": lambda ship: TFLiteBase.from_file(str(ship / "base.tflite")),
    "onnx_rebuild": lambda ship: OnnxBase.from_file(str(ship / "base.onnx")),
    "onnx_adapter": lambda ship: OnnxBase.from_file(str(ship / "base.onnx"), swap_mode="adapter"),
}


@pytest.mark.parametrize("kind", sorted(BASES))
def test_live_runners_keep_their_task_while_buffers_are_reused(small_ship, kind):
    ship, keras_model = small_ship
    base = BASES[kind](ship)
    first, second = read_delta(str(ship / "gamma.delta")), None
    second = _other_task(first)
    x = _inputs()
    expected = np.asarray(keras_model(x, training=False))
    keep = base.apply(first)
    for index in range(6):  # more swaps than the pool keeps buffers; old runners die on the way
        runner = base.apply(second if index % 2 == 0 else first)
        del runner
        gc.collect()
    other = base.apply(second)
    assert np.max(np.abs(keep.predict(x) - expected)) <= 1e-4
    assert np.max(np.abs(other.predict(x) - expected)) > 1e-2  # the other task really differs
    assert np.max(np.abs(base.apply(first).predict(x) - expected)) <= 1e-4


def test_adapter_mode_matches_rebuild_mode(small_ship):
    ship, _ = small_ship
    delta = read_delta(str(ship / "gamma.delta"))
    rebuild, adapter = BASES["onnx_rebuild"](ship), BASES["onnx_adapter"](ship)
    for resolution in (32, 48):
        x = _inputs(resolution)
        assert np.max(np.abs(adapter.apply(delta).predict(x) - rebuild.apply(delta).predict(x))) <= 1e-5
        assert np.max(np.abs(adapter.apply(None).predict(x) - rebuild.apply(None).predict(x))) <= 1e-5
    placements = adapter._adapter.placements
    assert {(p.site, p.role) for p in placements} == {(s, r) for s in adapter.sites for r in ("kernel", "bias")}


def test_adapter_swap_builds_no_session(small_ship):
    ship, _ = small_ship
    adapter = BASES["onnx_adapter"](ship)
    session = adapter._adapter.session
    runner = adapter.apply(read_delta(str(ship / "gamma.delta")))
    assert runner._session is session and runner.swap_seconds > 0


def test_tflite_apply_allocates_for_the_task_resolution(small_ship):
    ship, _ = small_ship
    runner = BASES["tflite"](ship).apply(read_delta(str(ship / "gamma.delta")), resolution=48)
    assert runner._shape == (1, 48, 48, 3)


def test_unknown_swap_mode(small_ship):
    ship, _ = small_ship
    with pytest.raises(UsageError) as error:
        OnnxBase.from_file(str(ship / "base.onnx"), swap_mode="lora")
    assert str(error.value) == "ONNX swap mode must be one of ['rebuild', 'adapter']. Received 'lora'"


def test_writable_bytes_is_a_filled_bytes_object():
    data, view = writable_bytes(4096)
    view[:] = (np.arange(4096) % 251).astype(np.uint8)
    assert isinstance(data, bytes) and len(data) == 4096
    assert data == bytes((np.arange(4096) % 251).astype(np.uint8))


def test_rebuild_sessions_come_from_orts_optimized_model(small_ship):
    ship, keras_model = small_ship
    delta = read_delta(str(ship / "gamma.delta"))
    optimized = BASES["onnx_rebuild"](ship)
    as_stored = OnnxBase.from_file(str(ship / "base.onnx"), optimize_once=False)
    assert optimized.layout is not None and as_stored.layout is None
    for resolution in (32, 48):
        x = _inputs(resolution)
        task = optimized.apply(delta).predict(x)
        assert np.max(np.abs(task - as_stored.apply(delta).predict(x))) <= 1e-5
        assert np.max(np.abs(optimized.apply(None).predict(x) - as_stored.apply(None).predict(x))) <= 1e-5
    x = _inputs()  # the Keras task model's own resolution
    expected = np.asarray(keras_model(x, training=False))
    assert np.max(np.abs(optimized.apply(delta).predict(x) - expected)) <= 1e-4


def _refusing_layout(*args):
    raise BaseModelError("base.onnx: ORT optimized the probe differently; cannot map the site weights")


def test_rebuild_falls_back_when_the_optimized_model_cannot_be_mapped(small_ship, monkeypatch):
    ship, keras_model = small_ship
    monkeypatch.setattr("edgepatch.runtime.onnx.optimized_layout", _refusing_layout)
    with pytest.warns(UserWarning) as caught:
        base = BASES["onnx_rebuild"](ship)
    assert str(caught[0].message) == ("base.onnx: ORT optimized the probe differently; cannot map the site weights; "
                                      "rebuild swaps will optimize each task's session again (slower)")
    assert base.layout is None
    x = _inputs()
    got = base.apply(read_delta(str(ship / "gamma.delta"))).predict(x)
    assert np.max(np.abs(got - np.asarray(keras_model(x, training=False)))) <= 1e-4
    with pytest.raises(BaseModelError, match="cannot map the site weights"):
        BASES["onnx_adapter"](ship)
