"""Checks of parsed header values, shared by the container and the file kinds built on it.

Each raises the typed error the spec names (``edgepatch/format/spec.rst``), with
a message that starts with the file (``source``) and shows the offending value.
"""

from __future__ import annotations

import math
from collections.abc import Mapping

import numpy as np

from edgepatch.errors import HeaderError, NonFiniteError


def show(value) -> str:
    """repr() clipped so a hostile header cannot make a huge message."""
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


def json_type(value) -> str:
    """The JSON type name of a parsed value (``boolean``, ``number``, ``string``, ...)."""
    for kind, name in ((bool, "boolean"), (int, "number"), (float, "number"), (str, "string"),
                       (list, "array"), (dict, "object")):
        if isinstance(value, kind):
            return name
    return "null" if value is None else type(value).__name__


def is_int(value, low: int, high: int) -> bool:
    """A JSON integer (never a boolean) in ``low..high``."""
    return isinstance(value, int) and not isinstance(value, bool) and low <= value <= high


def check_keys(obj, keys, where: str, source: str) -> None:
    """``obj`` is an object with exactly ``keys``: missing keys in ``keys`` order, then unknown ones sorted."""
    if not isinstance(obj, dict):
        raise HeaderError(f"{source}: {where} must be a JSON object, got {json_type(obj)}")
    for key in keys:
        if key not in obj:
            raise HeaderError(f"{source}: {where} is missing key {key!r}")
    for key in sorted(obj):
        if key not in keys:
            raise HeaderError(f"{source}: {where} has unknown key {show(key)}")


def check_finite(name: str, array: np.ndarray, source: str) -> None:
    """A float tensor holds no NaN or Inf (other dtypes pass)."""
    if array.dtype.kind != "f":
        return
    finite = np.isfinite(array)
    if finite.all():
        return
    nans = int(np.isnan(array).sum())
    infs = int(finite.size - finite.sum()) - nans
    first = int(np.argmin(finite.reshape(-1)))
    raise NonFiniteError(f"{source}: tensor {name!r} holds {nans} NaN and {infs} Inf values "
                         f"(first at flat index {first})")


def is_text(value) -> bool:
    """A non-empty str of Unicode scalar values (no unpaired surrogate from a JSON escape)."""
    if not (isinstance(value, str) and value):
        return False
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def string_list(value, where: str, source: str) -> list[str]:
    """A non-empty array of unique non-empty strings of Unicode scalar text."""
    if not (isinstance(value, list) and value and all(is_text(s) for s in value)
            and len(set(value)) == len(value)):
        raise HeaderError(f"{source}: {where} must be a non-empty array of unique non-empty strings, "
                          f"got {show(value)}")
    return value


def string_map(value, where: str, allowed, rule: str, source: str) -> dict[str, str]:
    """A non-empty object with non-empty string keys, each value passing ``allowed`` (``rule`` says how)."""
    if not (isinstance(value, dict) and value):
        raise HeaderError(f"{source}: {where} must be a non-empty JSON object, got {show(value)}")
    for key, item in value.items():
        if not is_text(key):
            raise HeaderError(f"{source}: {where} keys must be non-empty strings, got {show(key)}")
        if not allowed(item):
            raise HeaderError(f"{source}: {where}[{key!r}] must be {rule}, got {show(item)}")
    return dict(value)


def finite_number(value, where: str, source: str) -> float:
    """A JSON number that is finite as a double."""
    try:  # a huge JSON integer is finite as an int but overflows a double
        number = float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else math.nan
    except OverflowError:
        number = math.inf
    if not math.isfinite(number):
        raise HeaderError(f"{source}: {where} must be a finite number, got {show(value)}")
    return number


def plain(value):
    """Tuples to lists, mappings to dicts; odd types pass through for the validator to name."""
    return list(value) if isinstance(value, (list, tuple)) else (
        dict(value) if isinstance(value, Mapping) else value)
