"""Small models and task patches for tests and benchmarks (built by structure, with real BN statistics)."""

from __future__ import annotations

import os

import numpy as np


def set_real_bn_statistics(model, seed: int = 0) -> None:
    """Give every BN non-trivial γ, β, μ, σ² so that patch changes move the outputs."""
    import keras

    rng = np.random.default_rng(seed)
    for layer in model._flatten_layers(include_self=False):  # inside nested sub-models too
        if isinstance(layer, keras.layers.BatchNormalization):
            c = layer.moving_mean.shape[0]
            gamma, beta = rng.uniform(0.5, 1.5, c), rng.normal(0, 0.2, c)
            statistics = [rng.normal(0, 0.2, c), rng.uniform(0.3, 2.0, c)]
            layer.set_weights([gamma] * layer.scale + [beta] * layer.center + statistics)


def set_batch_statistics(model, images: np.ndarray, seed: int = 0) -> None:
    """Random γ/β, and BN moving statistics measured on ``images`` (so the logits depend on the image)."""
    import keras

    set_real_bn_statistics(model, seed)
    norms = [layer for layer in model._flatten_layers(include_self=False)
             if isinstance(layer, keras.layers.BatchNormalization)]
    momenta = [norm.momentum for norm in norms]
    for norm in norms:
        norm.momentum = 0.0  # one training-mode pass sets each moving statistic to its batch statistic
    model(images, training=True)
    for norm, momentum in zip(norms, momenta):
        norm.momentum = momentum


def small_cnn(num_classes: int = 4, seed: int = 0):
    """A CNN of another shape than MobileNetV2: other names, a conv with bias, a BN-free conv,
    depth multiplier 2, a residual add and max pooling."""
    import keras
    from keras import layers

    keras.utils.set_random_seed(seed)
    inputs = keras.Input((32, 32, 3))
    x = layers.Conv2D(8, 3, strides=2, padding="same", use_bias=True, name="stem")(inputs)
    x = layers.BatchNormalization(name="stem_norm")(x)
    x = layers.Activation("relu")(x)
    y = layers.DepthwiseConv2D(3, padding="same", depth_multiplier=2, use_bias=False, name="dw")(x)
    y = layers.BatchNormalization(name="dw_norm")(y)
    y = layers.ReLU(6.0)(y)
    y = layers.Conv2D(8, 1, use_bias=False, name="pw")(y)
    y = layers.BatchNormalization(name="pw_norm")(y)
    x = layers.Add()([x, y])
    x = layers.MaxPooling2D()(x)
    x = layers.Conv2D(12, 3, padding="same", name="plain_conv")(x)
    x = layers.GlobalAveragePooling2D()(x)
    outputs = layers.Dense(num_classes, name="classifier")(x)
    model = keras.Model(inputs, outputs)
    set_real_bn_statistics(model, seed)
    return model


def make_patch(base, path: str, name: str, classes: int, seed: int, kinds=("scale_bias", "logits")):
    """A task patch made by perturbing the task's private parameters (as training would)."""
    import keras

    from edgepatch.format.delta import Preprocessing, TaskInfo
    from edgepatch.kinds import get_kind
    from edgepatch.train.models import with_new_head
    from edgepatch.train.patchfile import extract_patch, write_patch

    copy = keras.models.clone_model(base)
    copy.set_weights(base.get_weights())
    model = with_new_head(copy, classes, seed)
    set_real_bn_statistics(model, seed)
    rng = np.random.default_rng(seed)
    for layer in (layer for name in kinds for layer in get_kind(name).layers(model)):
        if isinstance(layer, keras.layers.DepthwiseConv2D):  # a private depthwise kernel
            layer.kernel.assign(np.asarray(layer.kernel) * rng.uniform(0.5, 1.5, layer.kernel.shape))
    head = model.layers[-1]
    head.bias.assign(rng.normal(0, 0.5, classes))
    resolution = int(base.inputs[0].shape[1])
    task = TaskInfo(name, tuple(f"{name}_{i}" for i in range(classes)), resolution, Preprocessing(1 / 127.5, -1.0))
    write_patch(path, extract_patch(model, task, kinds, kinds, {"seed": seed}))
    return model


def write_calibration(root, names, size: int = 32, count: int = 12, seed: int = 1) -> str:
    """``root/calibration/<name>/any_class/*.png``: random images, the layout ``convert --calibration`` reads."""
    from PIL import Image

    rng = np.random.default_rng(seed)
    for name in names:
        folder = os.path.join(root, "calibration", name, "any_class")
        os.makedirs(folder)
        for i in range(count):
            Image.fromarray(rng.integers(0, 256, (size, size, 3), dtype=np.uint8)).save(os.path.join(folder, f"{i}.png"))
    return os.path.join(root, "calibration")
