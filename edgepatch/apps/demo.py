"""``edgepatch demo``: the whole pipeline, offline, on procedural data.

1. write a procedural dataset labelled three ways (``demo_data``);
2. pretrain a small MobileNetV2 on the ``shapes`` labels: the shared base;
3. train a scale-and-bias + logits patch for ``colors`` and ``quadrants``;
4. convert to one .tflite and one .onnx base plus one delta per task, and
   an int8 base plus one compact int8 delta per task (calibrated on each
   task's training images);
5. evaluate every task on Keras, LiteRT (float and int8) and ONNX Runtime,
   and report sizes and runtime-vs-Keras parity.
"""

from __future__ import annotations

import os
import shutil
import time
from dataclasses import dataclass

import numpy as np

from edgepatch.format.delta import TaskInfo

PRETRAIN_TASK = "shapes"
TRANSFER_TASKS = ("colors", "quadrants")


@dataclass(frozen=True)
class DemoSettings:
    alpha: float = 0.35
    resolution: int = 64
    train_per_class: int = 150
    test_per_class: int = 40
    pretrain_epochs: int = 12
    transfer_epochs: int = 6
    pretrain_lr: float = 1e-2
    transfer_lr: float = 1e-2
    batch_size: int = 32
    seed: int = 0


QUICK = DemoSettings(train_per_class=40, test_per_class=15, pretrain_epochs=2, transfer_epochs=2)


def _accuracy(predict, images: np.ndarray, labels: np.ndarray, batch: int = 64) -> float:
    logits = np.concatenate([predict(images[i : i + batch]) for i in range(0, len(images), batch)])
    return float(np.mean(np.argmax(logits, axis=1) == labels))


def _test_arrays(split, task: TaskInfo) -> tuple[np.ndarray, np.ndarray]:
    from edgepatch.runtime.images import load_images

    return load_images([p for p, _ in split.test], task), np.array([label for _, label in split.test])


@dataclass(frozen=True)
class _Trained:
    """What training left: the base, each task's images, and per transfer task its patch and baseline."""

    base: object  # the pretrained Keras base
    splits: dict  # task -> its train/test image split
    patch_paths: dict  # transfer task -> its .patch file
    logits_only: dict  # transfer task -> test accuracy when only the head is trained


@dataclass(frozen=True)
class _Shipped:
    """The converted output, loaded once: a float base per runtime and the int8 base."""

    converted: object  # converters.convert.ConvertResult
    ship: str
    runtimes: dict  # format -> float base
    int8_base: object


def _task_info(name: str, split, settings: DemoSettings) -> TaskInfo:
    from edgepatch.train.models import BACKBONES

    return TaskInfo(name, split.classes, settings.resolution, BACKBONES["mobilenet_v2"].preprocessing)


def _pretrain_base(splits: dict, settings: DemoSettings):
    """Step 2: a small MobileNetV2, every layer trained, on the ``shapes`` labels: the shared base."""
    from edgepatch.kinds import whole_model_kinds
    from edgepatch.train.models import build_classifier
    from edgepatch.train.transfer import TrainConfig, train

    base = build_classifier(alpha=settings.alpha, resolution=settings.resolution, weights="none",
                            num_classes=len(splits[PRETRAIN_TASK].classes), seed=settings.seed)
    pretrain = TrainConfig(trained=whole_model_kinds(), epochs=settings.pretrain_epochs, learning_rate=settings.pretrain_lr,
                           batch_size=settings.batch_size, bn_stats="reestimate", seed=settings.seed)
    train(base, splits[PRETRAIN_TASK], _task_info(PRETRAIN_TASK, splits[PRETRAIN_TASK], settings), pretrain)
    return base


def _transfer(base, name: str, kinds: tuple[str, ...], splits: dict, settings: DemoSettings):
    """Train ``kinds`` of a copy of ``base`` with a new head for task ``name``."""
    import keras

    from edgepatch.train.models import with_new_head
    from edgepatch.train.transfer import TrainConfig, train

    copy = keras.models.clone_model(base)
    copy.set_weights(base.get_weights())
    model = with_new_head(copy, len(splits[name].classes), settings.seed)
    config = TrainConfig(trained=kinds, epochs=settings.transfer_epochs, learning_rate=settings.transfer_lr,
                         batch_size=settings.batch_size, seed=settings.seed)
    return train(model, splits[name], _task_info(name, splits[name], settings), config)


def _train_transfer_patches(base, splits: dict, settings: DemoSettings, out_dir: str) -> _Trained:
    """Step 3: a scale-and-bias + logits patch per transfer task, written to ``out_dir/patches/``."""
    from edgepatch.train.patchfile import write_patch

    patch_paths, logits_only = {}, {}
    for name in TRANSFER_TASKS:
        result = _transfer(base, name, ("scale_bias", "logits"), splits, settings)
        patch_paths[name] = os.path.join(out_dir, "patches", f"{name}.patch")
        os.makedirs(os.path.dirname(patch_paths[name]), exist_ok=True)
        write_patch(patch_paths[name], result.patch)
        logits_only[name] = _transfer(base, name, ("logits",), splits, settings).test_accuracy  # the baseline the paper beats
    return _Trained(base, splits, patch_paths, logits_only)


def _link_calibration_images(out_dir: str, data_dirs: dict) -> str:
    """``out_dir/calibration/<base|task>/``: links to the training images each one is calibrated on."""
    calibration = os.path.join(out_dir, "calibration")
    os.makedirs(calibration)
    for name, source in (("base", PRETRAIN_TASK), *((t, t) for t in TRANSFER_TASKS)):
        os.symlink(os.path.abspath(os.path.join(data_dirs[source], "train")), os.path.join(calibration, name))
    return calibration


def _load_shipped(converted, ship: str) -> _Shipped:
    from edgepatch.runtime import OnnxBase, TFLiteBase, load_base

    runtimes = {"tflite": TFLiteBase.from_file(converted.base_files["tflite"]),
                "onnx": OnnxBase.from_file(converted.base_files["onnx"])}
    return _Shipped(converted, ship, runtimes, load_base(os.path.join(ship, "base_int8.tflite")))


def _evaluate_task(name: str, trained: _Trained, shipped: _Shipped, settings: DemoSettings) -> dict:
    """Step 5, per task: test accuracy on Keras and every runtime, delta sizes, runtime-vs-Keras parity."""
    from converters.convert import task_model
    from edgepatch.runtime import read_delta, read_task_delta
    from edgepatch.train.patchfile import read_patch

    converted = shipped.converted
    info = _task_info(name, trained.splits[name], settings)
    images, labels = _test_arrays(trained.splits[name], info)
    if name == PRETRAIN_TASK:
        delta, keras_model, delta_bytes = None, trained.base, 0
    else:
        delta = read_delta(converted.deltas[name])
        keras_model = task_model(trained.base, read_patch(trained.patch_paths[name]), name)
        delta_bytes = converted.delta_bytes[name]
    runners = {fmt: runtime.apply(delta) for fmt, runtime in shipped.runtimes.items()}
    int8_delta = None if delta is None else read_task_delta(os.path.join(shipped.ship, f"{name}.int8.delta"))
    int8_runner = shipped.int8_base.apply(int8_delta, settings.resolution)
    int8_bytes = 0 if delta is None else converted.int8["deltas"][name]["bytes"]
    keras_logits = np.asarray(keras_model(images[:8], training=False))
    return {
        "name": name,
        "role": "base" if delta is None else "delta",
        "classes": list(info.classes),
        "delta_bytes": delta_bytes,
        "percent_of_base": 100.0 * delta_bytes / converted.base_bytes["tflite"],
        "accuracy": {
            "keras": _accuracy(lambda x: np.asarray(keras_model(x, training=False)), images, labels),
            **{fmt: _accuracy(r.predict, images, labels) for fmt, r in runners.items()},
            "int8": _accuracy(int8_runner.predict, images, labels),
        },
        "int8_delta_bytes": int8_bytes,
        "int8_delta_mode": None if delta is None else converted.int8["deltas"][name]["mode"],
        "int8_percent_of_base": 100.0 * int8_bytes / converted.int8["base_bytes"],
        "parity_max_abs": {
            fmt: float(np.max(np.abs(r.predict(images[:8])[:, : keras_logits.shape[1]] - keras_logits)))
            for fmt, r in runners.items()
        },
        "swap_ms": {fmt: r.swap_seconds * 1e3 for fmt, r in runners.items()},
        "logits_only_accuracy": trained.logits_only.get(name),
    }


def run_demo(out_dir: str, quick: bool = False) -> dict:
    """Run the demo into ``out_dir`` (replaced) and return the report as a dict."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    import keras  # noqa: F401  (TensorFlow loads before the clock starts: "seconds" leaves its import out)

    from converters.convert import convert
    from edgepatch.apps.demo_data import write_datasets
    from edgepatch.train.data import scan_image_folders

    settings = QUICK if quick else DemoSettings()
    started = time.perf_counter()
    shutil.rmtree(out_dir, ignore_errors=True)
    os.makedirs(out_dir)
    data_dirs = write_datasets(os.path.join(out_dir, "data"), settings.train_per_class, settings.test_per_class,
                               settings.resolution, settings.seed)
    splits = {name: scan_image_folders(path) for name, path in data_dirs.items()}
    base = _pretrain_base(splits, settings)
    base_path = os.path.join(out_dir, "base.keras")
    base.save(base_path)
    trained = _train_transfer_patches(base, splits, settings, out_dir)
    ship = os.path.join(out_dir, "ship")
    calibration = _link_calibration_images(out_dir, data_dirs)
    converted = convert(base_path, list(trained.patch_paths.values()), ship, quantize="int8",
                        calibration_dir=calibration)
    shipped = _load_shipped(converted, ship)
    return {
        "out_dir": out_dir,
        "settings": settings.__dict__,
        "base_bytes": {**converted.base_bytes, "tflite_int8": converted.int8["base_bytes"]},
        "base_files": converted.base_files,
        "tasks": [_evaluate_task(name, trained, shipped, settings) for name in (PRETRAIN_TASK, *TRANSFER_TASKS)],
        "seconds": time.perf_counter() - started,
    }


def render(report: dict) -> str:
    header = (f"{'task':<10} {'role':<6} {'keras':>6} {'tflite':>6} {'onnx':>6} {'int8':>6} {'logits-only':>11} "
              f"{'delta bytes':>12} {'% base':>7} {'int8 delta':>10} {'% base':>7} {'parity tflite':>13} "
              f"{'parity onnx':>11}")
    lines = ["test accuracy per runtime (logits-only: the same task trained with the last layer alone)",
             header, "-" * len(header)]
    for t in report["tasks"]:
        a, p = t["accuracy"], t["parity_max_abs"]
        baseline = "-" if t["logits_only_accuracy"] is None else f"{t['logits_only_accuracy']:.3f}"
        lines.append(
            f"{t['name']:<10} {t['role']:<6} {a['keras']:>6.3f} {a['tflite']:>6.3f} {a['onnx']:>6.3f} {a['int8']:>6.3f} "
            f"{baseline:>11} {t['delta_bytes']:>12,} {t['percent_of_base']:>6.2f}% {t['int8_delta_bytes']:>10,} "
            f"{t['int8_percent_of_base']:>6.2f}% {p['tflite']:>13.1e} {p['onnx']:>11.1e}"
        )
    sizes = ", ".join(f"{fmt} {n:,} bytes" for fmt, n in report["base_bytes"].items())
    lines.append(f"shared base: {sizes}; finished in {report['seconds']:.0f} s; outputs in {report['out_dir']}")
    return "\n".join(lines)
