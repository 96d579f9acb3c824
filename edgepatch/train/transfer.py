"""Transfer training of a task patch (paper §2, §5.2), and full training.

Everything outside the task's patch is frozen. BatchNorm statistics need a
deliberate choice (``BN_STATS_MODES``): Keras' MobileNetV2 uses momentum
0.999, so in a short run the moving statistics barely move, and γ/β fitted
on batch statistics are then evaluated on stale ones.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import sys
from dataclasses import dataclass, field

import numpy as np

from edgepatch.atomic import write_bytes_atomic
from edgepatch.train.data import ImageFolderSplit, make_dataset
from edgepatch.format.delta import TaskInfo
from edgepatch.errors import UsageError
from edgepatch.train.patchfile import TaskPatch, extract_patch

BN_STATS_MODES = {
    "frozen": "BN normalises with the base's moving statistics while gamma/beta train",
    "reestimate": "train on batch statistics, then re-estimate the moving statistics on the training data",
    "momentum": "train on batch statistics with BN momentum lowered to --bn-momentum",
}
DEFAULT_BN_STATS = "frozen"
HEAD_KIND = "logits"


def default_learning_rate(trained: tuple[str, ...]) -> float:
    """Patches want a large learning rate; full fine-tuning a small one (paper, appendix B.2)."""
    return 1e-4 if "full" in trained else 1e-3


@dataclass(frozen=True)
class TrainConfig:
    """Settings of one training run; validated on construction."""

    trained: tuple[str, ...]  # patch kinds to train, or ("full",)
    epochs: int = 5
    learning_rate: float | None = None  # None: default_learning_rate(trained)
    batch_size: int = 32
    bn_stats: str = DEFAULT_BN_STATS
    bn_momentum: float = 0.9
    reestimate_batches: int = 100
    seed: int = 0
    backup_dir: str | None = None  # per-epoch backup; a killed run restarted with it resumes
    extra: dict = field(default_factory=dict)

    def __post_init__(self):
        if not isinstance(self.epochs, int) or self.epochs < 1:
            raise UsageError(f"epochs must be an integer >= 1. Received epochs={self.epochs}")
        if self.learning_rate is not None and not self.learning_rate > 0:
            raise UsageError(f"learning rate must be > 0. Received lr={self.learning_rate}")
        if not isinstance(self.batch_size, int) or self.batch_size < 1:
            raise UsageError(f"batch size must be an integer >= 1. Received batch_size={self.batch_size}")
        if self.bn_stats not in BN_STATS_MODES:
            raise UsageError(f"bn-stats must be one of {list(BN_STATS_MODES)}. Received '{self.bn_stats}'")
        if not 0.0 <= self.bn_momentum < 1.0:
            raise UsageError(f"bn-momentum must be in [0, 1). Received {self.bn_momentum}")

    @property
    def lr(self) -> float:
        return self.learning_rate if self.learning_rate is not None else default_learning_rate(self.trained)


@dataclass
class TrainResult:
    model: object  # the trained Keras task model
    train_accuracy: float
    test_accuracy: float
    patch: TaskPatch | None  # None for full training
    trained_parameters: int


class EpochBackup:
    """Per-epoch weights in a directory, written so that a kill at any instant leaves a usable backup.

    Weights go to a temporary file renamed to ``epoch-N.weights.h5``; only then is
    ``backup.json`` (naming that file) replaced atomically. A restart reads
    ``backup.json`` and continues after epoch N. (Keras' BackupAndRestore writes
    its file in place, so a kill mid-write leaves a backup that cannot be read.)
    """

    def __init__(self, directory: str):
        self.directory = directory
        self.index = os.path.join(directory, "backup.json")

    def restore(self, model) -> int:
        """Load the last complete epoch's weights into ``model``; return that epoch count (0: none)."""
        if not os.path.isfile(self.index):
            return 0
        with open(self.index) as handle:
            record = json.load(handle)
        model.load_weights(os.path.join(self.directory, record["weights"]))
        print(f"resumed from {self.directory} after epoch {record['epoch']}", file=sys.stderr)
        return int(record["epoch"])

    def save(self, model, epoch: int) -> None:
        os.makedirs(self.directory, exist_ok=True)
        name = f"epoch-{epoch}.weights.h5"
        temporary = os.path.join(self.directory, f".tmp-{name}")
        model.save_weights(temporary)
        os.replace(temporary, os.path.join(self.directory, name))
        write_bytes_atomic(self.index, json.dumps({"epoch": epoch, "weights": name}).encode())
        for old in os.listdir(self.directory):
            if old.startswith("epoch-") and old != name:
                os.remove(os.path.join(self.directory, old))

    def callback(self):
        import keras

        backup = self

        class SaveEachEpoch(keras.callbacks.Callback):
            def on_epoch_end(self, epoch, logs=None):
                backup.save(self.model, epoch + 1)

        return SaveEachEpoch()

    def clear(self) -> None:
        shutil.rmtree(self.directory, ignore_errors=True)


@contextlib.contextmanager
def _statistics_frozen(bn_layers):
    """Run BN layers in inference mode even while fit() trains their gamma/beta.

    Keras 3 uses batch statistics whenever a trainable BN is called in
    training mode, and has no flag for "train gamma/beta on moving
    statistics", so the call is wrapped per instance and restored after.
    """
    for layer in bn_layers:
        original = type(layer).call.__get__(layer)

        def call(inputs, training=None, mask=None, _original=original):
            return _original(inputs, training=False, mask=mask)

        layer.call = call
    try:
        yield
    finally:
        for layer in bn_layers:
            del layer.call


@contextlib.contextmanager
def _bn_momentum(bn_layers, momentum: float):
    saved = [layer.momentum for layer in bn_layers]
    for layer in bn_layers:
        layer.momentum = momentum
    try:
        yield
    finally:
        for layer, value in zip(bn_layers, saved):
            layer.momentum = value


def reestimate_bn_statistics(model, dataset, max_batches: int) -> int:
    """Replace every BN's moving statistics by their average over ``max_batches`` batches.

    Returns the number of batches used. Momentum k/(k+1) at batch k makes the
    moving value the running mean of the batch statistics.
    """
    from edgepatch.kinds import get_kind

    bn_layers = get_kind("scale_bias").layers(model)
    saved = [(layer.trainable, layer.momentum) for layer in bn_layers]
    batches = 0
    try:
        for layer in bn_layers:
            layer.trainable = True
        for images, _ in dataset.take(max_batches):
            for layer in bn_layers:
                layer.momentum = batches / (batches + 1)
            model(images, training=True)
            batches += 1
    finally:
        for layer, (trainable, momentum) in zip(bn_layers, saved):
            layer.trainable, layer.momentum = trainable, momentum
    return batches


def _freeze_outside(model, trained: tuple[str, ...]) -> int:
    """Make only the trained kinds' layers trainable; return the trained parameter count."""
    from edgepatch.kinds import get_kind

    if trained == ("full",):
        for layer in model.layers:
            layer.trainable = True
        return sum(int(np.prod(v.shape)) for v in model.trainable_variables)
    trainable_layers = {id(l) for name in trained for l in get_kind(name).layers(model)}
    for layer in model.layers:
        layer.trainable = id(layer) in trainable_layers
    return sum(get_kind(name).parameter_count(model) for name in trained)


def accuracy(model, dataset) -> float:
    correct = total = 0
    for images, labels in dataset:
        predicted = np.argmax(model(images, training=False), axis=-1)
        correct += int(np.sum(predicted == labels.numpy()))
        total += int(labels.shape[0])
    return correct / max(total, 1)


def train(model, split: ImageFolderSplit, task: TaskInfo, config: TrainConfig, verbose: int = 1) -> TrainResult:
    """Train ``model`` in place on ``split`` and return the task patch (or, for full training, none).

    Args:
        model: a Keras classifier whose head matches ``task.classes``.
        split: train/test items from ``edgepatch.train.data.scan_image_folders``.
        task: the task's name, classes, resolution and preprocessing.
        config: what to train and how.
        verbose: 0 silent, 1 a progress bar on stderr.
    """
    import keras

    from edgepatch.kinds import get_kind

    full = config.trained == ("full",)
    parameters = _freeze_outside(model, config.trained)
    train_data = make_dataset(split.train, task.resolution, task.preprocessing, config.batch_size, True, config.seed)
    test_data = make_dataset(split.test, task.resolution, task.preprocessing, config.batch_size, False)
    model.compile(
        optimizer=keras.optimizers.Adam(config.lr),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        metrics=["accuracy"],
    )
    bn_layers = get_kind("scale_bias").layers(model)
    trains_bn = full or "scale_bias" in config.trained
    if not trains_bn or config.bn_stats == "reestimate":
        context = contextlib.nullcontext()
    elif config.bn_stats == "frozen":
        context = _statistics_frozen(bn_layers)
    else:
        context = _bn_momentum(bn_layers, config.bn_momentum)
    keras.utils.set_random_seed(config.seed)
    backup = EpochBackup(config.backup_dir) if config.backup_dir else None
    initial_epoch = backup.restore(model) if backup else 0
    callbacks = [backup.callback()] if backup else []
    with context, contextlib.redirect_stdout(sys.stderr):
        model.fit(train_data, epochs=config.epochs, initial_epoch=initial_epoch, verbose=1 if verbose else 0,
                  callbacks=callbacks)
    if backup:
        backup.clear()
    if trains_bn and config.bn_stats == "reestimate":
        reestimate_bn_statistics(model, train_data, config.reestimate_batches)
    train_accuracy = accuracy(model, make_dataset(split.train, task.resolution, task.preprocessing, 64, False))
    test_accuracy = accuracy(model, test_data)
    patch = None
    if not full:
        private = tuple(dict.fromkeys((*config.trained, HEAD_KIND)))
        record = {
            "epochs": config.epochs,
            "learning_rate": config.lr,
            "batch_size": config.batch_size,
            "bn_stats": config.bn_stats,
            "seed": config.seed,
            "train_accuracy": train_accuracy,
            "test_accuracy": test_accuracy,
            "trained_parameters": parameters,
            **config.extra,
        }
        from edgepatch.kinds import parse_kinds

        patch = extract_patch(model, task, parse_kinds(private), config.trained, record)
    return TrainResult(model, train_accuracy, test_accuracy, patch, parameters)
