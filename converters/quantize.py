"""int8 bases and int8 task deltas.

The base and every task are converted by TFLiteConverter to full-integer
int8 (per-channel weights, float input/output), each calibrated on its own
images. Converted from the same BN-free graph, they share their structure,
so a task's delta is the tensor-by-tensor difference: quantization
parameters and buffers (``edgepatch.int8_delta``).
"""

from __future__ import annotations

import contextlib
import io

import numpy as np

from converters.tflite_rewrite import split_shared_inputs
from edgepatch.delta import TaskInfo
from edgepatch.errors import FoldError
from edgepatch.int8_delta import Int8Delta
from edgepatch.runtime.patching import sha256_hex
from edgepatch.runtime.tflite_file import TFLiteModel, parse_tflite

CALIBRATION_LIMIT = 100  # images per representative dataset
# The converter drops an all-zero bias, so base and task would differ in structure. A bias this
# small still exists as a tensor but quantizes to int32 zero: the int8 model computes the same.
TINY_BIAS = 1e-20


def _keep_zero_biases(folded_model) -> None:
    for layer in folded_model.layers:
        bias = getattr(layer, "bias", None)
        if bias is not None and not np.any(np.asarray(bias)):
            bias.assign(np.full(bias.shape, TINY_BIAS, np.float32))


def export_int8(folded_model, calibration: np.ndarray) -> bytes:
    """Full-integer int8 conversion of a BN-free model, calibrated on ``calibration`` (NHWC float32)."""
    import tensorflow as tf

    if calibration.ndim != 4 or len(calibration) == 0:
        raise FoldError(f"int8 calibration needs a non-empty NHWC batch. Received shape {list(calibration.shape)}")

    _keep_zero_biases(folded_model)

    def representative():
        for image in calibration[:CALIBRATION_LIMIT]:
            yield [image[None].astype(np.float32)]

    converter = tf.lite.TFLiteConverter.from_keras_model(folded_model)
    converter.optimizations = [tf.lite.Optimize.DEFAULT]
    converter.representative_dataset = representative
    converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
    with contextlib.redirect_stdout(io.StringIO()):
        return converter.convert()


def _quant(data: bytes, span: tuple[int, int], dtype) -> np.ndarray:
    return np.frombuffer(data, dtype, span[1], span[0]) if span[1] else np.empty(0, dtype)


def _tensor_pairs(base: TFLiteModel, task: TFLiteModel, name: str) -> dict[int, int]:
    """Map each base tensor to the task tensor in the same place (op, slot); structure, not names."""
    if len(base.ops) != len(task.ops):
        raise FoldError(f"task '{name}': its int8 model has {len(task.ops)} ops, the int8 base {len(base.ops)}")
    pairs: dict[int, int] = {}
    for a, b in zip(base.ops, task.ops):
        if a.opcode != b.opcode or len(a.inputs) != len(b.inputs) or len(a.outputs) != len(b.outputs):
            raise FoldError(f"task '{name}': int8 op {a.index} differs from the base ({b.opcode} vs {a.opcode})")
        for x, y in zip(a.inputs + a.outputs, b.inputs + b.outputs):
            if (x < 0) != (y < 0) or (x >= 0 and pairs.setdefault(x, y) != y):
                raise FoldError(f"task '{name}': int8 op {a.index} wires its tensors differently from the base")
    for x, y in pairs.items():
        a, b = base.tensors[x], task.tensors[y]
        if (a.shape, a.dtype, a.data_size, a.quant_scales[1], a.quant_zero_points[1]) != \
                (b.shape, b.dtype, b.data_size, b.quant_scales[1], b.quant_zero_points[1]):
            raise FoldError(f"task '{name}': int8 tensor {x} differs in shape, type or quantization layout")
    return pairs


def unshare_constants(data: bytes) -> bytes:
    """Give every constant op input its own tensor and buffer, so each can be patched alone."""
    model = parse_tflite(data, "<int8 base>")
    slots = [(op.index, slot) for op in model.ops for slot, index in enumerate(op.inputs)
             if index >= 0 and model.tensors[index].data_offset is not None]
    return split_shared_inputs(data, slots)[0]


def make_int8_delta(base_bytes: bytes, task_bytes: bytes, task: TaskInfo) -> Int8Delta:
    """The difference that turns the int8 base (constants unshared) into the task's int8 model."""
    base, other = parse_tflite(base_bytes, "<int8 base>"), parse_tflite(task_bytes, f"<int8 {task.name}>")
    quant, scales, zero_points, data, edits = [], [], [], {}, {}
    for x, y in sorted(_tensor_pairs(base, other, task.name).items()):
        a, b = base.tensors[x], other.tensors[y]
        new_scales = _quant(task_bytes, b.quant_scales, np.float32)
        new_zero_points = _quant(task_bytes, b.quant_zero_points, np.int64)
        scales_changed = not np.array_equal(_quant(base_bytes, a.quant_scales, np.float32), new_scales)
        zero_points_changed = not np.array_equal(_quant(base_bytes, a.quant_zero_points, np.int64), new_zero_points)
        if scales_changed or zero_points_changed:  # a count of 0 ships nothing: that vector is unchanged
            quant.append((x, len(new_scales) if scales_changed else 0, len(new_zero_points) if zero_points_changed else 0))
            scales.append(new_scales if scales_changed else new_scales[:0])
            zero_points.append((new_zero_points if zero_points_changed else new_zero_points[:0]).astype(np.int32))
        if a.data_offset is None:
            continue
        old = np.frombuffer(base_bytes, np.uint8, a.data_size, a.data_offset)
        new = np.frombuffer(task_bytes, np.uint8, b.data_size, b.data_offset)
        changed = np.flatnonzero(old != new)
        if 5 * changed.size < new.size:  # a sparse edit (5 bytes per change) is smaller
            if changed.size:
                edits[x] = (changed.astype(np.int32), new[changed].copy())
        else:
            data[x] = new.copy()
    return Int8Delta(task, sha256_hex(base_bytes), tuple(quant),
                     np.concatenate(scales) if scales else np.empty(0, np.float32),
                     np.concatenate(zero_points) if zero_points else np.empty(0, np.int32), data, edits)


def load_calibration(directory: str, name: str, resolution: int, preprocessing) -> np.ndarray:
    """Up to CALIBRATION_LIMIT images from ``directory/<name>/`` (any depth), preprocessed."""
    import os

    from edgepatch.data import IMAGE_EXTENSIONS
    from edgepatch.errors import DataError
    from edgepatch.runtime.images import load_images

    folder = os.path.join(directory, name)
    paths = sorted(os.path.join(root, f) for root, _, files in os.walk(folder) for f in files
                   if f.lower().endswith(IMAGE_EXTENSIONS))
    if not paths:
        raise DataError(f"int8 calibration: '{folder}' holds no images; give each task (and 'base') a folder")
    rng = np.random.default_rng(0)  # files are sorted by class: sample across all of them
    chosen = sorted(rng.choice(len(paths), min(len(paths), CALIBRATION_LIMIT), replace=False))
    return load_images([paths[i] for i in chosen], TaskInfo(name, ("x",), resolution, preprocessing))


def emit_int8(stage: str, folded_base_model, tasks, calibration_dir: str, base_resolution: int,
              preprocessing) -> dict:
    """Write ``base_int8.tflite`` and ``<task>.int8.delta`` into ``stage``; return sizes.

    ``tasks`` is a list of (TaskInfo, BN-free Keras task model with the base's head width).
    Every delta is checked: the patched base must compute exactly what the task's own int8
    model computes on the task's calibration images.
    """
    import os

    from edgepatch.int8_delta import read_int8_delta, write_int8_delta
    from edgepatch.runtime.tflite import TFLiteRunner
    from edgepatch.runtime.tflite_int8 import TFLiteInt8Base

    base_images = load_calibration(calibration_dir, "base", base_resolution, preprocessing)
    base_bytes = unshare_constants(export_int8(folded_base_model, base_images))
    with open(os.path.join(stage, "base_int8.tflite"), "wb") as handle:
        handle.write(base_bytes)
    runtime_base = TFLiteInt8Base(base_bytes, "base_int8.tflite")
    report = {"base_bytes": len(base_bytes), "deltas": {}}
    for info, folded_task_model in tasks:
        images = load_calibration(calibration_dir, info.name, info.resolution, preprocessing)
        task_bytes = export_int8(folded_task_model, images)
        path = os.path.join(stage, f"{info.name}.int8.delta")
        size = write_int8_delta(path, make_int8_delta(base_bytes, task_bytes, info))
        patched = runtime_base.apply(read_int8_delta(path))
        reference = TFLiteRunner(task_bytes, info, 0.0, 1)
        sample = images[:8]
        error = float(np.max(np.abs(patched.predict(sample) - reference.predict(sample))))
        if error > 1e-6:
            raise FoldError(f"task '{info.name}': int8 base + delta differs from its own int8 model by {error:.2e}")
        report["deltas"][info.name] = {"bytes": size, "max_abs_vs_task_int8": error}
    return report
