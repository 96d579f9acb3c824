"""What a task is (``TaskInfo``), and its JSON form ``meta["task"]``, shared by deltas and patches.

Specified in ``edgepatch/format/spec.py``, section *Delta meta* (``task``).
"""

from __future__ import annotations

from dataclasses import dataclass

from edgepatch.errors import HeaderError, UsageError
from edgepatch.format.checks import check_keys, finite_number, is_int, is_text, plain, show, string_list

MIN_RESOLUTION = 8
MAX_RESOLUTION = 4096
_TASK_KEYS = ("classes", "name", "preprocessing", "resolution")
_PREPROCESSING_KEYS = ("offset", "scale")


@dataclass(frozen=True)
class Preprocessing:
    """Model input = pixel (0..255) * scale + offset."""

    scale: float
    offset: float


@dataclass(frozen=True)
class TaskInfo:
    """What a task is: its name, class labels, input resolution and preprocessing."""

    name: str
    classes: tuple[str, ...]
    resolution: int
    preprocessing: Preprocessing


def task_from_json(task, source: str = "<json>") -> TaskInfo:
    """Validate ``meta["task"]`` (the JSON form, shared by deltas and patches) into a TaskInfo.

    Raises HeaderError naming ``source`` and the offending field.
    """
    check_keys(task, _TASK_KEYS, "meta.task", source)
    if not is_text(task["name"]):
        raise HeaderError(f"{source}: meta.task.name must be a non-empty string, got {show(task['name'])}")
    classes = string_list(task["classes"], "meta.task.classes", source)
    if not is_int(task["resolution"], MIN_RESOLUTION, MAX_RESOLUTION):
        raise HeaderError(f"{source}: meta.task.resolution must be an integer in {MIN_RESOLUTION}.."
                          f"{MAX_RESOLUTION}, got {show(task['resolution'])}")
    pre = task["preprocessing"]
    check_keys(pre, _PREPROCESSING_KEYS, "meta.task.preprocessing", source)
    preprocessing = Preprocessing(
        scale=finite_number(pre["scale"], "meta.task.preprocessing.scale", source),
        offset=finite_number(pre["offset"], "meta.task.preprocessing.offset", source))
    return TaskInfo(task["name"], tuple(classes), task["resolution"], preprocessing)


def _task_json(task: TaskInfo) -> dict:
    pre = task.preprocessing
    return {"name": task.name, "classes": plain(task.classes), "resolution": task.resolution,
            "preprocessing": {"scale": pre.scale, "offset": pre.offset}}


def task_to_json(task: TaskInfo, source: str = "<task>") -> dict:
    """The JSON form of a TaskInfo, as stored in ``meta["task"]``; validated as a reader would.

    Raises UsageError if ``task`` is not a TaskInfo with a Preprocessing, HeaderError
    (naming ``source``) if a field is invalid.
    """
    if not (isinstance(task, TaskInfo) and isinstance(task.preprocessing, Preprocessing)):
        raise UsageError(f"{source}: expected a TaskInfo with a Preprocessing, got {show(task)}")
    return _task_json(task_from_json(_task_json(task), source))
