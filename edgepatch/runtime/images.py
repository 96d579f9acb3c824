"""Decode image files into a task's input tensor (Pillow + numpy, no TensorFlow)."""

from __future__ import annotations

import os

import numpy as np

from edgepatch.format.delta import TaskInfo
from edgepatch.errors import DataError, MissingFileError


def load_images(paths: list[str], task: TaskInfo) -> np.ndarray:
    """Decode, resize bilinearly to the task's resolution and preprocess: ``[N, R, R, 3]`` float32."""
    try:
        from PIL import Image
    except ImportError:
        raise DataError("Pillow is needed to decode images (pip install 'edgepatch[runtime]')") from None
    batch = np.empty((len(paths), task.resolution, task.resolution, 3), np.float32)
    for i, path in enumerate(paths):
        if not os.path.isfile(path):
            raise MissingFileError(f"image '{path}' does not exist")
        try:
            with Image.open(path) as image:
                rgb = image.convert("RGB").resize((task.resolution, task.resolution), Image.BILINEAR)
        except OSError as error:
            raise DataError(f"image '{path}' cannot be decoded: {error}") from None
        batch[i] = np.asarray(rgb, np.float32) * task.preprocessing.scale + task.preprocessing.offset
    return batch
