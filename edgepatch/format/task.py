"""What a task is (``TaskInfo``), and its JSON form ``meta["task"]``, shared by deltas and patches.

Specified in ``edgepatch/format/spec.rst``, section *Delta meta* (``task``): per-channel
scale and offset plus the channel order since format version 2, and the resize filter
(optional, ``"bilinear"`` when absent); version 1 files hold one scalar scale and offset
and are read as RGB, resized ``"bilinear"``.
"""

from __future__ import annotations

import numbers
from dataclasses import dataclass

import numpy as np

from edgepatch.errors import HeaderError, UsageError
from edgepatch.format.container import FORMAT_VERSION
from edgepatch.format.checks import check_keys, finite_number, is_int, is_text, plain, show, string_list

MIN_RESOLUTION = 8
MAX_RESOLUTION = 1024
CHANNEL_ORDERS = ("rgb", "bgr")
RESIZE_FILTERS = ("bilinear",)  # spec.rst, *Float delta*; v1 files and v2 files without the key mean "bilinear"
MIN_ABS_SCALE = 1e-30  # a zero or denormal scale would erase the image; the messages spell both bounds
MAX_ABS_PREPROCESSING = 1e6
_TASK_KEYS = ("classes", "name", "preprocessing", "resolution")
_PREPROCESSING_KEYS = ("channels", "offset", "scale")
_V1_PREPROCESSING_KEYS = ("offset", "scale")
_PIXEL_ORDER = {"rgb": (0, 1, 2), "bgr": (2, 1, 0)}  # model channel c reads image channel order[c]


def _is_number(value) -> bool:
    return isinstance(value, numbers.Real) and not isinstance(value, (bool, np.bool_))


def _triple(value):
    """A number becomes three equal floats, a 3-sequence a tuple; anything else is left for the validator."""
    if _is_number(value):
        number = _float_or_same(value)
        return (number,) * 3 if isinstance(number, float) else value
    if isinstance(value, (list, tuple, np.ndarray)) and len(value) == 3:
        return tuple(_float_or_same(v) for v in value)
    return value


def _float_or_same(value):
    try:
        return float(value) if _is_number(value) else value
    except OverflowError:  # a huge int: the validator names it
        return value


@dataclass(frozen=True)
class Preprocessing:
    """Model input[..., c] = pixel[..., order[c]] * scale[c] + offset[c], pixels 0..255 in RGB.

    ``scale``/``offset``: three floats in the model's channel order (a single number means
    all three). ``channels``: the order the model wants; ``"bgr"`` means the model's
    channel 0 is the image's blue. ``resize``: the filter that brings a decoded image to
    the task's resolution (``RESIZE_FILTERS``; the spec defines it exactly).
    """

    scale: tuple[float, float, float]
    offset: tuple[float, float, float]
    channels: str = "rgb"
    resize: str = "bilinear"

    def __post_init__(self):
        object.__setattr__(self, "scale", _triple(self.scale))
        object.__setattr__(self, "offset", _triple(self.offset))

    @property
    def pixel_order(self) -> tuple[int, int, int]:
        """For each model channel, the RGB channel of the image it reads."""
        return _PIXEL_ORDER[self.channels]

    def apply(self, pixels) -> np.ndarray:
        """RGB pixels ``[..., 3]`` (0..255) to the model input, float32. The one numpy home of the rule."""
        rgb = np.asarray(pixels, np.float32)
        return rgb[..., list(self.pixel_order)] * np.asarray(self.scale, np.float32) \
            + np.asarray(self.offset, np.float32)


@dataclass(frozen=True)
class TaskInfo:
    """What a task is: its name, class labels, input resolution and preprocessing."""

    name: str
    classes: tuple[str, ...]
    resolution: int
    preprocessing: Preprocessing


def _bounded(value, where: str, source: str, is_scale: bool) -> float:
    number = finite_number(value, where, source)
    if is_scale and not MIN_ABS_SCALE <= abs(number) <= MAX_ABS_PREPROCESSING:
        raise HeaderError(f"{source}: {where} must have 1e-30 <= |scale| <= 1e6, got {show(value)}")
    if not is_scale and abs(number) > MAX_ABS_PREPROCESSING:
        raise HeaderError(f"{source}: {where} must have |offset| <= 1e6, got {show(value)}")
    return number


def _channel_values(value, field: str, source: str) -> tuple[float, float, float]:
    where = f"meta.task.preprocessing.{field}"
    if not (isinstance(value, list) and len(value) == 3):
        raise HeaderError(f"{source}: {where} must be an array of 3 numbers, got {show(value)}")
    return tuple(_bounded(item, f"{where}[{i}]", source, field == "scale") for i, item in enumerate(value))


def _preprocessing_from_json(pre, version: int, source: str) -> Preprocessing:
    if version == 1:  # one scalar scale and offset, RGB
        check_keys(pre, _V1_PREPROCESSING_KEYS, "meta.task.preprocessing", source)
        return Preprocessing(_bounded(pre["scale"], "meta.task.preprocessing.scale", source, True),
                             _bounded(pre["offset"], "meta.task.preprocessing.offset", source, False))
    pre = dict(pre) if isinstance(pre, dict) else pre
    resize = pre.pop("resize", RESIZE_FILTERS[0]) if isinstance(pre, dict) else None  # optional key
    check_keys(pre, _PREPROCESSING_KEYS, "meta.task.preprocessing", source)
    if not (isinstance(pre["channels"], str) and pre["channels"] in CHANNEL_ORDERS):
        raise HeaderError(f"{source}: meta.task.preprocessing.channels must be one of "
                          f"{', '.join(map(repr, CHANNEL_ORDERS))}, got {show(pre['channels'])}")
    if not (isinstance(resize, str) and resize in RESIZE_FILTERS):
        raise HeaderError(f"{source}: meta.task.preprocessing.resize must be one of "
                          f"{', '.join(map(repr, RESIZE_FILTERS))}, got {show(resize)}")
    return Preprocessing(_channel_values(pre["scale"], "scale", source),
                         _channel_values(pre["offset"], "offset", source), pre["channels"], resize)


def task_from_json(task, source: str = "<json>", version: int = FORMAT_VERSION) -> TaskInfo:
    """Validate ``meta["task"]`` (the JSON form, shared by deltas and patches) into a TaskInfo.

    ``version``: the file's format version (1: scalar preprocessing). Raises HeaderError
    naming ``source`` and the offending field.
    """
    check_keys(task, _TASK_KEYS, "meta.task", source)
    if not is_text(task["name"]):
        raise HeaderError(f"{source}: meta.task.name must be a non-empty string, got {show(task['name'])}")
    classes = string_list(task["classes"], "meta.task.classes", source)
    if not is_int(task["resolution"], MIN_RESOLUTION, MAX_RESOLUTION):
        raise HeaderError(f"{source}: meta.task.resolution must be an integer in {MIN_RESOLUTION}.."
                          f"{MAX_RESOLUTION}, got {show(task['resolution'])}")
    preprocessing = _preprocessing_from_json(task["preprocessing"], version, source)
    return TaskInfo(task["name"], tuple(classes), task["resolution"], preprocessing)


def _task_json(task: TaskInfo) -> dict:
    pre = task.preprocessing
    return {"name": task.name, "classes": plain(task.classes), "resolution": task.resolution,
            "preprocessing": {"channels": pre.channels, "offset": plain(pre.offset), "resize": pre.resize,
                              "scale": plain(pre.scale)}}


def task_to_json(task: TaskInfo, source: str = "<task>") -> dict:
    """The JSON form of a TaskInfo (current version), as stored in ``meta["task"]``; validated as a reader would.

    Raises UsageError if ``task`` is not a TaskInfo with a Preprocessing, HeaderError
    (naming ``source``) if a field is invalid.
    """
    if not (isinstance(task, TaskInfo) and isinstance(task.preprocessing, Preprocessing)):
        raise UsageError(f"{source}: expected a TaskInfo with a Preprocessing, got {show(task)}")
    return _task_json(task_from_json(_task_json(task), source))
