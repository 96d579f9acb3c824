"""Training breadth: multi-task, multi-resolution, full fine-tuning, resume — each through convert."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest
from helpers.models import small_cnn


@pytest.fixture(scope="module")
def datasets(tmp_path_factory):
    from edgepatch.apps.demo_data import write_datasets

    return write_datasets(str(tmp_path_factory.mktemp("data")), train_per_class=6, test_per_class=3, size=32)


@pytest.fixture(scope="module")
def base_checkpoint(tmp_path_factory):
    path = str(tmp_path_factory.mktemp("base") / "base.keras")
    small_cnn(num_classes=4).save(path)
    return path


def _train(out_dir, base_checkpoint, tasks, private, epochs=1, batch_size=8):
    from edgepatch.apps.jobs import multitask_command

    return multitask_command(backbone="mobilenet_v2", alpha=1.0, weights=base_checkpoint, tasks=tasks,
                             private_spec=private, epochs=epochs, lr=1e-3, batch_size=batch_size, seed=0,
                             out_dir=out_dir)


def _runtime_parity(ship, tasks_and_models):
    from converters.convert import parity_inputs
    from edgepatch.runtime import load_base, read_delta

    for fmt in ("tflite", "onnx"):
        base = load_base(os.path.join(ship, f"base.{fmt}"))
        for name, resolution, model in tasks_and_models:
            x = parity_inputs(resolution)
            got = base.apply(read_delta(os.path.join(ship, f"{name}.delta"))).predict(x)
            assert np.max(np.abs(got - np.asarray(model(x, training=False)))) <= 1e-4, (fmt, name)


def test_multitask_shares_weights_and_keeps_private_patches(tmp_path, datasets, base_checkpoint, monkeypatch):
    from converters.convert import convert, task_model
    from edgepatch.train import multitask
    from edgepatch.train.models import load_checkpoint
    from edgepatch.train.patchfile import read_patch

    steps = []
    make_step = multitask._train_step
    monkeypatch.setattr(multitask, "_train_step", lambda *args: steps.append(make_step(*args)) or steps[-1])
    tasks = [("colors", datasets["colors"], 32), ("quadrants", datasets["quadrants"], 32)]
    result = _train(str(tmp_path / "mt"), base_checkpoint, tasks, "scale_bias,logits", batch_size=10)
    # 24 training images per task: batches of 10, 10 and 4, and the short batch must not retrace.
    assert [step.experimental_get_tracing_count() for step in steps] == [1, 1]
    patches = [read_patch(t["patch"]) for t in result["tasks"]]
    assert patches[0].shared_sha256 == patches[1].shared_sha256  # one set of shared weights
    assert not np.array_equal(patches[0].tensors["stem_norm/gamma"], patches[1].tensors["stem_norm/gamma"])
    assert patches[0].tensors["classifier/kernel"].shape == (12, 3)
    assert patches[1].tensors["classifier/kernel"].shape == (12, 4)
    base = load_checkpoint(result["base_checkpoint"])
    initial = load_checkpoint(base_checkpoint)
    assert not np.array_equal(np.asarray(base.get_layer("pw").kernel), np.asarray(initial.get_layer("pw").kernel))
    ship = str(tmp_path / "ship")
    convert(result["base_checkpoint"], [t["patch"] for t in result["tasks"]], ship)
    models = [(t["task"], 32, task_model(base, p, t["patch"])) for t, p in zip(result["tasks"], patches)]
    _runtime_parity(ship, models)


def test_multiresolution_one_dynamic_base(tmp_path, datasets, base_checkpoint):
    from converters.convert import convert, task_model
    from edgepatch.format.delta import read_delta
    from edgepatch.train.models import load_checkpoint
    from edgepatch.train.patchfile import read_patch

    tasks = [("shapes_32", datasets["shapes"], 32), ("shapes_48", datasets["shapes"], 48)]
    result = _train(str(tmp_path / "mr"), base_checkpoint, tasks, "scale_bias")
    ship = str(tmp_path / "ship")
    convert(result["base_checkpoint"], [t["patch"] for t in result["tasks"]], ship)
    delta = read_delta(os.path.join(ship, "shapes_48.delta"))
    assert "classifier" not in delta.sites  # the head is shared across resolutions
    base = load_checkpoint(result["base_checkpoint"])
    models = [(t["task"], t["resolution"], task_model(base, read_patch(t["patch"]), t["patch"]))
              for t in result["tasks"]]
    _runtime_parity(ship, models)


def test_multitask_resumes_from_its_checkpoint(tmp_path, datasets, base_checkpoint, capsys):
    tasks = [("colors", datasets["colors"], 32), ("quadrants", datasets["quadrants"], 32)]
    out = str(tmp_path / "resume")
    _train(out, base_checkpoint, tasks, "scale_bias,logits", epochs=1)
    capsys.readouterr()
    result = _train(out, base_checkpoint, tasks, "scale_bias,logits", epochs=2)
    log = capsys.readouterr().err
    assert "after epoch 1" in log and "epoch 2/2" in log and "epoch 1/2" not in log
    assert len(result["tasks"]) == 2


def test_full_finetune_converts_to_a_base_without_deltas(tmp_path, datasets, base_checkpoint):
    from converters.convert import convert
    from edgepatch.apps.jobs import train_command

    result = train_command(backbone="mobilenet_v2", alpha=1.0, resolution=32, weights=base_checkpoint,
                           data_dir=datasets["colors"], task_name="colors", patch_spec="full", epochs=1, lr=None,
                           batch_size=8, bn_stats="reestimate", bn_momentum=0.9, holdout=0.2, seed=0,
                           out_dir=str(tmp_path / "full"))
    assert "patch" not in result and os.path.isfile(result["model"])
    converted = convert(result["model"], [], str(tmp_path / "ship"))
    assert converted.deltas == {} and set(converted.base_files) == {"tflite", "onnx"}


def test_killed_transfer_training_resumes(tmp_path, datasets, base_checkpoint):
    """SIGKILL `edgepatch train` after its first epoch's backup; the rerun resumes at epoch 2."""
    import signal
    import subprocess
    import sys
    import time

    from conftest import REPO

    out = tmp_path / "run"
    epochs = 6  # enough that the kill lands before the last epoch even on a fast machine
    command = [sys.executable, "-m", "edgepatch.cli.main", "train", "--preprocessing", "tf",  # a checkpoint: no family
               "--weights", base_checkpoint, "--resolution", "32",
               "--data", datasets["colors"], "--patch", "scale_bias,logits", "--epochs", str(epochs),
               "--batch-size", "4", "--out", str(out), "--json"]
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}
    first = subprocess.Popen(command, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    backup = out / ".train-backup"
    deadline = time.time() + 240
    while time.time() < deadline and first.poll() is None and not (backup / "backup.json").exists():
        time.sleep(0.05)
    assert first.poll() is None, "training finished before it could be killed"
    first.send_signal(signal.SIGKILL)
    first.wait()
    assert not (out / "colors.patch").exists()
    # More epochs may have finished between the poll and the kill: resume from what the backup says.
    done = json.loads((backup / "backup.json").read_text())["epoch"]
    assert 0 < done < epochs
    second = subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert second.returncode == 0, second.stderr[-2000:]
    assert f"after epoch {done}" in second.stderr
    assert f"Epoch {done + 1}/{epochs}" in second.stderr and f"Epoch {done}/{epochs}" not in second.stderr
    assert json.loads(second.stdout)["test_accuracy"] >= 0.0 and (out / "colors.patch").exists()
