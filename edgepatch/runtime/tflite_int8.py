"""LiteRT backend for int8 bases: patch quantization vectors and buffers in place.

Specified in ``edgepatch/format/spec.rst``, sections *Bases* (int8 TFLite) and
*Applying an int8 delta*.

Walk-through::

    from edgepatch.runtime import load_base, read_task_delta

    base = load_base("ship/base_int8.tflite")        # an int8 base is recognised by content
    flowers = base.apply(read_task_delta("ship/flowers.int8.delta"))
    logits = flowers.predict(images)                 # float in, float out; int8 inside

The flatbuffer stores each tensor's scale and zero-point vectors; a delta
rewrites them (same lengths) and the buffers whose bytes changed, in a copy of
the base bytes, before the interpreter is created.
"""

from __future__ import annotations

import time

import numpy as np

from edgepatch.errors import NonFiniteError, ShapeMismatchError, WrongBaseError
from edgepatch.format.int8_delta import BASE_FORMAT, MAX_ACTIVATION_SCALE_RATIO, Int8Delta, Refold, refolded
from edgepatch.runtime.base_file import BaseFile, require, sha256_hex
from edgepatch.runtime.tflite import TFLiteRunner
from edgepatch.runtime.tflite_file import TFLiteModel, parse_tflite


SITE_OPCODES = ("CONV_2D", "DEPTHWISE_CONV_2D", "FULLY_CONNECTED")


def is_int8_model(model: TFLiteModel) -> bool:
    """True when the conv kernels are int8 (a full-integer quantized model)."""
    kernels = [model.tensors[op.inputs[1]] for op in model.ops
               if op.opcode in ("CONV_2D", "DEPTHWISE_CONV_2D") and len(op.inputs) > 1]
    return bool(kernels) and all(k.dtype == np.int8 for k in kernels)


class TFLiteInt8Base(BaseFile):
    """A shared int8 .tflite base, read once; ``apply(int8_delta)`` gives a task runner.

    Raises:
        BaseModelError: the bytes are not a full-integer .tflite model.
    """

    format = BASE_FORMAT

    def __init__(self, model_bytes: bytes, source: str = "<bytes>", num_threads: int = 1):
        self.bytes = bytes(model_bytes)
        self.source = source
        self.num_threads = num_threads
        self.sha256 = sha256_hex(self.bytes)
        self.model = parse_tflite(self.bytes, source)
        require(is_int8_model(self.model), f"{source}: not a full-integer (int8) model")
        self.site_ops = {(op.inputs[0], op.inputs[1], op.inputs[2]): op for op in self.model.ops
                         if op.opcode in SITE_OPCODES and len(op.inputs) >= 3 and min(op.inputs[:3]) >= 0}
        self.owned = {index for triple in self.site_ops for index in triple[1:]}  # weights and biases

    @property
    def head_width(self) -> int:
        """The last dimension of the model's first output (0 when it has none): the head width."""
        shape = self.model.tensors[self.model.outputs[0]].shape if self.model.outputs else ()
        return int(shape[-1]) if shape else 0

    def _tensor(self, index: int, delta: Int8Delta):
        if index >= len(self.model.tensors):
            raise ShapeMismatchError(
                f"int8 delta for task '{delta.task.name}' patches tensor {index}; {self.source} has "
                f"{len(self.model.tensors)} tensors"
            )
        return self.model.tensors[index]

    def patched_bytes(self, delta: Int8Delta) -> bytearray:
        """The base bytes with the task's quantization parameters and changed buffers written in."""
        if not isinstance(delta, Int8Delta):
            raise WrongBaseError(f"float delta for task '{delta.task.name}' needs a float base; {self.source} is an "
                                 "int8 base (it takes int8 deltas)")
        if delta.base_sha256 != self.sha256:
            raise WrongBaseError(
                f"int8 delta for task '{delta.task.name}' was made for base sha256 {delta.base_sha256[:16]}…, "
                f"but {self.source} has sha256 {self.sha256[:16]}…"
            )
        width = self.head_width
        if width and len(delta.task.classes) > width:
            raise ShapeMismatchError(f"task '{delta.task.name}' has {len(delta.task.classes)} classes, but the head "
                                     f"of {self.source} has {width} outputs")
        buffer = bytearray(self.bytes)
        scale_at = zero_at = 0
        for index, scales, zero_points in delta.quant:
            tensor = self._tensor(index, delta)
            self._check_quant_target(index, tensor, delta.zero_points[zero_at:zero_at + zero_points], delta)
            if scales not in (0, tensor.quant_scales[1]) or zero_points not in (0, tensor.quant_zero_points[1]):
                raise ShapeMismatchError(
                    f"tensor {index}: delta has {scales} scales / {zero_points} zero points, base {self.source} "
                    f"has {tensor.quant_scales[1]} / {tensor.quant_zero_points[1]}"
                )
            new_scales = delta.scales[scale_at:scale_at + scales]
            if tensor.data_offset is None:
                self._check_activation_scales(index, new_scales, delta)
            np.frombuffer(buffer, np.float32, scales, tensor.quant_scales[0] if scales else 0)[...] = new_scales
            np.frombuffer(buffer, np.int64, zero_points, tensor.quant_zero_points[0] if zero_points else 0)[...] = \
                delta.zero_points[zero_at:zero_at + zero_points]
            scale_at, zero_at = scale_at + scales, zero_at + zero_points
        for index, raw in delta.data.items():
            view = self._data_view(buffer, index, delta)
            if view.size != raw.size:
                raise ShapeMismatchError(f"tensor {index}: delta has {raw.size} data bytes, base {self.source} "
                                         f"has {view.size}")
            view[...] = raw
        for index, (at, put) in delta.edits.items():
            view = self._data_view(buffer, index, delta)
            if at.size and at[-1] >= view.size:
                raise ShapeMismatchError(f"tensor {index}: delta edits byte {int(at[-1])}, base {self.source} "
                                         f"has {view.size}")
            view[at] = put
        for entry in delta.refolds:
            self._refold(buffer, entry, delta)
        return buffer

    def _vector(self, data, index: int, field: str, dtype) -> np.ndarray:
        offset, count = getattr(self.model.tensors[index], field)
        return np.frombuffer(data, dtype, count, offset if count else 0)

    def _refold(self, buffer: bytearray, entry: Refold, delta: Int8Delta) -> None:
        """Recompute a conv's weight scales, bias scales and int32 biases from the base and the entry's codes."""
        weight, bias, source = (self._tensor(i, delta) for i in (entry.weight, entry.bias, entry.input))
        if (entry.input, entry.weight, entry.bias) not in self.site_ops:
            raise ShapeMismatchError(f"refold of tensors {entry.weight}/{entry.bias}/{entry.input}: {self.source} "
                                     "has no conv, depthwise or dense op with that weight, bias and input")
        channels = entry.channels
        if weight.dtype != np.int8 or bias.dtype != np.int32 or bias.data_size != 4 * channels \
                or weight.quant_scales[1] != channels or bias.quant_scales[1] != channels \
                or source.quant_scales[1] != 1:
            raise ShapeMismatchError(
                f"refold of tensors {entry.weight}/{entry.bias}/{entry.input}: the delta has {channels} channels; "
                f"base {self.source} has an {weight.dtype} kernel with {weight.quant_scales[1]} scales, an "
                f"{bias.dtype} bias of {bias.data_size} bytes with {bias.quant_scales[1]} scales and an input with "
                f"{source.quant_scales[1]} scales"
            )
        base_bias = np.frombuffer(self.bytes, np.int32, channels, bias.data_offset)
        weight_scale, bias_scale, new_bias = refolded(
            entry, self._vector(self.bytes, entry.weight, "quant_scales", np.float32), base_bias,
            self._vector(self.bytes, entry.bias, "quant_scales", np.float32),
            float(self._vector(buffer, entry.input, "quant_scales", np.float32)[0]))
        self._vector(buffer, entry.weight, "quant_scales", np.float32)[...] = weight_scale
        self._vector(buffer, entry.bias, "quant_scales", np.float32)[...] = bias_scale
        self._data_view(buffer, entry.bias, delta)[...] = new_bias.view(np.uint8)

    def _check_quant_target(self, index: int, tensor, zero_points: np.ndarray, delta: Int8Delta) -> None:
        """Quantization is the task's on activations, weights and biases; no other constant; symmetric weights."""
        if tensor.data_offset is None:
            return
        if index not in self.owned:
            raise ShapeMismatchError(f"int8 delta for task '{delta.task.name}' sets the quantization of tensor "
                                     f"{index}, a constant of {self.source} that is no weight or bias of a conv, "
                                     "depthwise or dense op")
        if np.any(zero_points != 0):
            raise ShapeMismatchError(f"int8 delta for task '{delta.task.name}' sets zero point "
                                     f"{int(zero_points[np.flatnonzero(zero_points)[0]])} on tensor {index}, a weight "
                                     f"or bias of {self.source}; those have zero point 0")

    def _check_activation_scales(self, index: int, scales: np.ndarray, delta: Int8Delta) -> None:
        """An activation's new scale stays within MAX_ACTIVATION_SCALE_RATIO of the base's (ops' multipliers)."""
        base = self._vector(self.bytes, index, "quant_scales", np.float32).astype(np.float64)
        ratio = scales.astype(np.float64) / base
        if np.any((ratio > MAX_ACTIVATION_SCALE_RATIO) | (ratio < 1 / MAX_ACTIVATION_SCALE_RATIO)):
            raise NonFiniteError(f"int8 delta for task '{delta.task.name}' sets the scale of activation {index} to "
                                 f"more than 64 times, or less than 1/64 of, the scale in {self.source}")

    def _data_view(self, buffer: bytearray, index: int, delta: Int8Delta) -> np.ndarray:
        tensor = self._tensor(index, delta)
        if index not in self.owned:
            raise ShapeMismatchError(f"int8 delta for task '{delta.task.name}' writes the data of tensor {index}, "
                                     f"which is no weight or bias of a conv, depthwise or dense op of {self.source}")
        require(tensor.data_offset is not None, f"{self.source}: tensor {index} has no constant data")
        require(len(self.model.buffer_users[tensor.buffer]) == 1,
                f"{self.source}: tensor {index} shares its buffer, so it cannot be patched alone")
        return np.frombuffer(buffer, np.uint8, tensor.data_size, tensor.data_offset)

    def apply(self, delta: Int8Delta | None, resolution: int | None = None) -> TFLiteRunner:
        """A ready runner for ``delta``'s task (or the base task), allocated at ``resolution``."""
        start = time.perf_counter()
        model = bytes(self.patched_bytes(delta)) if delta is not None else self.bytes
        runner = TFLiteRunner(model, delta.task if delta else None, 0.0, self.num_threads)
        size = resolution or (delta.task.resolution if delta else None)
        if size:
            runner.prepare((1, size, size, 3))
        runner.swap_seconds = time.perf_counter() - start
        return runner
