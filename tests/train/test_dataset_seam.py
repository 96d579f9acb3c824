"""Both trainers read their data through a public ``pipeline`` argument: no image file is opened here."""

from __future__ import annotations

import numpy as np
from helpers.models import small_cnn

from edgepatch.format.delta import Preprocessing, TaskInfo
from edgepatch.train.data import ImageFolderSplit

PREPROCESSING = Preprocessing(1 / 127.5, -1.0)


def _split(name: str, classes: int = 4) -> ImageFolderSplit:
    """Items whose paths do not exist: only the in-memory pipeline can feed them."""
    labels = [i % classes for i in range(12)]
    return ImageFolderSplit(tuple(f"c{i}" for i in range(classes)),
                            tuple((f"/nonexistent/{name}/train/{i}.png", label) for i, label in enumerate(labels)),
                            tuple((f"/nonexistent/{name}/test/{i}.png", label) for i, label in enumerate(labels[:8])))


class InMemory:
    """A PipelineBuilder over seeded random images; records every call."""

    def __init__(self):
        self.calls = []

    def __call__(self, items, resolution, preprocessing, batch_size, shuffle, seed=0):
        import tensorflow as tf

        self.calls.append((len(items), resolution, batch_size, shuffle))
        images = np.random.default_rng(len(items)).uniform(-1, 1, (len(items), resolution, resolution, 3))
        dataset = tf.data.Dataset.from_tensor_slices((images.astype("float32"), [label for _, label in items]))
        return (dataset.shuffle(len(items), seed=seed) if shuffle else dataset).batch(batch_size)


def test_transfer_reads_through_the_given_pipeline():
    from edgepatch.train.transfer import TrainConfig, train

    pipeline = InMemory()
    task = TaskInfo("memory", _split("t").classes, 32, PREPROCESSING)
    result = train(small_cnn(num_classes=4), _split("t"), task, TrainConfig(("scale_bias", "logits"), epochs=1,
                   batch_size=4), verbose=0, pipeline=pipeline)
    assert pipeline.calls == [(12, 32, 4, True), (8, 32, 4, False), (12, 32, 64, False)]
    assert 0.0 <= result.test_accuracy <= 1.0 and result.patch.kinds == ("scale_bias", "logits")


def test_multitask_reads_through_the_given_pipeline():
    from edgepatch.train.multitask import MultiTaskConfig, TaskRun, train_multitask

    pipeline = InMemory()
    runs = [TaskRun(TaskInfo(name, _split(name).classes, 32, PREPROCESSING), _split(name)) for name in ("a", "b")]
    train_multitask(small_cnn(num_classes=4), runs, MultiTaskConfig(("scale_bias", "logits"), epochs=1, batch_size=4),
                    verbose=0, pipeline=pipeline)
    assert pipeline.calls == [(12, 32, 4, True)] * 2 + [(12, 32, 64, False), (8, 32, 64, False)] * 2
    assert all(run.patch is not None and 0.0 <= run.test_accuracy <= 1.0 for run in runs)
