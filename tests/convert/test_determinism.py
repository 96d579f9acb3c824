"""convert gives the same bytes in any process, whatever PYTHONHASHSEED: base.tflite, base.onnx and the delta."""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys

import pytest
from conftest import REPO
from helpers.models import make_patch, set_real_bn_statistics

# For this model, seeds 1 and 2 make tf2onnx keep different copies of the merged Clip constants.
SEEDS = ("1", "2")
CONVERT = ("import sys\nfrom converters.convert import convert\n"
           "convert(sys.argv[1], [sys.argv[2]], sys.argv[3])\n")


def relu6_cnn():
    """Three ReLU6 (Clip in ONNX) layers: tf2onnx merges their equal min and max constants."""
    import keras
    from keras import layers

    keras.utils.set_random_seed(0)
    inputs = keras.Input((32, 32, 3), name="image")  # every name fixed: the checkpoint must not depend on
    # how many Keras objects this process made before, since the hash-dependent order follows the names
    x = inputs
    for layer in (layers.Conv2D(8, 3, strides=2, padding="same", use_bias=False, name="stem"),
                  layers.DepthwiseConv2D(3, padding="same", use_bias=False, name="dw"),
                  layers.Conv2D(8, 1, use_bias=False, name="pw")):
        name = layer.name
        x = layers.BatchNormalization(name=f"{name}_norm")(layer(x))
        x = layers.ReLU(6.0, name=f"{name}_relu6")(x)
    x = layers.GlobalAveragePooling2D(name="pool")(x)
    model = keras.Model(inputs, layers.Dense(3, name="classifier")(x), name="relu6_cnn")
    set_real_bn_statistics(model)
    return model


def digests(directory: str) -> dict[str, str]:
    return {name: hashlib.sha256(open(os.path.join(directory, name), "rb").read()).hexdigest()
            for name in sorted(os.listdir(directory))}


def test_convert_is_byte_identical_across_hash_seeds(tmp_path):
    model = relu6_cnn()
    model.save(str(tmp_path / "base.keras"))
    make_patch(model, str(tmp_path / "t.patch"), "t", 3, seed=4)
    children = []
    for seed in SEEDS:
        env = {**os.environ, "PYTHONHASHSEED": seed, "PYTHONPATH": REPO, "TF_CPP_MIN_LOG_LEVEL": "3"}
        command = [sys.executable, "-c", CONVERT, str(tmp_path / "base.keras"), str(tmp_path / "t.patch"),
                   str(tmp_path / f"ship-{seed}")]
        children.append(subprocess.Popen(command, cwd=REPO, env=env, stdout=subprocess.DEVNULL,
                                         stderr=subprocess.PIPE, text=True))
    for child in children:
        _, errors = child.communicate(timeout=300)
        assert child.returncode == 0, errors[-2000:]
    first, second = (digests(str(tmp_path / f"ship-{seed}")) for seed in SEEDS)
    assert sorted(first) == ["base.onnx", "base.tflite", "t.delta"]
    assert first == second
