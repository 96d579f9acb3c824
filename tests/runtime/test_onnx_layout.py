"""ORT's optimized layout of an ONNX base (``onnx_layout``): mapped at any size, tasks written exactly.

The bases here are built with ``onnx.helper``: two Conv sites named as
``edgepatch convert`` names them, the second large enough that the site
kernels hold more than 2**24 weights (the most integers float32 numbers
exactly, where the mapping used to stop).
"""

from __future__ import annotations

import numpy as np
import pytest

from edgepatch.errors import BaseModelError
from edgepatch.format.names import BIAS, KERNEL, tensor_name
from edgepatch.runtime import onnx_layout
from edgepatch.runtime.buffers import writable_bytes
from edgepatch.runtime.onnx import onnx_sites
from edgepatch.runtime.onnx_file import parse_onnx
from edgepatch.runtime.ort_session import session_options
from edgepatch.runtime.refold import SiteSlots, SiteUpdate, Slot, view_of

FLOAT32_EXACT_INTEGERS = 2**24


def _conv_base(weights: dict[str, tuple[np.ndarray, np.ndarray]], channels: int, size: int) -> bytes:
    """Conv sites in sequence (ReLU between), input [1, channels, size, size]; weights: site -> (kernel, bias)."""
    from onnx import TensorProto, helper

    nodes, initializers, value = [], [], "input"
    for index, (site, (kernel, bias)) in enumerate(weights.items()):
        names = tensor_name(site, KERNEL), tensor_name(site, BIAS)
        initializers += [helper.make_tensor(name, TensorProto.FLOAT, array.shape, array.tobytes(), raw=True)
                         for name, array in zip(names, (kernel, bias))]
        nodes.append(helper.make_node("Conv", [value, *names], [f"{site}_out"], name=site))
        value = f"{site}_out"
        if index < len(weights) - 1:
            nodes.append(helper.make_node("Relu", [value], [f"{site}_relu"]))
            value = f"{site}_relu"
    graph = helper.make_graph(
        nodes, "layout_test", [helper.make_tensor_value_info("input", TensorProto.FLOAT, [1, channels, size, size])],
        [helper.make_tensor_value_info(value, TensorProto.FLOAT, None)], initializers)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]).SerializeToString()


def _weights(shapes: dict[str, tuple[int, ...]], seed: int = 0) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    rng = np.random.default_rng(seed)
    out = {}
    for site, shape in shapes.items():
        fan_in = int(np.prod(shape[1:]))
        kernel = rng.standard_normal(shape, dtype=np.float32) * np.float32(1 / np.sqrt(fan_in))
        out[site] = (kernel, rng.normal(0, 0.1, shape[0]).astype(np.float32))
    return out


def _run(model: bytes, image: np.ndarray, optimize: bool) -> np.ndarray:
    import onnxruntime as ort

    session = ort.InferenceSession(model, session_options(1, optimize), providers=["CPUExecutionProvider"])
    return session.run(None, {"input": image})[0]


LARGE = {"conv_a": (1024, 16, 1, 1), "conv_b": (4096, 1024, 2, 2)}  # 16,793,600 kernel weights
SMALL = {"conv_a": (32, 16, 3, 3), "conv_b": (64, 32, 1, 1)}


@pytest.fixture(scope="module")
def large():
    weights = _weights(LARGE)
    return weights, _conv_base(weights, 16, 4)


def test_a_base_with_more_site_weights_than_exact_float32_integers_maps_and_takes_a_task_exactly(large):
    weights, base = large
    sites = onnx_sites(parse_onnx(base, "large.onnx"), "large.onnx")
    assert sum(slots.kernel.count for slots in sites.values()) > FLOAT32_EXACT_INTEGERS
    layout = onnx_layout.optimized_layout(base, sites, 1, "large.onnx")
    placed = sorted((p.site, p.role) for p in layout.placements)
    assert placed == [(site, role) for site in sorted(LARGE) for role in (BIAS, KERNEL)]
    # A task: every output channel of conv_b scaled, conv_a's bias replaced; written into the layout...
    rng = np.random.default_rng(1)
    scale = rng.uniform(0.5, 1.5, 4096).astype(np.float32)
    bias_a = rng.normal(0, 0.3, 1024).astype(np.float32)
    updates = {"conv_b": SiteUpdate(scale, None, None), "conv_a": SiteUpdate(None, None, bias_a)}
    data, view = writable_bytes(len(layout.model))
    view[:] = np.frombuffer(layout.model, np.uint8)
    outputs = [view_of(view, Slot(p.offset, p.dims)) for p in layout.placements]
    onnx_layout.write_task(layout.placements, updates, outputs)
    # ... runs as the same task patched into the base as stored, and optimized by ORT again.
    patched = dict(weights)
    patched["conv_b"] = (weights["conv_b"][0] * scale[:, None, None, None], weights["conv_b"][1])
    patched["conv_a"] = (weights["conv_a"][0], bias_a)
    image = rng.uniform(-1, 1, (1, 16, 4, 4)).astype(np.float32)
    got, want = _run(data, image, optimize=False), _run(_conv_base(patched, 16, 4), image, optimize=True)
    base_out = _run(layout.model, image, optimize=False)
    assert np.max(np.abs(want - base_out)) > 0.1  # the task moves the outputs
    assert np.max(np.abs(got - want)) <= 1e-5 * max(1.0, float(np.max(np.abs(want))))


def test_probe_codes_are_distinct_nonzero_normal_floats_numbered_per_role():
    weights = _weights(SMALL)
    base = _conv_base(weights, 16, 8)
    sites = onnx_sites(parse_onnx(base, "small.onnx"), "small.onnx")
    probe = onnx_layout._probe_bytes(base, sites, "small.onnx")
    for role, sign in ((KERNEL, 0), (BIAS, 0x80000000)):
        slots = [getattr(sites[site], role) for site in SMALL]
        bits = np.concatenate([np.frombuffer(probe, np.uint32, s.count, s.offset) for s in slots])
        assert np.array_equal(bits, (onnx_layout.MIN_CODE_BITS + np.arange(bits.size, dtype=np.uint32)) | sign)
        values = bits.view(np.float32)
        assert np.all(np.isfinite(values)) and np.all(np.abs(values) >= np.finfo(np.float32).tiny)
    untouched = bytearray(probe)
    for slots in sites.values():
        for slot in (slots.kernel, slots.bias):
            untouched[slot.offset:slot.offset + 4 * slot.count] = base[slot.offset:slot.offset + 4 * slot.count]
    assert bytes(untouched) == base  # only site tensors are numbered


def test_more_site_weights_than_codes_are_refused_before_anything_is_written():
    huge = SiteSlots("conv", Slot(0, (onnx_layout.MAX_CODES + 1,)), Slot(0, (1,)))
    with pytest.raises(BaseModelError) as caught:
        onnx_layout._probe_bytes(b"\0" * 16, {"huge": huge}, "huge.onnx")
    assert str(caught.value) == (f"huge.onnx: the optimized-layout mapping supports at most {onnx_layout.MAX_CODES} "
                                 "site weights of each role")


@pytest.mark.parametrize("code", ["past_the_site", "denormal", "other_role"])
def test_a_probe_code_that_is_not_its_sites_is_refused(code):
    weights = _weights(SMALL)
    base = _conv_base(weights, 16, 8)
    sites = onnx_sites(parse_onnx(base, "small.onnx"), "small.onnx")
    real = onnx_layout.ort_optimized(base, 1)
    probe = bytearray(onnx_layout.ort_optimized(onnx_layout._probe_bytes(base, sites, "small.onnx"), 1))
    onnx_layout.locate(real, bytes(probe), base, sites, "small.onnx")  # unchanged: maps
    model = parse_onnx(probe, "probe")
    kernel_b = next(p for p in onnx_layout.locate(real, bytes(probe), base, sites, "small.onnx")
                    if (p.site, p.role) == ("conv_b", KERNEL))
    element = np.frombuffer(probe, np.uint32, 1, model.initializers[kernel_b.name].data_offset)
    total = sum(s.kernel.count for s in sites.values())
    element[0] = {"past_the_site": onnx_layout.MIN_CODE_BITS + total, "denormal": 5,
                  "other_role": 0x80000000 | onnx_layout.MIN_CODE_BITS}[code]
    with pytest.raises(BaseModelError) as caught:
        onnx_layout.locate(real, bytes(probe), base, sites, "small.onnx")
    assert str(caught.value) == f"small.onnx: ORT initializer '{kernel_b.name}' mixes site weights; cannot map it"
