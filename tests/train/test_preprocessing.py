"""Preprocessing modes against keras.applications, the backbone table, and `train --preprocessing`."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest
from click.testing import CliRunner
from helpers.models import small_cnn

from edgepatch.errors import UsageError
from edgepatch.format.task import Preprocessing
from edgepatch.train.preprocessing import PREPROCESSING_MODES, rescales_inside, resolve_preprocessing

TOLERANCE = 1e-5


def _image(seed: int = 0, size: int = 8) -> np.ndarray:
    return np.random.default_rng(seed).uniform(0, 255, (2, size, size, 3)).astype(np.float32)


@pytest.mark.parametrize("mode", ["tf", "torch", "caffe"])
def test_modes_match_keras_preprocess_input(mode):
    from keras.applications import imagenet_utils

    image = _image()
    expected = np.asarray(imagenet_utils.preprocess_input(image.copy(), mode=mode))
    ours = PREPROCESSING_MODES[mode].apply(image)
    assert np.abs(ours - expected).max() <= TOLERANCE * max(1.0, np.abs(expected).max())


def test_mode_values():
    assert PREPROCESSING_MODES["raw"] == Preprocessing(1.0, 0.0)
    assert PREPROCESSING_MODES["tf"] == Preprocessing(1 / 127.5, -1.0)
    assert PREPROCESSING_MODES["caffe"] == Preprocessing(1.0, (-103.939, -116.779, -123.68), "bgr")
    torch = PREPROCESSING_MODES["torch"]
    assert torch.channels == "rgb"
    np.testing.assert_allclose(torch.scale, [1 / (255 * 0.229), 1 / (255 * 0.224), 1 / (255 * 0.225)], rtol=1e-12)
    np.testing.assert_allclose(torch.offset, [-0.485 / 0.229, -0.456 / 0.224, -0.406 / 0.225], rtol=1e-12)


# (family, keras.applications module with its preprocess_input, resolution, alpha)
FAMILIES = [
    ("mobilenet_v2", "mobilenet_v2", 32, 0.35),
    ("mobilenet_v3_small", "mobilenet_v3", 32, 0.75),
    ("mobilenet_v3_large", "mobilenet_v3", 32, 1.0),
    ("efficientnet_b0", "efficientnet", 32, 1.0),
    ("resnet50", "resnet50", 32, 1.0),
    ("inception_v3", "inception_v3", 75, 1.0),
]


@pytest.mark.parametrize("family,module,resolution,alpha", FAMILIES, ids=[f[0] for f in FAMILIES])
def test_each_family_builds_and_records_its_keras_preprocessing(family, module, resolution, alpha):
    import importlib

    from edgepatch.train.models import BACKBONES, build_classifier

    model = build_classifier(family, alpha=alpha, resolution=resolution, weights="none", num_classes=3)
    assert tuple(model.inputs[0].shape[1:]) == (resolution, resolution, 3) and model.outputs[0].shape[-1] == 3
    mode, recorded = resolve_preprocessing("auto", model, BACKBONES[family].preprocessing_mode)
    assert (mode, recorded) == (BACKBONES[family].preprocessing_mode, BACKBONES[family].preprocessing)
    assert rescales_inside(model) == (mode == "raw")  # raw exactly for the families that rescale inside
    image = _image(1, resolution)
    keras_input = np.asarray(importlib.import_module(f"keras.applications.{module}").preprocess_input(image.copy()))
    ours = recorded.apply(image)
    assert np.abs(ours - keras_input).max() <= TOLERANCE * max(1.0, np.abs(keras_input).max())


def test_minimum_input_size_is_a_clear_usage_error():
    from edgepatch.train.models import build_classifier

    with pytest.raises(UsageError) as caught:
        build_classifier("inception_v3", resolution=64, weights="none", num_classes=2)
    assert str(caught.value) == "inception_v3 needs --resolution >= 75. Received resolution=64"
    with pytest.raises(UsageError) as caught:
        build_classifier("mobilenet_v3_small", alpha=0.35, resolution=32, weights="none", num_classes=2)
    assert str(caught.value) == "mobilenet_v3_small alpha must be one of [0.75, 1.0]. Received alpha=0.35"


def test_auto_looks_through_sequential_and_nested_models():
    import keras

    rescaled = keras.Sequential([keras.Input((16, 16, 3)), keras.layers.Rescaling(1 / 255),
                                 keras.layers.Conv2D(4, 3), keras.layers.GlobalAveragePooling2D()])
    inputs = keras.Input((16, 16, 3))
    nested = keras.Model(inputs, keras.layers.Dense(2)(rescaled(inputs)))
    normalized = keras.Sequential([keras.Input((16, 16, 3)), keras.layers.Normalization(mean=0.0, variance=1.0),
                                   keras.layers.Flatten()])
    for model in (rescaled, nested, normalized):
        assert rescales_inside(model)
        assert resolve_preprocessing("auto", model, None) == ("raw", PREPROCESSING_MODES["raw"])
    # a Rescaling that is not first does not count
    late = keras.Sequential([keras.Input((16, 16, 3)), keras.layers.Conv2D(4, 3), keras.layers.Rescaling(2.0)])
    assert not rescales_inside(late)


def test_auto_without_a_family_asks_for_the_option():
    model = small_cnn(num_classes=2)
    assert resolve_preprocessing("auto", model, "caffe") == ("caffe", PREPROCESSING_MODES["caffe"])
    assert resolve_preprocessing("torch", model, None) == ("torch", PREPROCESSING_MODES["torch"])
    with pytest.raises(UsageError) as caught:
        resolve_preprocessing("auto", model, None)
    assert str(caught.value) == (
        "cannot tell the model's preprocessing (it does not start with Rescaling/Normalization and no --base "
        "family was given): pass --preprocessing tf|torch|caffe|raw")
    with pytest.raises(UsageError) as caught:
        resolve_preprocessing("yolo", model, None)
    assert str(caught.value) == "--preprocessing must be one of auto, tf, torch, caffe, raw. Received 'yolo'"


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """A small_cnn checkpoint and a tiny image-folder dataset at 32 px."""
    from edgepatch.apps.demo_data import write_datasets

    root = tmp_path_factory.mktemp("pre")
    checkpoint = str(root / "base.keras")
    small_cnn(num_classes=2).save(checkpoint)
    data = write_datasets(str(root / "data"), train_per_class=2, test_per_class=1, size=32)
    return root, checkpoint, next(iter(data.values()))


def _train(*args):
    from edgepatch.cli.main import main

    return CliRunner().invoke(main, ["train", *args, "--resolution", "32", "--epochs", "1", "--batch-size", "4",
                                     "--json"])


@pytest.mark.parametrize("mode,base", [("torch", []), ("caffe", []), ("auto", ["--base", "resnet50"])])
def test_train_records_the_mode_in_the_patch(tiny, mode, base):
    from edgepatch.train.patchfile import read_patch

    root, checkpoint, data = tiny
    out = root / f"out_{mode}"
    result = _train("--weights", checkpoint, "--data", data, "--preprocessing", mode, *base, "--out", str(out))
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    expected = "caffe" if mode == "auto" else mode
    assert report["preprocessing"] == expected
    assert read_patch(report["patch"]).task.preprocessing == PREPROCESSING_MODES[expected]


def test_train_from_a_checkpoint_without_family_stops_before_writing(tiny):
    root, checkpoint, data = tiny
    out = root / "out_refused"
    result = _train("--weights", checkpoint, "--data", data, "--out", str(out))
    assert (result.exit_code, result.stderr) == (2, (
        "error: cannot tell the model's preprocessing (it does not start with Rescaling/Normalization and no "
        "--base family was given): pass --preprocessing tf|torch|caffe|raw\n"))
    assert not os.path.exists(out)  # refused before anything was written


def test_help_explains_base_and_alpha_for_a_checkpoint():
    from edgepatch.cli.main import main

    text = " ".join(CliRunner().invoke(main, ["train", "--help"]).output.split())
    assert "--preprocessing [auto|tf|torch|caffe|raw]" in text
    assert "the checkpoint's own architecture is used and --base only names its family for --preprocessing auto" in text
    for family in ("mobilenet_v3_small", "mobilenet_v3_large", "efficientnet_b0", "resnet50", "inception_v3"):
        assert family in text


@pytest.mark.parametrize("mode", ["tf", "torch", "caffe", "raw"])
def test_tf_pipeline_mirrors_the_numpy_rule_bit_for_bit(mode):
    import tensorflow as tf

    from edgepatch.train.data import _preprocess

    image = np.round(_image(2))  # decoded pixels are integers
    ours = np.asarray(_preprocess(tf.constant(image), PREPROCESSING_MODES[mode]))
    assert np.array_equal(ours, PREPROCESSING_MODES[mode].apply(image))


def test_a_version_1_patch_still_reads(tmp_path):
    from edgepatch.format.container import encode_tensor_file
    from edgepatch.train.patchfile import read_patch

    meta = {"task": {"name": "t", "classes": ["a", "b"], "resolution": 32,
                     "preprocessing": {"offset": -1.0, "scale": 1 / 127.5}},
            "kinds": ["logits"], "trained": ["logits"], "shared_sha256": "ab" * 32, "training": {}}
    path = tmp_path / "old.patch"
    path.write_bytes(encode_tensor_file("patch", {}, meta, version=1))
    assert read_patch(str(path)).task.preprocessing == PREPROCESSING_MODES["tf"]
