"""On-device runtime: numpy + LiteRT / ONNX Runtime only (never TensorFlow).

``load_base(path)`` reads a base once; ``base.apply(read_delta(path))``
returns a runner for that task. See ``TFLiteBase`` for the walk-through.
"""

from __future__ import annotations

import os

from edgepatch.delta import Delta, read_delta
from edgepatch.errors import UsageError
from edgepatch.runtime.onnx import OnnxBase
from edgepatch.runtime.runner import Prediction, TaskRunner, softmax
from edgepatch.runtime.tflite import TFLiteBase

BASE_CLASSES = {".tflite": TFLiteBase, ".onnx": OnnxBase}


def load_base(path: str, num_threads: int = 1):
    """Open a base by its extension (.tflite or .onnx)."""
    extension = os.path.splitext(path)[1].lower()
    if extension not in BASE_CLASSES:
        raise UsageError(f"base must be a .tflite or .onnx file. Received '{path}'")
    return BASE_CLASSES[extension].from_file(path, num_threads)


__all__ = ["Delta", "OnnxBase", "Prediction", "TFLiteBase", "TaskRunner", "load_base", "read_delta", "softmax"]
