"""load_images preprocesses as the task records: channel order, then per-channel scale and offset."""

import numpy as np
from PIL import Image

from edgepatch.format.task import Preprocessing, TaskInfo
from edgepatch.runtime.images import load_images


def test_load_images_applies_the_recorded_channel_order_and_values(tmp_path):
    pixels = np.random.default_rng(3).integers(0, 256, (16, 16, 3), dtype=np.uint8)
    path = str(tmp_path / "x.png")
    Image.fromarray(pixels).save(path)
    caffe = Preprocessing(1.0, (-103.939, -116.779, -123.68), "bgr")
    batch = load_images([path], TaskInfo("t", ("a", "b"), 16, caffe))
    mean_bgr = np.array([103.939, 116.779, 123.68], np.float32)
    assert batch.shape == (1, 16, 16, 3) and batch.dtype == np.float32
    assert np.array_equal(batch[0], pixels[..., ::-1].astype(np.float32) - mean_bgr)  # same size: no resampling
    torch = Preprocessing((2.0, 3.0, 4.0), (0.5, -0.5, 1.0))
    assert np.array_equal(load_images([path], TaskInfo("t", ("a", "b"), 16, torch))[0],
                          pixels * np.float32([2, 3, 4]) + np.float32([0.5, -0.5, 1.0]))
