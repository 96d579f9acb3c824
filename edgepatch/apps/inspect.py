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
    from edgepatch.runtime.refold import head_width
    from edgepatch.runtime.tflite_int8 import TFLiteInt8Base

    base = load_base(path)
    described = {"kind": "base", "path": path, "format": base.format, "bytes": len(base.bytes), "sha256": base.sha256}
    if isinstance(base, TFLiteInt8Base):  # sites are float re-fold targets; an int8 base lists its ops instead
        return {**described, "tensors": len(base.model.tensors),
                "ops": dict(Counter(op.opcode for op in base.model.ops))}
    site_parameters = sum(s.kernel.count + s.bias.count for s in base.sites.values())
    return {
        **described,
        "sites": len(base.sites),
        "sites_by_op": dict(Counter(s.op for s in base.sites.values())),
        "site_parameters": site_parameters,
        "head_width": head_width(base.sites),
    }


def _find_base(delta_path: str, base_path: str | None, name: str) -> str | None:
    if base_path is not None:
        return base_path
    beside = os.path.join(os.path.dirname(os.path.abspath(delta_path)), name)
    return beside if os.path.isfile(beside) else None


def _float_delta(delta, dtypes: list[str]) -> dict:
    from edgepatch.format.names import split_name

    by_role, by_site = Counter(), Counter()
    for name, value in delta.tensors.items():
        site, role = split_name(name)
        by_role[role] += int(value.size)
        by_site[site] += int(value.size)
    return {"kind": "delta", "kinds": list(delta.kinds), "dtype": dtypes, "sites": len(delta.sites),
            "tensors": len(delta.tensors), "parameters": sum(by_role.values()), "parameters_by_role": dict(by_role),
            "parameters_by_site": {site: by_site[site] for site in delta.sites}, "base_sha256": delta.base_sha256}


def _int8_delta(delta, dtypes: list[str]) -> dict:
    from edgepatch.format.int8_delta import BASE_FORMAT

    return {"kind": "int8_delta", "kinds": list(delta.kinds), "dtype": dtypes, "quant_tensors": len(delta.quant),
            "data_tensors": len(delta.data), "edited_tensors": len(delta.edits), "refolds": len(delta.refolds),
            "base_sha256": {BASE_FORMAT: delta.base_sha256}}


def _preprocessing(pre) -> dict:
    return {"channels": pre.channels, "scale": list(pre.scale), "offset": list(pre.offset)}


def _preprocessing_line(pre: dict) -> str:
    """``rgb, input = pixel * [s0, s1, s2] + [o0, o1, o2]`` (bgr: model channel 0 is the image's blue)."""
    scale, offset = (", ".join(f"{v:.6g}" for v in pre[key]) for key in ("scale", "offset"))
    return f"{pre['channels']}, input = pixel * [{scale}] + [{offset}]"


def describe_delta(path: str, base_path: str | None) -> dict:
    """A task delta, float or int8 (read and verified once); with its base's size when one is found."""
    from edgepatch.format.container import read_tensor_file
    from edgepatch.format.delta import Delta
    from edgepatch.runtime.files import TASK_DELTA_KINDS, task_delta_from_file

    size = _size(path)
    stored = read_tensor_file(path, TASK_DELTA_KINDS)
    delta = task_delta_from_file(stored, path)
    dtypes = sorted({str(v.dtype) for v in stored.tensors.values()})
    info = _float_delta(delta, dtypes) if isinstance(delta, Delta) else _int8_delta(delta, dtypes)
    base_sha256 = info.pop("base_sha256")
    result = {"kind": info.pop("kind"), "path": path, "task": delta.task.name, "classes": list(delta.task.classes),
              "resolution": delta.task.resolution, "preprocessing": _preprocessing(delta.task.preprocessing),
              **info, "bytes": size, "base_sha256": base_sha256}
    base = _find_base(path, base_path, "base.tflite" if isinstance(delta, Delta) else "base_int8.tflite")
    if base is not None:
        base_bytes = _size(base)
        result.update(base=base, base_bytes=base_bytes, percent_of_base=100.0 * size / base_bytes)
        if isinstance(delta, Delta):  # a budgeted task patches some sites; the others run as the base has them
            from edgepatch.runtime import load_base

            result.update(base_sites_not_patched=len(set(load_base(base).sites) - set(delta.sites)))
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
        "preprocessing": _preprocessing(patch.task.preprocessing),
        "kinds": list(patch.kinds),
        "trained": list(patch.trained),
        "tensors": len(patch.tensors),
        "parameters": int(sum(np.prod(v.shape) for v in patch.tensors.values())),
        "bytes": size,
        "training": patch.training,
        **({"selection": list(patch.selection)} if patch.selection is not None else {}),
    }


def describe_checkpoint(path: str) -> dict:
    """Parameter counts of a Keras checkpoint per patch kind (imports TensorFlow, unlike the others)."""
    from edgepatch.train.models import load_checkpoint
    from edgepatch.kinds import get_kind, patch_kind_names
    from edgepatch.kinds.keras_sites import find_sites

    _size(path)
    model = load_checkpoint(path)
    return {
        "kind": "checkpoint",
        "path": path,
        "parameters": int(model.count_params()),
        "parameters_by_kind": {name: get_kind(name).parameter_count(model) for name in patch_kind_names()},
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
        if key == "preprocessing":
            value = _preprocessing_line(value)
        elif key == "parameters_by_site":
            lines.append(f"  {key}:")
            lines += [f"    {site}: {count:,}" for site, count in value.items()]
            continue
        elif isinstance(value, float):
            value = f"{value:.3f}"
        elif isinstance(value, int):
            value = f"{value:,}"
        lines.append(f"  {key}: {value}")
    return "\n".join(lines)
