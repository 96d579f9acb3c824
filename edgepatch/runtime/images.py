"""Decode image files into a task's input tensor (Pillow + numpy, no TensorFlow): the one home of image decoding.

Training (``train/data.py``), int8 calibration, ``cascade fit``, ``eval`` and ``run`` all
read pixels through ``decode_images``, so a task is trained on the very pixels the
device runtimes see. The resize is the spec's ``"bilinear"`` (``edgepatch/format/spec.rst``,
*Float delta*, ``task.preprocessing.resize``): Pillow's ``Image.BILINEAR`` (which
antialiases when it downscales), one axis at a time, x then y, so the result does not
depend on the pass order a Pillow version picks and the Java loader can match it exactly.
"""

from __future__ import annotations

import os
import warnings
from concurrent.futures import ThreadPoolExecutor

import numpy as np

from edgepatch.errors import DataError, MissingFileError, UsageError
from edgepatch.format.delta import TaskInfo
from edgepatch.format.task import RESIZE_FILTERS

# 24 megapixels: a 6000x4000 camera photo. Decoded RGB that is 72 MB, so the decode and
# the RGB copy stay inside the 200 MB a bad input may cost; larger images are refused.
MAX_IMAGE_PIXELS = 24_000_000
# Pillow decodes and resizes without the GIL, so threads overlap; each holds at most one
# decoded image, which bounds the peak at DECODE_WORKERS such images.
DECODE_WORKERS = min(4, os.cpu_count() or 1)


def decode_images(paths, resolution: int, workers: int = DECODE_WORKERS) -> np.ndarray:
    """Decode to RGB and resize (spec ``"bilinear"``) to ``resolution`` square: uint8 ``[N, R, R, 3]``.

    The first bad path in order raises: MissingFileError if it does not exist, DataError
    if it cannot be decoded or declares more than MAX_IMAGE_PIXELS pixels.
    """
    paths = [os.fspath(p) for p in paths]
    _need_pillow()
    for path in paths:  # before any decode, so a missing file is named first, in order
        if not os.path.isfile(path):
            raise MissingFileError(f"image '{path}' does not exist")
    from PIL import Image

    out = np.empty((len(paths), resolution, resolution, 3), np.uint8)

    def decode_into(index: int) -> None:
        out[index] = _decode_rgb(paths[index], resolution)

    with warnings.catch_warnings():  # here, not per thread: the filter list is process-wide
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)  # MAX_IMAGE_PIXELS is the limit
        if workers <= 1 or len(paths) <= 1:
            for index in range(len(paths)):
                decode_into(index)
        else:
            with ThreadPoolExecutor(max_workers=workers) as pool:
                for _ in pool.map(decode_into, range(len(paths))):  # re-raises the first failure, in order
                    pass
    return out


def load_images(paths, task: TaskInfo) -> np.ndarray:
    """``decode_images`` then the task's preprocessing (``Preprocessing.apply``): ``[N, R, R, 3]`` float32."""
    pre = task.preprocessing
    if pre.resize not in RESIZE_FILTERS:
        raise UsageError(f"resize filter {pre.resize!r} is not one of {', '.join(map(repr, RESIZE_FILTERS))}")
    pixels = decode_images(paths, task.resolution)
    batch = np.empty(pixels.shape, np.float32)
    for i, image in enumerate(pixels):  # per image: no float temporaries the size of the batch
        batch[i] = pre.apply(image)
    return batch


def resize_bilinear(image, width: int, height: int):
    """A Pillow RGB image resized as the spec's ``"bilinear"``: along x to ``width``, then along y to ``height``."""
    from PIL import Image

    if image.width != width:
        image = image.resize((width, image.height), Image.BILINEAR)
    if image.height != height:
        image = image.resize((width, height), Image.BILINEAR)
    return image


def _need_pillow() -> None:
    try:
        import PIL.Image  # noqa: F401
    except ImportError:
        raise DataError("Pillow is needed to decode images (pip install 'edgepatch[runtime]')") from None


def _decode_rgb(path: str, resolution: int) -> np.ndarray:
    """Open, check the declared size before decoding (Pillow reads only the header), then decode and resize."""
    from PIL import Image

    too_large = f"image '{path}' declares more than {MAX_IMAGE_PIXELS} pixels"
    try:
        with Image.open(path) as image:
            width, height = image.size
            if width * height > MAX_IMAGE_PIXELS:
                raise DataError(f"{too_large} ({width}x{height})")
            return np.asarray(resize_bilinear(image.convert("RGB"), resolution, resolution), np.uint8)
    except Image.DecompressionBombError:  # Pillow's own limit, hit inside open for huge headers
        raise DataError(too_large) from None
    except OSError as error:
        raise DataError(f"image '{path}' cannot be decoded: {error}") from None
