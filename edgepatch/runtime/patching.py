"""Apply a delta to a copy of the base's bytes (format-agnostic).

Each runtime backend locates its site tensors once (``SiteSlots``: byte
offset, shape and op per site). Applying a delta then writes straight into a
copy of the base bytes:

- ``scale``: the base's folded kernel times the per-output-channel multiplier
  (re-folding the task's BN scale into the shared weights);
- ``kernel``: the task's kernel, converted to the runtime's layout;
- ``bias``: the task's folded bias.

The head is padded to the base's head width; the runner slices the logits
back to the task's classes.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

import numpy as np

from edgepatch.delta import Delta
from edgepatch.errors import BaseModelError, ShapeMismatchError, WrongBaseError
from edgepatch.runtime.layouts import OUT_AXIS, pad_head, to_runtime


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


def sha256_hex(data) -> str:
    return hashlib.sha256(data).hexdigest()


def check_fingerprint(delta: Delta, fmt: str, base_sha256: str, source: str) -> None:
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


def _view(buffer, slot: Slot) -> np.ndarray:
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


def patch_buffer(buffer: bytearray, base: bytes, sites: dict[str, SiteSlots], delta: Delta, fmt: str, source: str) -> None:
    """Write ``delta``'s tensors into ``buffer`` (a copy of ``base``), in ``fmt`` layout."""
    width = head_width(sites)
    for name, op in delta.sites.items():
        slots = sites.get(name)
        if slots is None:
            raise ShapeMismatchError(f"delta for task '{delta.task.name}' patches site `{name}`, which {source} lacks")
        if slots.op != op:
            raise ShapeMismatchError(f"site `{name}` is a {op} in the delta but a {slots.op} in {source}")
        tensors = {role: delta.tensors.get(f"{name}/{role}") for role in ("scale", "bias", "kernel")}
        kernel, bias = tensors["kernel"], tensors["bias"]
        if op == "dense" and kernel is not None:
            kernel, bias = pad_head(kernel, bias if bias is not None else np.zeros(kernel.shape[1], np.float32), width)
        elif op == "dense" and bias is not None:
            bias = np.concatenate([bias, np.zeros(width - bias.shape[0], np.float32)])
        if kernel is not None:
            value = to_runtime(kernel.astype(np.float32, copy=False), op, fmt)
            _view(buffer, slots.kernel)[...] = _checked(value, slots.kernel, f"`{name}/kernel`", source)
        elif tensors["scale"] is not None:
            scale = tensors["scale"].astype(np.float32, copy=False)
            axis = OUT_AXIS[(fmt, op)]
            if scale.shape[0] != slots.kernel.shape[axis]:
                raise ShapeMismatchError(
                    f"`{name}/scale`: delta has {scale.shape[0]} channels, base {source} has {slots.kernel.shape[axis]}"
                )
            shape = [1] * len(slots.kernel.shape)
            shape[axis] = scale.shape[0]
            np.multiply(_view(base, slots.kernel), scale.reshape(shape), out=_view(buffer, slots.kernel))
        if bias is not None:
            _view(buffer, slots.bias)[...] = _checked(bias.astype(np.float32, copy=False), slots.bias, f"`{name}/bias`", source)


def require(condition: bool, message: str) -> None:
    if not condition:
        raise BaseModelError(message)
