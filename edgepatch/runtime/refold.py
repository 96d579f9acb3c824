"""Apply a delta to a copy of the base's bytes (format-agnostic).

Each runtime backend locates its site tensors once (``SiteSlots``: byte
offset, shape and op per site). ``site_updates`` checks a delta against
those sites and says what each site receives, in the runtime's layout:

- ``scale``: the base's folded kernel times the per-output-channel multiplier
  (re-folding the task's BN scale into the shared weights);
- ``kernel``: the task's kernel, converted to the runtime's layout;
- ``bias``: the task's folded bias.

The head is padded to the base's head width; the runner slices the logits
back to the task's classes.

Swapping fast (``BytesPatcher``). Measured on MobileNetV2 1.0 (8.9 MB) at
224, 1 thread, interleaved (``benchmarks/bench_runtime.py``): a naive swap
(copy the base to a ``bytearray``, re-fold, copy to ``bytes`` because LiteRT
and ORT take only ``bytes``, create) took 3.3x a plain interpreter create,
mostly page faults and copies; a fresh ``bytes`` filled in place 2.5x; the
patcher 1.6x (1.9x counting reading the delta). What is left is the re-fold:
it reads and writes every kernel (2 x 8.9 MB, 1-2.5 ms with cold caches).
The patcher

1. writes into a ``bytes`` object it created itself and fills before anyone
   else sees it (``writable_bytes``; the C-API pattern
   ``PyBytes_FromStringAndSize(NULL, n)`` then fill), so no second copy;
2. reuses such buffers (``keep`` of them) once the runner that used one is
   gone: their pages stay mapped and everything but the site tensors
   already holds the base's bytes, so a swap writes only the site tensors;
3. folds with views and broadcast shapes computed once per buffer.

A buffer is handed to an interpreter for that interpreter's whole life (it
reads weights from it), so it is reused only after its runner was collected.
"""

from __future__ import annotations

import ctypes
import hashlib
import sys
import threading
import weakref
from dataclasses import dataclass

import numpy as np

from edgepatch.format.delta import Delta
from edgepatch.errors import BaseModelError, NonFiniteError, ShapeMismatchError, WrongBaseError
from edgepatch.format.layouts import OUT_AXIS, pad_head, to_runtime
from edgepatch.runtime.runner import BaseFile


FLOAT32_MAX = float(np.finfo(np.float32).max)


@dataclass(frozen=True)
class Slot:
    """Where one float32 tensor lives in the base file."""

    offset: int
    shape: tuple[int, ...]

    @property
    def count(self) -> int:
        return int(np.prod(self.shape, dtype=np.int64))


@dataclass(frozen=True)
class SiteSlots:
    op: str
    kernel: Slot
    bias: Slot


@dataclass(frozen=True)
class SiteUpdate:
    """What a delta writes into one site, checked against the base; None leaves the base's value."""

    scale: np.ndarray | None  # [O] float32: kernel = base kernel × scale along the output axis
    kernel: np.ndarray | None  # the whole kernel, runtime layout
    bias: np.ndarray | None  # [O] float32, the head padded to the base's width


def sha256_hex(data) -> str:
    return hashlib.sha256(data).hexdigest()


def require_float_delta(delta, source: str) -> None:
    """A float base takes float deltas only (an int8 delta patches quantization, not folded weights)."""
    if not isinstance(delta, Delta):
        raise WrongBaseError(f"int8 delta for task '{delta.task.name}' needs an int8 base; {source} is a float base "
                             "(it takes float deltas)")


def check_fingerprint(delta: Delta, fmt: str, base_sha256: str, source: str) -> None:
    require_float_delta(delta, source)
    expected = delta.base_sha256.get(fmt)
    if expected is None:
        raise WrongBaseError(
            f"delta for task '{delta.task.name}' has no {fmt} base fingerprint "
            f"(it was made for: {', '.join(sorted(delta.base_sha256))}); cannot apply to {source}"
        )
    if expected != base_sha256:
        raise WrongBaseError(
            f"delta for task '{delta.task.name}' was made for {fmt} base sha256 {expected[:16]}…, "
            f"but {source} has sha256 {base_sha256[:16]}…"
        )


def view_of(buffer, slot: Slot) -> np.ndarray:
    """The float32 array ``slot`` describes, viewing ``buffer`` (no copy)."""
    return np.frombuffer(buffer, np.float32, slot.count, slot.offset).reshape(slot.shape)


def _checked(value: np.ndarray, slot: Slot, what: str, source: str) -> np.ndarray:
    if tuple(value.shape) != slot.shape:
        raise ShapeMismatchError(
            f"{what}: delta gives shape {list(value.shape)}, base {source} has {list(slot.shape)}"
        )
    return value


def head_width(sites: dict[str, SiteSlots]) -> int:
    dense = [s for s in sites.values() if s.op == "dense"]
    return dense[0].bias.shape[0] if dense else 0


def scale_shape(slots: SiteSlots, fmt: str) -> tuple[int, ...]:
    """The shape that broadcasts a per-output-channel vector over the site's kernel."""
    shape = [1] * len(slots.kernel.shape)
    axis = OUT_AXIS[(fmt, slots.op)]
    shape[axis] = slots.kernel.shape[axis]
    return tuple(shape)


def kernel_peaks(base, sites: dict[str, SiteSlots], fmt: str) -> dict[str, np.ndarray]:
    """Per site, the largest |base kernel value| of each output channel (float64): what a scale may multiply."""
    peaks = {}
    for name, slots in sites.items():
        kernel = np.abs(view_of(base, slots.kernel))
        axis = OUT_AXIS[(fmt, slots.op)]
        others = tuple(a for a in range(kernel.ndim) if a != axis)
        peaks[name] = kernel.max(axis=others, initial=0).astype(np.float64)
    return peaks


def _check_refolds(updates: dict[str, SiteUpdate], peaks: dict[str, np.ndarray], source: str) -> None:
    """A finite scale can still overflow the float32 product (and every output of the task with it)."""
    scaled = [name for name, update in updates.items() if update.scale is not None]
    if not scaled:
        return
    products = np.abs(np.concatenate([updates[name].scale for name in scaled]), dtype=np.float64)
    products *= np.concatenate([peaks[name] for name in scaled])  # one pass over all sites: swaps stay fast
    over = np.flatnonzero(products > FLOAT32_MAX)
    if over.size:
        ends = np.cumsum([updates[name].scale.size for name in scaled])
        site = int(np.searchsorted(ends, over[0], side="right"))
        channel = int(over[0] - (ends[site - 1] if site else 0))
        raise NonFiniteError(f"`{scaled[site]}/scale`: channel {channel} times the base kernel of {source} "
                             "overflows float32")


def _site_update(name: str, op: str, slots: SiteSlots, delta: Delta, fmt: str, width: int, source: str) -> SiteUpdate:
    tensors = {role: delta.tensors.get(f"{name}/{role}") for role in ("scale", "bias", "kernel")}
    kernel, bias, scale = tensors["kernel"], tensors["bias"], None
    if op == "dense" and kernel is not None:
        kernel, bias = pad_head(kernel, bias if bias is not None else np.zeros(kernel.shape[1], np.float32), width)
    elif op == "dense" and bias is not None:
        if bias.shape[0] > width:
            raise ShapeMismatchError(f"`{name}/bias`: delta has {bias.shape[0]} classes, base {source} head has {width}")
        bias = np.concatenate([bias, np.zeros(width - bias.shape[0], np.float32)])
    if kernel is not None:
        value = to_runtime(kernel.astype(np.float32, copy=False), op, fmt)
        kernel = _checked(value, slots.kernel, f"`{name}/kernel`", source)
    elif tensors["scale"] is not None:
        scale = tensors["scale"].astype(np.float32, copy=False)
        channels = slots.kernel.shape[OUT_AXIS[(fmt, op)]]
        if scale.shape[0] != channels:
            raise ShapeMismatchError(f"`{name}/scale`: delta has {scale.shape[0]} channels, base {source} has {channels}")
    if bias is not None:
        bias = _checked(bias.astype(np.float32, copy=False), slots.bias, f"`{name}/bias`", source)
    return SiteUpdate(scale, kernel, bias)


def site_updates(sites: dict[str, SiteSlots], peaks: dict[str, np.ndarray], delta: Delta, fmt: str,
                 source: str) -> dict[str, SiteUpdate]:
    """Check ``delta`` against the base's sites; return what it writes per site (raises before any write).

    ``peaks`` is ``kernel_peaks`` of the base: a scale whose product with it overflows is refused,
    once every site's names and shapes passed.
    """
    require_float_delta(delta, source)
    width = head_width(sites)
    updates = {}
    for name, op in delta.sites.items():
        slots = sites.get(name)
        if slots is None:
            raise ShapeMismatchError(f"delta for task '{delta.task.name}' patches site `{name}`, which {source} lacks")
        if slots.op != op:
            raise ShapeMismatchError(f"site `{name}` is a {op} in the delta but a {slots.op} in {source}")
        updates[name] = _site_update(name, op, slots, delta, fmt, width, source)
    _check_refolds(updates, peaks, source)
    return updates


def write_site(update: SiteUpdate | None, kernel_out, bias_out, kernel_base, bias_base, shape) -> None:
    """Write one site's task values (or restore the base's) into the output views."""
    if update is not None and update.kernel is not None:
        kernel_out[...] = update.kernel
    elif update is not None and update.scale is not None:
        np.multiply(kernel_base, update.scale.reshape(shape), out=kernel_out)
    else:
        kernel_out[...] = kernel_base
    bias_out[...] = update.bias if update is not None and update.bias is not None else bias_base


def patch_buffer(buffer: bytearray, base: bytes, sites: dict[str, SiteSlots], peaks: dict[str, np.ndarray],
                 delta: Delta, fmt: str, source: str) -> None:
    """Write ``delta``'s tensors into ``buffer`` (a copy of ``base``), in ``fmt`` layout."""
    for name, update in site_updates(sites, peaks, delta, fmt, source).items():
        slots = sites[name]
        write_site(update, view_of(buffer, slots.kernel), view_of(buffer, slots.bias),
                   view_of(base, slots.kernel), view_of(base, slots.bias), scale_shape(slots, fmt))


def writable_bytes(size: int) -> tuple[bytes | bytearray, np.ndarray]:
    """A new ``bytes`` object of ``size`` bytes and a writable uint8 view of it, to fill before use.

    CPython only (``PyBytes_FromStringAndSize(NULL, size)``, the C-API way to
    build a ``bytes``); elsewhere a ``bytearray``, which ``BytesPatcher``
    copies to ``bytes`` per swap (correct, one copy slower). The caller must
    finish writing before it hands the object to anyone.
    """
    if sys.implementation.name != "cpython":
        data = bytearray(size)
        return data, np.frombuffer(data, np.uint8)
    new = ctypes.pythonapi.PyBytes_FromStringAndSize
    new.restype, new.argtypes = ctypes.py_object, (ctypes.c_void_p, ctypes.c_ssize_t)
    address = ctypes.pythonapi.PyBytes_AsString
    address.restype, address.argtypes = ctypes.c_void_p, (ctypes.py_object,)
    data = new(None, size)
    return data, np.ctypeslib.as_array((ctypes.c_ubyte * size).from_address(address(data)))


class LendingPool:
    """Keeps up to ``keep`` buffers and lends each to one runner at a time.

    A runtime reads a runner's weights for as long as the runner lives, so a
    buffer is reused only once that runner has been garbage-collected.
    ``take`` marks a buffer taken; ``lend`` hands it to a runner, ``give_back``
    returns it at once (when building the runner failed).
    """

    def __init__(self, make, keep: int = 2):
        self._make, self._keep = make, keep
        self._owners: dict[int, list] = {}  # id(buffer) -> [buffer, owner weakref or the pool while taken]
        self._lock = threading.Lock()

    def take(self):
        with self._lock:
            for entry in self._owners.values():
                if entry[1] is None or (isinstance(entry[1], weakref.ref) and entry[1]() is None):
                    entry[1] = self
                    return entry[0]
            buffer = self._make()
            if len(self._owners) < self._keep:
                self._owners[id(buffer)] = [buffer, self]
            return buffer

    def take_filled(self, fill):
        """``take`` a buffer and ``fill(buffer)``; the buffer goes back to the pool if filling fails."""
        buffer = self.take()
        try:
            fill(buffer)
        except BaseException:
            self.give_back(buffer)
            raise
        return buffer

    def lend(self, buffer, runner) -> None:
        entry = self._owners.get(id(buffer))
        if entry is not None:
            entry[1] = weakref.ref(runner)

    def give_back(self, buffer) -> None:
        entry = self._owners.get(id(buffer))
        if entry is not None:
            entry[1] = None


class _PatchBuffer:
    """One reusable copy of the base bytes, with the views a swap writes through."""

    def __init__(self, base: bytes, sites: dict[str, SiteSlots]):
        self.data, view = writable_bytes(len(base))
        view[:] = np.frombuffer(base, np.uint8)
        self.views = {name: (view_of(view, s.kernel), view_of(view, s.bias)) for name, s in sites.items()}

    def model_bytes(self) -> bytes:
        return self.data if isinstance(self.data, bytes) else bytes(self.data)


class BytesPatcher:
    """Writes tasks into reusable ``bytes`` copies of a base file (see the module docstring).

    Args:
        base: the base file's bytes (kept, never written).
        sites: the base's site slots.
        fmt: "tflite" or "onnx" (kernel layout).
        source: the base's name for error messages.
        keep: how many buffers to keep for reuse; each costs the base's size in memory.
    """

    def __init__(self, base: bytes, sites: dict[str, SiteSlots], fmt: str, source: str, keep: int = 2):
        self.sites, self.fmt, self.source = sites, fmt, source
        self._base_views = {name: (view_of(base, s.kernel), view_of(base, s.bias)) for name, s in sites.items()}
        self._shapes = {name: scale_shape(s, fmt) for name, s in sites.items()}
        self.peaks = kernel_peaks(base, sites, fmt)
        self.pool = LendingPool(lambda: _PatchBuffer(base, sites), keep)

    def patch(self, delta: Delta) -> tuple[bytes, _PatchBuffer]:
        """The base bytes with ``delta`` applied, and the buffer to ``pool.lend`` to the runner using them."""
        updates = site_updates(self.sites, self.peaks, delta, self.fmt, self.source)

        def fill(buffer: _PatchBuffer) -> None:
            for name, (kernel_out, bias_out) in buffer.views.items():
                kernel_base, bias_base = self._base_views[name]
                write_site(updates.get(name), kernel_out, bias_out, kernel_base, bias_base, self._shapes[name])

        buffer = self.pool.take_filled(fill)
        return buffer.model_bytes(), buffer


class PatchedBase(BaseFile):
    """What the float bases share: ``patched_bytes`` and building a runner on a lent buffer.

    Subclasses set ``format``, ``bytes``, ``source``, ``sha256``, ``sites`` and ``_patcher``.
    """

    def patched_bytes(self, delta: Delta) -> bytearray:
        """The base bytes with ``delta`` applied (checks the fingerprint, names and shapes)."""
        check_fingerprint(delta, self.format, self.sha256, self.source)
        buffer = bytearray(self.bytes)
        patch_buffer(buffer, self.bytes, self.sites, self._patcher.peaks, delta, self.format, self.source)
        return buffer

    def _patched_runner(self, delta: Delta, make_runner, patcher=None):
        """``make_runner(model_bytes)`` on a pooled buffer holding the task; the runner keeps the buffer.

        ``patcher``: anything with ``patch(delta)`` and ``pool`` (default: the base's ``BytesPatcher``).
        """
        patcher = patcher or self._patcher
        model, buffer = patcher.patch(delta)
        try:
            runner = make_runner(model)
        except BaseException:
            patcher.pool.give_back(buffer)
            raise
        patcher.pool.lend(buffer, runner)
        return runner


def require(condition: bool, message: str) -> None:
    if not condition:
        raise BaseModelError(message)
