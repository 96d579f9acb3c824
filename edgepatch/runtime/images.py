"""Decode image files into a task's input tensor (Pillow + numpy, no TensorFlow)."""

from __future__ import annotations

import os
import warnings

import numpy as np

from edgepatch.format.delta import TaskInfo
from edgepatch.errors import DataError, MissingFileError

# 24 megapixels: a 6000x4000 camera photo. Decoded RGB that is 72 MB, so the decode and
# the RGB copy stay inside the 200 MB a bad input may cost; larger images are refused.
MAX_IMAGE_PIXELS = 24_000_000


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
        rgb = _decode_rgb(path, task.resolution)
        batch[i] = np.asarray(rgb, np.float32) * task.preprocessing.scale + task.preprocessing.offset
    return batch


def _decode_rgb(path: str, resolution: int):
    """Open, check the declared size before decoding (Pillow reads only the header), then decode."""
    from PIL import Image

    too_large = f"image '{path}' declares more than {MAX_IMAGE_PIXELS} pixels"
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with Image.open(path) as image:
                width, height = image.size
                if width * height > MAX_IMAGE_PIXELS:
                    raise DataError(f"{too_large} ({width}x{height})")
                return image.convert("RGB").resize((resolution, resolution), Image.BILINEAR)
    except Image.DecompressionBombError:  # Pillow's own limit, hit inside open for huge headers
        raise DataError(too_large) from None
    except OSError as error:
        raise DataError(f"image '{path}' cannot be decoded: {error}") from None
