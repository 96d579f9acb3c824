"""Kernel layouts (canonical vs. each runtime's) and head padding.

Specified in ``edgepatch/format/spec.rst``, section *Layouts and head padding*:
the layout table, ``OUT_AXIS`` (the output-channel axis of each runtime
layout) and the padding of a task head to the base's head width.
"""

from __future__ import annotations

import numpy as np

from edgepatch.errors import ShapeMismatchError
from edgepatch.format.names import CONV_OP, DENSE_OP, DEPTHWISE_OP

FORMATS = ("tflite", "onnx")

OUT_AXIS = {
    ("tflite", CONV_OP): 0,
    ("tflite", DEPTHWISE_OP): 3,
    ("tflite", DENSE_OP): 0,
    ("onnx", CONV_OP): 0,
    ("onnx", DEPTHWISE_OP): 0,
    ("onnx", DENSE_OP): 1,
}


def to_runtime(kernel: np.ndarray, op: str, fmt: str) -> np.ndarray:
    """Canonical kernel -> the runtime's layout (a new C-contiguous array)."""
    if op == CONV_OP:
        axes = (3, 0, 1, 2) if fmt == "tflite" else (3, 2, 0, 1)
        return np.ascontiguousarray(kernel.transpose(axes))
    if op == DEPTHWISE_OP:
        h, w, c, m = kernel.shape
        flat = kernel.reshape(h, w, c * m)
        if fmt == "tflite":
            return np.ascontiguousarray(flat.reshape(1, h, w, c * m))
        return np.ascontiguousarray(flat.transpose(2, 0, 1)[:, None])
    if op == DENSE_OP:
        return np.ascontiguousarray(kernel.T if fmt == "tflite" else kernel)
    raise ValueError(f"unknown site op '{op}'")


def runtime_shape(canonical_shape: tuple[int, ...], op: str, fmt: str) -> tuple[int, ...]:
    """The runtime-layout shape of a canonical kernel shape."""
    return to_runtime(np.empty(canonical_shape, np.uint8), op, fmt).shape


def from_runtime(kernel: np.ndarray, op: str, fmt: str, canonical_shape: tuple[int, ...]) -> np.ndarray:
    """Runtime-layout kernel -> canonical layout of ``canonical_shape``."""
    expected = runtime_shape(canonical_shape, op, fmt)
    if tuple(kernel.shape) != expected:
        raise ShapeMismatchError(
            f"{fmt} {op} kernel has shape {list(kernel.shape)}, expected {list(expected)}"
        )
    if op == CONV_OP:
        axes = (1, 2, 3, 0) if fmt == "tflite" else (2, 3, 1, 0)
        return np.ascontiguousarray(kernel.transpose(axes))
    if op == DEPTHWISE_OP:
        h, w, c, m = canonical_shape
        flat = kernel.reshape(h, w, c * m) if fmt == "tflite" else kernel[:, 0].transpose(1, 2, 0)
        return np.ascontiguousarray(flat.reshape(h, w, c, m))
    return np.ascontiguousarray(kernel.T if fmt == "tflite" else kernel)


def pad_head(kernel: np.ndarray | None, bias: np.ndarray | None,
             head_width: int) -> tuple[np.ndarray | None, np.ndarray]:
    """Pad a canonical [I, K] head kernel and its [K] bias to ``head_width`` classes with zeros.

    ``kernel`` None pads a bias-only head; ``bias`` None stands for a zero bias.
    The base's head is as wide as its widest task; a task with fewer classes
    gets zero logits in the extra columns, which the runtime slices off.
    """
    classes = kernel.shape[1] if kernel is not None else bias.shape[0]
    if classes > head_width:
        raise ShapeMismatchError(
            f"head has {classes} classes, more than the base head width {head_width}"
        )
    padded_bias = np.zeros((head_width,), np.float32)
    if bias is not None:
        padded_bias[:classes] = bias
    if kernel is None:
        return None, padded_bias
    padded_kernel = np.zeros((kernel.shape[0], head_width), np.float32)
    padded_kernel[:, :classes] = kernel
    return padded_kernel, padded_bias


def as_in_base(op: str, kernel: np.ndarray, bias: np.ndarray, head_width: int) -> tuple[np.ndarray, np.ndarray]:
    """A site's canonical (kernel, bias) as the base holds them: the dense head padded, others as they are."""
    return pad_head(kernel, bias, head_width) if op == DENSE_OP else (kernel, bias)
