"""Folding is a pure rewrite: same outputs, no BN left, exact site discovery."""

from __future__ import annotations

import numpy as np
import pytest
from helpers.models import set_real_bn_statistics, small_cnn


def _conv_bn_model(op: str):
    import keras
    from keras import layers

    keras.utils.set_random_seed(1)
    inputs = keras.Input((9, 9, 6))
    if op == "conv":
        x = layers.Conv2D(5, 3, use_bias=True, name="site")(inputs)
    else:
        x = layers.DepthwiseConv2D(3, depth_multiplier=2, use_bias=False, name="site")(inputs)
    x = layers.BatchNormalization(name="norm")(x)
    x = layers.GlobalAveragePooling2D()(x)
    model = keras.Model(inputs, layers.Dense(3, name="head")(x))
    set_real_bn_statistics(model, seed=3)
    return model


@pytest.mark.parametrize("op", ["conv", "depthwise"])
def test_folded_layer_matches_conv_bn(op):
    from converters.fold import fold_batchnorm
    from converters.folded_model import build_folded_model

    model = _conv_bn_model(op)
    folded = fold_batchnorm(model)
    assert folded["site"].op == op
    x = np.random.default_rng(0).normal(size=(4, 9, 9, 6)).astype(np.float32)
    expected = np.asarray(model(x, training=False))
    got = np.asarray(build_folded_model(model, folded, head_width=3)(x))
    assert np.max(np.abs(got - expected)) <= 1e-5


def test_small_cnn_sites_found_by_structure():
    from edgepatch.kinds.keras_sites import find_sites

    sites = {s.name: (s.op, s.bn.name if s.bn else None) for s in find_sites(small_cnn())}
    assert sites == {
        "stem": ("conv", "stem_norm"),
        "dw": ("depthwise", "dw_norm"),
        "pw": ("conv", "pw_norm"),
        "plain_conv": ("conv", None),
        "classifier": ("dense", None),
    }


def test_folded_model_matches_and_has_no_batchnorm():
    import keras

    from converters.fold import fold_batchnorm
    from converters.folded_model import build_folded_model

    model = small_cnn(num_classes=4)
    folded_model = build_folded_model(model, fold_batchnorm(model), head_width=6)
    assert not [l for l in folded_model.layers if isinstance(l, keras.layers.BatchNormalization)]
    x = np.random.default_rng(1).uniform(-1, 1, (3, 32, 32, 3)).astype(np.float32)
    out = np.asarray(folded_model(x))
    assert out.shape == (3, 6)
    assert np.max(np.abs(out[:, :4] - np.asarray(model(x, training=False)))) <= 1e-5
    assert np.all(out[:, 4:] == 0.0)


def test_bn_after_add_is_rejected_with_its_name():
    import keras
    from keras import layers

    from edgepatch.errors import ModelStructureError
    from edgepatch.kinds.keras_sites import find_sites

    inputs = keras.Input((8, 8, 3))
    x = layers.Conv2D(3, 1, name="c")(inputs)
    x = layers.Add()([x, inputs])
    x = layers.BatchNormalization(name="after_add")(x)
    x = layers.GlobalAveragePooling2D()(x)
    model = keras.Model(inputs, layers.Dense(2, name="head")(x))
    with pytest.raises(ModelStructureError) as error:
        find_sites(model)
    assert str(error.value) == (
        "BatchNormalization `after_add` does not directly follow a Conv2D/DepthwiseConv2D "
        "that feeds only it, so it cannot be folded"
    )


def test_mobilenet_v2_patch_parameter_counts(tmp_path):
    from edgepatch.apps.inspect import describe_file
    from edgepatch.train.models import build_classifier

    path = str(tmp_path / "mobilenet_v2.keras")
    build_classifier(alpha=1.0, resolution=96, weights="none", num_classes=1000).save(path)
    info = describe_file(path)  # what `edgepatch inspect mobilenet_v2.keras` prints
    assert info["parameters"] == 3_538_984
    assert info["parameters_by_kind"] == {"scale_bias": 34_112, "depthwise": 64_224, "logits": 1_281_000}


def test_mobilenet_pads_fold_into_same_convs_where_exact():
    """MobileNetV2's ZeroPadding2D + valid stride-2 conv == a 'same' conv on even inputs: no PAD op left."""
    from converters.export_tflite import export_tflite_base
    from converters.fold import fold_batchnorm
    from converters.folded_model import build_folded_model, foldable_pads
    from edgepatch.train.models import build_classifier, clone_with_input
    from edgepatch.runtime.tflite_file import parse_tflite

    model = build_classifier(alpha=0.35, resolution=64, weights="none", num_classes=3, seed=0)
    set_real_bn_statistics(model, seed=4)
    pads = foldable_pads(model, (64, 96))
    assert pads == {f"block_{i}_pad": f"block_{i}_depthwise" for i in (1, 3, 6, 13)}
    assert foldable_pads(model, (64, 80)) == {}  # 80 px gives block_13 an odd (5 px) input
    folded = fold_batchnorm(model)
    folded_model = build_folded_model(model, folded, 3, pads)
    any_size = clone_with_input(model, None, lambda layer: layer)  # the same layers, so the same (0, 1) pads
    for size in (64, 96):
        x = np.random.default_rng(size).uniform(-1, 1, (2, size, size, 3)).astype(np.float32)
        expected = np.asarray(any_size(x, training=False))
        assert np.max(np.abs(np.asarray(folded_model(x)) - expected)) <= 1e-4 * np.max(np.abs(expected))
    opcodes = {op.opcode for op in parse_tflite(export_tflite_base(folded_model, folded, 3), "base").ops}
    assert "PAD" not in opcodes and "DEPTHWISE_CONV_2D" in opcodes
