"""On-device runtime: numpy + LiteRT / ONNX Runtime only (never TensorFlow).

``load_base(path)`` reads a base once; ``base.apply(read_task_delta(path))``
returns a runner for that task. See ``TFLiteBase`` for the walk-through.
"""

from __future__ import annotations

from edgepatch.format.delta import Delta, decode_delta, read_delta
from edgepatch.format.int8_delta import Int8Delta
from edgepatch.runtime.files import EXTENSIONS, load_base, read_task_delta
from edgepatch.runtime.onnx import OnnxBase
from edgepatch.runtime.runner import Prediction, TaskRunner, softmax
from edgepatch.runtime.switcher import TaskSwitcher
from edgepatch.runtime.tflite import TFLiteBase
from edgepatch.runtime.tflite_int8 import TFLiteInt8Base

__all__ = ["EXTENSIONS", "Delta", "Int8Delta", "OnnxBase", "Prediction", "TFLiteBase", "TFLiteInt8Base",
           "TaskRunner", "TaskSwitcher", "load_base", "read_delta", "read_task_delta", "softmax", "decode_delta"]
