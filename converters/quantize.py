"""int8 bases and int8 task deltas.

The base and every task are converted by TFLiteConverter to full-integer
int8 (per-channel weights, float input/output), each calibrated on its own
images. Converted from the same BN-free graph, they share their structure,
so a task's delta is the tensor-by-tensor difference: quantization
parameters and buffers (``edgepatch.format.int8_delta``).

Calibration images (``converters.calibration``): ``--calibration DIR`` (``DIR/base/``, ``DIR/<task>/``),
else each task's own training images, which ``edgepatch train`` records in the patch
(``training["train_data"]``), and for the base an equal share of every task's.

After conversion each model's int32 biases are corrected on its calibration images
(``correct_biases``): the converter rounds every weight and activation to int8, and
these rounding errors do not average out; they shift each channel's mean output,
and the shift grows layer after layer (MobileNetV2's first depthwise conv, whose
inputs are tiny for some channels and whose kernels are large, is the worst).
Shifting each conv's bias by its channel's mean error, in network order, roughly
halves the mean logit error to float and takes the top-1 agreement with float from
about 0.90 to 0.98 on eurosat (``benchmarks/int8_report.py``); the structure and every
other byte stay as the converter wrote them. More calibration images, or clipped
activation ranges, did not move the agreement (measured from 100 to 1,000 images).
"""

from __future__ import annotations

import contextlib
import dataclasses
import io
import os

import numpy as np

from converters.calibration import CALIBRATION_LIMIT, Calibration
from converters.tflite_rewrite import split_shared_inputs
from edgepatch.format.delta import TaskInfo
from edgepatch.errors import FoldError
from edgepatch.format.int8_delta import BIAS_STEPS_PER_QUANTUM, Int8Delta, Refold, scale_codes_for
from edgepatch.runtime.base_file import sha256_hex
from edgepatch.runtime.tflite_file import TFLiteModel, parse_tflite

# Bias correction: pixels per interpreter run (25 images at 96 px; every tensor is kept, so a float
# MobileNetV2 1.0 run holds about 150 MB), and the least share of a channel's positions taken as inside its
# output range (a ReLU6 channel clipped at 0 or 6 passes a bias shift on only where it is not).
CORRECTION_PIXELS = 25 * 96 * 96
MIN_ACTIVE_SHARE = 0.2
CORRECTION_THREADS = min(4, os.cpu_count() or 1)  # for the int8 runs, one per corrected conv
REFOLD_OPS = ("CONV_2D", "DEPTHWISE_CONV_2D", "FULLY_CONNECTED")  # ops with a per-channel int8 kernel and bias
# The converter drops an all-zero bias, so base and task would differ in structure. A bias this
# small still exists as a tensor but quantizes to int32 zero: the int8 model computes the same.
TINY_BIAS = 1e-20


def _keep_zero_biases(folded_model) -> None:
    for layer in folded_model.layers:
        bias = getattr(layer, "bias", None)
        if bias is not None and not np.any(np.asarray(bias)):
            bias.assign(np.full(bias.shape, TINY_BIAS, np.float32))


def export_int8(folded_model, calibration: np.ndarray, bias_correction: bool = True) -> bytes:
    """Full-integer int8 conversion of a BN-free model, calibrated on ``calibration`` (NHWC float32).

    With ``bias_correction`` the int32 biases are then corrected on the same images (``correct_biases``).
    """
    return quantize_int8(folded_model, calibration, bias_correction)[1]


def quantize_int8(folded_model, calibration: np.ndarray, bias_correction: bool = True) -> tuple[bytes, bytes]:
    """``export_int8``, returning (the calibrated float model it was quantized from, the int8 model)."""
    import tensorflow as tf
    from tensorflow.lite.python.convert import mlir_quantize

    if calibration.ndim != 4 or len(calibration) == 0:
        raise FoldError(f"int8 calibration needs a non-empty NHWC batch. Received shape {list(calibration.shape)}")

    _keep_zero_biases(folded_model)
    images = calibration[:CALIBRATION_LIMIT]

    def representative():
        for image in images:
            yield [image[None].astype(np.float32)]

    converter = tf.lite.TFLiteConverter.from_keras_model(folded_model)
    converter.optimizations = [tf.lite.Optimize.DEFAULT]
    converter.representative_dataset = representative
    converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
    # convert() calibrates, then quantizes with mlir_quantize; done in two steps (as TF's own
    # QuantizationDebugger does), the calibrated float model is the reference for the bias correction.
    converter._experimental_calibrate_only = True
    with contextlib.redirect_stdout(io.StringIO()):
        calibrated = converter.convert()
        quantized = mlir_quantize(calibrated)
    return calibrated, correct_biases(calibrated, quantized, images) if bias_correction else quantized


def _site_ops(model: TFLiteModel) -> list:
    return [op for op in model.ops if op.opcode in REFOLD_OPS and len(op.inputs) >= 3 and op.inputs[2] >= 0]


def _correctable_sites(float_model: TFLiteModel, int8_model: TFLiteModel) -> list[tuple]:
    """(float op, int8 op) of every conv/dense op whose int8 output has one scale and whose bias is int32.

    The calibrated float model and the int8 model hold the same ops in the same order (the int8
    one adds QUANTIZE/DEQUANTIZE at its ends); none when they do not line up.
    """
    float_ops, int8_ops = _site_ops(float_model), _site_ops(int8_model)
    if [(op.opcode, float_model.tensors[op.inputs[1]].shape) for op in float_ops] != \
            [(op.opcode, int8_model.tensors[op.inputs[1]].shape) for op in int8_ops]:
        return []
    sites = []
    for a, b in zip(float_ops, int8_ops):
        bias, output = int8_model.tensors[b.inputs[2]], int8_model.tensors[b.outputs[0]]
        if bias.dtype == np.int32 and bias.data_offset is not None and output.dtype == np.int8 \
                and output.quant_scales[1] == 1 and bias.quant_scales[1] * 4 == bias.data_size \
                and float_model.tensors[a.outputs[0]].dtype == np.float32:
            sites.append((a, b))
    return sites


def _private_biases(data: bytes) -> bytes:
    """``data`` with every conv/dense bias in its own tensor and buffer, so each can be corrected alone."""
    model = parse_tflite(data, "<int8 model>")
    shared = [(op.index, 2) for op in _site_ops(model) if model.tensors[op.inputs[2]].data_offset is not None
              and (len(model.readers(op.inputs[2])) > 1 or model.tensors_sharing_data(op.inputs[2]))]
    return split_shared_inputs(data, shared)[0] if shared else data


class _Probe:
    """Runs a .tflite model on the calibration images, keeping every tensor, and reduces some of them."""

    def __init__(self, data: bytes, images: np.ndarray, threads: int = 1):
        import warnings

        from edgepatch.runtime.tflite import interpreter_class

        with warnings.catch_warnings():  # "intended for debugging": here it is the point, on a bounded batch
            warnings.simplefilter("ignore", UserWarning)
            self.interpreter = interpreter_class()(model_content=bytes(data), num_threads=threads,
                                                   experimental_preserve_all_tensors=True)
        self.input = self.interpreter.get_input_details()[0]["index"]
        self.images, self.shape = images, None

    def batches(self):
        """Run each batch; yield after each, so the caller reads the tensors it needs."""
        size = max(1, CORRECTION_PIXELS // (self.images.shape[1] * self.images.shape[2]))
        for start in range(0, len(self.images), size):
            batch = self.images[start:start + size]
            if self.shape != batch.shape:
                self.interpreter.resize_tensor_input(self.input, list(batch.shape))
                self.interpreter.allocate_tensors()
                self.shape = batch.shape
            self.interpreter.set_tensor(self.input, batch)
            self.interpreter.invoke()
            yield

    def channels(self, index: int) -> np.ndarray:
        value = self.interpreter.get_tensor(index)
        return value.reshape(-1, value.shape[-1])


def correct_biases(float_data: bytes, int8_data: bytes, images: np.ndarray) -> bytes:
    """Empirical bias correction of ``int8_data`` against the calibrated float model it was quantized from.

    Conv by conv, in network order (each one measured after the ones before it are corrected), the mean
    of each output channel over ``images`` and every position is compared between the int8 and the float
    model; the int32 bias absorbs the difference, divided by the share of positions the channel's
    output range does not clip (at least MIN_ACTIVE_SHARE). Deterministic: fixed batches, the float model
    on one thread (integer kernels give the same outputs on any number). The bytes come back unchanged
    when the two models' convs do not line up.
    """
    float_model = parse_tflite(float_data, "<calibrated float model>")
    if not _correctable_sites(float_model, parse_tflite(int8_data, "<int8 model>")):
        return int8_data
    data = bytearray(_private_biases(int8_data))
    int8_model = parse_tflite(data, "<int8 model>")
    sites = _correctable_sites(float_model, int8_model)
    bounds, float_mean, active = {}, {}, {}
    for _, op in sites:
        output = int8_model.tensors[op.outputs[0]]
        scale = float(_quant(data, output.quant_scales, np.float32)[0])
        zero_point = int(_quant(data, output.quant_zero_points, np.int64)[0])
        bounds[op.index] = (scale, zero_point, scale * (-128 - zero_point), scale * (127 - zero_point))
    probe = _Probe(float_data, images)
    for _ in probe.batches():
        for reference, op in sites:
            values = probe.channels(reference.outputs[0]).astype(np.float64)
            low, high = bounds[op.index][2:]
            float_mean[op.index] = float_mean.get(op.index, 0.0) + values.sum(0)
            active[op.index] = active.get(op.index, 0) + np.count_nonzero((values > low) & (values < high), 0)
    for _, op in sites:
        count = 0
        total = np.zeros(1, np.int64)
        probe = _Probe(data, images, CORRECTION_THREADS)
        for _ in probe.batches():
            values = probe.channels(op.outputs[0])
            total = total + values.sum(0, dtype=np.int64)
            count += len(values)
        scale, zero_point = bounds[op.index][:2]
        shift = ((total / count - zero_point) * scale - float_mean[op.index] / count) \
            / np.maximum(active[op.index] / count, MIN_ACTIVE_SHARE)
        bias = int8_model.tensors[op.inputs[2]]
        bias_scale = _quant(data, bias.quant_scales, np.float32).astype(np.float64)
        stored = np.frombuffer(data, np.int32, bias.data_size // 4, bias.data_offset)
        corrected = stored.astype(np.int64) - np.rint(shift / bias_scale).astype(np.int64)
        stored[...] = np.clip(corrected, np.iinfo(np.int32).min, np.iinfo(np.int32).max)
    return bytes(data)


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


def recentre_compact(delta: Int8Delta, base, float_data: bytes, images: np.ndarray) -> Int8Delta:
    """``delta`` with bias codes that centre the model the device rebuilds from it on float.

    Compact codes round each weight scale to 7 mantissa bits (up to 0.4%), which shifts each channel's
    mean output again; the model rebuilt on ``base`` (a ``TFLiteInt8Base``) is bias-corrected against
    the task's calibrated float model on ``images``, and each refold's bias codes are re-encoded from
    the corrected biases (a code that would leave int16 keeps its value).
    """
    if not delta.refolds:
        return delta
    rebuilt = bytes(base.patched_bytes(delta))
    corrected = correct_biases(float_data, rebuilt, images)
    if len(corrected) != len(rebuilt):  # the corrected model moved its bytes: its biases are not where ours are
        return delta
    model = base.model
    refolds = []
    for entry in delta.refolds:
        tensor = model.tensors[entry.bias]
        new_value = (np.frombuffer(corrected, np.int32, entry.channels, tensor.data_offset).astype(np.float64)
                     * _quant(rebuilt, tensor.quant_scales, np.float32))
        base_value = (np.frombuffer(base.bytes, np.int32, entry.channels, tensor.data_offset).astype(np.float64)
                      * _quant(base.bytes, tensor.quant_scales, np.float32))
        codes = np.rint((new_value - base_value) / np.float64(np.float32(entry.bias_step)))
        limit = np.iinfo(np.int16).max
        codes = np.where(np.abs(codes) <= limit, codes, entry.bias_codes).astype(np.int16)
        refolds.append(dataclasses.replace(entry, bias_codes=codes))
    return dataclasses.replace(delta, refolds=tuple(refolds))


# Compact deltas are checked on the task's calibration images against the task's own int8 model:
# below the first agreement something is wrong; "auto" keeps compact only from the second up.
MIN_COMPACT_AGREEMENT = 0.8
AUTO_COMPACT_AGREEMENT = 0.99


def top1(runner, images: np.ndarray) -> np.ndarray:
    """The predicted class of each image, in batches of 32."""
    return np.concatenate([np.argmax(runner.predict(images[i:i + 32]), 1) for i in range(0, len(images), 32)])


def emit_int8(stage: str, folded_base_model, tasks, calibration: Calibration, base_resolution: int,
              preprocessing, delta_mode: str = "auto") -> dict:
    """Write ``base_int8.tflite`` and ``<task>.int8.delta`` into ``stage``; return sizes and checks.

    ``tasks`` is a list of (TaskInfo, BN-free Keras task model with the base's head width);
    ``calibration`` gives each one's images (``int8_calibration``).
    ``delta_mode``: ``"exact"``, ``"compact"`` or ``"auto"`` (compact where it agrees with the
    task's own int8 model on ``AUTO_COMPACT_AGREEMENT`` of the calibration images, else exact).
    Every delta is checked on the task's calibration images against the task's own int8 model:
    an exact delta must compute the same outputs, a compact one the same top-1 on at least
    ``MIN_COMPACT_AGREEMENT`` of them.
    """
    from edgepatch.format.int8_delta import read_int8_delta, write_int8_delta
    from edgepatch.runtime.tflite import TFLiteRunner
    from edgepatch.runtime.tflite_int8 import TFLiteInt8Base

    base_images = calibration.images("base", base_resolution, preprocessing)
    base_bytes = unshare_constants(export_int8(folded_base_model, base_images))
    with open(os.path.join(stage, "base_int8.tflite"), "wb") as handle:
        handle.write(base_bytes)
    runtime_base = TFLiteInt8Base(base_bytes, "base_int8.tflite")
    report = {"base_bytes": len(base_bytes), "delta_mode": delta_mode, "deltas": {},
              "calibration": {"source": calibration.source, "base_images": len(base_images)}}
    for info, folded_task_model in tasks:
        images = calibration.images(info.name, info.resolution, info.preprocessing)
        task_float, task_bytes = quantize_int8(folded_task_model, images)
        reference = TFLiteRunner(task_bytes, info, 0.0, 1)
        expected, expected_top1 = reference.predict(images), top1(reference, images)
        path = os.path.join(stage, f"{info.name}.int8.delta")
        checks = {}
        for mode in ("compact", "exact") if delta_mode == "auto" else (delta_mode,):
            delta = make_int8_delta(base_bytes, task_bytes, info, mode == "compact")
            if mode == "compact":
                delta = recentre_compact(delta, runtime_base, task_float, images)
            size = write_int8_delta(path, delta)
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
