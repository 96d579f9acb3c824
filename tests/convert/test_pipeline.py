"""End to end: base checkpoint + patches -> convert -> runtime parity with Keras, on two CNNs."""

from __future__ import annotations

import os

import numpy as np
import pytest
from helpers.models import make_patch, set_real_bn_statistics, small_cnn

PARITY = 1e-4


def _mobilenet():
    from edgepatch.train.models import build_classifier

    model = build_classifier(alpha=0.35, resolution=64, weights="none", num_classes=6, seed=0)
    set_real_bn_statistics(model, seed=11)
    return model


def _small_cnn_with_dead_channel():
    model = small_cnn(num_classes=3)
    norm = model.get_layer("stem_norm")
    gamma = np.asarray(norm.gamma).copy()
    gamma[2] = 0.0  # a dead channel in the base: no per-channel ratio exists for it
    norm.gamma.assign(gamma)
    return model


BUILDERS = {"mobilenet_v2": _mobilenet, "small_cnn": _small_cnn_with_dead_channel}


@pytest.fixture(scope="module", params=sorted(BUILDERS))
def converted(request, tmp_path_factory):
    from converters.convert import convert

    root = tmp_path_factory.mktemp(request.param)
    base = BUILDERS[request.param]()
    base_path = str(root / "base.keras")
    base.save(base_path)
    tasks = {
        "alpha": make_patch(base, str(root / "alpha.patch"), "alpha", 4, seed=1),
        "beta": make_patch(base, str(root / "beta.patch"), "beta", 2, seed=2,
                           kinds=("scale_bias", "depthwise", "logits")),
    }
    result = convert(base_path, [str(root / f"{n}.patch") for n in tasks], str(root / "ship"))
    return {"base": base, "tasks": tasks, "result": result, "root": root, "name": request.param}


def _inputs(model, count=3, seed=5):
    size = int(model.inputs[0].shape[1])
    return np.random.default_rng(seed).uniform(-1, 1, (count, size, size, 3)).astype(np.float32)


@pytest.mark.parametrize("fmt", ["tflite", "onnx"])
def test_runtime_matches_keras_task_models(converted, fmt):
    from edgepatch.runtime import load_base, read_delta

    base = load_base(converted["result"].base_files[fmt])
    x = _inputs(converted["base"])
    for name, keras_model in converted["tasks"].items():  # switch tasks on one loaded base
        runner = base.apply(read_delta(converted["result"].deltas[name]))
        expected = np.asarray(keras_model(x, training=False))
        got = runner.predict(x)
        assert got.shape == expected.shape
        assert np.max(np.abs(got - expected)) <= PARITY, (name, fmt)
        assert np.max(np.abs(expected)) > 0.1  # the check is not vacuous
    # Every task replaces the checkpoint's head (6 or 3 classes): the base's head is as wide as the
    # widest task (4), and holds as many of the checkpoint's columns as fit.
    assert converted["result"].head_width == 4
    base_expected = np.asarray(converted["base"](x, training=False))[:, :4]
    base_logits = base.apply(None).predict(x)
    assert base_logits.shape == (len(x), 4)
    assert np.max(np.abs(base_logits[:, : base_expected.shape[1]] - base_expected)) <= PARITY


def test_tasks_really_differ(converted):
    from edgepatch.runtime import load_base, read_delta

    base = load_base(converted["result"].base_files["tflite"])
    x = _inputs(converted["base"])
    alpha = base.apply(read_delta(converted["result"].deltas["alpha"])).predict(x)
    untouched = base.apply(None).predict(x)[:, :4]
    assert np.max(np.abs(alpha - untouched)) > 0.1


def test_delta_size_is_raw_parameters_plus_overhead(converted):
    from edgepatch.format.delta import read_delta

    for path in converted["result"].deltas.values():
        raw = sum(v.nbytes for v in read_delta(path).tensors.values())
        assert os.path.getsize(path) <= 1.1 * raw + 4096


def test_dead_base_channel_ships_a_full_kernel(converted):
    if converted["name"] != "small_cnn":
        pytest.skip("only the small CNN has a γ=0 channel in its base")
    from edgepatch.format.delta import read_delta

    delta = read_delta(converted["result"].deltas["alpha"])
    assert "stem/kernel" in delta.tensors and "stem/scale" not in delta.tensors
    assert "pw/scale" in delta.tensors
    assert all(np.all(np.isfinite(v)) for v in delta.tensors.values())


@pytest.mark.parametrize("task_scale, ships", [(2.0, "scale"), (1e-13, "kernel"), (3e12, "kernel"), (0.0, "kernel")])
def test_a_ratio_outside_the_spec_bounds_ships_the_full_kernel(task_scale, ships):
    """A ratio readers would refuse (|r| outside 1e-12..1e12) is never written: the site's kernel goes instead."""
    from converters.fold import FoldedSite
    from converters.make_delta import make_delta
    from edgepatch.format.delta import Preprocessing, TaskInfo, encode_delta
    from edgepatch.kinds.keras_sites import Site

    base = FoldedSite("stem", "conv", np.ones((1, 1, 3, 2), np.float32), np.zeros(2, np.float32),
                      np.ones(2, np.float32))
    task = FoldedSite("stem", "conv", base.kernel * [1.0, task_scale], np.full(2, 0.5, np.float32),
                      np.array([1.0, task_scale], np.float32))
    site = Site("stem", "conv", layer=None, bn=object())
    delta = make_delta([site], {"stem": base}, {"stem": task}, TaskInfo("t", ("a", "b"), 32, Preprocessing(1.0, 0.0)),
                       ("scale_bias",),
                       {"tflite": "0" * 64})
    assert sorted(delta.tensors) == sorted([f"stem/{ships}", "stem/bias"])
    encode_delta(delta)  # and the delta passes the writer's checks


def test_float16_delta_is_half_size_and_close(converted, tmp_path):
    from converters.convert import convert
    from edgepatch.format.delta import read_tensor_file
    from edgepatch.runtime import load_base, read_delta

    root = converted["root"]
    result = convert(str(root / "base.keras"), [str(root / "alpha.patch")], str(tmp_path / "ship16"),
                     formats=("tflite",), dtype="float16")
    stored16 = read_tensor_file(result.deltas["alpha"], "delta").tensors
    stored32 = read_tensor_file(converted["result"].deltas["alpha"], "delta").tensors
    assert {str(v.dtype) for v in stored16.values()} == {"float16"}
    assert sum(v.nbytes for v in stored16.values()) * 2 == sum(v.nbytes for v in stored32.values())
    x = _inputs(converted["base"])
    got = load_base(result.base_files["tflite"]).apply(read_delta(result.deltas["alpha"])).predict(x)
    expected = np.asarray(converted["tasks"]["alpha"](x, training=False))
    assert np.max(np.abs(got - expected)) <= 5e-2 * max(1.0, np.max(np.abs(expected)))


def test_converting_again_gives_the_same_base_bytes(small_ship, tmp_path):
    """A base's bytes depend on the model only, not on what the process built before (deltas pin its sha256)."""
    import keras

    from converters.convert import convert

    ship, _ = small_ship
    for _ in range(3):
        keras.Input((4, 4, 3))  # advances Keras' tensor-name counter, as other work in the process would
    convert(str(ship.parent / "base.keras"), [str(ship.parent / "gamma.patch")], str(tmp_path / "again"))
    for name in ("base.tflite", "base.onnx", "gamma.delta"):
        assert (tmp_path / "again" / name).read_bytes() == (ship / name).read_bytes(), name
