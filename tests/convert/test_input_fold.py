"""An input Rescaling/Normalization multiply folds into the stem conv's kernel where that is exact.

EfficientNet (``weights=None``) starts with ``x/255``, a Normalization, a pad and a valid stride-2
stem conv. The base used to write each affine as a 1x1 DEPTHWISE_CONV_2D (two ops more than the
converter's own conversion, issue 15's P4); now the stem kernel holds ``W·a·s``. An offset folds only
where no padding meets it; otherwise the layers stay ops of the base, as before.
"""

from __future__ import annotations

from collections import Counter

import numpy as np
import pytest
from helpers.models import make_patch, set_real_bn_statistics

VARIANCE = (0.05, 0.2, 0.6)  # per channel: a multiply that differs per input channel


def _normalized_cnn(stem: str = "pad", mean: float = 0.0, dead_stem_channel: bool = False):
    """Rescaling(1/255) + Normalization, then the stem: ``pad`` (ZeroPadding2D + valid stride-2 conv, as
    EfficientNet), ``same`` (MobileNetV3) or ``valid``; a depthwise/pointwise block and a logits head."""
    import keras
    from keras import layers

    keras.utils.set_random_seed(2)
    inputs = keras.Input((32, 32, 3))
    x = layers.Rescaling(1 / 255.0, name="rescale")(inputs)
    x = layers.Normalization(mean=[mean, mean / 2, 0.0], variance=list(VARIANCE), name="normalize")(x)
    if stem == "pad":
        x = layers.ZeroPadding2D(((0, 1), (0, 1)), name="stem_pad")(x)
    padding = "same" if stem == "same" else "valid"
    x = layers.Conv2D(8, 3, strides=2, padding=padding, use_bias=False, name="stem")(x)
    x = layers.Activation("swish")(layers.BatchNormalization(name="stem_bn")(x))
    x = layers.DepthwiseConv2D(3, padding="same", use_bias=False, name="dw")(x)
    x = layers.Activation("swish")(layers.BatchNormalization(name="dw_bn")(x))
    x = layers.BatchNormalization(name="pw_bn")(layers.Conv2D(12, 1, use_bias=False, name="pw")(x))
    x = layers.GlobalAveragePooling2D()(x)
    model = keras.Model(inputs, layers.Dense(3, name="logits")(x))
    set_real_bn_statistics(model, seed=5)
    if dead_stem_channel:  # no per-channel ratio exists: a delta ships the stem's full kernel
        gamma = np.asarray(model.get_layer("stem_bn").gamma).copy()
        gamma[1] = 0.0
        model.get_layer("stem_bn").gamma.assign(gamma)
    return model


def _pixels(count: int = 3, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).uniform(0, 255, (count, 32, 32, 3)).astype(np.float32)


@pytest.mark.parametrize("stem, mean, folds", [
    ("pad", 0.0, True),  # EfficientNet with weights=None: a pure multiply
    ("same", 0.0, True),
    ("valid", 0.4, True),  # no padding meets the offset: it folds into the bias
    ("pad", 0.4, False),  # an offset at a zero-padded border is no bias: kept as ops
    ("same", 0.4, False),
])
def test_input_affine_folds_into_the_stem_only_where_exact(stem, mean, folds):
    import keras

    from converters.fold import find_input_fold, fold_batchnorm, fold_input_affines
    from converters.folded_model import build_folded_model

    model = _normalized_cnn(stem, mean)
    found = find_input_fold(model)
    folded = fold_batchnorm(model)
    if folds:
        site, fold = found
        assert site == "stem" and fold.layers == ("rescale", "normalize")
        np.testing.assert_allclose(fold.scale, 1 / (255 * np.sqrt(VARIANCE)))
        np.testing.assert_allclose(fold.offset, [-mean / np.sqrt(VARIANCE[0]), -mean / 2 / np.sqrt(VARIANCE[1]), 0])
        assert fold.same_as(folded["stem"].input_fold)
        assert fold_input_affines(model) == {}  # nothing left to write as a depthwise conv
    else:
        assert found is None and all(site.input_fold is None for site in folded.values())
        assert set(fold_input_affines(model)) == {"rescale", "normalize"}  # today's fallback
    assert all(site.input_fold is None for name, site in folded.items() if name != "stem")
    folded_model = build_folded_model(model, folded, head_width=3)
    kept = {type(layer) for layer in folded_model.layers}
    assert (keras.layers.Normalization in kept) is not folds and (keras.layers.Rescaling in kept) is not folds
    x = _pixels()
    expected = np.asarray(model(x, training=False))
    assert np.max(np.abs(np.asarray(folded_model(x)) - expected)) <= 1e-5 * max(1.0, np.max(np.abs(expected)))


def test_no_fold_when_the_normalised_input_is_used_twice():
    import keras
    from keras import layers

    from converters.fold import find_input_fold

    inputs = keras.Input((16, 16, 3))
    x = layers.Rescaling(1 / 255.0)(inputs)
    y = layers.Conv2D(3, 3, padding="same", name="stem")(x)
    x = layers.GlobalAveragePooling2D()(layers.Add()([x, y]))
    assert find_input_fold(keras.Model(inputs, layers.Dense(2, name="logits")(x))) is None


def _opcodes(data: bytes) -> Counter:
    from edgepatch.runtime.tflite_file import parse_tflite

    return Counter(op.opcode for op in parse_tflite(data, "model").ops)


def _direct_tflite(model) -> bytes:
    import contextlib
    import io

    import tensorflow as tf

    with contextlib.redirect_stdout(io.StringIO()):
        return tf.lite.TFLiteConverter.from_keras_model(model).convert()


@pytest.fixture(scope="module", params=["refold", "full_stem_kernel"])
def converted(request, tmp_path_factory):
    """An EfficientNet-like base with one S/B + logits task; ``full_stem_kernel``: the base's stem has a dead
    channel, so the delta ships the stem's whole kernel instead of a ratio."""
    from converters.convert import convert

    root = tmp_path_factory.mktemp(request.param)
    base = _normalized_cnn("pad", dead_stem_channel=request.param == "full_stem_kernel")
    base.save(str(root / "base.keras"))
    task = make_patch(base, str(root / "task.patch"), "task", 3, seed=6)
    result = convert(str(root / "base.keras"), [str(root / "task.patch")], str(root / "ship"))
    return {"mode": request.param, "base": base, "task": task, "result": result}


def test_base_has_as_many_depthwise_ops_as_the_direct_conversion(converted):
    with open(converted["result"].base_files["tflite"], "rb") as handle:
        ours = _opcodes(handle.read())
    direct = _opcodes(_direct_tflite(converted["task"]))
    assert ours["DEPTHWISE_CONV_2D"] == direct["DEPTHWISE_CONV_2D"] == 1
    assert ours["MUL"] <= direct["MUL"] and ours["ADD"] <= direct["ADD"]
    assert sum(ours.values()) <= sum(direct.values())


def test_delta_changes_the_stem_and_matches_keras_on_both_runtimes(converted):
    from converters.fold import fold_batchnorm
    from edgepatch.format.names import KERNEL, SCALE, tensor_name
    from edgepatch.runtime import load_base, read_delta

    delta = read_delta(converted["result"].deltas["task"])
    task_stem = fold_batchnorm(converted["task"])["stem"]
    if converted["mode"] == "full_stem_kernel":  # the task's kernel, the input multiply folded in
        shipped = delta.tensors[tensor_name("stem", KERNEL)]
        np.testing.assert_array_equal(shipped, task_stem.kernel)
        raw = np.asarray(converted["task"].get_layer("stem").kernel) * task_stem.scale
        np.testing.assert_allclose(shipped, raw * task_stem.input_fold.scale[None, None, :, None], rtol=1e-5)
    else:
        assert tensor_name("stem", SCALE) in delta.tensors and tensor_name("stem", KERNEL) not in delta.tensors
    x = _pixels(seed=1)
    expected = np.asarray(converted["task"](x, training=False))
    assert np.max(np.abs(expected)) > 0.1  # not vacuous
    base_expected = np.asarray(converted["base"](x, training=False))
    for fmt in ("tflite", "onnx"):
        base = load_base(converted["result"].base_files[fmt])
        got = base.apply(delta).predict(x)
        assert np.max(np.abs(got - expected)) <= 1e-4 * max(1.0, np.max(np.abs(expected))), fmt
        assert np.max(np.abs(base.apply(None).predict(x) - base_expected)) <= 1e-4 * max(1.0, np.max(np.abs(expected)))
