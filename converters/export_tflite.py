"""Emit the shared .tflite base from the BN-free Keras model.

TFLiteConverter converts the folded model (nothing is left for it to fold).
Each site is then located by walking the ops: CONV_2D / DEPTHWISE_CONV_2D /
FULLY_CONNECTED, ``inputs[1]`` the kernel and ``inputs[2]`` the bias. The
converter's fused tensor names are never matched; each kernel is identified
by comparing its values with the folded weights. The rewrite then gives the
site tensors their stable names (spec: *Site naming*), gives each its
own buffer (the converter deduplicates identical constants), and adds a
bias where the converter dropped an all-zero one.
"""

from __future__ import annotations

import contextlib
import io
import logging
from collections import Counter
from dataclasses import dataclass

import numpy as np

from converters.fold import FoldedSite, expected_weights
from converters.tflite_rewrite import rewrite_tflite, split_shared_inputs
from edgepatch.errors import FoldError
from edgepatch.format.names import BIAS, KERNEL, tensor_name
from edgepatch.runtime.tflite import SITE_OPS, tflite_sites
from edgepatch.runtime.tflite_file import TFLiteModel, parse_tflite

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class LocatedSite:
    op_index: int
    kernel_tensor: int
    bias_tensor: int  # -1 when the converter dropped an all-zero bias


def _convert(folded_model) -> bytes:
    import tensorflow as tf

    converter = tf.lite.TFLiteConverter.from_keras_model(folded_model)
    try:
        with contextlib.redirect_stdout(io.StringIO()):  # the converter prints its whole signature
            return converter.convert()
    except Exception as error:  # the converter raises ConverterError and others, with long texts
        first = next((line.strip() for line in str(error).splitlines() if "error" in line.lower()), str(error)[:200])
        raise FoldError(f"the TFLite converter cannot convert the folded model: {first}") from None


def _tensor_array(model: TFLiteModel, data: bytes, index: int) -> np.ndarray:
    tensor = model.tensors[index]
    if tensor.data_offset is None or tensor.dtype != np.float32:
        return np.empty((0,), np.float32)
    return np.frombuffer(data, np.float32, int(np.prod(tensor.shape)), tensor.data_offset).reshape(tensor.shape)


def locate_sites(model: TFLiteModel, data: bytes, expected: dict, ops: dict[str, str],
                  constants: frozenset = frozenset()) -> dict[str, LocatedSite]:
    """Match each conv/FC op to the folded site whose kernel it holds, by value.

    ``constants``: sites no delta can write. The converter may fuse a following constant add into
    their bias; such a one is matched by kernel but not returned, and stays a plain constant of the base.
    """
    remaining = list(expected)
    located: dict[str, LocatedSite] = {}
    for op in model.ops:
        if op.opcode not in SITE_OPS:
            continue
        kernel = _tensor_array(model, data, op.inputs[1])
        match = next(
            (n for n in remaining if ops[n] == SITE_OPS[op.opcode] and expected[n][0].shape == kernel.shape
             and np.array_equal(expected[n][0], kernel)),
            None,
        )
        if match is None:
            raise FoldError(f"TFLite op {op.index} ({op.opcode}) has a kernel of shape {list(kernel.shape)} "
                            "that matches no folded site")
        remaining.remove(match)
        bias = op.inputs[2] if len(op.inputs) > 2 else -1
        if bias >= 0 and not np.array_equal(_tensor_array(model, data, bias), expected[match][1]):
            if match in constants:
                continue
            raise FoldError(f"TFLite bias of site `{match}` differs from the folded bias")
        located[match] = LocatedSite(op.index, op.inputs[1], bias)
    if remaining:
        raise FoldError(f"TFLite model has no conv/FC op for sites {remaining[:5]}")
    return located


def export_tflite_base(folded_model, folded: dict[str, FoldedSite], head_width: int,
                       constants: frozenset = frozenset()) -> bytes:
    """Convert, locate sites, rename and unshare their tensors; return the verified base bytes.

    ``constants``: the sites no delta can write (``locate_sites``); one whose bias the converter
    changed gets no site name.
    """
    data = _convert(folded_model)
    model = parse_tflite(data, "<converted tflite>")
    log.info("TFLite base ops: %s", dict(Counter(op.opcode for op in model.ops)))
    expected = expected_weights(folded, head_width, "tflite")
    located = locate_sites(model, data, expected, {n: s.op for n, s in folded.items()}, constants)
    expected = {name: value for name, value in expected.items() if name in located}
    # The converter merges identical constants (e.g. two all-zero biases) into one tensor.
    slots = [(s.op_index, 1) for s in located.values()] + [(s.op_index, 2) for s in located.values() if s.bias_tensor >= 0]
    data, private = split_shared_inputs(data, slots)
    renames, add_biases = {}, {}
    for name, site in located.items():
        renames[private[(site.op_index, 1)]] = tensor_name(name, KERNEL)
        if site.bias_tensor >= 0:
            renames[private[(site.op_index, 2)]] = tensor_name(name, BIAS)
        else:
            add_biases[site.op_index] = (tensor_name(name, BIAS), expected[name][1])
    base = rewrite_tflite(data, renames, unshare=list(renames), add_biases=add_biases)
    _verify(base, expected)
    return base


def _verify(base: bytes, expected: dict) -> None:
    """Re-read the emitted base: every site tensor is found by the runtime and holds its folded value."""
    model = parse_tflite(base, "<emitted tflite>")
    sites = tflite_sites(model, "<emitted tflite>")
    if set(sites) != set(expected):
        raise FoldError(f"emitted TFLite base has sites {sorted(set(sites) ^ set(expected))[:5]} mismatched")
    for name, slots in sites.items():
        for slot, value in ((slots.kernel, expected[name][0]), (slots.bias, expected[name][1])):
            stored = np.frombuffer(base, np.float32, slot.count, slot.offset).reshape(slot.shape)
            if not np.array_equal(stored, value):
                raise FoldError(f"emitted TFLite base: site `{name}` does not hold its folded weights")
