"""ONNX swap mode ``adapter``: one optimized session; a task is new values for its weight inputs.

Why not ORT's own route. Making the base's site initializers overridable
(ORT adapters, ``RunOptions.add_active_adapter``) takes them off ORT's
constant-weight path: the NCHWc transformer reorders only constant filters,
so every conv falls back to the slower NCHW kernels; a constant conv
followed by an overridable per-channel Mul/Add (or BatchNormalization)
keeps NCHWc but wraps each conv in reorders and loses Conv+Clip fusion
(``benchmarks/bench_runtime.py`` measures both).

What this mode does instead, on the base's ``OptimizedLayout``
(``onnx_layout``: ORT's optimized model, and where each site tensor lies
in it):

1. The optimized model gets the site initializers as graph inputs
   (appended as a second ``graph`` field, which protobuf merges) and one
   session is built from it with optimizations off: the same NCHWc
   kernels, now with weights read from inputs.
2. ``apply`` writes the task's weights straight into the optimized layout
   in buffers bound once to an ``IOBinding``: a swap builds no session.

Memory: the layout, and one weight set per live runner.
"""

from __future__ import annotations

import time

import numpy as np

from edgepatch.format.delta import Delta
from edgepatch.runtime.buffers import LendingPool
from edgepatch.runtime.onnx_layout import OptimizedLayout, Placement, write_task
from edgepatch.runtime.ort_session import session_options
from edgepatch.runtime.refold import SiteSlots, site_updates
from edgepatch.runtime.runner import TaskRunner


def _varint(value: int) -> bytes:
    out = bytearray()
    while value >= 0x80:
        out.append(value & 0x7F | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


def _field(number: int, payload: bytes) -> bytes:
    return _varint(number << 3 | 2) + _varint(len(payload)) + payload


def _float_input(name: str, dims: tuple[int, ...]) -> bytes:
    """ValueInfoProto{name, type: TypeProto{tensor_type: {elem_type: FLOAT, shape}}}."""
    shape = b"".join(_field(1, _varint(1 << 3) + _varint(d)) for d in dims)  # Dimension.dim_value = 1
    tensor_type = _varint(1 << 3) + _varint(1) + _field(2, shape)  # elem_type 1 = FLOAT
    return _field(1, name.encode()) + _field(2, _field(1, tensor_type))


def with_inputs(model: bytes, placements: list[Placement]) -> bytes:
    """The model with the placements' initializers also listed as graph inputs (overridable)."""
    extra = b"".join(_field(11, _float_input(p.name, p.dims)) for p in placements)
    return model + _field(7, extra)  # a repeated message field merges: graph.input grows


class _WeightSet:
    """One task's weights in the optimized layout, bound once to an IOBinding."""

    def __init__(self, session, placements: list[Placement], input_name: str, output_name: str):
        import onnxruntime as ort

        self.arrays = {p.name: np.zeros(p.dims, np.float32) for p in placements}
        self.outputs = [self.arrays[p.name] for p in placements]  # in placement order, for write_task
        self.binding = session.io_binding()
        self.values = {n: ort.OrtValue.ortvalue_from_numpy(a) for n, a in self.arrays.items()}  # no copy on CPU
        for name, value in self.values.items():
            self.binding.bind_ortvalue_input(name, value)
        self.binding.bind_output(output_name)
        self.input_name = input_name


class AdapterRunner(TaskRunner):
    def __init__(self, session, weights: _WeightSet, task, swap_seconds: float):
        super().__init__(task, swap_seconds)
        self._session, self._weights = session, weights
        self.weight_bytes = sum(array.nbytes for array in weights.arrays.values())  # what keeping it costs

    def _run(self, images: np.ndarray) -> np.ndarray:
        binding = self._weights.binding
        binding.bind_cpu_input(self._weights.input_name, images)
        self._session.run_with_iobinding(binding)
        return binding.copy_outputs_to_cpu()[0]


class AdapterSession:
    """The base's ORT-optimized session with overridable site weights; ``apply`` binds a task."""

    def __init__(self, layout: OptimizedLayout, sites: dict[str, SiteSlots], peaks: dict[str, np.ndarray],
                 num_threads: int, source: str, keep: int = 2):
        import onnxruntime as ort

        self.sites, self.source = sites, source
        self.peaks = peaks  # the base's kernel_peaks: which scales would overflow
        self.placements = layout.placements
        options = session_options(num_threads, optimize=False)  # the layout's model is optimized already
        options.log_severity_level = 3  # one "will not be treated as constant" warning per input otherwise
        self.session = ort.InferenceSession(with_inputs(layout.model, self.placements), options,
                                            providers=["CPUExecutionProvider"])
        names = (self.session.get_inputs()[0].name, self.session.get_outputs()[0].name)
        self.pool = LendingPool(lambda: _WeightSet(self.session, self.placements, *names), keep)

    def apply(self, delta: Delta | None) -> AdapterRunner:
        start = time.perf_counter()
        updates = site_updates(self.sites, self.peaks, delta, "onnx", self.source) if delta is not None else {}
        weights = self.pool.take()
        try:
            write_task(self.placements, updates, weights.outputs)
            runner = AdapterRunner(self.session, weights, delta.task if delta else None, 0.0)
        except BaseException:
            self.pool.give_back(weights)
            raise
        self.pool.lend(weights, runner)
        runner.swap_seconds = time.perf_counter() - start
        return runner
