"""Resolution cascade: threshold fitting on known data, and fit/run end to end on a multi-resolution ship."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest
from click.testing import CliRunner
from helpers.models import small_cnn


def _one_hot(classes, confidence, k=3):
    probs = np.full((len(classes), k), (1 - confidence) / (k - 1))
    probs[np.arange(len(classes)), classes] = confidence
    return probs


def test_fit_accepts_confident_low_resolution_answers():
    from edgepatch.apps.cascade import fit_cascade, simulate

    labels = np.array([0, 1, 2, 0, 1, 2, 0, 1])
    low_guess = np.array([0, 1, 2, 0, 2, 0, 1, 2])  # right on the first 4 (confidently), wrong after
    low = np.vstack([_one_hot(low_guess[:4], 0.95), _one_hot(low_guess[4:], 0.5)])
    high = _one_hot(labels, 0.9)
    fit = fit_cascade({96: low, 224: high}, labels, {96: 1.0, 224: 5.0}, tolerance=0.0)
    assert fit.best_single_resolution == 224 and fit.best_single_accuracy == 1.0
    assert fit.accuracy == 1.0
    assert fit.mean_cost == pytest.approx(1.0 + 5.0 * 4 / 8)  # half the images escalate
    assert fit.cost_reduction == pytest.approx(1 - 3.5 / 5)
    assert simulate([low, high], labels, [1.0, 5.0], (None,)) == (1.0, 6.0)


def test_fit_keeps_the_best_single_resolution_when_no_cascade_is_cheaper():
    from edgepatch.apps.cascade import fit_cascade

    labels = np.array([0, 1, 2, 0])
    unsure_low = _one_hot(np.array([0, 1, 2, 1]), 0.5)  # 3 of 4 right, never confident
    high = _one_hot(labels, 0.9)
    fit = fit_cascade({96: unsure_low, 224: high}, labels, {96: 1.0, 224: 5.0}, tolerance=0.0)
    assert fit.resolutions == (224,) and fit.thresholds == ()
    assert (fit.accuracy, fit.mean_cost, fit.cost_reduction) == (1.0, 5.0, 0.0)


def test_fit_rejects_a_single_resolution():
    from edgepatch.apps.cascade import fit_cascade
    from edgepatch.errors import UsageError

    with pytest.raises(UsageError) as error:
        fit_cascade({96: np.ones((2, 3)) / 3}, np.array([0, 1]), {96: 1.0})
    assert str(error.value) == "a cascade needs >= 2 resolutions with a cost each. Received [96]"


@pytest.fixture(scope="module")
def multires_ship(tmp_path_factory):
    from converters.convert import convert
    from edgepatch.apps.demo_data import write_datasets
    from edgepatch.apps.jobs import multitask_command

    root = tmp_path_factory.mktemp("cascade")
    data = write_datasets(str(root / "data"), train_per_class=6, test_per_class=4, size=48)["shapes"]
    small_cnn(num_classes=4).save(str(root / "base.keras"))
    result = multitask_command(backbone="mobilenet_v2", alpha=1.0, weights=str(root / "base.keras"),
                               tasks=[("shapes_32", data, 32), ("shapes_48", data, 48)], private_spec="scale_bias",
                               epochs=1, lr=1e-3, batch_size=8, seed=0, out_dir=str(root / "mr"))
    convert(result["base_checkpoint"], [t["patch"] for t in result["tasks"]], str(root / "ship"), formats=("tflite",))
    return root, data


def test_cascade_fit_and_run_from_the_cli(multires_ship):
    from edgepatch.cli.main import main

    root, data = multires_ship
    ship = root / "ship"
    out = root / "cascade.json"
    fitted = CliRunner().invoke(main, ["cascade", "fit", "--base", str(ship / "base.tflite"), "--delta",
                                       str(ship / "shapes_32.delta"), "--delta", str(ship / "shapes_48.delta"),
                                       "--data", data, "--out", str(out), "--json"])
    assert fitted.exit_code == 0, fitted.output
    record = json.loads(fitted.output)
    assert record["resolutions"] in ([32], [48], [32, 48])  # the fit may keep a single stage
    assert len(record["thresholds"]) == len(record["resolutions"]) - 1
    assert record["accuracy"] >= record["best_single_accuracy"] - 0.005
    assert record["mean_cost"] <= record["best_single_cost"] + 1e-9
    image = os.path.join(data, "test", "circle", sorted(os.listdir(os.path.join(data, "test", "circle")))[0])
    ran = CliRunner().invoke(main, ["cascade", "run", "--cascade", str(out), "--json", image])
    assert ran.exit_code == 0, ran.output
    answer = json.loads(ran.output)["results"][0]
    assert answer["resolution"] in (32, 48) and answer["label"] in ("circle", "ring", "square", "triangle")
