"""LiteRT backend: apply deltas to a shared .tflite base and run the task.

Walk-through::

    from edgepatch.runtime import TFLiteBase, read_task_delta

    base = TFLiteBase.from_file("out/base.tflite")        # read and index once
    flowers = base.apply(read_task_delta("out/flowers.delta"))
    logits = flowers.predict(images)                      # [N, classes]
    cars = base.apply(read_task_delta("out/cars.delta"))  # switch task: same base

Lifetime: the base keeps one immutable copy of the file's bytes. ``apply``
writes the task's tensors into a copy (weights must be patched before the
interpreter exists: ``set_tensor`` on a constant weight is ignored under
XNNPACK) and hands the copy to a new interpreter, which reads it for as long
as the runner lives. Copies are reused once their runner is gone
(``patched_base.BytesPatcher``): keep at most the runners you use, and a swap
writes only the site tensors into warm memory.

``apply`` returns a runner that is ready to run: the interpreter is
allocated for the task's resolution, so XNNPACK has packed the weights and
``swap_seconds`` is the whole cost of the swap.
"""

from __future__ import annotations

import contextlib
import importlib
import time

import numpy as np

from edgepatch.errors import BaseModelError
from edgepatch.format.delta import Delta
from edgepatch.format.names import BIAS, CONV_OP, DENSE_OP, DEPTHWISE_OP, KERNEL, split_name, tensor_name
from edgepatch.runtime.base_file import require, sha256_hex
from edgepatch.runtime.patched_base import BytesPatcher, PatchedBase, check_fingerprint
from edgepatch.runtime.refold import SiteSlots, Slot
from edgepatch.runtime.runner import TaskRunner
from edgepatch.runtime.tflite_file import TFLiteModel, parse_tflite

SITE_OPS = {"CONV_2D": CONV_OP, "DEPTHWISE_CONV_2D": DEPTHWISE_OP, "FULLY_CONNECTED": DENSE_OP}


# Where an Interpreter class may come from, in order of preference. Never TensorFlow: the
# runtime must run where only LiteRT (or the older tflite_runtime) is installed.
INTERPRETER_MODULES = ("ai_edge_litert.interpreter", "tflite_runtime.interpreter")


def interpreter_class():
    """LiteRT's Interpreter, else tflite_runtime's; BaseModelError when neither is installed."""
    for module in INTERPRETER_MODULES:
        try:
            return importlib.import_module(module).Interpreter
        except ImportError:
            continue
    raise BaseModelError("no TFLite interpreter: the runtime needs LiteRT (pip install ai-edge-litert, or "
                         "pip install 'edgepatch[runtime]') or tflite_runtime; it does not use TensorFlow's")


def _float_slot(model: TFLiteModel, index: int, readers: dict[int, int], source: str) -> Slot:
    tensor = model.tensors[index]
    require(tensor.dtype == np.float32, f"{source}: tensor '{tensor.name}' is {tensor.dtype}, expected float32")
    require(tensor.data_offset is not None, f"{source}: tensor '{tensor.name}' has no constant data")
    require(readers.get(index, 0) == 1, f"{source}: tensor '{tensor.name}' is read by {readers.get(index, 0)} op inputs")
    return Slot(tensor.data_offset, tensor.shape)


def _input_readers(model: TFLiteModel) -> dict[int, int]:
    counts: dict[int, int] = {}
    for op in model.ops:
        for index in op.inputs:
            counts[index] = counts.get(index, 0) + 1
    return counts


def _check_private_bytes(model: TFLiteModel, site_tensors: set[int], source: str) -> None:
    """No site tensor's bytes may overlap another tensor's (shared buffers, aliased offsets)."""
    spans = sorted((t.data_offset, t.data_offset + t.data_size, t.index) for t in model.tensors
                   if t.data_offset is not None and t.data_size > 0)
    reach_end, reach_index = -1, -1
    for start, end, index in spans:
        if start < reach_end and (index in site_tensors or reach_index in site_tensors):
            names = (model.tensors[reach_index].name, model.tensors[index].name)
            raise BaseModelError(f"{source}: tensors '{names[0]}' and '{names[1]}' share data bytes")
        if end > reach_end:
            reach_end, reach_index = end, index


def tflite_sites(model: TFLiteModel, source: str) -> dict[str, SiteSlots]:
    """Index the base's site tensors by walking its conv/FC ops (names were set by the converter)."""
    sites: dict[str, SiteSlots] = {}
    readers = _input_readers(model)
    site_tensors: set[int] = set()
    for op in model.ops:
        if op.opcode not in SITE_OPS or len(op.inputs) < 3 or min(op.inputs[1:3]) < 0:
            continue
        kernel_name = model.tensors[op.inputs[1]].name
        site, role = split_name(kernel_name)
        if role != KERNEL:
            continue
        bias_name = model.tensors[op.inputs[2]].name
        require(bias_name == tensor_name(site, BIAS),
                f"{source}: op {op.index} has kernel '{kernel_name}' but bias '{bias_name}'")
        require(site not in sites, f"{source}: site `{site}` appears on two ops")
        sites[site] = SiteSlots(
            SITE_OPS[op.opcode],
            _float_slot(model, op.inputs[1], readers, source),
            _float_slot(model, op.inputs[2], readers, source),
        )
        site_tensors.update(op.inputs[1:3])
    require(bool(sites), f"{source}: no edgepatch sites found; was it written by `edgepatch convert`?")
    _check_private_bytes(model, site_tensors, source)
    return sites


class TFLiteRunner(TaskRunner):
    """Runs one task's model bytes in LiteRT; any interpreter failure is a BaseModelError naming the task."""

    def __init__(self, model_bytes: bytes, task, swap_seconds: float, num_threads: int):
        super().__init__(task, swap_seconds)
        with self._litert("create an interpreter for"):
            self._interpreter = interpreter_class()(model_content=model_bytes, num_threads=num_threads)
            self._input = self._interpreter.get_input_details()[0]["index"]
            self._output = self._interpreter.get_output_details()[0]["index"]
        self._shape: tuple[int, ...] | None = None

    @contextlib.contextmanager
    def _litert(self, step: str):
        """Turn LiteRT's RuntimeError/ValueError (e.g. XNNPACK refusing a patched model) into a BaseModelError."""
        try:
            yield
        except (RuntimeError, ValueError) as error:
            name = f"task '{self.task.name}'" if self.task is not None else "the base task"
            text = (str(error).strip().splitlines() or [type(error).__name__])[0]
            raise BaseModelError(f"LiteRT could not {step} the model of {name}: {text[:200]}") from None

    def prepare(self, shape: tuple[int, ...]) -> None:
        """Allocate for inputs of ``shape`` (NHWC) now, so that the next run does not."""
        if self._shape != tuple(shape):
            with self._litert("allocate"):
                self._interpreter.resize_tensor_input(self._input, list(shape))
                self._interpreter.allocate_tensors()
            self._shape = tuple(shape)

    def _run(self, images: np.ndarray) -> np.ndarray:
        self.prepare(images.shape)
        with self._litert("run"):
            self._interpreter.set_tensor(self._input, images)
            self._interpreter.invoke()
            return self._interpreter.get_tensor(self._output).copy()


class TFLiteBase(PatchedBase):
    """A shared .tflite base, read once; ``apply(delta)`` gives a task runner.

    Args:
        model_bytes: the exact bytes of the base file.
        source: a name for error messages (usually the path).
        num_threads: interpreter threads for every runner it makes.
    Raises:
        BaseModelError: the bytes are not a base written by ``edgepatch convert``.
    """

    format = "tflite"

    def __init__(self, model_bytes: bytes, source: str = "<bytes>", num_threads: int = 1):
        self.bytes = bytes(model_bytes)
        self.source = source
        self.num_threads = num_threads
        self.sha256 = sha256_hex(self.bytes)
        self.sites = tflite_sites(parse_tflite(self.bytes, source), source)
        self._patcher = BytesPatcher(self.bytes, self.sites, self.format, source)

    def apply(self, delta: Delta | None, resolution: int | None = None) -> TFLiteRunner:
        """A ready runner for ``delta``'s task, or for the base task itself when ``delta`` is None.

        Args:
            delta: the task's delta (its fingerprint must name this base).
            resolution: square input size to allocate for now (default: the
                task's; the base's dynamic input is allocated at first run).
        Raises:
            WrongBaseError: the delta was made for another base.
            ShapeMismatchError: a delta tensor does not fit its site.
        """
        start = time.perf_counter()
        if delta is None:
            runner = TFLiteRunner(self.bytes, None, 0.0, self.num_threads)
        else:
            check_fingerprint(delta, self.format, self.sha256, self.source)
            runner = self._patched_runner(delta, lambda model: TFLiteRunner(model, delta.task, 0.0, self.num_threads))
        size = resolution or (delta.task.resolution if delta is not None else None)
        if size:
            runner.prepare((1, size, size, 3))
        runner.swap_seconds = time.perf_counter() - start
        return runner
