"""int8 bases and int8 task deltas.

The base and every task are converted by TFLiteConverter to full-integer
int8 (per-channel weights, float input/output), each calibrated on its own
images. Converted from the same BN-free graph, they share their structure,
so a task's delta is the tensor-by-tensor difference: quantization
parameters and buffers (``edgepatch.format.int8_delta``).
"""

from __future__ import annotations

import contextlib
import io

import numpy as np

from converters.tflite_rewrite import split_shared_inputs
from edgepatch.format.delta import TaskInfo
from edgepatch.errors import FoldError
from edgepatch.format.int8_delta import BIAS_STEPS_PER_QUANTUM, Int8Delta, Refold, scale_codes_for
from edgepatch.runtime.base_file import sha256_hex
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


REFOLD_OPS = ("CONV_2D", "DEPTHWISE_CONV_2D", "FULLY_CONNECTED")


def _refold_sites(base: TFLiteModel) -> list[tuple[int, int, int, int]]:
    """(weight, bias, input, output) of every op whose int8 kernel and int32 bias have one scale per channel."""
    sites = []
    for op in base.ops:
        if op.opcode not in REFOLD_OPS or len(op.inputs) < 3 or min(op.inputs[:3]) < 0:
            continue
        source, weight, bias = (base.tensors[i] for i in op.inputs[:3])
        channels = weight.quant_scales[1]
        if weight.dtype == np.int8 and bias.dtype == np.int32 and bias.data_offset is not None \
                and weight.data_offset is not None and bias.data_size == 4 * channels \
                and bias.quant_scales[1] == channels and source.quant_scales[1] == 1 \
                and base.tensors[op.outputs[0]].quant_scales[1] == 1:
            sites.append((op.inputs[1], op.inputs[2], op.inputs[0], op.outputs[0]))
    return sites


def _refold_entry(base_bytes, base: TFLiteModel, task_bytes, task: TFLiteModel, pairs, site) -> Refold | None:
    """The compact refold of one conv, or None when its change does not fit the codes."""
    weight, bias, source, output = site
    base_scale = _quant(base_bytes, base.tensors[weight].quant_scales, np.float32)
    task_scale = _quant(task_bytes, task.tensors[pairs[weight]].quant_scales, np.float32)
    step = np.float32(_quant(task_bytes, task.tensors[pairs[output]].quant_scales, np.float32)[0]
                      / BIAS_STEPS_PER_QUANTUM)
    if not (np.all(base_scale > 0) and np.all(task_scale > 0) and np.isfinite(step) and step > 0):
        return None
    scale_codes = scale_codes_for(task_scale.astype(np.float64) / base_scale)

    def bias_value(data, model, index):
        tensor = model.tensors[index]
        return (np.frombuffer(data, np.int32, tensor.data_size // 4, tensor.data_offset).astype(np.float64)
                * _quant(data, tensor.quant_scales, np.float32).astype(np.float64))

    bias_codes = np.rint((bias_value(task_bytes, task, pairs[bias]) - bias_value(base_bytes, base, bias)) / step)
    if np.any(np.abs(bias_codes) > np.iinfo(np.int16).max):
        return None
    return Refold(weight, bias, source, scale_codes, bias_codes.astype(np.int16), float(step))


def make_int8_delta(base_bytes: bytes, task_bytes: bytes, task: TaskInfo, compact: bool = True) -> Int8Delta:
    """The difference that turns the int8 base (constants unshared) into the task's int8 model.

    ``compact`` ships conv scales and biases as refold codes (``edgepatch.format.int8_delta``): about
    an eighth of the bytes, at about int8's own precision; otherwise every changed value exactly.
    """
    base, other = parse_tflite(base_bytes, "<int8 base>"), parse_tflite(task_bytes, f"<int8 {task.name}>")
    pairs = _tensor_pairs(base, other, task.name)
    refolds = []
    if compact:
        for site in _refold_sites(base):
            entry = _refold_entry(base_bytes, base, task_bytes, other, pairs, site)
            if entry is not None:  # even unchanged: its bias scale follows the task's input scale
                refolds.append(entry)
    refolded_scales = {i for r in refolds for i in (r.weight, r.bias)}
    refolded_data = {r.bias for r in refolds}
    refolded_kernels = {r.weight for r in refolds}
    quant, scales, zero_points, data, edits = [], [], [], {}, {}
    for x, y in sorted(pairs.items()):
        a, b = base.tensors[x], other.tensors[y]
        new_scales = _quant(task_bytes, b.quant_scales, np.float32)
        new_zero_points = _quant(task_bytes, b.quant_zero_points, np.int64)
        scales_changed = x not in refolded_scales and \
            not np.array_equal(_quant(base_bytes, a.quant_scales, np.float32), new_scales)
        zero_points_changed = not np.array_equal(_quant(base_bytes, a.quant_zero_points, np.int64), new_zero_points)
        if scales_changed or zero_points_changed:  # a count of 0 ships nothing: that vector is unchanged
            quant.append((x, len(new_scales) if scales_changed else 0, len(new_zero_points) if zero_points_changed else 0))
            scales.append(new_scales if scales_changed else new_scales[:0])
            zero_points.append((new_zero_points if zero_points_changed else new_zero_points[:0]).astype(np.int32))
        if a.data_offset is None or x in refolded_data:
            continue
        old = np.frombuffer(base_bytes, np.uint8, a.data_size, a.data_offset)
        new = np.frombuffer(task_bytes, np.uint8, b.data_size, b.data_offset)
        changed = np.flatnonzero(old != new)
        if x in refolded_kernels and np.all(np.abs(old[changed].view(np.int8).astype(np.int16)
                                                   - new[changed].view(np.int8)) == 1):
            continue  # rounding ties of a rescaled kernel: below what compact codes keep anyway
        if 5 * changed.size < new.size:  # a sparse edit (5 bytes per change) is smaller
            if changed.size:
                edits[x] = (changed.astype(np.int32), new[changed].copy())
        else:
            data[x] = new.copy()
    return Int8Delta(task, sha256_hex(base_bytes), tuple(quant),
                     np.concatenate(scales) if scales else np.empty(0, np.float32),
                     np.concatenate(zero_points) if zero_points else np.empty(0, np.int32), data, edits,
                     tuple(sorted(refolds, key=lambda r: r.weight)))


def load_calibration(directory: str, name: str, resolution: int, preprocessing) -> np.ndarray:
    """Up to CALIBRATION_LIMIT images from ``directory/<name>/`` (any depth), preprocessed."""
    import os

    from edgepatch.train.data import IMAGE_EXTENSIONS
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


# Compact deltas are checked on the task's calibration images against the task's own int8 model:
# below the first agreement something is wrong; "auto" keeps compact only from the second up.
MIN_COMPACT_AGREEMENT = 0.8
AUTO_COMPACT_AGREEMENT = 0.99


def top1(runner, images: np.ndarray) -> np.ndarray:
    """The predicted class of each image, in batches of 32."""
    return np.concatenate([np.argmax(runner.predict(images[i:i + 32]), 1) for i in range(0, len(images), 32)])


def emit_int8(stage: str, folded_base_model, tasks, calibration_dir: str, base_resolution: int,
              preprocessing, delta_mode: str = "auto") -> dict:
    """Write ``base_int8.tflite`` and ``<task>.int8.delta`` into ``stage``; return sizes and checks.

    ``tasks`` is a list of (TaskInfo, BN-free Keras task model with the base's head width).
    ``delta_mode``: ``"exact"``, ``"compact"`` or ``"auto"`` (compact where it agrees with the
    task's own int8 model on ``AUTO_COMPACT_AGREEMENT`` of the calibration images, else exact).
    Every delta is checked on the task's calibration images against the task's own int8 model:
    an exact delta must compute the same outputs, a compact one the same top-1 on at least
    ``MIN_COMPACT_AGREEMENT`` of them.
    """
    import os

    from edgepatch.format.int8_delta import read_int8_delta, write_int8_delta
    from edgepatch.runtime.tflite import TFLiteRunner
    from edgepatch.runtime.tflite_int8 import TFLiteInt8Base

    base_images = load_calibration(calibration_dir, "base", base_resolution, preprocessing)
    base_bytes = unshare_constants(export_int8(folded_base_model, base_images))
    with open(os.path.join(stage, "base_int8.tflite"), "wb") as handle:
        handle.write(base_bytes)
    runtime_base = TFLiteInt8Base(base_bytes, "base_int8.tflite")
    report = {"base_bytes": len(base_bytes), "delta_mode": delta_mode, "deltas": {}}
    for info, folded_task_model in tasks:
        images = load_calibration(calibration_dir, info.name, info.resolution, preprocessing)
        task_bytes = export_int8(folded_task_model, images)
        reference = TFLiteRunner(task_bytes, info, 0.0, 1)
        expected, expected_top1 = reference.predict(images), top1(reference, images)
        path = os.path.join(stage, f"{info.name}.int8.delta")
        checks = {}
        for mode in ("compact", "exact") if delta_mode == "auto" else (delta_mode,):
            size = write_int8_delta(path, make_int8_delta(base_bytes, task_bytes, info, mode == "compact"))
            patched = runtime_base.apply(read_int8_delta(path))
            error = float(np.max(np.abs(patched.predict(images) - expected)))
            agreement = float(np.mean(top1(patched, images) == expected_top1))
            checks[mode] = {"bytes": size, "max_abs_vs_task_int8": error, "top1_agreement_vs_task_int8": agreement}
            if (mode == "exact" and error > 1e-6) or (mode == "compact" and agreement < MIN_COMPACT_AGREEMENT):
                raise FoldError(f"task '{info.name}': int8 base + {mode} delta differs from its own int8 model by "
                                f"{error:.2e} max-abs (top-1 agreement {agreement:.3f} on {len(images)} calibration "
                                "images)")
            if mode == "compact" and agreement >= AUTO_COMPACT_AGREEMENT:
                break
        report["deltas"][info.name] = {**checks[mode], "mode": mode, "checked_images": len(images),
                                       **({"compact_check": checks["compact"]} if mode != "compact" and
                                          "compact" in checks else {})}
    return report
