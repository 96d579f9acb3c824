"""The Keras-native API: the README's example runs as written, and convert takes its patch."""

from __future__ import annotations

import os
import re

import numpy as np
import pytest
from helpers.models import set_batch_statistics

README = os.path.join(os.path.dirname(__file__), "..", "..", "README.md")


def _readme_example() -> str:
    text = open(README, encoding="utf-8").read()
    match = re.search(r"<!-- keras-native-example -->\n```python\n(.*?)```", text, re.S)
    assert match, "README lost its Keras-native example"
    return match.group(1)


def _user_model():
    """A nested backbone as Keras' transfer-learning guide builds it, with real BN statistics."""
    import keras

    backbone = keras.applications.MobileNetV2(input_shape=(32, 32, 3), alpha=0.35, include_top=False,
                                              weights=None, pooling="avg")
    inputs = keras.Input((32, 32, 3))
    model = keras.Model(inputs, keras.layers.Dense(7, name="old_head")(backbone(inputs, training=False)))
    return model


@pytest.fixture()
def workdir(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    return tmp_path


def test_readme_example_trains_saves_a_patch_convert_takes(workdir):
    import keras
    import tensorflow as tf

    from converters.convert import convert
    from edgepatch.runtime import load_base, read_delta
    from edgepatch.train.patchfile import read_patch

    rng = np.random.default_rng(0)
    images = rng.uniform(-1, 1, (24, 32, 32, 3)).astype(np.float32)
    labels = rng.integers(0, 3, 24)
    model = _user_model()
    set_batch_statistics(model, images, seed=2)
    model.save("my_cnn.keras")
    before = [np.asarray(w).copy() for w in model.weights]
    namespace = {"class_names": ["a", "b", "c"],
                 "train_ds": tf.data.Dataset.from_tensor_slices((images, labels)).batch(8)}
    exec(compile(_readme_example(), "README.md", "exec"), namespace)

    task_model = namespace["task_model"]
    norms = [layer for layer in task_model.layers if isinstance(layer, keras.layers.BatchNormalization)]
    head = task_model.layers[-1]
    assert {id(v) for v in task_model.trainable_variables} == \
        {id(v) for v in [*(w for n in norms for w in (n.gamma, n.beta)), head.kernel, head.bias]}
    patch = read_patch("flowers.patch")
    assert patch.task.classes == ("a", "b", "c") and patch.kinds == ("scale_bias", "logits")
    # the user's model is untouched: it is the base convert reads
    assert all(np.array_equal(a, np.asarray(b)) for a, b in zip(before, namespace["model"].weights))
    result = convert("my_cnn.keras", ["flowers.patch"], "ship")
    assert result.head_width == 3  # the old 7-class head is no task's: not in the base
    runner = load_base(result.base_files["tflite"]).apply(read_delta(result.deltas["flowers"]))
    expected = np.asarray(task_model(images[:4], training=False))
    assert np.max(np.abs(runner.predict(images[:4]) - expected)) <= 1e-4 * max(1.0, np.max(np.abs(expected)))
    # ... and `eval` measures the shipped task on an image folder, against the Keras task model too
    from PIL import Image

    from edgepatch.apps.evaluate import evaluate

    for label in "abc":
        os.makedirs(f"photos/{label}")
        for i in range(3):
            Image.fromarray(rng.integers(0, 256, (40, 40, 3), dtype=np.uint8)).save(f"photos/{label}/{i}.png")
    report = evaluate([(result.base_files["tflite"], result.deltas["flowers"])], "photos", model="my_cnn.keras",
                      patch="flowers.patch", progress=False)
    assert report["images"] == 9
    assert list(report["agreement_vs_keras"].values()) == [1.0]


def test_patch_model_trains_exactly_the_patch_and_keeps_bn_frozen():
    import keras

    import edgepatch

    model = _user_model()
    images = np.random.default_rng(1).uniform(-1, 1, (8, 32, 32, 3)).astype(np.float32)
    set_batch_statistics(model, images, seed=4)
    task_model = edgepatch.patch_model(model, kinds=("scale_bias",), num_classes=3)
    norms = [l for l in task_model.layers if isinstance(l, keras.layers.BatchNormalization)]
    expected = sum(int(np.prod(v.shape)) for n in norms for v in (n.gamma, n.beta))
    assert sum(int(np.prod(v.shape)) for v in task_model.trainable_variables) == expected
    # frozen statistics: a training-mode call normalises with the moving statistics
    np.testing.assert_allclose(task_model(images, training=True), task_model(images, training=False), atol=1e-5)
    moving = [np.asarray(n.moving_mean).copy() for n in norms]
    task_model.compile(optimizer="adam", loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    task_model.fit(images, np.zeros(8, int), epochs=1, verbose=0)
    assert all(np.array_equal(m, np.asarray(n.moving_mean)) for m, n in zip(moving, norms))


def test_save_patch_refuses_a_class_list_that_does_not_fit_the_head(tmp_path):
    import edgepatch
    from edgepatch.errors import UsageError

    task_model = edgepatch.patch_model(_user_model(), num_classes=3)
    with pytest.raises(UsageError, match=r"^classes has 2 names, the model's head has 3 outputs$"):
        edgepatch.save_patch(task_model, str(tmp_path / "t.patch"), task="t", classes=["a", "b"], preprocessing="tf")
    with pytest.raises(UsageError, match=r"^model was not made by edgepatch.patch_model"):
        edgepatch.save_patch(_user_model(), str(tmp_path / "t.patch"), task="t", classes=list("abcdefg"),
                             preprocessing="tf")
    assert not os.path.exists(tmp_path / "t.patch")
