"""Applying a float delta: what each site of the base receives, checked before anything is written.

Specified in ``edgepatch/format/spec.rst``, section *Applying a float delta*
(fingerprint aside: ``patched_base.check_fingerprint``). Each runtime backend
locates its site tensors once (``SiteSlots``: byte offset, shape and op per
site); ``site_updates`` checks a delta against them and says what each site
receives, in the runtime's layout (a scale to refold into the base kernel, a
whole kernel, a bias; the head padded to the base's width, and the scale
overflow rule applied); ``write_site`` writes one site.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from edgepatch.errors import NonFiniteError, ShapeMismatchError, WrongBaseError
from edgepatch.format.delta import Delta
from edgepatch.format.delta_limits import MAX_ABS_SITE_SCALE, MIN_ABS_SITE_SCALE
from edgepatch.format.layouts import OUT_AXIS, pad_head, to_runtime
from edgepatch.format.names import BIAS, DENSE_OP, KERNEL, SCALE, TENSOR_ROLES, tensor_name

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


def require_float_delta(delta, source: str) -> None:
    """A float base takes float deltas only (an int8 delta patches quantization, not folded weights)."""
    if not isinstance(delta, Delta):
        raise WrongBaseError(f"int8 delta for task '{delta.task.name}' needs an int8 base; {source} is a float base "
                             "(it takes float deltas)")


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
    """The base's head width: the bias length of its first dense site, 0 without one."""
    head = next((slots for slots in sites.values() if slots.op == DENSE_OP), None)
    return head.bias.shape[0] if head is not None else 0


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


def _check_scale_overflow(updates: dict[str, SiteUpdate], peaks: dict[str, np.ndarray], source: str) -> None:
    """The site scale bounds (a Delta built in memory skipped the reader's), then the scale overflow rule."""
    scaled = [name for name, update in updates.items() if update.scale is not None]
    if not scaled:
        return
    products = np.abs(np.concatenate([updates[name].scale for name in scaled]), dtype=np.float64)
    ends = np.cumsum([updates[name].scale.size for name in scaled])
    outside = np.flatnonzero((products < MIN_ABS_SITE_SCALE) | (products > MAX_ABS_SITE_SCALE))
    if outside.size:
        name, channel = _locate(scaled, ends, int(outside[0]))
        raise NonFiniteError(f"`{tensor_name(name, SCALE)}`: channel {channel} has a scale outside "
                             "1e-12 <= |scale| <= 1e12 (zero, denormal or huge)")
    products *= np.concatenate([peaks[name] for name in scaled])  # one pass over all sites: swaps stay fast
    over = np.flatnonzero(products > FLOAT32_MAX)
    if over.size:
        name, channel = _locate(scaled, ends, int(over[0]))
        raise NonFiniteError(f"`{tensor_name(name, SCALE)}`: channel {channel} times the base kernel of {source} "
                             "overflows float32")


def _locate(scaled: list[str], ends: np.ndarray, position: int) -> tuple[str, int]:
    """The site and channel of ``position`` in the scales of ``scaled`` laid end to end."""
    site = int(np.searchsorted(ends, position, side="right"))
    return scaled[site], int(position - (ends[site - 1] if site else 0))


def _site_update(name: str, op: str, slots: SiteSlots, delta: Delta, fmt: str, width: int, source: str) -> SiteUpdate:
    tensors = {role: delta.tensors.get(tensor_name(name, role)) for role in TENSOR_ROLES}
    kernel, bias, scale = tensors[KERNEL], tensors[BIAS], None
    if op == DENSE_OP and (kernel is not None or bias is not None):
        kernel, bias = pad_head(kernel, bias, width)
    if kernel is not None:
        value = to_runtime(kernel.astype(np.float32, copy=False), op, fmt)
        kernel = _checked(value, slots.kernel, f"`{tensor_name(name, KERNEL)}`", source)
    elif tensors[SCALE] is not None:
        scale = tensors[SCALE].astype(np.float32, copy=False)
        channels = slots.kernel.shape[OUT_AXIS[(fmt, op)]]
        if scale.shape[0] != channels:
            raise ShapeMismatchError(f"`{tensor_name(name, SCALE)}`: delta has {scale.shape[0]} channels, "
                                     f"base {source} has {channels}")
    if bias is not None:
        bias = _checked(bias.astype(np.float32, copy=False), slots.bias, f"`{tensor_name(name, BIAS)}`", source)
    return SiteUpdate(scale, kernel, bias)


def site_updates(sites: dict[str, SiteSlots], peaks: dict[str, np.ndarray], delta: Delta, fmt: str,
                 source: str) -> dict[str, SiteUpdate]:
    """Check ``delta`` against the base's sites; return what it writes per site (raises before any write).

    ``peaks`` is ``kernel_peaks`` of the base: a scale whose product with it overflows is refused,
    once every site's names and shapes passed.
    """
    require_float_delta(delta, source)
    width = head_width(sites)
    if width and len(delta.task.classes) > width:
        raise ShapeMismatchError(f"task '{delta.task.name}' has {len(delta.task.classes)} classes, but the head of "
                                 f"{source} has {width} outputs")
    updates = {}
    for name, op in delta.sites.items():
        slots = sites.get(name)
        if slots is None:
            raise ShapeMismatchError(f"delta for task '{delta.task.name}' patches site `{name}`, which {source} lacks")
        if slots.op != op:
            raise ShapeMismatchError(f"site `{name}` is a {op} in the delta but a {slots.op} in {source}")
        updates[name] = _site_update(name, op, slots, delta, fmt, width, source)
    _check_scale_overflow(updates, peaks, source)
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
