"""Build the benchmark's MobileNetV2 task: base checkpoint, one S/B + logits patch, conversions.

Used by ``bench_runtime.py`` (TensorFlow is imported here, never in the runtime).

The patch is made without training, as ``tests/helpers/models.py::make_patch`` does:
the ImageNet BN parameters are perturbed the way a short S/B training moves
them (γ × U(0.8, 1.2), β + N(0, 0.05)) and a fresh 5-class head gets a
random bias. Latency and swap cost do not depend on what the values are,
only on which tensors change, and the perturbation keeps activations in
the ImageNet range (no denormals, no saturation that could flatter a runtime).

Three artefact sets are written under ``work_dir``:

- ``ship/``: our pipeline (``converters.convert.convert``): base.tflite,
  base.onnx and ``task.delta``;
- ``direct/``: the same trained task model converted directly, BN left to
  the converters: ``TFLiteConverter.from_keras_model`` and ``tf2onnx``
  (the P4 reference and the "separate full per-task model" for P2);
- ``base.keras``, ``task.patch``: the inputs of the conversion.
"""

from __future__ import annotations

import contextlib
import io
import os
from dataclasses import dataclass

import numpy as np

TASK = "task"
CLASSES = 5


@dataclass(frozen=True)
class BuiltTask:
    ship_dir: str
    direct_tflite: str
    direct_onnx: str
    resolution: int
    alpha: float


def _perturbed_task_model(base, seed: int):
    import keras

    from edgepatch.train.models import with_new_head

    copy = keras.models.clone_model(base)
    copy.set_weights(base.get_weights())
    model = with_new_head(copy, CLASSES, seed)
    rng = np.random.default_rng(seed)
    for layer in model.layers:
        if isinstance(layer, keras.layers.BatchNormalization):
            gamma, beta = np.asarray(layer.gamma), np.asarray(layer.beta)
            layer.gamma.assign(gamma * rng.uniform(0.8, 1.2, gamma.shape))
            layer.beta.assign(beta + rng.normal(0, 0.05, beta.shape))
    head = model.layers[-1]
    head.bias.assign(rng.normal(0, 0.5, CLASSES))
    return model


def _write_patch(model, path: str, resolution: int) -> None:
    from edgepatch.format.delta import Preprocessing, TaskInfo
    from edgepatch.train.patchfile import extract_patch, write_patch

    kinds = ("scale_bias", "logits")
    task = TaskInfo(TASK, tuple(f"class_{i}" for i in range(CLASSES)), resolution, Preprocessing(1 / 127.5, -1.0))
    write_patch(path, extract_patch(model, task, kinds, kinds, {"made_by": "benchmarks/task_build.py"}))


def _direct_tflite(model, path: str) -> None:
    import tensorflow as tf

    converter = tf.lite.TFLiteConverter.from_keras_model(model)
    with contextlib.redirect_stdout(io.StringIO()):
        data = converter.convert()
    with open(path, "wb") as handle:
        handle.write(data)


def _direct_onnx(model, path: str) -> None:
    import tensorflow as tf
    import tf2onnx

    signature = [tf.TensorSpec((None, None, None, 3), tf.float32, name="input")]
    with contextlib.redirect_stdout(io.StringIO()):
        proto, _ = tf2onnx.convert.from_keras(model, input_signature=signature, opset=17)
    with open(path, "wb") as handle:
        handle.write(proto.SerializeToString())


def direct_for_ship(demo_dir: str, task: str, work_dir: str) -> tuple[str, str]:
    """Direct conversions of a converted task (``edgepatch demo`` layout: base.keras, patches/, ship/).

    Cached under ``work_dir`` by the patch's content, so another demo run never reuses them.
    """
    import hashlib

    patch_path = os.path.join(demo_dir, "patches", f"{task}.patch")
    with open(patch_path, "rb") as handle:
        key = hashlib.sha256(handle.read()).hexdigest()[:16]
    out = (os.path.join(work_dir, f"{task}-{key}.tflite"), os.path.join(work_dir, f"{task}-{key}.onnx"))
    if all(os.path.exists(p) for p in out):
        return out
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    from converters.convert import task_model
    from edgepatch.train.models import load_checkpoint
    from edgepatch.train.patchfile import read_patch

    os.makedirs(work_dir, exist_ok=True)
    model = task_model(load_checkpoint(os.path.join(demo_dir, "base.keras")), read_patch(patch_path), patch_path)
    _direct_tflite(model, out[0])
    _direct_onnx(model, out[1])
    return out


def build_task(work_dir: str, weights: str | None, alpha: float = 1.0, resolution: int = 224,
               seed: int = 0) -> BuiltTask:
    """Write (or reuse) the artefacts for one MobileNetV2 task under ``work_dir``."""
    built = BuiltTask(os.path.join(work_dir, "ship"), os.path.join(work_dir, "direct", "task.tflite"),
                      os.path.join(work_dir, "direct", "task.onnx"), resolution, alpha)
    if all(os.path.exists(p) for p in (os.path.join(built.ship_dir, f"{TASK}.delta"), built.direct_tflite,
                                        built.direct_onnx)):
        return built
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    from converters.convert import convert
    from edgepatch.train.models import build_classifier

    os.makedirs(os.path.dirname(built.direct_tflite), exist_ok=True)
    base = build_classifier(alpha=alpha, resolution=resolution, weights=weights or "none",
                            num_classes=CLASSES, seed=seed)
    base_path = os.path.join(work_dir, "base.keras")
    base.save(base_path)
    task_model = _perturbed_task_model(base, seed + 1)
    patch_path = os.path.join(work_dir, f"{TASK}.patch")
    _write_patch(task_model, patch_path, resolution)
    convert(base_path, [patch_path], built.ship_dir)
    _direct_tflite(task_model, built.direct_tflite)
    _direct_onnx(task_model, built.direct_onnx)
    return built


def build_int8(built: BuiltTask, images_dir: str, mode: str = "compact") -> str:
    """Write (or reuse) ``base_int8.tflite`` and ``task.int8.delta`` for ``built``'s task, beside its ship.

    Both are calibrated on the photos under ``images_dir`` (any depth); ``mode`` is the int8 delta mode.
    Returns the folder.
    """
    work_dir = os.path.dirname(built.ship_dir)
    folder = os.path.join(work_dir, f"ship_int8_{mode}")
    if os.path.exists(os.path.join(folder, f"{TASK}.int8.delta")):
        return folder
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    from converters.convert import convert

    calibration = os.path.join(work_dir, "calibration")
    os.makedirs(calibration, exist_ok=True)
    for name in ("base", TASK):
        link = os.path.join(calibration, name)
        if not os.path.islink(link):
            os.symlink(os.path.abspath(images_dir), link)
    convert(os.path.join(work_dir, "base.keras"), [os.path.join(work_dir, f"{TASK}.patch")], folder,
            formats=("tflite",), quantize="int8", calibration_dir=calibration, int8_delta=mode)
    return folder
