"""Training sees the device's pixels (issue 16): make_dataset's batches equal load_images bit for bit.

Real JPEGs (flowers5, 128 px) and PNGs written here, downscaled 2x and 3.1x and upscaled.
``decode_images`` is also checked against a numpy reading of the spec's ``"bilinear"``
(written here from spec.rst, not from Pillow), the definition the Java loader implements;
and a delta records the filter it was trained with.
"""

from __future__ import annotations

import glob
import json
import os
import struct

import numpy as np
import pytest
from PIL import Image

from edgepatch.format.delta import Delta, read_delta, write_delta
from edgepatch.format.task import Preprocessing, TaskInfo
from edgepatch.runtime.images import decode_images, load_images

TF_MODE = Preprocessing(1 / 127.5, -1.0)
CAFFE = Preprocessing(1.0, (-103.939, -116.779, -123.68), "bgr")
# flowers5 photos are 128 px square: 64 is 2x down, 41 is 3.1x down, 200 is up.
JPEG_RESOLUTIONS = (64, 41, 200)


@pytest.fixture(scope="module")
def jpegs(shared_dir) -> list[str]:
    folders = sorted(glob.glob(os.path.join(shared_dir, "data", "flowers5", "test", "*")))
    paths = [sorted(glob.glob(os.path.join(folder, "*.jpg")))[0] for folder in folders]
    assert len(paths) >= 3 and all(Image.open(p).size == (128, 128) for p in paths)
    return paths


@pytest.fixture(scope="module")
def pngs(tmp_path_factory) -> list[str]:
    """A smooth RGB picture with edges and noise, 124x93 (2x and 3.1x down at 62 and 40), also as RGBA and L."""
    folder = tmp_path_factory.mktemp("pngs")
    y, x = np.mgrid[0:93, 0:124]
    noise = np.random.default_rng(3).integers(0, 40, (93, 124, 3))
    rgb = np.clip(np.stack([x * 2, y * 2, ((x // 9 + y // 7) % 2) * 210], -1) + noise, 0, 255).astype(np.uint8)
    paths = []
    for mode in ("RGB", "RGBA", "L"):
        path = str(folder / f"picture_{mode}.png")
        Image.fromarray(rgb).convert(mode).save(path)
        paths.append(path)
    return paths


def _training_batch(paths, resolution, preprocessing):
    from edgepatch.train.data import make_dataset

    items = [(path, i % 2) for i, path in enumerate(paths)]
    batches = list(make_dataset(items, resolution, preprocessing, batch_size=len(items), shuffle=False))
    assert len(batches) == 1
    images, labels = batches[0]
    assert labels.numpy().tolist() == [label for _, label in items]
    return images.numpy()


def _assert_identical(paths, resolution, preprocessing):
    trained = _training_batch(paths, resolution, preprocessing)
    device = load_images(paths, TaskInfo("t", ("a", "b"), resolution, preprocessing))
    assert trained.dtype == device.dtype == np.float32 and trained.shape == device.shape
    assert np.array_equal(trained, device), float(np.abs(trained - device).max())


@pytest.mark.parametrize("resolution", JPEG_RESOLUTIONS)
@pytest.mark.parametrize("preprocessing", [TF_MODE, CAFFE], ids=["tf", "caffe"])
def test_training_batch_equals_load_images_on_real_jpegs(jpegs, resolution, preprocessing):
    _assert_identical(jpegs, resolution, preprocessing)


@pytest.mark.parametrize("resolution", (62, 40, 150))
def test_training_batch_equals_load_images_on_pngs(pngs, resolution):
    _assert_identical(pngs, resolution, CAFFE)


# ------------------------------------------------ the spec's "bilinear", read from spec.rst


def _spec_axis(pixels: np.ndarray, m: int, axis: int) -> np.ndarray:
    """One pass of spec.rst's "bilinear" along ``axis`` of uint8 ``pixels`` (H, W, 3), n samples to m."""
    pixels = np.moveaxis(pixels, axis, 0).astype(np.int64)
    n = pixels.shape[0]
    scale = n / m
    fs = max(scale, 1.0)
    support, ss = fs, 1.0 / fs
    out = []
    for i in range(m):
        center = (i + 0.5) * scale
        lo, hi = max(int(center - support + 0.5), 0), min(int(center + support + 0.5), n)
        w = [max(0.0, 1.0 - abs((j - center + 0.5) * ss)) for j in range(lo, hi)]
        total = sum(w)
        k = [int(0.5 + (v / total if total != 0 else v) * 2 ** 22) for v in w]
        acc = np.full(pixels.shape[1:], 2 ** 21, np.int64)
        for j, weight in zip(range(lo, hi), k):
            acc += pixels[j] * weight
        out.append(np.clip(acc >> 22, 0, 255))
    return np.moveaxis(np.array(out, np.uint8), 0, axis)


def _spec_resize(rgb: np.ndarray, size: int) -> np.ndarray:
    if rgb.shape[1] != size:
        rgb = _spec_axis(rgb, size, 1)  # x first
    if rgb.shape[0] != size:
        rgb = _spec_axis(rgb, size, 0)
    return rgb


@pytest.mark.parametrize("resolution", (62, 41, 40, 150))
def test_decode_images_is_the_spec_bilinear(jpegs, pngs, resolution):
    paths = jpegs[:2] + pngs
    decoded = decode_images(paths, resolution)
    assert decoded.dtype == np.uint8 and decoded.shape == (len(paths), resolution, resolution, 3)
    for path, image in zip(paths, decoded):
        reference = _spec_resize(np.asarray(Image.open(path).convert("RGB")), resolution)
        assert np.array_equal(image, reference), (path, int(np.abs(image.astype(int) - reference).max()))


def test_the_old_tf_resize_did_not_give_these_pixels(jpegs):
    """Why the pipeline changed: tf.image.resize (no antialiasing) on the same decoded pixels differs at 2x down."""
    import tensorflow as tf

    rgb = np.asarray(Image.open(jpegs[0]).convert("RGB"))
    old = tf.image.resize(tf.cast(rgb, tf.float32), (64, 64), method="bilinear").numpy()
    assert np.abs(old - decode_images(jpegs[:1], 64)[0]).max() >= 8


def test_a_delta_records_its_resize_filter(tmp_path):
    task = TaskInfo("flowers", ("a", "b"), 96, CAFFE)
    delta = Delta(task=task, kinds=("scale_bias",), base_sha256={"tflite": "cd" * 32}, sites={"logits": "dense"},
                  tensors={"logits/bias": np.array([0.1, 0.2], np.float32)})
    path = str(tmp_path / "flowers.delta")
    write_delta(path, delta)
    with open(path, "rb") as handle:
        data = handle.read()
    header = json.loads(data[16:16 + struct.unpack_from("<I", data, 12)[0]])
    assert header["meta"]["task"]["preprocessing"]["resize"] == "bilinear"
    assert read_delta(path).task.preprocessing.resize == "bilinear"
