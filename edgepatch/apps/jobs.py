"""The train and convert commands as plain functions returning JSON-able dicts.

Top layer: used by the CLI and the demo; imports TensorFlow and the
converters, so nothing below it (runtime, delta format) imports it.
"""

from __future__ import annotations

import dataclasses
import os
import sys
import tempfile

from edgepatch.errors import UsageError

DEFAULT_BACKBONE = "mobilenet_v2"  # built when --base is not given and --weights is not a checkpoint
DEFAULT_HOLDOUT = 0.2  # multi-task: each task's test share when its folder has no test/ (scan_image_folders)


def _quiet_tensorflow() -> None:
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


def train_command(*, backbone, alpha, resolution, weights, data_dir, task_name, patch_spec, epochs, lr,
                  batch_size, bn_stats, bn_momentum, holdout, seed, out_dir, strategy="none",
                  preprocessing="auto", quiet=False, budget=None, selector="score") -> dict:
    """Transfer-train one task; write OUT/base.keras and OUT/<task>.patch.

    ``backbone`` None: mobilenet_v2 when building, no family (for ``preprocessing="auto"``) for a checkpoint.
    """
    from edgepatch.format.delta import TaskInfo
    from edgepatch.kinds import DEFAULT_BN_STATS, makes_patch, parse_trained_kinds
    from edgepatch.train.data import scan_image_folders
    from edgepatch.train.models import with_new_head
    from edgepatch.train.patchfile import write_patch
    from edgepatch.train.strategy import make_strategy
    from edgepatch.train.transfer import TrainConfig, train

    trained = parse_trained_kinds(patch_spec)
    config = TrainConfig(trained=trained, epochs=epochs, learning_rate=lr, batch_size=batch_size,
                         bn_stats=bn_stats or DEFAULT_BN_STATS, bn_momentum=bn_momentum, seed=seed,
                         backup_dir=os.path.join(out_dir, ".train-backup"), budget=budget, selector=selector,
                         extra=_train_data(data_dir, holdout, seed))
    split = scan_image_folders(data_dir, holdout, seed)
    name = task_name or os.path.basename(os.path.normpath(data_dir))
    _quiet_tensorflow()
    distribution = make_strategy(strategy)  # before any other TensorFlow work
    with distribution.scope():
        base = _starting_model(backbone, alpha, resolution, weights, len(split.classes), seed)
    mode, recorded = _task_preprocessing(preprocessing, base, backbone, weights)
    task = TaskInfo(name, split.classes, resolution, recorded)
    os.makedirs(out_dir, exist_ok=True)
    writes_patch = makes_patch(trained)  # else a whole fine-tuned model, OUT/model.keras
    if writes_patch:
        base_path = os.path.join(out_dir, "base.keras")
        _save_model_atomic(base, base_path)  # the shared weights, before training touches any layer
    with distribution.scope():
        model = with_new_head(base, len(split.classes), seed) if weights.endswith(".keras") else base
        result = train(model, split, task, config, verbose=0 if quiet else 1)
    if writes_patch:
        patch_path = os.path.join(out_dir, f"{name}.patch")
        write_patch(patch_path, result.patch)
        outputs = {"base_checkpoint": base_path, "patch": patch_path, "config": result.patch.training}
    else:
        model_path = os.path.join(out_dir, "model.keras")
        _save_model_atomic(model, model_path)
        outputs = {"model": model_path, "config": {"epochs": epochs, "learning_rate": config.lr, "seed": seed}}
    return {
        "task": name,
        "classes": list(split.classes),
        "train_accuracy": result.train_accuracy,
        "test_accuracy": result.test_accuracy,
        "trained_parameters": result.trained_parameters,
        "preprocessing": mode,
        **outputs,
    }


def _starting_model(backbone, alpha, resolution, weights, num_classes, seed):
    """The model training starts from: a .keras checkpoint, or a backbone built with weights."""
    from edgepatch.train.models import BACKBONES, build_classifier, load_checkpoint

    if backbone is not None and backbone not in BACKBONES:
        raise UsageError(f"--base must be one of {sorted(BACKBONES)}. Received '{backbone}'")
    _quiet_tensorflow()
    if not weights.endswith(".keras"):
        return _canonical(build_classifier(backbone or DEFAULT_BACKBONE, alpha=alpha, resolution=resolution,
                                           weights=weights, num_classes=num_classes, seed=seed))
    base = _canonical(load_checkpoint(weights), weights)
    input_size = tuple(base.inputs[0].shape[1:3])
    if input_size != (resolution, resolution):
        raise UsageError(f"checkpoint '{weights}' takes {input_size[0]}x{input_size[1]} inputs; "
                         f"pass --resolution {input_size[0]}. Received --resolution {resolution}")
    return base


def _canonical(model, source="MODEL"):
    """``model`` in the canonical form (``edgepatch.train.graph``), saying on stderr what was rewritten.

    Stops here, before any training, when convert would refuse the model (``edgepatch.apps.check``).
    """
    from edgepatch.apps.check import refuse_unconvertible
    from edgepatch.train.graph import canonical_model

    canonical = canonical_model(model)
    refuse_unconvertible(canonical.model, source)
    print_notes(canonical.notes)
    return canonical.model


def print_notes(notes) -> None:
    for note in notes:
        print(f"note: {note}", file=sys.stderr)


def multitask_command(*, backbone, alpha, weights, tasks, private_spec, epochs, lr, batch_size, seed,
                      out_dir, strategy="none", preprocessing="auto", quiet=False, budget=None,
                      selector="score") -> dict:
    """Train several tasks at once (shared weights + a private patch each).

    ``tasks`` is a list of (name, data_dir, resolution); the same data_dir at
    several resolutions is multi-resolution training.
    """
    from edgepatch.format.delta import TaskInfo
    from edgepatch.kinds import parse_kinds
    from edgepatch.train.data import scan_image_folders
    from edgepatch.train.multitask import MultiTaskConfig, TaskRun, shared_base, train_multitask
    from edgepatch.train.patchfile import write_patch
    from edgepatch.train.strategy import make_strategy

    if len(tasks) < 2:
        raise UsageError(f"multi-task training needs at least 2 tasks. Received {len(tasks)}")
    names = [name for name, _, _ in tasks]
    if len(set(names)) != len(names):
        raise UsageError(f"task names must be unique. Received {names}")
    private = () if private_spec == "none" else parse_kinds(private_spec)
    config = MultiTaskConfig(private=private, epochs=epochs, learning_rate=lr or 1e-3,
                             batch_size=batch_size, seed=seed, checkpoint_dir=os.path.join(out_dir, ".checkpoints"),
                             budget=budget, selector=selector)
    splits = [scan_image_folders(data_dir, DEFAULT_HOLDOUT, seed) for _, data_dir, _ in tasks]
    _quiet_tensorflow()
    distribution = make_strategy(strategy)  # before any other TensorFlow work
    with distribution.scope():  # the base's layers become the shared, distributed variables
        base = _starting_model(backbone, alpha, tasks[0][2], weights, len(splits[0].classes), seed)
    recorded = _task_preprocessing(preprocessing, base, backbone, weights)[1]
    runs = [TaskRun(TaskInfo(name, split.classes, resolution, recorded), split)
            for (name, _, resolution), split in zip(tasks, splits)]
    os.makedirs(out_dir, exist_ok=True)
    train_multitask(base, runs, config, distribution, verbose=0 if quiet else 1)
    base_path = os.path.join(out_dir, "base.keras")
    _save_model_atomic(shared_base(base, runs), base_path)
    report = []
    for run, (_, data_dir, _) in zip(runs, tasks):
        patch_path = os.path.join(out_dir, f"{run.info.name}.patch") if run.patch is not None else None
        if patch_path is not None:
            training = {**run.patch.training, **_train_data(data_dir, DEFAULT_HOLDOUT, seed)}
            write_patch(patch_path, dataclasses.replace(run.patch, training=training))
        report.append({"task": run.info.name, "resolution": run.info.resolution, "classes": list(run.info.classes),
                       "train_accuracy": run.train_accuracy, "test_accuracy": run.test_accuracy,
                       "patch": patch_path})
    return {"base_checkpoint": base_path, "private": list(config.private), "strategy": strategy,
            "replicas": distribution.num_replicas_in_sync, "tasks": report}


def _train_data(data_dir: str, holdout: float, seed: int) -> dict:
    """The patch's record of its training images: ``convert --quantize int8`` calibrates on them by default."""
    from converters.calibration import TRAIN_DATA, train_data_record

    return {TRAIN_DATA: train_data_record(data_dir, holdout, seed)}


def _task_preprocessing(mode, model, backbone, weights):
    """(mode, Preprocessing) to record; a built backbone's family is known even without --base."""
    from edgepatch.train.models import BACKBONES
    from edgepatch.train.preprocessing import resolve_preprocessing

    family = backbone or (None if weights.endswith(".keras") else DEFAULT_BACKBONE)
    return resolve_preprocessing(mode, model, BACKBONES[family].preprocessing_mode if family else None)


def _save_model_atomic(model, path: str) -> None:
    directory = os.path.dirname(os.path.abspath(path))
    handle, temp = tempfile.mkstemp(suffix=".keras", dir=directory)
    os.close(handle)
    try:
        model.save(temp)
        os.replace(temp, path)
    except BaseException:
        if os.path.exists(temp):
            os.remove(temp)
        raise


def convert_command(model_path, patch_paths, out_dir, formats, dtype, head_width, quantize=None,
                    calibration_dir=None, int8_delta="auto") -> dict:
    """Run the converters; return sizes, fingerprints and parity per task."""
    _quiet_tensorflow()
    from converters.convert import convert

    result = convert(model_path, patch_paths, out_dir, formats, dtype, head_width, quantize, calibration_dir,
                     int8_delta)
    print_notes(result.notes)
    return {
        "out_dir": result.out_dir,
        "base_files": result.base_files,
        "base_bytes": result.base_bytes,
        "base_sha256": result.base_sha256,
        "head_width": result.head_width,
        "tasks": [
            {
                "name": name,
                "delta": result.deltas[name],
                "delta_bytes": result.delta_bytes[name],
                "parity_max_abs": result.parity[name],
                "parity_inputs": result.parity_inputs[name],
            }
            for name in result.deltas
        ],
        **({"int8": result.int8} if result.int8 else {}),
    }

