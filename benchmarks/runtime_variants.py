"""Things ``bench_runtime.py`` measures side by side: runners, swap paths, and the interleaved timers.

Every variant is measured in the same process and the same rounds, the
order rotating each round, so that load from other processes on this
shared machine falls on all of them alike; results are medians and their
ratios. ORT sessions never spin (``session.intra_op.allow_spinning=0``).
"""

from __future__ import annotations

import os
import tempfile
import time

import numpy as np

from edgepatch.format.names import BIAS, KERNEL, SCALE, split_name, tensor_name
from edgepatch.runtime.buffers import writable_bytes
from edgepatch.runtime.ort_session import session_options
from edgepatch.runtime.patched_base import BytesPatcher
from edgepatch.runtime.tflite import interpreter_class

HEAD_SITE = "logits"  # the head layer's name in edgepatch's classifiers (train.models.HEAD_NAME)


class Interp:
    """A bare LiteRT interpreter over model bytes (direct conversions, full per-task models)."""

    def __init__(self, model: bytes, threads: int):
        self.interpreter = interpreter_class()(model_content=model, num_threads=threads)
        self.input = self.interpreter.get_input_details()[0]["index"]
        self.output = self.interpreter.get_output_details()[0]["index"]
        self.shape = None

    def prepare(self, resolution: int) -> "Interp":
        shape = (1, resolution, resolution, 3)
        if shape != self.shape:
            self.interpreter.resize_tensor_input(self.input, list(shape))
            self.interpreter.allocate_tensors()
            self.shape = shape
        return self

    def run(self, image: np.ndarray) -> np.ndarray:
        self.prepare(image.shape[1])
        self.interpreter.set_tensor(self.input, image)
        self.interpreter.invoke()
        return self.interpreter.get_tensor(self.output)


class Session:
    """A bare ORT session (ENABLE_ALL, no spinning) over model bytes."""

    def __init__(self, model: bytes, threads: int):
        import onnxruntime as ort

        self.session = ort.InferenceSession(model, session_options(threads), providers=["CPUExecutionProvider"])
        self.input = self.session.get_inputs()[0].name

    def run(self, image: np.ndarray) -> np.ndarray:
        return self.session.run(None, {self.input: image})[0]


class AffineAdapter:
    """The ORT-adapter route the issue started from (kept as a measured reference, not shipped).

    Each site conv keeps its base kernel as a constant, loses its bias, and is
    followed by ``BatchNormalization(scale, bias, mean=0, var=1, epsilon=0)``
    whose scale and bias are overridable; the head's kernel and bias are
    overridable. A task is an ``.onnx_adapter`` file (``AdapterFormat``),
    loaded with ``LoraAdapter.Load`` and activated per run with
    ``RunOptions.add_active_adapter``. BatchNormalization measured faster
    than Mul+Add here (one op instead of two between reorders).
    """

    def __init__(self, base_path: str, threads: int, folder: str):
        import onnx
        import onnxruntime as ort
        from onnx import helper, numpy_helper

        model = onnx.load(base_path)
        graph, inits = model.graph, {i.name: i for i in model.graph.initializer}
        nodes, self.params = [], [tensor_name(HEAD_SITE, KERNEL), tensor_name(HEAD_SITE, BIAS)]
        for node in graph.node:
            nodes.append(node)
            site, role = split_name(node.input[1]) if node.op_type == "Conv" else ("", "")
            if role != KERNEL:
                continue
            channels = inits[node.input[1]].dims[0]
            out = node.output[0]
            del node.input[2]
            node.output[0] = f"{out}__conv"
            for name, value in ((tensor_name(site, SCALE), 1.0), (f"{site}/mean", 0.0), (f"{site}/var", 1.0)):
                graph.initializer.append(numpy_helper.from_array(np.full(channels, value, np.float32), name))
            nodes.append(helper.make_node("BatchNormalization", [f"{out}__conv", tensor_name(site, SCALE), tensor_name(site, BIAS),
                                                                 f"{site}/mean", f"{site}/var"], [out], epsilon=0.0))
            self.params += [tensor_name(site, SCALE), tensor_name(site, BIAS)]
        del graph.node[:]
        graph.node.extend(nodes)
        shapes = {i.name: list(i.dims) for i in graph.initializer}
        graph.input.extend(helper.make_tensor_value_info(p, 1, shapes[p]) for p in self.params)
        options = session_options(threads)
        options.log_severity_level = 3
        self.session = ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])
        self.input, self.folder, self.shapes = self.session.get_inputs()[0].name, folder, shapes
        self.run_options = None

    def export(self, delta, width: int) -> str:
        """Write ``delta`` as an .onnx_adapter file (done once per task, ahead of any swap)."""
        import onnxruntime as ort

        from edgepatch.format.layouts import pad_head

        arrays = {}
        for name in self.params:
            site, role = split_name(name)
            if site == HEAD_SITE:
                kernel, bias = pad_head(delta.tensors[tensor_name(site, KERNEL)], delta.tensors[tensor_name(site, BIAS)],
                                        width)
                arrays[name] = kernel if role == KERNEL else bias
            else:
                arrays[name] = delta.tensors[name]
        arrays = {n: np.ascontiguousarray(a, np.float32).reshape(self.shapes[n]) for n, a in arrays.items()}
        adapter = ort.AdapterFormat()
        adapter.set_parameters({n: ort.OrtValue.ortvalue_from_numpy(a) for n, a in arrays.items()})
        path = os.path.join(self.folder, f"{delta.task.name}.onnx_adapter")
        adapter.export_adapter(path)  # the arrays above are still alive here (ORT keeps only the pointers)
        return path

    def activate(self, path: str) -> None:
        import onnxruntime as ort

        self.adapter = ort.LoraAdapter()  # kept alive: RunOptions does not own it
        self.adapter.Load(path)
        self.run_options = ort.RunOptions()
        self.run_options.add_active_adapter(self.adapter)

    def run(self, image: np.ndarray) -> np.ndarray:
        return self.session.run(None, {self.input: image}, self.run_options)[0]


def naive_tflite_swap(base, delta, resolution: int, threads: int) -> Interp:
    """The pre-issue swap: copy to bytearray, re-fold, copy to bytes, create, allocate."""
    return Interp(bytes(base.patched_bytes(delta)), threads).prepare(resolution)


def fresh_buffer_patcher(base) -> BytesPatcher:
    """A patcher that keeps no buffer: every swap writes a fresh ``bytes`` (no reuse, no double copy)."""
    return BytesPatcher(base.bytes, base.sites, base.format, base.source, keep=0)


class CopyThenCreate:
    """The floor of any swap that changes every kernel before the interpreter exists (as XNNPACK needs).

    One plain copy of the task's finished bytes into a ``bytes`` buffer (no read, no checks,
    no arithmetic), then create and allocate. Two buffers alternate: the previous
    interpreter still reads the other one.
    """

    def __init__(self, model: bytes, threads: int):
        self.model, self.threads = np.frombuffer(model, np.uint8), threads
        self.buffers, self.turn = [writable_bytes(len(model)) for _ in range(2)], 0

    def __call__(self, resolution: int) -> Interp:
        data, view = self.buffers[self.turn]
        self.turn ^= 1
        view[:] = self.model
        return Interp(data, self.threads).prepare(resolution)


def copy_weight_set(source: dict[str, np.ndarray]):
    """The floor of an adapter-mode swap: copy a finished weight set into another (what any cold swap writes)."""
    pairs = [(np.empty_like(array), array) for array in source.values()]

    def copy() -> None:
        for target, values in pairs:
            np.copyto(target, values)
    return copy


def read_file(path: str) -> bytes:
    with open(path, "rb") as handle:
        return handle.read()


def interleaved(variants: dict, rounds: int, per_round: int = 1, keep_last: bool = True) -> dict[str, list[float]]:
    """Time each ``variants[name]()`` ``per_round`` times per round, rotating the order every round.

    With ``keep_last`` the previous result of a variant stays alive while the
    next call runs (as when an app swaps ``runner = base.apply(next)``).
    """
    names = list(variants)
    times: dict[str, list[float]] = {name: [] for name in names}
    last: dict[str, object] = {}
    for index in range(rounds):
        shift = index % len(names)
        for name in names[shift:] + names[:shift]:
            for _ in range(per_round):
                start = time.perf_counter()
                result = variants[name]()
                times[name].append(time.perf_counter() - start)
                if keep_last:
                    last[name] = result
                del result
    return times


def medians_ms(times: dict[str, list[float]]) -> dict[str, float]:
    return {name: round(float(np.median(values)) * 1e3, 4) for name, values in times.items()}


def minimums_ms(times: dict[str, list[float]]) -> dict[str, float]:
    """The least-disturbed run of each variant: a second view when the machine is shared."""
    return {name: round(float(np.min(values)) * 1e3, 4) for name, values in times.items()}


def temporary_folder() -> str:
    return tempfile.mkdtemp(prefix="edgepatch-bench-")
