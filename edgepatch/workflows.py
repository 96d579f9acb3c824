"""The train and convert commands as plain functions returning JSON-able dicts.

Top layer: used by the CLI and the demo; imports TensorFlow and the
converters, so nothing below it (runtime, delta format) imports it.
"""

from __future__ import annotations

import os
import tempfile

from edgepatch.errors import UsageError


def _quiet_tensorflow() -> None:
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


def train_command(*, backbone, alpha, resolution, weights, data_dir, task_name, patch_spec, epochs, lr,
                  batch_size, bn_stats, bn_momentum, holdout, seed, out_dir) -> dict:
    """Transfer-train one task; write OUT/base.keras and OUT/<task>.patch."""
    from edgepatch.data import scan_image_folders
    from edgepatch.delta import TaskInfo
    from edgepatch.models import BACKBONES, build_classifier, load_checkpoint, with_new_head
    from edgepatch.patches import parse_kinds
    from edgepatch.patchfile import write_patch
    from edgepatch.train import DEFAULT_BN_STATS, TrainConfig, train

    config = TrainConfig(trained=parse_kinds(patch_spec), epochs=epochs, learning_rate=lr, batch_size=batch_size,
                         bn_stats=bn_stats or DEFAULT_BN_STATS, bn_momentum=bn_momentum, seed=seed)
    split = scan_image_folders(data_dir, holdout, seed)
    name = task_name or os.path.basename(os.path.normpath(data_dir))
    if backbone not in BACKBONES:
        raise UsageError(f"--base must be one of {sorted(BACKBONES)}. Received '{backbone}'")
    _quiet_tensorflow()
    if weights.endswith(".keras"):
        base = load_checkpoint(weights)
        input_size = tuple(base.inputs[0].shape[1:3])
        if input_size != (resolution, resolution):
            raise UsageError(f"checkpoint '{weights}' takes {input_size[0]}x{input_size[1]} inputs; "
                             f"pass --resolution {input_size[0]}. Received --resolution {resolution}")
    else:
        base = build_classifier(backbone, alpha=alpha, resolution=resolution, weights=weights,
                                num_classes=len(split.classes), seed=seed)
    task = TaskInfo(name, split.classes, resolution, BACKBONES[backbone].preprocessing)
    os.makedirs(out_dir, exist_ok=True)
    base_path = os.path.join(out_dir, "base.keras")
    _save_model_atomic(base, base_path)  # the shared weights, before training touches any layer
    model = with_new_head(base, len(split.classes), seed) if weights.endswith(".keras") else base
    result = train(model, split, task, config)
    patch_path = os.path.join(out_dir, f"{name}.patch")
    write_patch(patch_path, result.patch)
    return {
        "task": name,
        "classes": list(split.classes),
        "train_accuracy": result.train_accuracy,
        "test_accuracy": result.test_accuracy,
        "trained_parameters": result.trained_parameters,
        "base_checkpoint": base_path,
        "patch": patch_path,
        "config": result.patch.training,
    }


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


def convert_command(model_path, patch_paths, out_dir, formats, dtype, head_width) -> dict:
    """Run the converters; return sizes, fingerprints and parity per task."""
    _quiet_tensorflow()
    from converters.convert import convert

    result = convert(model_path, patch_paths, out_dir, formats, dtype, head_width)
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
            }
            for name in result.deltas
        ],
    }

