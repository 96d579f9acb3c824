"""Multi-task and multi-resolution training (paper §5.3, §5.4).

Every task gets its own Keras model built from the base's layers: layers of
the private patch kinds are copied per task, every other layer is the same
object in all task models, so its weights are shared and trained by every
task. Task 0 keeps the base's own private layers, so the saved base
checkpoint is task 0's model and the converter's base is task 0.

Batches of the tasks are interleaved, one step per task in turn. Each task
has its own optimizer whose learning rate decays per *its own* epoch
(``decay_epochs`` of that task's data), so the ratio of dataset size to
steps per decay is the same for every task and no task dominates.
"""

from __future__ import annotations

import contextlib
import sys
from dataclasses import dataclass

import numpy as np

from edgepatch.errors import UsageError
from edgepatch.format.delta import TaskInfo
from edgepatch.kinds import head_is_private, head_kind, owned_layer_ids, parse_kinds, statistics_after_training
from edgepatch.train.checkpoint import EpochCheckpoint
from edgepatch.train.data import ImageFolderSplit, PipelineBuilder, make_dataset
from edgepatch.train.patchfile import TaskPatch, extract_patch
from edgepatch.train.transfer import TrainConfig, accuracies, check_budget, choose_layers, prepare_for_training

# Private BN statistics train on batch statistics and are re-estimated after training.
BN_STATS_MODE = "reestimate"


@dataclass(frozen=True)
class MultiTaskConfig:
    private: tuple[str, ...]  # patch kinds private to each task
    epochs: int = 5
    learning_rate: float = 1e-3
    decay_epochs: float = 2.5  # paper: decay 0.98 every 2.5 epochs
    decay_rate: float = 0.98
    batch_size: int = 32
    reestimate_batches: int = 50
    seed: int = 0
    checkpoint_dir: str | None = None  # per-epoch checkpoint; a killed run restarted with it resumes
    budget: str | None = None  # per task (per resolution): parameters or 'N%' (``edgepatch.train.budget``)
    selector: str = "score"

    def __post_init__(self):
        if not isinstance(self.epochs, int) or self.epochs < 1:
            raise UsageError(f"epochs must be an integer >= 1. Received epochs={self.epochs}")
        if not self.learning_rate > 0:
            raise UsageError(f"learning rate must be > 0. Received lr={self.learning_rate}")
        if not self.decay_epochs > 0 or not 0 < self.decay_rate <= 1:
            raise UsageError(
                f"decay needs decay_epochs > 0 and 0 < decay_rate <= 1. "
                f"Received decay_epochs={self.decay_epochs}, decay_rate={self.decay_rate}"
            )
        if self.budget is not None:
            check_budget(self.private, self.budget, self.selector)


@dataclass
class TaskRun:
    info: TaskInfo
    split: ImageFolderSplit
    model: object = None
    train_accuracy: float = 0.0
    test_accuracy: float = 0.0
    patch: TaskPatch | None = None
    selection: tuple[str, ...] | None = None  # with a budget: the layers of the private kinds this task keeps


def build_task_models(base, infos: list[TaskInfo], private: tuple[str, ...], seed: int = 0,
                      selections: list | None = None) -> list:
    """One model per task; layers of ``private`` kinds are per task, all others shared.

    A private head (a kind in ``private`` owns it) gets ``len(info.classes)``
    outputs; a shared head requires every task to have the base's classes.
    ``selections`` (one per task, from a budget) narrow each task's private layers; then every
    task copies its own, and the base's layers are the shared ones (``shared_base``).
    """
    from edgepatch.kinds.keras_sites import head_layer
    from edgepatch.train.models import clone_with_input, with_new_head

    private_ids = [owned_layer_ids(base, private, selection) for selection in (selections or [None] * len(infos))]
    private_head = head_is_private(private)
    head = head_layer(base)
    models = []
    for index, info in enumerate(infos):
        if index == 0 and selections is None:
            model = clone_with_input(base, info.resolution, lambda layer: layer)
        else:
            copies = {}

            def clone(layer, copies=copies, private_ids=private_ids[index]):
                if id(layer) not in private_ids:
                    return layer
                copies[layer.name] = (layer, type(layer).from_config(layer.get_config()))
                return copies[layer.name][1]

            model = clone_with_input(base, info.resolution, clone)
            for original, copy in copies.values():
                copy.set_weights(original.get_weights())
        if private_head and len(info.classes) != head.units:
            model = with_new_head(model, len(info.classes), seed + index)
        elif len(info.classes) != head.units:
            raise UsageError(
                f"task '{info.name}' has {len(info.classes)} classes but the head is shared with "
                f"{head.units} outputs; make '{head_kind().name}' private or use tasks with the same classes"
            )
        models.append(model)
    return models


def _optimizer(config: MultiTaskConfig, steps_per_epoch: int):
    import keras

    schedule = keras.optimizers.schedules.ExponentialDecay(
        config.learning_rate,
        decay_steps=max(1, int(round(config.decay_epochs * steps_per_epoch))),
        decay_rate=config.decay_rate,
        staircase=True,
    )
    return keras.optimizers.Adam(schedule)


def _train_step(model, optimizer, strategy, element_spec):
    """One synchronous step of one task, run on every replica of ``strategy``.

    Traced once for ``element_spec`` (the distributed iterator's, batch size unknown): a
    repeated dataset's partial last batch would otherwise trace the whole step a second time.
    """
    import keras
    import tensorflow as tf

    loss_fn = keras.losses.SparseCategoricalCrossentropy(from_logits=True, reduction="none")

    def replica_step(images, labels):
        with tf.GradientTape() as tape:
            logits = model(images, training=True)
            loss = tf.nn.compute_average_loss(loss_fn(labels, logits))
        gradients = tape.gradient(loss, model.trainable_variables)
        optimizer.apply_gradients(zip(gradients, model.trainable_variables))
        hits = tf.reduce_sum(tf.cast(tf.equal(tf.argmax(logits, -1), tf.cast(labels, tf.int64)), tf.float32))
        return loss, hits, tf.cast(tf.shape(labels)[0], tf.float32)

    @tf.function(input_signature=element_spec)
    def step(images, labels):
        """Return (mean loss, correct predictions, examples) over all replicas."""
        results = strategy.run(replica_step, args=(images, labels))
        return tuple(strategy.reduce(tf.distribute.ReduceOp.SUM, value, axis=None) for value in results)

    return step


def _task_models(base, runs: list[TaskRun], config: MultiTaskConfig, strategy, steps: list[int]):
    """The task models and their optimizers, built (slots included) inside ``strategy.scope()``."""
    import keras

    keras.utils.set_random_seed(config.seed)
    selections = [run.selection for run in runs] if config.budget is not None else None
    with strategy.scope():
        models = build_task_models(base, [r.info for r in runs], config.private, config.seed, selections)
        for model in models:
            for layer in model.layers:
                layer.trainable = True
        optimizers = [_optimizer(config, s) for s in steps]
        for model, optimizer in zip(models, optimizers):
            optimizer.build(model.trainable_variables)  # slots exist before a checkpoint restores them
    return models, optimizers


def _run_epochs(runs, iterators, train_steps, steps_per_round: int, config: MultiTaskConfig,
                checkpoint: EpochCheckpoint | None, verbose: int) -> None:
    """Interleave one step per task, ``steps_per_round`` rounds an epoch, from the last saved epoch on.

    With ``verbose``, a per-step bar on stderr (Keras' own, as ``fit`` draws in transfer training)
    shows each task's running loss and accuracy.
    """
    import keras

    for epoch in range(checkpoint.restore() if checkpoint else 0, config.epochs):
        totals = np.zeros((len(runs), 3))  # loss, correct, examples
        if verbose:
            print(f"epoch {epoch + 1}/{config.epochs}", file=sys.stderr)
        with contextlib.redirect_stdout(sys.stderr):  # Progbar writes to stdout; stdout is for results
            bar = keras.utils.Progbar(steps_per_round, verbose=1 if verbose else 0,
                                      stateful_metrics=[f"{r.info.name}_{m}" for r in runs for m in ("loss", "acc")])
            for done in range(1, steps_per_round + 1):
                for i, (iterator, step) in enumerate(zip(iterators, train_steps)):
                    images, labels = next(iterator)
                    totals[i] += [float(value) for value in step(images, labels)]
                bar.update(done, [(f"{r.info.name}_{m}", value) for r, t in zip(runs, totals)
                                  for m, value in (("loss", t[0] / done), ("acc", t[1] / max(t[2], 1)))])
        if checkpoint is not None:
            checkpoint.save(epoch + 1)


def _finish(runs, models, datasets, config: MultiTaskConfig, pipeline: PipelineBuilder) -> None:
    """Settle private BN statistics, then fill each run's model, accuracies and patch."""
    private = parse_kinds(config.private) if config.private else ()
    for run, model, dataset in zip(runs, models, datasets):
        statistics_after_training(model, private, BN_STATS_MODE, dataset, config.reestimate_batches, run.selection)
        run.model = model
        run.train_accuracy, run.test_accuracy = accuracies(
            model, [pipeline(items, run.info.resolution, run.info.preprocessing, 64, False)
                    for items in (run.split.train, run.split.test)])
        record = {"mode": "multitask", "epochs": config.epochs, "learning_rate": config.learning_rate,
                  "decay_epochs": config.decay_epochs, "decay_rate": config.decay_rate, "seed": config.seed,
                  "train_accuracy": run.train_accuracy, "test_accuracy": run.test_accuracy,
                  **({"budget": config.budget, "selector": config.selector} if run.selection is not None else {})}
        run.patch = extract_patch(model, run.info, private, private, record, run.selection) if private else None


def choose_task_layers(base, runs: list[TaskRun], config: MultiTaskConfig, pipeline: PipelineBuilder) -> None:
    """Each run's ``selection`` under ``config.budget``: chosen on its own data, on a copy of ``base``
    made as transfer training makes its task model (``edgepatch.train.transfer.choose_layers``)."""
    from edgepatch.kinds.keras_sites import head_layer
    from edgepatch.train.models import clone_with_input, with_new_head

    for index, run in enumerate(runs):
        model = clone_with_input(base, run.info.resolution)
        model.set_weights(base.get_weights())
        if len(run.info.classes) != head_layer(model).units:
            model = with_new_head(model, len(run.info.classes), config.seed + index)
        probe = TrainConfig(trained=config.private, learning_rate=config.learning_rate,
                            batch_size=config.batch_size, seed=config.seed + index, budget=config.budget,
                            selector=config.selector)
        prepare_for_training(model, config.private)
        run.selection = choose_layers(model, run.split, run.info, probe, pipeline).layers


def shared_base(base, runs: list[TaskRun]):
    """The model that holds the shared weights after training: task 0's, or ``base`` itself when each
    task copied its own budgeted layers (``build_task_models``)."""
    return base if runs[0].selection is not None else runs[0].model


def train_multitask(base, runs: list[TaskRun], config: MultiTaskConfig, strategy=None, verbose: int = 1,
                    pipeline: PipelineBuilder = make_dataset) -> list[TaskRun]:
    """Train all tasks together (interleaved batches); fill each run's model, accuracies and patch.

    Args:
        base: the starting Keras classifier; built inside ``strategy.scope()``
            when a strategy is given, since its layers become the shared ones.
        runs: one TaskRun per task (info + split); task 0 keeps the base's layers.
        config: private kinds, epochs and the per-task learning-rate schedule.
        strategy: a tf.distribute strategy (``edgepatch.train.strategy``); None: default.
        verbose: 0 silent, 1 a per-step progress bar on stderr.
        pipeline: builds the tf.data pipelines from each split's items (default: decode the image files).
    """
    import tensorflow as tf

    strategy = strategy or tf.distribute.get_strategy()
    if config.budget is not None:
        choose_task_layers(base, runs, config, pipeline)
    steps = [max(1, -(-len(r.split.train) // config.batch_size)) for r in runs]  # per task epoch
    models, optimizers = _task_models(base, runs, config, strategy, steps)
    datasets = [pipeline(r.split.train, r.info.resolution, r.info.preprocessing, config.batch_size, True,
                         config.seed + i) for i, r in enumerate(runs)]
    iterators = [iter(strategy.experimental_distribute_dataset(d.repeat())) for d in datasets]
    train_steps = [_train_step(m, o, strategy, it.element_spec) for m, o, it in zip(models, optimizers, iterators)]
    checkpoint = None
    if config.checkpoint_dir is not None:
        checkpoint = EpochCheckpoint(config.checkpoint_dir, **{f"model_{i}": m for i, m in enumerate(models)},
                                     **{f"optimizer_{i}": o for i, o in enumerate(optimizers)})
    _run_epochs(runs, iterators, train_steps, max(steps), config, checkpoint, verbose)
    _finish(runs, models, datasets, config, pipeline)
    return runs
