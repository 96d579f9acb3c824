"""Task patch files: what ``edgepatch train`` writes and ``convert`` reads.

A patch file uses the container of ``edgepatch.format.delta`` with
``file_kind = "patch"``. Its tensors are the task's private Keras variables,
keyed by variable path (e.g. ``block_1_depthwise_BN/gamma``). Its ``meta``:

- ``task``: name, classes, resolution, preprocessing (as in a delta);
- ``kinds``: the private patch kinds; ``trained``: the kinds that were
  trained (a private but untrained head is the paper's fixed random head);
- ``shared_sha256``: fingerprint of every non-private weight of the model it
  was trained on, checked when the patch is applied to a base checkpoint;
- ``training``: the settings and accuracies of the run, for the record;
- ``selection`` (only in a budgeted patch): the layers of the selectable kinds
  the task keeps private; their other layers stay the base's.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field

import numpy as np

from edgepatch.format.delta import (
    TaskInfo,
    read_tensor_file,
    task_from_json,
    task_to_json,
    write_tensor_file,
)
from edgepatch.errors import HeaderError, ShapeMismatchError, WrongBaseError


@dataclass(frozen=True)
class TaskPatch:
    task: TaskInfo
    kinds: tuple[str, ...]
    trained: tuple[str, ...]
    tensors: dict[str, np.ndarray]
    shared_sha256: str
    training: dict = field(default_factory=dict)
    selection: tuple[str, ...] | None = None  # budgeted: the selectable kinds' private layers


def private_variables(model, kinds, selection=None) -> list:
    """The model's variables owned by ``kinds`` (narrowed by ``selection``), found by structure via the registry."""
    from edgepatch.kinds import private_layers

    seen: dict[str, object] = {}
    for layer in private_layers(model, kinds, selection):
        for variable in layer.weights:
            seen.setdefault(variable.path, variable)
    return list(seen.values())


def shared_fingerprint(model, kinds, selection=None) -> str:
    """sha256 over the path, shape and bytes of every variable not private to ``kinds``."""
    private = {v.path for v in private_variables(model, kinds, selection)}
    digest = hashlib.sha256()
    for variable in sorted(model.weights, key=lambda v: v.path):
        if variable.path in private:
            continue
        value = np.ascontiguousarray(np.asarray(variable), dtype=np.float32)
        digest.update(f"{variable.path}:{list(value.shape)};".encode())
        digest.update(value.tobytes())
    return digest.hexdigest()


def extract_patch(model, task: TaskInfo, kinds, trained, training: dict, selection=None) -> TaskPatch:
    tensors = {v.path: np.asarray(v, dtype=np.float32) for v in private_variables(model, kinds, selection)}
    selection = None if selection is None else tuple(selection)
    return TaskPatch(task, tuple(kinds), tuple(trained), tensors, shared_fingerprint(model, kinds, selection),
                     training, selection)


def apply_patch(model, patch: TaskPatch, source: str = "<patch>") -> None:
    """Assign the patch's tensors to ``model``'s variables, after checking they fit."""
    if shared_fingerprint(model, patch.kinds, patch.selection) != patch.shared_sha256:
        raise WrongBaseError(
            f"{source}: patch for task '{patch.task.name}' was trained on other shared weights "
            "than this base checkpoint (shared-weights fingerprint differs)"
        )
    variables = {v.path: v for v in private_variables(model, patch.kinds, patch.selection)}
    if set(variables) != set(patch.tensors):
        missing = sorted(set(variables) - set(patch.tensors))[:3]
        extra = sorted(set(patch.tensors) - set(variables))[:3]
        raise ShapeMismatchError(
            f"{source}: patch tensors do not match the model's {patch.kinds} variables "
            f"(missing {missing}, unexpected {extra})"
        )
    for path, value in patch.tensors.items():
        if tuple(variables[path].shape) != value.shape:
            raise ShapeMismatchError(
                f"{source}: tensor '{path}' has shape {list(value.shape)}, "
                f"the model expects {list(variables[path].shape)}"
            )
    for path, value in patch.tensors.items():
        variables[path].assign(value)


def write_patch(path: str, patch: TaskPatch) -> int:
    meta = {
        "task": task_to_json(patch.task),
        "kinds": list(patch.kinds),
        "trained": list(patch.trained),
        "shared_sha256": patch.shared_sha256,
        "training": patch.training,
        **({"selection": list(patch.selection)} if patch.selection is not None else {}),
    }
    return write_tensor_file(path, "patch", patch.tensors, meta)


def read_patch(path: str) -> TaskPatch:
    from edgepatch.kinds import parse_kinds

    stored = read_tensor_file(path, "patch")
    meta = stored.meta
    try:
        task = task_from_json(meta["task"], path, stored.version)
        kinds = parse_kinds(meta["kinds"])
        trained = tuple(meta["trained"])
        shared = str(meta["shared_sha256"])
        training = dict(meta.get("training", {}))
        selection = _selection(meta.get("selection"))
    except (KeyError, TypeError, ValueError) as error:
        raise HeaderError(f"{path}: patch metadata is incomplete or malformed ({error!r})") from None
    tensors = {name: np.asarray(value, np.float32) for name, value in stored.tensors.items()}
    return TaskPatch(task, kinds, trained, tensors, shared, training, selection)


def _selection(value) -> tuple[str, ...] | None:
    if value is None:
        return None
    if not isinstance(value, list) or not all(isinstance(name, str) for name in value):
        raise TypeError(f"selection must be a list of layer names, got {value!r}")
    return tuple(value)
