"""ONNX Runtime backend: apply deltas to a shared .onnx base and run the task.

Walk-through::

    from edgepatch.runtime import OnnxBase, read_task_delta

    base = OnnxBase.from_file("out/base.onnx")
    flowers = base.apply(read_task_delta("out/flowers.delta"))
    logits = flowers.predict(images)

At load, ORT optimizes the base once for this machine, and the runtime maps
where every site tensor landed in the optimized model (``onnx_layout``).
Two swap modes (``swap_mode``) build on that:

- ``rebuild`` (default): the task's weights are written into a copy of the
  optimized model's bytes (``onnx_layout.LayoutPatcher``) and a new
  ``InferenceSession`` is built from them with graph optimization off: every
  weight stays a constant, the kernels are those ORT chose, and the build
  skips the optimization a plain session create repeats
  (``benchmarks/bench_runtime.py`` measures both). ``optimize_once=False`` skips the
  load-time work and memory, and rebuilds from the base as stored, paying
  ORT's optimization per swap. (ORT ignores ``SessionOptions.add_initializer``
  overrides of constant initializers at ORT_ENABLE_ALL, so overrides are
  not used.)
- ``adapter``: one session over the optimized graph with the site weights
  as inputs (``onnx_adapter``); a swap only writes the task's weights into
  buffers bound to an ``IOBinding`` and builds no session; its run time is
  close to ``rebuild``'s (``benchmarks/bench_runtime.py``). Memory: one more
  weight set per live runner. Choose it when tasks switch often.

Loading costs two ORT optimizations. If ORT optimizes a base in
a way the mapping refuses, ``rebuild`` warns and falls back to
``optimize_once=False``; ``adapter`` raises.
"""

from __future__ import annotations

import time
import warnings

import numpy as np

from edgepatch.errors import BaseModelError, UsageError
from edgepatch.format.delta import Delta
from edgepatch.format.names import BIAS, CONV_OP, DENSE_OP, DEPTHWISE_OP, KERNEL, split_name, tensor_name
from edgepatch.runtime.base_file import require, sha256_hex
from edgepatch.runtime.onnx_adapter import AdapterSession
from edgepatch.runtime.onnx_file import OnnxModel, parse_onnx
from edgepatch.runtime.onnx_layout import LayoutPatcher, optimized_layout
from edgepatch.runtime.ort_session import session_options
from edgepatch.runtime.patched_base import BytesPatcher, PatchedBase, check_fingerprint
from edgepatch.runtime.refold import SiteSlots, Slot
from edgepatch.runtime.runner import TaskRunner

SWAP_MODES = ("rebuild", "adapter")


def _slot(model: OnnxModel, name: str, source: str) -> Slot:
    init = model.initializers.get(name)
    require(init is not None, f"{source}: initializer '{name}' is missing")
    require(init.dtype == np.float32, f"{source}: initializer '{name}' is {init.dtype}, expected float32")
    require(init.data_offset is not None, f"{source}: initializer '{name}' is not stored as raw_data")
    return Slot(init.data_offset, init.dims)


def onnx_sites(model: OnnxModel, source: str) -> dict[str, SiteSlots]:
    """Index the base's site initializers by walking its Conv/MatMul nodes."""
    sites: dict[str, SiteSlots] = {}
    for node in model.nodes:
        if node.op_type not in ("Conv", "MatMul") or len(node.inputs) < 2:
            continue
        site, role = split_name(node.inputs[1])
        if role != KERNEL:
            continue
        kernel = _slot(model, node.inputs[1], source)
        if node.op_type == "MatMul":
            op = DENSE_OP
        else:
            # Depthwise: one input channel per group ([C*M, 1, H, W]); a grouped conv has more.
            depthwise = node.int_attrs.get("group", 1) > 1 and len(kernel.shape) == 4 and kernel.shape[1] == 1
            op = DEPTHWISE_OP if depthwise else CONV_OP
        require(site not in sites, f"{source}: site `{site}` appears on two nodes")
        sites[site] = SiteSlots(op, kernel, _slot(model, tensor_name(site, BIAS), source))
    require(bool(sites), f"{source}: no edgepatch sites found; was it written by `edgepatch convert`?")
    return sites


class OnnxRunner(TaskRunner):
    def __init__(self, model_bytes: bytes, task, swap_seconds: float, num_threads: int, optimized: bool = False):
        import onnxruntime as ort

        super().__init__(task, swap_seconds)
        options = session_options(num_threads, optimize=not optimized)  # optimized: ORT's own model (onnx_layout)
        self._session = ort.InferenceSession(model_bytes, options, providers=["CPUExecutionProvider"])
        self._input = self._session.get_inputs()[0].name

    def _run(self, images: np.ndarray) -> np.ndarray:
        return self._session.run(None, {self._input: images})[0]


class OnnxBase(PatchedBase):
    """A shared .onnx base, read once; ``apply(delta)`` gives a task runner.

    Args:
        model_bytes: the exact bytes of the base file.
        source: a name for error messages (usually the path).
        num_threads: intra-op threads for every session it makes.
        swap_mode: "rebuild" or "adapter" (see the module docstring).
        optimize_once: ``rebuild`` mode only: build task sessions from ORT's
            optimized model (default) or, when False, from the base as stored.
    Raises:
        UsageError: an unknown ``swap_mode``.
        BaseModelError: the bytes are not a base written by ``edgepatch convert``,
            or (adapter mode) ORT optimized it in a way the mode cannot map.
    """

    format = "onnx"

    def __init__(self, model_bytes: bytes, source: str = "<bytes>", num_threads: int = 1, swap_mode: str = "rebuild",
                 optimize_once: bool = True):
        if swap_mode not in SWAP_MODES:
            raise UsageError(f"ONNX swap mode must be one of {list(SWAP_MODES)}. Received '{swap_mode}'")
        try:
            import onnxruntime  # noqa: F401
        except ImportError:
            raise BaseModelError("onnxruntime is not installed (pip install 'edgepatch[runtime]')") from None
        self.bytes = bytes(model_bytes)
        self.source = source
        self.num_threads = num_threads
        self.swap_mode = swap_mode
        self.sha256 = sha256_hex(self.bytes)
        self.sites = onnx_sites(parse_onnx(self.bytes, source), source)
        self._patcher = BytesPatcher(self.bytes, self.sites, self.format, source)
        self.layout = self._layout(swap_mode == "adapter" or optimize_once, strict=swap_mode == "adapter")
        self._adapter = self._layout_patcher = None
        if swap_mode == "adapter":
            self._adapter = AdapterSession(self.layout, self.sites, self._patcher.peaks, num_threads, source)
        elif self.layout is not None:
            self._layout_patcher = LayoutPatcher(self.layout, self.sites, self._patcher.peaks, source)

    def _layout(self, wanted: bool, strict: bool):
        """ORT's optimized model and where the sites lie in it; None if not wanted, or refused and not ``strict``."""
        if not wanted:
            return None
        try:
            return optimized_layout(self.bytes, self.sites, self.num_threads, self.source)
        except BaseModelError as error:
            if strict:
                raise
            warnings.warn(f"{error}; rebuild swaps will optimize each task's session again (slower)", stacklevel=3)
            return None

    def apply(self, delta: Delta | None, resolution: int | None = None) -> TaskRunner:
        """A ready runner for ``delta``'s task, or for the base task when ``delta`` is None.

        ``resolution`` is accepted for symmetry with ``TFLiteBase.apply``: ORT
        needs no per-shape preparation beyond its first run.

        Raises:
            WrongBaseError: the delta was made for another base.
            ShapeMismatchError: a delta tensor does not fit its site.
        """
        start = time.perf_counter()
        if delta is not None:
            check_fingerprint(delta, self.format, self.sha256, self.source)
        optimized = self._layout_patcher is not None
        if self._adapter is not None:
            runner = self._adapter.apply(delta)
        elif delta is None:
            model = self.layout.model if optimized else self.bytes
            runner = OnnxRunner(model, None, 0.0, self.num_threads, optimized)
        else:
            runner = self._patched_runner(
                delta, lambda model: OnnxRunner(model, delta.task, 0.0, self.num_threads, optimized),
                self._layout_patcher)
        runner.swap_seconds = time.perf_counter() - start
        return runner
