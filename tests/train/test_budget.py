"""Patches under a parameter budget: parsing, the selectors, training only the chosen layers, and the
partial delta they ship (sites left out stay the base's, bit for bit, on both runtimes)."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest
from click.testing import CliRunner
from helpers.models import small_cnn
from PIL import Image

from edgepatch.errors import UsageError
from edgepatch.train.budget import SELECTORS, Budget, SelectionContext, Unit, budget_units, fill, select_layers

CLASSES = ("a", "b", "c")


@pytest.mark.parametrize("text, parameters", [("100", 100), ("25%", 250), ("12.5%", 125), ("100%", 1000)])
def test_a_budget_is_a_count_or_a_share(text, parameters):
    assert Budget.parse(text).parameters(1000) == parameters


@pytest.mark.parametrize("text, message", [
    ("0", "a budget is an integer count > 0 or a percentage in (0, 100]. Received '0'"),
    ("101%", "a budget is an integer count > 0 or a percentage in (0, 100]. Received '101%'"),
    ("2.5", "a budget is an integer count > 0 or a percentage in (0, 100]. Received '2.5'"),
    ("-3", "a budget is a parameter count (20000) or a percentage (25%). Received '-3'"),
    ("ten", "a budget is a parameter count (20000) or a percentage (25%). Received 'ten'"),
])
def test_a_bad_budget_says_what_is_allowed(text, message):
    with pytest.raises(UsageError) as error:
        Budget.parse(text)
    assert str(error.value) == message


def test_fill_takes_units_in_rank_order_and_skips_what_no_longer_fits():
    units = [Unit(name, "k", size, None) for name, size in (("x", 6), ("y", 5), ("z", 3), ("w", 1))]
    assert fill(units, 10) == ("x", "z", "w")
    assert fill(list(reversed(units)), 10) == ("w", "z", "y")
    assert fill(units, 0) == ()


@pytest.fixture(scope="module")
def prepared():
    """small_cnn with every S/B unit trainable, and a tiny labelled stream (images depend on the label)."""
    import tensorflow as tf

    from edgepatch.train.native import prepare_for_training

    model = small_cnn(num_classes=3)
    prepare_for_training(model, ("scale_bias", "logits"))
    rng = np.random.default_rng(0)
    labels = np.repeat(np.arange(3), 8).astype(np.int32)
    images = (rng.normal(0, 0.3, (24, 32, 32, 3)) + labels[:, None, None, None] * 0.5 - 0.5).astype(np.float32)
    stream = tf.data.Dataset.from_tensor_slices((images, labels))
    context = SelectionContext(model=model, train_data=stream.shuffle(24, seed=0).batch(8),
                               features_data=stream.batch(8), learning_rate=1e-2, batch_size=8, score_batches=3)
    return model, context


def test_units_are_the_selectable_layers_in_model_order(prepared):
    model, _ = prepared
    units = budget_units(model, ("scale_bias", "logits"))
    assert [(u.name, u.parameters) for u in units] == [("stem_norm", 16), ("dw_norm", 32), ("pw_norm", 16)]
    both = budget_units(model, ("scale_bias", "depthwise", "logits"))
    assert [u.name for u in both] == ["stem_norm", "dw", "dw_norm", "pw_norm"]
    assert [u.kind for u in both] == ["scale_bias", "depthwise", "scale_bias", "scale_bias"]


@pytest.mark.parametrize("selector", sorted(SELECTORS))
def test_every_selector_keeps_within_the_budget_and_leaves_the_model_as_it_was(prepared, selector):
    model, context = prepared
    before = [np.array(v) for v in model.weights]
    units = budget_units(model, ("scale_bias", "logits"))
    ranked = SELECTORS[selector].rank(list(units), context)
    assert sorted(u.name for u in ranked) == sorted(u.name for u in units)
    selection = select_layers(units, Budget.parse("40"), selector, context)
    assert selection.parameters <= 40 and selection.full_parameters == 64 and selection.layers
    assert selection.layers == fill(ranked, 40)
    assert all(np.array_equal(a, np.array(b)) for a, b in zip(before, model.weights))


def test_last_takes_the_layers_nearest_the_output_and_random_follows_its_seed(prepared):
    model, context = prepared
    units = budget_units(model, ("scale_bias", "logits"))
    assert select_layers(units, Budget.parse("32"), "last", None).layers == ("pw_norm", "stem_norm")
    orders = {tuple(u.name for u in SELECTORS["random"].rank(units, SelectionContext(**{**vars(context), "seed": s})))
              for s in range(8)}
    assert len(orders) > 1


def test_a_budget_below_the_smallest_layer_is_refused(prepared):
    model, context = prepared
    units = budget_units(model, ("scale_bias", "logits"))
    with pytest.raises(UsageError) as error:
        select_layers(units, Budget.parse("10"), "last", context)
    assert str(error.value) == "budget 10 is 10 parameters; the smallest layer a task can keep private has 16"


@pytest.fixture(scope="module")
def budget_run(tmp_path_factory):
    """``edgepatch train --budget`` on small_cnn over PNG folders, then ``convert``: (root, train report)."""
    from edgepatch.cli.main import main

    root = tmp_path_factory.mktemp("budget")
    small_cnn(num_classes=5).save(str(root / "base_in.keras"))
    rng = np.random.default_rng(1)
    for split, count in (("train", 10), ("test", 4)):
        for label, name in enumerate(CLASSES):
            folder = root / "data" / split / name
            folder.mkdir(parents=True)
            for i in range(count):
                pixels = rng.integers(0, 120, (32, 32, 3)) + 60 * label
                Image.fromarray(pixels.astype(np.uint8)).save(folder / f"{i}.png")
    trained = CliRunner().invoke(main, [
        "train", "--weights", str(root / "base_in.keras"), "--resolution", "32", "--preprocessing", "tf",
        "--data", str(root / "data"), "--epochs", "1", "--batch-size", "8", "--budget", "50%",
        "--selector", "score", "--out", str(root / "run"), "--quiet", "--json"])
    assert trained.exit_code == 0, trained.output
    converted = CliRunner().invoke(main, ["convert", "--model", str(root / "run" / "base.keras"), "--patches",
                                          str(root / "run" / "data.patch"), "--out", str(root / "ship")])
    assert converted.exit_code == 0, converted.output
    return root, json.loads(trained.stdout)


def test_train_records_the_selection_and_trains_only_it(budget_run):
    from edgepatch.train.patchfile import read_patch

    root, report = budget_run
    config = report["config"]
    assert (config["budget"], config["selector"], config["full_parameters"]) == ("50%", "score", 64)
    assert config["selected_parameters"] <= 32 and config["budget_parameters"] == 32
    patch = read_patch(str(root / "run" / "data.patch"))
    assert patch.selection and set(patch.selection) < {"stem_norm", "dw_norm", "pw_norm"}
    head = 12 * 3 + 3
    assert report["trained_parameters"] == config["selected_parameters"] + head
    assert sorted({name.split("/")[0] for name in patch.tensors}) == sorted({*patch.selection, "classifier"})


def test_the_delta_holds_only_the_selected_sites_and_the_rest_stays_the_base(budget_run):
    from edgepatch.runtime import load_base, read_delta
    from edgepatch.train.patchfile import read_patch

    root, _ = budget_run
    patch = read_patch(str(root / "run" / "data.patch"))
    delta = read_delta(str(root / "ship" / "data.delta"))
    site_of = {"stem_norm": "stem", "dw_norm": "dw", "pw_norm": "pw"}
    assert set(delta.sites) == {site_of[name] for name in patch.selection} | {"classifier"}
    for name in ("base.tflite", "base.onnx"):
        base = load_base(str(root / "ship" / name))
        patched = base.patched_bytes(delta)
        assert len(patched) == len(base.bytes)
        untouched = np.ones(len(patched), bool)
        for site, slots in base.sites.items():
            if site in delta.sites:
                for slot in (slots.kernel, slots.bias):
                    untouched[slot.offset:slot.offset + 4 * slot.count] = False
        assert set(base.sites) - set(delta.sites)  # some sites are left out ...
        flat_base, flat_patched = np.frombuffer(base.bytes, np.uint8), np.frombuffer(bytes(patched), np.uint8)
        assert np.array_equal(flat_base[untouched], flat_patched[untouched])  # ... and keep the base's bytes


def test_a_budget_without_a_kind_to_narrow_is_one_error_line(tmp_path):
    from edgepatch.cli.main import main

    os.makedirs(tmp_path / "data" / "a")
    os.makedirs(tmp_path / "data" / "b")
    cases = [
        (["--mode", "multires", "--patch", "none", "--budget", "10%"],
         "error: a budget narrows a patch's scale_bias or depthwise kind. Received --patch none"),
        (["--patch", "logits", "--budget", "10%"], "error: a budget narrows a patch's scale_bias or depthwise kind. "
                                                   "Received --patch logits"),
        (["--budget", "lots"], "error: a budget is a parameter count (20000) or a percentage (25%). Received 'lots'"),
    ]
    for extra, message in cases:
        result = CliRunner().invoke(main, ["train", "--data", str(tmp_path / "data"), "--weights", "none",
                                           "--out", str(tmp_path / "out"), *extra])
        assert (result.exit_code, result.stderr.strip(), result.stdout) == (2, message, ""), result.output


def test_multires_keeps_a_budget_per_resolution_and_converts(budget_run):
    """Per resolution its own selection; the saved base holds the shared layers, so each delta converts
    and matches its Keras task model."""
    from edgepatch.cli.main import main
    from edgepatch.runtime import load_base, read_delta
    from edgepatch.train.patchfile import read_patch

    root, _ = budget_run
    out = root / "multires"
    trained = CliRunner().invoke(main, [
        "train", "--mode", "multires", "--weights", str(root / "base_in.keras"), "--preprocessing", "tf",
        "--data", str(root / "data"), "--resolutions", "32,48", "--patch", "scale_bias,logits", "--epochs", "1",
        "--batch-size", "8", "--budget", "32", "--selector", "last", "--out", str(out), "--quiet", "--json"])
    assert trained.exit_code == 0, trained.output
    patches = [read_patch(str(out / f"data_{size}.patch")) for size in (32, 48)]
    assert [p.selection for p in patches] == [("pw_norm", "stem_norm")] * 2
    assert [p.training["budget"] for p in patches] == ["32", "32"]
    result = CliRunner().invoke(main, ["convert", "--model", str(out / "base.keras"), "--patches",
                                       ",".join(str(out / f"data_{size}.patch") for size in (32, 48)),
                                       "--out", str(out / "ship"), "--json"])
    assert result.exit_code == 0, result.output
    for task in json.loads(result.stdout)["tasks"]:
        assert max(task["parity_max_abs"].values()) < 1e-4
        delta = read_delta(task["delta"])
        assert set(delta.sites) == {"pw", "stem", "classifier"}
        load_base(str(out / "ship" / "base.tflite")).apply(delta)
