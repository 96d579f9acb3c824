"""On-device runtime: numpy + LiteRT / ONNX Runtime only (never TensorFlow).

``load_base(path)`` reads a base once; ``base.apply(read_task_delta(path))``
returns a runner for that task. See ``TFLiteBase`` for the walk-through.
"""

from __future__ import annotations

import os

from edgepatch.format.delta import Delta, decode_delta, read_delta, read_tensor_file
from edgepatch.errors import MissingFileError, UsageError
from edgepatch.format.int8_delta import Int8Delta, from_tensor_file
from edgepatch.runtime.onnx import OnnxBase
from edgepatch.runtime.runner import Prediction, TaskRunner, softmax
from edgepatch.runtime.switcher import TaskSwitcher
from edgepatch.runtime.tflite import TFLiteBase
from edgepatch.runtime.tflite_file import parse_tflite
from edgepatch.runtime.tflite_int8 import TFLiteInt8Base, is_int8_model

EXTENSIONS = (".tflite", ".onnx")


def load_base(path: str, num_threads: int = 1):
    """Open a base: .onnx, or .tflite (float or int8, told apart by content)."""
    extension = os.path.splitext(path)[1].lower()
    if extension not in EXTENSIONS:
        raise UsageError(f"base must be a .tflite or .onnx file. Received '{path}'")
    if not os.path.isfile(path):
        raise MissingFileError(f"base model '{path}' does not exist")
    with open(path, "rb") as handle:
        data = handle.read()
    if extension == ".onnx":
        return OnnxBase(data, path, num_threads)
    if is_int8_model(parse_tflite(data, path)):
        return TFLiteInt8Base(data, path, num_threads)
    return TFLiteBase(data, path, num_threads)


def read_task_delta(path: str) -> Delta | Int8Delta:
    """Read a float delta or an int8 delta, whichever the file is."""
    stored = read_tensor_file(path, ("delta", "int8_delta"))
    if stored.file_kind == "int8_delta":
        return from_tensor_file(stored, str(path))
    return read_delta(path)


__all__ = ["Delta", "Int8Delta", "OnnxBase", "Prediction", "TFLiteBase", "TFLiteInt8Base", "TaskRunner",
           "TaskSwitcher", "load_base", "read_delta", "read_task_delta", "softmax", "decode_delta"]
