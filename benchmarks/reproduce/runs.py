"""One run through the training API, described by a frozen spec and recorded as a JSON-able dict.

A run's ``key`` names everything that determines it, so experiments that
need the same run share it, and a rerun with the same results file skips it.
"""

from __future__ import annotations

import gc
import sys
import time
from dataclasses import asdict, dataclass, field

from benchmarks.reproduce.plan import VARIANTS

WEIGHTS = ("imagenet", "random")
MULTI_CONFIGS = {
    # config -> private patch kinds per task (None: one independently trained model per task)
    "sb+last private": ("scale_bias", "logits"),
    "last private": ("logits",),
    "sb private": ("scale_bias",),
    "all shared": (),
    "independent": None,
}


@dataclass(frozen=True)
class TransferSpec:
    dataset: str  # a name in Context.data_dirs
    variant: str  # a key of plan.VARIANTS
    resolution: int
    epochs: int
    lr: float
    seed: int
    bn_stats: str = "frozen"
    weights: str = "imagenet"  # or "random"
    batch_size: int = 32

    @property
    def key(self) -> str:
        return (f"transfer|{self.dataset}|{self.variant}|{self.weights}|r{self.resolution}|e{self.epochs}"
                f"|lr{self.lr:g}|s{self.seed}|bn-{self.bn_stats}|b{self.batch_size}")


@dataclass(frozen=True)
class MultiSpec:
    tasks: tuple[tuple[str, int], ...]  # (dataset name, resolution) per task
    config: str  # a key of MULTI_CONFIGS
    epochs: int
    lr: float
    seed: int
    batch_size: int = 32

    @property
    def key(self) -> str:
        tasks = ",".join(f"{name}@{res}" for name, res in self.tasks)
        return f"multi|{tasks}|{self.config}|e{self.epochs}|lr{self.lr:g}|s{self.seed}|b{self.batch_size}"


@dataclass
class Context:
    """Where things are, and what every run shares within one process."""

    weights_path: str
    data_dirs: dict[str, str]  # dataset name -> class-folder directory
    cache: object  # datasets.DecodedCache
    bn_momentum: float = 0.9
    verbose: bool = True
    _splits: dict = field(default_factory=dict)

    def split(self, dataset: str):
        """The dataset's train/test items, scanned once per process."""
        from edgepatch.train.data import scan_image_folders

        if dataset not in self._splits:
            self._splits[dataset] = scan_image_folders(self.data_dirs[dataset])
        return self._splits[dataset]


def _task(name: str, split, resolution: int):
    from edgepatch.format.delta import TaskInfo
    from edgepatch.train.models import BACKBONES

    return TaskInfo(name, split.classes, resolution, BACKBONES["mobilenet_v2"].preprocessing)


def _fresh_model(ctx: Context, weights: str, resolution: int, classes: int, seed: int):
    from edgepatch.train.models import build_classifier

    return build_classifier("mobilenet_v2", alpha=1.0, resolution=resolution,
                            weights=ctx.weights_path if weights == "imagenet" else "none",
                            num_classes=classes, seed=seed)


def _release() -> None:
    import keras

    _forget_custom_gradients()
    keras.backend.clear_session(free_memory=True)
    gc.collect()


def _forget_custom_gradients() -> None:
    """Drop the gradient functions TensorFlow registered for the finished run's traced graphs.

    Keras's optimizer all-reduces gradients through ``tf.custom_gradient``, which in
    a traced graph registers a gradient function in a process-wide registry that
    is never emptied. Each one holds its whole train-step graph: a full fine-tune
    left ~210k objects and ~170 MB per run, and a 69-run process slowed as its
    garbage collector walked them. No graph of a finished run is differentiated again.
    """
    from tensorflow.python.framework import ops

    registry = getattr(getattr(ops, "_gradient_registry", None), "_registry", None)
    if isinstance(registry, dict):
        for name in [name for name in registry if name.startswith("CustomGradient-")]:
            del registry[name]


def run_transfer(ctx: Context, spec: TransferSpec) -> dict:
    """Train one variant with ``edgepatch.train.transfer.train``; return its record."""
    from edgepatch.kinds import reestimate_statistics
    from edgepatch.train.transfer import TrainConfig, train

    trained, stats_first = VARIANTS[spec.variant]
    split = ctx.split(spec.dataset)
    task = _task(spec.dataset, split, spec.resolution)
    started = time.perf_counter()
    model = _fresh_model(ctx, spec.weights, spec.resolution, len(split.classes), spec.seed)
    if stats_first:  # paper table 6, row 2: statistics re-estimated on the task's data, then the head trained
        data = ctx.cache.make_dataset(split.train, spec.resolution, task.preprocessing, spec.batch_size, True,
                                      spec.seed)
        reestimate_statistics(model, data, max_batches=100)
    config = TrainConfig(trained=trained, epochs=spec.epochs, learning_rate=spec.lr, batch_size=spec.batch_size,
                         bn_stats=spec.bn_stats, bn_momentum=ctx.bn_momentum, seed=spec.seed)
    result = train(model, split, task, config, verbose=0, pipeline=ctx.cache.make_dataset)
    record = {
        "kind": "transfer", "key": spec.key, **asdict(spec),
        "trained": list(trained), "bn_statistics_reestimated_before_training": stats_first,
        "classes": len(split.classes), "train_images": len(split.train), "test_images": len(split.test),
        "train_accuracy": result.train_accuracy, "test_accuracy": result.test_accuracy,
        "trained_parameters": result.trained_parameters,
        "total_parameters": int(model.count_params()),
        "seconds": round(time.perf_counter() - started, 1),
    }
    del model, result
    _release()
    return record


def _unique_parameter_count(models) -> int:
    """Parameters stored for all ``models`` together: a variable shared by several counts once."""
    import numpy as np

    unique = {id(v): v for model in models for v in model.weights}
    return int(sum(np.prod(v.shape) for v in unique.values()))


def reestimate_shared_statistics(models, datasets, batches_per_task: int) -> None:
    """Re-estimate BN moving statistics over all tasks' data, for BN layers that tasks share.

    ``train_multitask`` re-estimates statistics only when a private kind owns
    them (``scale_bias``). Otherwise BN trained in training mode keeps moving statistics
    that moved 0.1% per step (momentum 0.999). This sets every BN layer's
    statistics to the mean of its batch statistics over ``batches_per_task``
    batches of each model's data, so a layer shared by all tasks gets the
    average over all of them.
    """
    from edgepatch.kinds import average_batch_statistics, batch_norm_layers

    layers = {id(layer): layer for model in models for layer in batch_norm_layers(model)}
    average_batch_statistics([(model, dataset.take(batches_per_task)) for model, dataset in zip(models, datasets)],
                             list(layers.values()))


def _train_group(ctx: Context, spec: MultiSpec, tasks: tuple, private: tuple) -> list:
    """One call of ``train_multitask`` over ``tasks``; returns the filled TaskRuns."""
    from edgepatch.kinds import statistics_are_private
    from edgepatch.train.multitask import MultiTaskConfig, TaskRun, train_multitask
    from edgepatch.train.transfer import accuracies

    runs = [TaskRun(_task(name, ctx.split(name), res), ctx.split(name)) for name, res in tasks]
    base = _fresh_model(ctx, "imagenet", tasks[0][1], len(runs[0].split.classes), spec.seed)
    config = MultiTaskConfig(private=private, epochs=spec.epochs, learning_rate=spec.lr,
                             batch_size=spec.batch_size, seed=spec.seed)
    train_multitask(base, runs, config, verbose=0, pipeline=ctx.cache.make_dataset)
    for run in runs:
        run.api_train_accuracy, run.api_test_accuracy = run.train_accuracy, run.test_accuracy
    if not statistics_are_private(private):  # see reestimate_shared_statistics
        data = [ctx.cache.make_dataset(r.split.train, r.info.resolution, r.info.preprocessing, spec.batch_size,
                                       True, spec.seed + i) for i, r in enumerate(runs)]
        reestimate_shared_statistics([r.model for r in runs], data, config.reestimate_batches)
        for run in runs:
            splits = [ctx.cache.make_dataset(items, run.info.resolution, run.info.preprocessing, 64, False)
                      for items in (run.split.train, run.split.test)]
            run.train_accuracy, run.test_accuracy = accuracies(run.model, splits)
    return runs


def run_multi(ctx: Context, spec: MultiSpec) -> dict:
    """Train all tasks of ``spec`` together (or each alone for 'independent'); return the record."""
    from edgepatch.kinds import statistics_are_private

    private = MULTI_CONFIGS[spec.config]
    started = time.perf_counter()
    if private is None:
        runs = [run for task in spec.tasks for run in _train_group(ctx, spec, (task,), ())]
        models = [run.model for run in runs]
    else:
        runs = _train_group(ctx, spec, spec.tasks, private)
        models = [run.model for run in runs]
    record = {
        "kind": "multi", "key": spec.key, **asdict(spec),
        "tasks": [{"dataset": name, "resolution": res} for name, res in spec.tasks],
        "private": None if private is None else list(private),
        "results": [
            {"dataset": name, "resolution": res, "train_accuracy": run.train_accuracy,
             "api_train_accuracy": run.api_train_accuracy, "api_test_accuracy": run.api_test_accuracy,
             "test_accuracy": run.test_accuracy}
            for (name, res), run in zip(spec.tasks, runs)
        ],
        "total_parameters": _unique_parameter_count(models),
        "shared_statistics_reestimated": private is None or not statistics_are_private(private),
        "seconds": round(time.perf_counter() - started, 1),
    }
    del runs, models
    _release()
    return record


class Runner:
    """Runs specs once each, keeps records by key, and reports progress on stderr.

    ``pool`` holds records of an earlier invocation (same weights and data):
    a spec whose key is there is taken from it instead of being trained
    again. Only specs the schedule asks for enter ``records``.
    """

    def __init__(self, ctx: Context, pool: dict | None = None, on_record=None):
        self.ctx = ctx
        self.pool: dict[str, dict] = dict(pool or {})
        self.records: dict[str, dict] = {}
        self.on_record = on_record
        self.count = 0
        self.call_seconds = 0.0  # wall time inside __call__ for trained runs: their seconds + release + save

    def pending(self) -> list[dict]:
        """Pool records not asked for (yet)."""
        return [record for key, record in self.pool.items() if key not in self.records]

    def __call__(self, spec) -> dict:
        if spec.key in self.records:
            return self.records[spec.key]
        self.count += 1
        reused = spec.key in self.pool and _current(self.pool[spec.key])
        started = time.perf_counter()
        if reused:
            record = self.pool[spec.key]
        else:
            record = run_transfer(self.ctx, spec) if isinstance(spec, TransferSpec) else run_multi(self.ctx, spec)
        self.records[spec.key] = record
        if self.ctx.verbose:
            print(f"[{self.count}{' reused' if reused else ''}] {_summary(record)}", file=sys.stderr, flush=True)
        if self.on_record is not None:
            self.on_record(self.records)
        if not reused:
            self.call_seconds += time.perf_counter() - started
        return record


def _current(record: dict) -> bool:
    """Whether an earlier invocation's record has what this version measures: multi-task records written
    before train accuracy was measured again after shared statistics were re-estimated are run again."""
    return record["kind"] != "multi" or not record["shared_statistics_reestimated"] or \
        all("api_train_accuracy" in task for task in record["results"])


def _summary(record: dict) -> str:
    if record["kind"] == "transfer":
        return (f"{record['dataset']} {record['variant']} ({record['weights']}) r{record['resolution']} "
                f"e{record['epochs']} lr{record['lr']:g} s{record['seed']} bn-{record['bn_stats']}: "
                f"test {record['test_accuracy']:.3f} ({record['seconds']:.0f} s)")
    accuracies = ", ".join(f"{r['dataset']}@{r['resolution']} {r['test_accuracy']:.3f}" for r in record["results"])
    return (f"{record['config']} e{record['epochs']} lr{record['lr']:g} s{record['seed']}: {accuracies} "
            f"({record['seconds']:.0f} s)")
