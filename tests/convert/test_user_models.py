"""Bring your own Keras model: one table of (model, preprocessing) rows through train -> convert -> run.

Each row is a model as a user writes it (nested backbone, Sequential, raw ops, SeparableConv2D,
grouped conv, BN after an Add or before a conv), with random weights and real BN statistics, saved
as a .keras checkpoint. ``train`` makes it canonical and trains S/B + logits for one epoch on a few
real photos; ``convert`` checks both runtimes against the Keras task model (1e-4 x max(1, |logit|));
then the runtime fed the recorded preprocessing is compared with the runtime fed the model's own
``preprocess_input``. Rows marked slow (the large models) run with ``--run-slow``.
"""

from __future__ import annotations

import os
import shutil

import numpy as np
import pytest
from helpers.models import set_batch_statistics


def _application(name: str, size: int, **options):
    import keras

    builder = getattr(keras.applications, name)
    backbone = builder(input_shape=(size, size, 3), include_top=False, weights=None, pooling="avg", **options)
    return keras.Model(backbone.inputs, keras.layers.Dense(3, name="logits")(backbone.output))


def _nested_mobilenet_v2(size: int):
    """Keras' transfer-learning recipe: ``base(inputs, training=False)``, Dropout, a new head."""
    import keras

    backbone = keras.applications.MobileNetV2(input_shape=(size, size, 3), alpha=0.35, include_top=False,
                                              weights=None, pooling="avg")
    inputs = keras.Input((size, size, 3))
    features = keras.layers.Dropout(0.2)(backbone(inputs, training=False))
    return keras.Model(inputs, keras.layers.Dense(3, name="head")(features))


def _sequential(size: int):
    """A Sequential model ending in a softmax Dense (train replaces the head)."""
    import keras
    from keras import layers

    return keras.Sequential([
        keras.Input((size, size, 3)), layers.Conv2D(8, 3, strides=2, use_bias=False), layers.BatchNormalization(),
        layers.ReLU(), layers.DepthwiseConv2D(3, padding="same"), layers.BatchNormalization(), layers.ReLU(),
        layers.GlobalAveragePooling2D(), layers.Dense(3, activation="softmax")])


def _custom(size: int):
    """SeparableConv2D, a grouped Conv2D, a BN after an Add and a BN after a ReLU conv."""
    import keras
    from keras import layers

    inputs = keras.Input((size, size, 3))
    x = layers.Conv2D(8, 3, strides=2, padding="same", activation="relu")(inputs)
    x = layers.BatchNormalization()(x)
    a = layers.BatchNormalization()(layers.SeparableConv2D(8, 3, padding="same")(x))
    b = layers.BatchNormalization()(layers.Conv2D(8, 3, padding="same", groups=2)(x))
    x = layers.ReLU()(layers.BatchNormalization()(a + b))
    x = layers.GlobalAveragePooling2D()(x)
    return keras.Model(inputs, layers.Dense(3, name="classifier")(x))


# name -> (builder(size), input size, --preprocessing, keras.applications module for preprocess_input, slow).
# The large random models run where float32 Keras itself stays well inside convert's 1e-4 x max|logit| of its
# float64 result on the row's photos. Below those sizes their last stages are 1x1 and it does not (float32 vs
# float64, relative to max|logit|): EfficientNetB0 1.2e-3 at 32 px, 2.6e-5 at 64; ResNet50 7.2e-5 at 32,
# 1.7e-5 at 64; ResNet50V2 3.1e-5 at 32, 4.3e-6 at 64; InceptionV3 7.6e-5 at 75, 1.9e-5 at 128.
ROWS = {
    "nested_mobilenet_v2": (_nested_mobilenet_v2, 32, "tf", "mobilenet_v2", False),
    "sequential": (_sequential, 32, "raw", None, False),
    "custom": (_custom, 32, "torch", None, False),
    "mobilenet_v3_small": (lambda s: _application("MobileNetV3Small", s), 32, "auto", "mobilenet_v3", False),
    "mobilenet_v3_large": (lambda s: _application("MobileNetV3Large", s), 32, "auto", "mobilenet_v3", True),
    "efficientnet_b0": (lambda s: _application("EfficientNetB0", s), 64, "auto", "efficientnet", True),
    "resnet50": (lambda s: _application("ResNet50", s), 64, "caffe", "resnet50", True),
    "resnet50_v2": (lambda s: _application("ResNet50V2", s), 64, "tf", "resnet_v2", True),
    "inception_v3": (lambda s: _application("InceptionV3", s), 128, "tf", "inception_v3", True),
}
PARAMS = [pytest.param(name, marks=[pytest.mark.slow] if ROWS[name][4] else []) for name in ROWS]


def _photos(shared: str, root: str, classes=("daisy", "rose", "tulip"), per_class=(6, 2)) -> str:
    """A few real flowers5 photos per class, DIR/{train,test}/<class>/."""
    for split, count in zip(("train", "test"), per_class):
        for name in classes:
            source = os.path.join(shared, "data", "flowers5", split, name)
            target = os.path.join(root, "photos", split, name)
            os.makedirs(target)
            for file in sorted(os.listdir(source))[:count]:
                shutil.copy(os.path.join(source, file), target)
    return os.path.join(root, "photos")


def _train_inputs(model, data: str, size: int, mode: str) -> np.ndarray:
    """The row's training photos as the model takes them (its preprocessing; auto: the model's own)."""
    from edgepatch.format.task import TaskInfo
    from edgepatch.runtime.images import load_images
    from edgepatch.train.preprocessing import resolve_preprocessing

    _, preprocessing = resolve_preprocessing(mode, model, None)
    paths = [os.path.join(folder, file) for folder, _, files in os.walk(os.path.join(data, "train")) for file in files]
    return load_images(sorted(paths), TaskInfo("rows", ("a", "b"), size, preprocessing))


def _batchnorm_gamma_beta(model) -> int:
    import keras

    return sum(int(np.prod(v.shape)) for layer in model._flatten_layers(include_self=False)
               if isinstance(layer, keras.layers.BatchNormalization) for v in layer.trainable_weights)


@pytest.fixture(scope="module", params=PARAMS)
def shipped(request, shared_dir, tmp_path_factory):
    from edgepatch.apps.jobs import convert_command, train_command

    name = request.param
    builder, size, preprocessing, _, _ = ROWS[name]
    root = str(tmp_path_factory.mktemp(name))
    model = builder(size)
    data = _photos(shared_dir, root)
    set_batch_statistics(model, _train_inputs(model, data, size, preprocessing), seed=3)
    model.save(os.path.join(root, "user.keras"))
    trained = train_command(backbone=None, alpha=1.0, resolution=size, weights=os.path.join(root, "user.keras"),
                            data_dir=data, task_name="flowers", patch_spec="scale_bias,logits", epochs=1, lr=1e-3,
                            batch_size=8, bn_stats=None, bn_momentum=0.9, holdout=0.2, seed=0,
                            out_dir=os.path.join(root, "run"), preprocessing=preprocessing)
    converted = convert_command(trained["base_checkpoint"], [trained["patch"]], os.path.join(root, "ship"),
                                ("tflite", "onnx"), "float32", None)
    return {"name": name, "user_model": model, "trained": trained, "converted": converted, "data": data}


def test_row_trains_converts_and_matches_keras_on_both_runtimes(shipped):
    trained, converted = shipped["trained"], shipped["converted"]
    # convert's own check: each runtime vs the Keras task model, 1e-4 x max(1, max |logit|)
    parity = converted["tasks"][0]["parity_max_abs"]
    assert set(parity) == {"tflite", "onnx"} and converted["tasks"][0]["parity_inputs"] == "8 training images"
    assert all(error <= 1e-3 for error in parity.values()), parity
    # The delta ships only what the task changed: no scale that is exactly 1 on every channel (InceptionV3's
    # BNs have no γ, and frozen statistics leave their multipliers as the base has them).
    from edgepatch.format.names import SCALE, split_name
    from edgepatch.runtime import read_delta

    delta = read_delta(converted["tasks"][0]["delta"])
    scales = {name: value for name, value in delta.tensors.items() if split_name(name)[1] == SCALE}
    assert not [name for name, value in scales.items() if np.all(value == 1.0)]
    # S/B + logits: every BN's γ/β (inside a nested backbone too) plus the new 3-class head
    head = converted["head_width"]
    assert head == 3
    features = _head_features(shipped["user_model"])
    assert trained["trained_parameters"] == _batchnorm_gamma_beta(shipped["user_model"]) + features * 3 + 3


def _head_features(model) -> int:
    from edgepatch.train.graph import canonical_model
    from edgepatch.kinds.keras_sites import head_layer

    return int(head_layer(canonical_model(model).model).kernel.shape[0])


def test_recorded_preprocessing_matches_the_models_own_preprocess_input(shipped):
    """`edgepatch run`'s decoding + recorded preprocessing == the runtime fed preprocess_input by hand."""
    import importlib

    import dataclasses

    from edgepatch.format.task import Preprocessing
    from edgepatch.runtime import load_base, read_delta
    from edgepatch.runtime.images import load_images

    module = ROWS[shipped["name"]][3]
    if module is None:
        pytest.skip("a custom model has no keras preprocess_input")
    preprocess_input = importlib.import_module(f"keras.applications.{module}").preprocess_input
    delta = read_delta(shipped["converted"]["tasks"][0]["delta"])
    runner = load_base(shipped["converted"]["base_files"]["tflite"]).apply(delta)
    folder = os.path.join(shipped["data"], "test", "rose")
    paths = [os.path.join(folder, file) for file in sorted(os.listdir(folder))]
    pixels = load_images(paths, dataclasses.replace(delta.task, preprocessing=Preprocessing(1.0, 0.0)))  # RGB 0..255
    by_hand = preprocess_input(pixels.copy())
    recorded = runner.predict(load_images(paths, delta.task))
    expected = runner.predict(by_hand.astype(np.float32))
    assert np.max(np.abs(_softmax(recorded) - _softmax(expected))) <= 2e-3
    assert np.ptp(expected, axis=0).max() > 1e-3  # the logits depend on the image


def _softmax(logits: np.ndarray) -> np.ndarray:
    shifted = np.exp(logits - logits.max(axis=1, keepdims=True))
    return shifted / shifted.sum(axis=1, keepdims=True)
