"""``edgepatch inspect``: describe a base, delta or patch file (no TensorFlow)."""

from __future__ import annotations

import os
from collections import Counter

import numpy as np

from edgepatch.errors import MissingFileError, UsageError


def _size(path: str) -> int:
    if not os.path.isfile(path):
        raise MissingFileError(f"'{path}' does not exist")
    return os.path.getsize(path)


def describe_base(path: str) -> dict:
    from edgepatch.runtime import load_base

    base = load_base(path)
    site_parameters = sum(s.kernel.count + s.bias.count for s in base.sites.values())
    head = [s for s in base.sites.values() if s.op == "dense"]
    return {
        "kind": "base",
        "path": path,
        "format": base.format,
        "bytes": len(base.bytes),
        "sha256": base.sha256,
        "sites": len(base.sites),
        "sites_by_op": dict(Counter(s.op for s in base.sites.values())),
        "site_parameters": site_parameters,
        "head_width": head[0].bias.shape[0] if head else 0,
    }


def _find_base(delta_path: str, base_path: str | None) -> str | None:
    if base_path is not None:
        return base_path
    beside = os.path.join(os.path.dirname(os.path.abspath(delta_path)), "base.tflite")
    return beside if os.path.isfile(beside) else None


def describe_delta(path: str, base_path: str | None) -> dict:
    from edgepatch.format.delta import read_delta, read_tensor_file

    size = _size(path)
    delta = read_delta(path)
    stored = read_tensor_file(path, "delta")
    by_role = Counter()
    for name, value in delta.tensors.items():
        by_role[name.rsplit("/", 1)[1]] += int(value.size)
    result = {
        "kind": "delta",
        "path": path,
        "task": delta.task.name,
        "classes": list(delta.task.classes),
        "resolution": delta.task.resolution,
        "kinds": list(delta.kinds),
        "dtype": sorted({str(v.dtype) for v in stored.tensors.values()}),
        "sites": len(delta.sites),
        "tensors": len(delta.tensors),
        "parameters": sum(by_role.values()),
        "parameters_by_role": dict(by_role),
        "bytes": size,
        "base_sha256": delta.base_sha256,
    }
    base = _find_base(path, base_path)
    if base is not None:
        base_bytes = _size(base)
        result.update(base=base, base_bytes=base_bytes, percent_of_base=100.0 * size / base_bytes)
    return result


def describe_patch(path: str) -> dict:
    from edgepatch.train.patchfile import read_patch

    size = _size(path)
    patch = read_patch(path)
    return {
        "kind": "patch",
        "path": path,
        "task": patch.task.name,
        "classes": list(patch.task.classes),
        "resolution": patch.task.resolution,
        "kinds": list(patch.kinds),
        "trained": list(patch.trained),
        "tensors": len(patch.tensors),
        "parameters": int(sum(np.prod(v.shape) for v in patch.tensors.values())),
        "bytes": size,
        "training": patch.training,
    }


def describe_checkpoint(path: str) -> dict:
    """Parameter counts of a Keras checkpoint per patch kind (imports TensorFlow, unlike the others)."""
    from edgepatch.train.models import load_checkpoint
    from edgepatch.kinds import get_kind, kind_names
    from edgepatch.kinds.keras_sites import find_sites

    _size(path)
    model = load_checkpoint(path)
    return {
        "kind": "checkpoint",
        "path": path,
        "parameters": int(model.count_params()),
        "parameters_by_kind": {name: get_kind(name).parameter_count(model) for name in kind_names()},
        "sites": len(find_sites(model)),
        "input_shape": list(model.inputs[0].shape[1:]),
        "bytes": os.path.getsize(path),
    }


def describe_file(path: str, base_path: str | None = None) -> dict:
    """Describe ``path`` by its extension: .tflite/.onnx, .delta, .patch or .keras."""
    extension = os.path.splitext(path)[1].lower()
    if extension == ".keras":
        return describe_checkpoint(path)
    if extension in (".tflite", ".onnx"):
        return describe_base(path)
    if extension == ".delta":
        return describe_delta(path, base_path)
    if extension == ".patch":
        return describe_patch(path)
    raise UsageError(f"inspect reads .tflite, .onnx, .delta, .patch or .keras files. Received '{path}'")


def render(info: dict) -> str:
    """Human-readable lines for a describe_* result."""
    skip = {"kind", "path"}
    lines = [f"{info['kind']} {info['path']}"]
    for key, value in info.items():
        if key in skip:
            continue
        if isinstance(value, float):
            value = f"{value:.3f}"
        elif isinstance(value, int):
            value = f"{value:,}"
        lines.append(f"  {key}: {value}")
    return "\n".join(lines)
