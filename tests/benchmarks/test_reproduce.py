"""benchmarks/reproduce (issue 8): one tiny real row end to end, the JSON schema, the report, the verdict rules.

The full and quick modes are far too slow for CI; this runs S/B + last for one
epoch on 10 flowers5 photos at 32 px through the real training API.
"""

from __future__ import annotations

import json
import os
import shutil
import sys

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, REPO)

from benchmarks.reproduce import SCHEMA
from benchmarks.reproduce.tables import (
    HELD,
    MIXED,
    NOT_HELD,
    NOT_RUN,
    beats_by,
    choose_lr,
    within,
)

RUN_FIELDS = {"kind", "key", "dataset", "variant", "weights", "resolution", "epochs", "lr", "seed", "bn_stats",
              "batch_size", "trained", "classes", "train_images", "test_images", "train_accuracy", "test_accuracy",
              "trained_parameters", "total_parameters", "seconds"}
RESULT_FIELDS = {"schema", "command", "plan", "weights", "roles", "datasets", "experiments", "environment", "runs",
                 "chosen_lrs", "pending_runs", "wall_seconds", "run_seconds", "timing", "decode_cache", "api_defaults"}


def _tiny_dataset(shared_dir: str, root, source_name: str, classes: tuple[str, str], name: str) -> str:
    """2 classes x (3 train + 2 test) real photos copied into a temporary folder."""
    for split, count in (("train", 3), ("test", 2)):
        for label in classes:
            source = os.path.join(shared_dir, "data", source_name, split, label)
            target = root / name / split / label
            target.mkdir(parents=True)
            for file in sorted(os.listdir(source))[:count]:
                shutil.copy(os.path.join(source, file), target / file)
    return str(root / name)


@pytest.fixture(scope="module")
def smoke(shared_dir, tmp_path_factory):
    from benchmarks.reproduce.__main__ import main

    root = tmp_path_factory.mktemp("reproduce")
    data = _tiny_dataset(shared_dir, root, "flowers5", ("daisy", "sunflower"), "tiny")
    far = _tiny_dataset(shared_dir, root, "eurosat", ("Forest", "River"), "tinyfar")
    out = root / "out"
    weights = os.path.join(shared_dir, "weights", "mobilenet_v2_1.0_224_no_top.h5")
    assert main(["--mode", "smoke", "--only", "transfer", "--weights", weights, "--data", data, "--far-data", far,
                 "--out", str(out)]) == 0
    with open(out / "results.json") as handle:
        return json.load(handle), out, root


def test_results_json_states_every_run(smoke):
    results, _, _ = smoke
    assert set(results) == RESULT_FIELDS
    assert results["schema"] == SCHEMA
    assert results["roles"] == {"near": "tiny", "far": "tinyfar", "large": None}
    assert results["datasets"]["tinyfar"]["train_images"] == 6
    (run,) = results["runs"]
    assert set(run) >= RUN_FIELDS
    assert (run["variant"], run["resolution"], run["epochs"], run["lr"], run["seed"]) == ("sb+last", 32, 1, 1e-3, 0)
    assert run["trained_parameters"] == 34_112 + 1280 * 2 + 2  # MobileNetV2 1.0 gamma/beta + a 2-class head
    assert 0.0 <= run["test_accuracy"] <= 1.0 and run["test_images"] == 4
    assert results["chosen_lrs"] == [{"dataset": "tiny", "variant": "sb+last", "lr": 1e-3, "source": "sweep"}]
    assert results["api_defaults"]["lr"]["sb+last"] == 3e-3 and results["api_defaults"]["bn_stats"] == "frozen"


def test_report_and_plot_render_from_json(smoke):
    from benchmarks.reproduce.__main__ import main

    _results, out, _ = smoke
    report = (out / "REPORT.md").read_text()
    for heading in ("## Verdicts", "## 1.1 Transfer", "## 6. Multi-resolution", "## All runs"):
        assert heading in report
    assert "| S/B + last | 36,674 |" in report
    assert "**not run**" in report  # claims without runs say so instead of guessing
    assert (out / "accuracy_vs_parameters.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert main(["--render-only", "--out", str(out)]) == 0
    assert (out / "REPORT.md").read_text() == report


def test_gpu_mode_refuses_a_machine_without_a_gpu(shared_dir, capsys):
    import tensorflow as tf

    from benchmarks.reproduce.__main__ import main

    if tf.config.list_physical_devices("GPU"):
        pytest.skip("this machine has a GPU")
    weights = os.path.join(shared_dir, "weights", "mobilenet_v2_1.0_224_no_top.h5")
    data = [os.path.join(shared_dir, "data", name) for name in ("flowers5_large", "eurosat_large")]
    assert main(["--mode", "gpu", "--weights", weights, "--data", data[0], "--far-data", data[1],
                 "--out", os.path.join(REPO, "benchmarks", "results", "reproduce", "never-written")]) == 2
    assert capsys.readouterr().err.strip().splitlines() == [
        "error: --mode gpu needs a GPU and TensorFlow sees none (install the gpu extra: pip install -e '.[gpu]')"]
    assert not os.path.exists(os.path.join(REPO, "benchmarks", "results", "reproduce", "never-written"))


def test_verdict_rules():
    assert beats_by({0: 4.0, 1: 3.3, 2: 2.0}, 3.0) == HELD
    assert beats_by({0: 8.0, 1: -0.7, 2: 4.0}, 3.0) == MIXED
    assert beats_by({0: 2.0, 1: 2.7}, 3.0) == NOT_HELD
    assert beats_by({}, 3.0) == NOT_RUN
    assert within({0: 4.0, 1: 5.0}, 5.0) == HELD
    assert within({0: 2.0, 1: 6.0}, 5.0) == MIXED
    assert within({0: 6.0, 1: 5.3}, 5.0) == NOT_HELD


def test_lr_choice_breaks_ties_by_train_accuracy_then_smaller_lr():
    runs = [{"lr": 1e-2, "test_accuracy": 0.8, "train_accuracy": 0.9},
            {"lr": 1e-3, "test_accuracy": 0.8, "train_accuracy": 0.9},
            {"lr": 1e-4, "test_accuracy": 0.7, "train_accuracy": 1.0}]
    assert choose_lr(runs) == 1e-3
    runs[0]["train_accuracy"] = 0.95
    assert choose_lr(runs) == 1e-2


def test_shared_statistics_average_over_every_task():
    """A BN layer shared by two task models ends with the mean of both tasks' batch statistics."""
    import keras
    import numpy as np
    import tensorflow as tf

    from benchmarks.reproduce.runs import reestimate_shared_statistics

    shared = keras.layers.BatchNormalization(momentum=0.999)
    private = keras.layers.BatchNormalization()
    first = keras.Input((4,))
    second = keras.Input((4,))
    models = [keras.Model(first, keras.layers.Dense(2)(shared(first))),
              keras.Model(second, keras.layers.Dense(2)(private(shared(second))))]
    rng = np.random.default_rng(0)
    data = [tf.data.Dataset.from_tensor_slices((rng.normal(mean, 1.0, (24, 4)).astype("float32"), np.zeros(24)))
            .batch(8) for mean in (1.0, 3.0)]
    batch_means = [np.concatenate([x.numpy() for x, _ in d]).mean(axis=0) for d in data]
    reestimate_shared_statistics(models, data, batches_per_task=3)
    np.testing.assert_allclose(np.asarray(shared.moving_mean), np.mean(batch_means, axis=0), atol=1e-5)
    assert shared.momentum == 0.999 and private.momentum == 0.99  # restored
    assert abs(float(np.mean(np.asarray(private.moving_mean)))) < 0.2  # its input is already normalised


def test_defaults_verdicts_compare_the_default_with_the_best_swept_setting():
    from benchmarks.reproduce.claims import api_defaults
    from benchmarks.reproduce.plan import full_plan

    def run(dataset, variant, lr, accuracy, bn_stats="frozen", resolution=128):
        return {"kind": "transfer", "dataset": dataset, "variant": variant, "weights": "imagenet", "lr": lr,
                "seed": 0, "bn_stats": bn_stats, "resolution": resolution, "epochs": 5, "test_accuracy": accuracy}

    runs = [run("near", "last", 1e-3, 0.86), run("near", "last", 1e-2, 0.865),  # default 0.5 below: held
            run("near", "sb+last", 1e-3, 0.80), run("near", "sb+last", 3e-3, 0.84),  # default at the best
            run("far", "sb+last", 1e-3, 0.90, resolution=96), run("far", "sb+last", 3e-3, 0.88, resolution=96),
            run("near", "sb+last", 3e-3, 0.70, bn_stats="reestimate")]
    results = {"plan": full_plan().to_json(), "roles": {"near": "near", "far": "far", "large": None}, "runs": runs,
               "chosen_lrs": [{"dataset": d, "variant": "sb+last", "lr": 3e-3, "source": "sweep"} for d in ("near", "far")],
               "api_defaults": {"lr": {"last": 1e-3, "sb+last": 3e-3, "full": 1e-4}, "bn_stats": "frozen"}}
    verdicts = {(v.claim, v.regime): v.verdict for v in api_defaults(results)}
    lr_claim = "train's default LR for {} ({}) within 1 point of the best LR swept"
    assert verdicts[(lr_claim.format("last", "0.001"), "near (near)")] == HELD  # 0.5 below the best
    assert verdicts[(lr_claim.format("sb+last", "0.003"), "near (near)")] == HELD
    assert verdicts[(lr_claim.format("sb+last", "0.003"), "far (far)")] == NOT_HELD  # 2 points below 1e-3
    assert verdicts[(lr_claim.format("full", "0.0001"), "near (near)")] == NOT_RUN  # never swept
    assert verdicts[("train's default BN statistics (frozen) within 1 point of the best mode for S/B + last",
                     "near (near)")] == HELD


def test_release_lets_a_finished_runs_train_graph_go():
    """Keras's train step registers a process-wide custom gradient that holds its graph; release drops it."""
    import gc
    import weakref

    import keras
    import numpy as np
    from tensorflow.python.framework.func_graph import FuncGraph

    from benchmarks.reproduce.runs import _release

    def train_one_model():
        model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(2)])
        model.compile(optimizer="adam", loss="sparse_categorical_crossentropy")
        model.fit(np.zeros((8, 4), "float32"), np.zeros(8, "int32"), epochs=1, verbose=0)

    def train_step_graphs():
        return [weakref.ref(g) for g in gc.get_objects() if isinstance(g, FuncGraph) and g.name == "one_step_on_data"]

    _release()
    train_one_model()
    gc.collect()
    graphs = train_step_graphs()
    assert graphs, "the train step was not traced: the test would prove nothing"
    _release()
    assert [ref for ref in graphs if ref() is not None] == []


def test_multires_verdicts_compare_private_sb_with_shared_and_independent_models():
    """Only runs at the plan's resolutions count: a multi-task independent run of 2 tasks is not a baseline here."""
    from benchmarks.reproduce.claims import multires
    from benchmarks.reproduce.plan import full_plan

    plan = full_plan().to_json()

    def run(config, seed, accuracies, resolutions=plan["multires_resolutions"]):
        return {"kind": "multi", "config": config, "seed": seed, "epochs": plan["multires_epochs"],
                "tasks": [{"dataset": "near", "resolution": r} for r in resolutions],
                "results": [{"dataset": "near", "resolution": r, "test_accuracy": a, "api_test_accuracy": a - 0.1}
                            for r, a in zip(resolutions, accuracies)]}

    runs = [run("sb private", s, (0.80, 0.84, 0.86)) for s in (0, 1)]
    runs += [run("all shared", s, (0.79, 0.85, 0.85)) for s in (0, 1)]
    runs += [run("independent", 0, (0.82, 0.89, 0.86)),  # 2, 5 and 0 points above private S/B
             run("independent", 0, (0.99, 0.99), resolutions=(96, 96))]
    verdicts = {(v.claim, v.regime): v for v in multires({"plan": plan, "runs": runs})}
    below = "multi-resolution: private S/B at most 3 points below independent models"
    assert [verdicts[(below, f"{r} px")].verdict for r in (96, 128, 160)] == [HELD, NOT_HELD, HELD]
    assert verdicts[(below, "96 px")].seeds == (0,)
    assert verdicts[(below, "128 px")].paper == "independent - private: -1.0 (table 5)"
    assert verdicts[("multi-resolution: private S/B >= all shared", "128 px")].verdict == NOT_HELD
    assert verdicts[("multi-resolution: private S/B >= all shared at every resolution", "all")].verdict == NOT_HELD


def test_full_mode_adds_eurosat_large_unless_the_large_experiment_is_left_out(shared_dir, tmp_path, monkeypatch):
    from benchmarks.reproduce.__main__ import parse_args

    (tmp_path / "checkout").mkdir()
    (tmp_path / "shared").symlink_to(os.path.abspath(shared_dir))
    monkeypatch.chdir(tmp_path / "checkout")  # the defaults are ../shared/data/... from a checkout
    weights = "../shared/weights/mobilenet_v2_1.0_224_no_top.h5"
    assert parse_args(["--weights", weights]).data_large == "../shared/data/eurosat_large"
    assert parse_args(["--weights", weights, "--only", "transfer,multires"]).data_large is None
    assert parse_args(["--weights", weights, "--quick"]).data_large is None
    assert parse_args(["--weights", weights, "--data-large", "../shared/data/flowers5_large"]).data_large == \
        "../shared/data/flowers5_large"


def test_a_resumed_invocation_runs_again_multi_records_without_re_measured_train_accuracy(monkeypatch):
    from types import SimpleNamespace

    from benchmarks.reproduce import runs

    def record(key, shared, fields):
        return {"kind": "multi", "key": key, "config": key, "seed": 0, "epochs": 2, "lr": 1e-4,
                "shared_statistics_reestimated": shared,
                "results": [{"dataset": "near", "resolution": 96, "test_accuracy": 0.5, **fields}]}

    trained = []
    monkeypatch.setattr(runs, "run_multi", lambda ctx, spec: trained.append(spec.key) or record(spec.key, True, {}))
    pool = {"old shared": record("old shared", True, {}), "private": record("private", False, {}),
            "new shared": record("new shared", True, {"api_train_accuracy": 0.4})}
    runner = runs.Runner(SimpleNamespace(verbose=False), pool)
    for key in pool:
        runner(SimpleNamespace(key=key))
    assert trained == ["old shared"]
    assert runner.records["private"] is pool["private"] and runner.records["new shared"] is pool["new shared"]
