"""What `train` reports is what the device scores: one image pipeline from training to `eval` (slow)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys

import pytest


@pytest.mark.slow
def test_train_test_accuracy_equals_eval_on_upscaled_photos(shared_dir, tmp_path):
    """Test photos upscaled to 256 px, training at 128 px: train --json's test accuracy == eval's, both runtimes."""
    from PIL import Image

    data = tmp_path / "data"
    shutil.copytree(os.path.join(shared_dir, "data", "flowers5", "train"), data / "train")
    source = os.path.join(shared_dir, "data", "flowers5", "test")
    for name in sorted(os.listdir(source)):
        (data / "test" / name).mkdir(parents=True)
        for file in sorted(os.listdir(os.path.join(source, name))):
            with Image.open(os.path.join(source, name, file)) as image:
                image.convert("RGB").resize((256, 256), Image.BICUBIC).save(data / "test" / name / file, quality=95)
    weights = os.path.join(shared_dir, "weights", "mobilenet_v2_1.0_224_no_top.h5")

    def edgepatch(*args):
        done = subprocess.run([sys.executable, "-m", "edgepatch.cli.main", *args], capture_output=True, text=True,
                              cwd=tmp_path, timeout=1200)
        assert done.returncode == 0, done.stderr[-2000:]
        return json.loads(done.stdout)

    trained = edgepatch("train", "--weights", weights, "--resolution", "128", "--data", "data", "--patch",
                        "scale_bias,logits", "--epochs", "2", "--quiet", "--json", "--out", "run")
    edgepatch("convert", "--model", "run/base.keras", "--patches", "run/data.patch", "--out", "ship", "--json")
    report = edgepatch("eval", "--base", "ship/base.tflite", "--delta", "ship/data.delta", "--base", "ship/base.onnx",
                       "--delta", "ship/data.delta", "--data", "data", "--json", "--quiet")
    assert report["images"] == 150
    for accuracy in report["accuracy"].values():
        assert abs(accuracy - trained["test_accuracy"]) * 150 <= 1 + 1e-9
