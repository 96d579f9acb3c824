"""Transfer training of a task patch (paper §2, §5.2), and full training.

Everything outside the trained kinds is frozen. What is trained, whether
the head is private and how BatchNorm statistics are handled come from the
kind registry (``edgepatch.kinds``); the run picks one of ``BN_STATS_MODES``.
"""

from __future__ import annotations

import contextlib
import sys
from dataclasses import dataclass, field

import numpy as np

from edgepatch.errors import UsageError
from edgepatch.format.delta import TaskInfo
from edgepatch.kinds import (
    BN_STATS_MODES,
    DEFAULT_BN_STATS,
    default_learning_rate,
    makes_patch,
    selectable_kind_names,
    statistics_after_training,
)
from edgepatch.kinds.forward import traced_forward
from edgepatch.train.budget import Budget, Selection, SelectionContext, budget_units, get_selector, select_layers
from edgepatch.train.checkpoint import EpochCheckpoint
from edgepatch.train.data import ImageFolderSplit, PipelineBuilder, make_dataset
from edgepatch.train.head_cache import caches_features, fit_head_on_features
from edgepatch.train.native import freeze_outside, prepare_for_training, task_patch  # noqa: F401 (re-export)
from edgepatch.train.patchfile import TaskPatch


@dataclass(frozen=True)
class TrainConfig:
    """Settings of one training run; validated on construction."""

    trained: tuple[str, ...]  # kinds to train: patch kinds, or a whole-model kind alone (``parse_trained_kinds``)
    epochs: int = 5
    learning_rate: float | None = None  # None: the trained kinds' default_learning_rate
    batch_size: int = 32
    bn_stats: str = DEFAULT_BN_STATS
    bn_momentum: float = 0.9
    reestimate_batches: int = 100
    seed: int = 0
    backup_dir: str | None = None  # per-epoch checkpoint; a killed run restarted with it resumes
    cache_features: bool = True  # head-only kinds: train on backbone features computed once (``head_cache``)
    budget: str | None = None  # parameters or 'N%' of the selectable kinds' patch (``edgepatch.train.budget``)
    selector: str = "score"  # how a budget picks its layers (``edgepatch.train.budget.SELECTORS``)
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
        if self.budget is not None:
            check_budget(self.trained, self.budget, self.selector)

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


def accuracies(model, datasets) -> list[float]:
    """Top-1 accuracy of ``model`` on each of ``datasets`` (same image shape), its forward traced once."""
    forward = traced_forward(model, datasets[0], training=False)
    results = []
    for dataset in datasets:
        correct = total = 0
        for images, labels in dataset:
            predicted = np.argmax(forward(images), axis=-1)
            correct += int(np.sum(predicted == labels.numpy()))
            total += int(labels.shape[0])
        results.append(correct / max(total, 1))
    return results


def accuracy(model, dataset) -> float:
    return accuracies(model, [dataset])[0]


def check_budget(trained, budget: str, selector: str) -> None:
    """Refuse a budget that cannot apply to ``trained``: a parsable amount, a known selector, a kind to narrow."""
    Budget.parse(budget)
    get_selector(selector)
    if not makes_patch(trained) or not set(trained) & set(selectable_kind_names()):
        raise UsageError(f"a budget narrows a patch's {' or '.join(selectable_kind_names())} kind. "
                         f"Received --patch {','.join(trained) or 'none'}")


def choose_layers(model, split: ImageFolderSplit, task: TaskInfo, config: TrainConfig,
                  pipeline: PipelineBuilder = make_dataset, verbose: int = 0) -> Selection:
    """The layers ``config.budget`` keeps private, chosen by ``config.selector`` on the training data.

    ``model`` must be prepared with every unit trainable (``prepare_for_training`` without a selection);
    the data-driven selectors leave its weights as they found them.
    """
    units = budget_units(model, config.trained)
    context = SelectionContext(
        model=model,
        train_data=pipeline(split.train, task.resolution, task.preprocessing, config.batch_size, True, config.seed),
        features_data=pipeline(split.train, task.resolution, task.preprocessing, config.batch_size, False),
        learning_rate=config.lr, batch_size=config.batch_size, seed=config.seed, verbose=verbose)
    selection = select_layers(units, Budget.parse(config.budget), config.selector, context)
    if verbose:
        print(f"budget {config.budget}: {len(selection.layers)} of {len(units)} layers private, "
              f"{selection.parameters} of {selection.full_parameters} parameters ({config.selector})", file=sys.stderr)
    return selection


def _fit(model, train_data, config: TrainConfig, verbose: int, selection: Selection | None = None) -> None:
    """Compile and fit, resuming from and saving to ``config.backup_dir`` when set."""
    import keras

    model.compile(
        optimizer=keras.optimizers.Adam(config.lr),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        metrics=["accuracy"],
    )
    keras.utils.set_random_seed(config.seed)
    backup = EpochCheckpoint(config.backup_dir, weights=list(model.weights)) if config.backup_dir else None
    initial_epoch = backup.restore() if backup else 0
    callbacks = [backup.keras_callback()] if backup else []
    with contextlib.redirect_stdout(sys.stderr):  # the BN mode was set by prepare_for_training
        model.fit(train_data, epochs=config.epochs, initial_epoch=initial_epoch, verbose=1 if verbose else 0,
                  callbacks=callbacks)
    if backup:
        backup.clear()
    statistics_after_training(model, config.trained, config.bn_stats, train_data, config.reestimate_batches,
                              selection.layers if selection else None)


def train(model, split: ImageFolderSplit, task: TaskInfo, config: TrainConfig, verbose: int = 1,
          pipeline: PipelineBuilder = make_dataset) -> TrainResult:
    """Train ``model`` in place on ``split`` and return the task patch (or, for full training, none).

    Args:
        model: a Keras classifier whose head matches ``task.classes``.
        split: train/test items from ``edgepatch.train.data.scan_image_folders``.
        task: the task's name, classes, resolution and preprocessing.
        config: what to train and how.
        verbose: 0 silent, 1 a progress bar on stderr.
        pipeline: builds the tf.data pipelines from ``split``'s items (default: decode the image files).
    """
    parameters = prepare_for_training(model, config.trained, config.bn_stats, config.bn_momentum)
    selection = None
    if config.budget is not None:
        selection = choose_layers(model, split, task, config, pipeline, verbose)
        parameters = prepare_for_training(model, config.trained, config.bn_stats, config.bn_momentum,
                                          selection.layers)
    cached = config.cache_features and caches_features(model, config.trained)  # the backbone runs once
    train_data = pipeline(split.train, task.resolution, task.preprocessing, config.batch_size, not cached,
                          config.seed)
    test_data = pipeline(split.test, task.resolution, task.preprocessing, config.batch_size, False)
    if cached:
        fit_head_on_features(model, train_data, learning_rate=config.lr, epochs=config.epochs,
                             batch_size=config.batch_size, seed=config.seed, verbose=verbose)
    else:
        _fit(model, train_data, config, verbose, selection)
    train_accuracy, test_accuracy = accuracies(
        model, [pipeline(split.train, task.resolution, task.preprocessing, 64, False), test_data])
    patch = None
    if makes_patch(config.trained):
        record = {
            "epochs": config.epochs,
            "learning_rate": config.lr,
            "batch_size": config.batch_size,
            "bn_stats": config.bn_stats,
            "seed": config.seed,
            "train_accuracy": train_accuracy,
            "test_accuracy": test_accuracy,
            "trained_parameters": parameters,
            **({"budget": config.budget, **selection.record()} if selection else {}),
            **config.extra,
        }
        patch = task_patch(model, task, config.trained, record)
    return TrainResult(model, train_accuracy, test_accuracy, patch, parameters)
