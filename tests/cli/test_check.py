"""``edgepatch check``: every layer convert would refuse, with its remedy, and the report on good models.

Bad models are tiny (16 px), saved as .keras and checked in-process through click's CliRunner
(or through ``check_model`` where Keras cannot save the model). ``train`` runs the same scan
and stops before the first epoch.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
from click.testing import CliRunner
from helpers.models import set_real_bn_statistics, small_cnn
from PIL import Image

from edgepatch.apps import check as checking
from edgepatch.cli.main import main

KINDS = ("scale_bias", "logits")
REPORT_KEYS = {"model", "notes", "sites", "parameters", "preprocessing", "refused", "ok"}


def _pooled_head(x, name="head"):
    from keras import layers

    return layers.Dense(3, name=name)(layers.GlobalAveragePooling2D(name="pool")(x))


def _model(build, name="m"):
    """keras.Model(Input(16, 16, 3), build(input)), named ``name``."""
    import keras

    inputs = keras.Input((16, 16, 3), name="pixels")
    return keras.Model(inputs, build(inputs), name=name)


def _middle_dense(x):
    from keras import layers

    x = layers.Conv2D(4, 3, name="conv")(x)
    x = layers.Dense(8, name="mid_dense")(layers.GlobalAveragePooling2D(name="pool")(x))
    return layers.Dense(3, name="head")(x)


def _odd_layers(x):
    from keras import layers

    x = layers.Conv2DTranspose(4, 3, name="up")(x)
    x = layers.LayerNormalization(name="ln")(x)
    x = layers.PReLU(name="prelu")(x)
    x = layers.Reshape((-1, 4), name="flat")(x)
    x = layers.Conv1D(4, 3, name="conv1d")(x)
    return layers.Dense(3, name="head")(layers.GlobalAveragePooling1D(name="pool")(x))


def _channels_first(x):
    from keras import layers

    x = layers.Permute((3, 1, 2), name="to_nchw")(x)
    x = layers.Conv2D(4, 3, data_format="channels_first", name="nchw_conv")(x)
    x = layers.BatchNormalization(axis=1, name="nchw_bn")(x)
    return layers.Dense(3, name="head")(layers.GlobalAveragePooling2D(data_format="channels_first", name="pool")(x))


def _shared_conv(x):
    from keras import layers

    conv = layers.Conv2D(3, 3, padding="same", name="twice")
    return _pooled_head(conv(conv(x)))


def _conv_output(x):
    from keras import layers

    return layers.Conv2D(3, 3, name="last_conv")(x)


def _relu_head(x):
    from keras import layers

    return layers.Dense(3, activation="relu", name="head")(layers.GlobalAveragePooling2D(name="pool")(x))


def _two_outputs(x):
    from keras import layers

    pooled = layers.GlobalAveragePooling2D(name="pool")(layers.Conv2D(4, 3, name="conv")(x))
    return [layers.Dense(3, name="head_a")(pooled), layers.Dense(2, name="head_b")(pooled)]


def _two_inputs():
    import keras
    from keras import layers

    a, b = keras.Input((16, 16, 3), name="a"), keras.Input((16, 16, 3), name="b")
    return keras.Model([a, b], _pooled_head(layers.Add(name="sum")([a, b])), name="two_in")


def _gray_input():
    import keras

    inputs = keras.Input((16, 16, 1), name="gray")
    return keras.Model(inputs, _pooled_head(keras.layers.Conv2D(4, 3, name="conv")(inputs)), name="gray_model")


def _refused(layer, kind, problem_part, remedy):
    return layer, kind, problem_part, remedy


UNPLACEABLE = "has weights but is neither a conv"
# (model builder, [(layer, type, part of the problem, remedy)]) in the order check reports them
BAD_MODELS = {
    "dense_in_the_middle": (lambda: _model(_middle_dense), [
        _refused("mid_dense", "Dense", UNPLACEABLE, checking._LAYER_REMEDIES["Dense"])]),
    "odd_layers": (lambda: _model(_odd_layers), [
        _refused("up", "Conv2DTranspose", UNPLACEABLE, checking._TRANSPOSE_REMEDY),
        _refused("ln", "LayerNormalization", UNPLACEABLE, checking._NORM_REMEDY),
        _refused("prelu", "PReLU", UNPLACEABLE, "use a weightless activation instead (ReLU, LeakyReLU)"),
        _refused("conv1d", "Conv1D", UNPLACEABLE, checking._CONV_ND_REMEDY)]),
    "channels_first": (lambda: _model(_channels_first), [
        _refused("nchw_conv", "Conv2D", "Received data_format='channels_first'", checking._CONV_REMEDY),
        _refused("nchw_bn", "BatchNormalization", "Received axis=1",
                 "normalise the channel axis, BatchNormalization(axis=-1), on channels_last features")]),
    "shared_layer": (lambda: _model(_shared_conv), [
        _refused("twice", "Conv2D", "is called 2 times in model `m`", checking._SHARED_REMEDY)]),
    "output_not_dense": (lambda: _model(_conv_output), [
        _refused("last_conv", "Conv2D", "the output must come from a Dense layer", checking._HEAD_REMEDY)]),
    "relu_head": (lambda: _model(_relu_head), [
        _refused("head", "Dense", "Received activation='relu'",
                 "build `head` with activation=None; edgepatch trains and ships logits")]),
    "two_outputs": (lambda: _model(_two_outputs), [
        _refused("m", "Functional", "must have exactly one output. Received 2",
                 "keep one output: keras.Model(model.input, model.outputs[i])")]),
    "two_inputs": (_two_inputs, [
        _refused("two_in", "Functional", "has 2 inputs",
                 "give the model one input, keras.Input((R, R, 3)), and compute the rest inside it")]),
    "gray_input": (_gray_input, [
        _refused("gray_model", "Functional", "input shape (16, 16, 1) is not (height, width, 3)",
                 "take RGB images, keras.Input((R, R, 3)); a Rescaling/Normalization layer may follow")]),
}


def _check(path, *options):
    return CliRunner().invoke(main, ["check", str(path), *options])


def _assert_refusals(report, expected):
    got = [(r["layer"], r["type"], r["remedy"]) for r in report["refused"]]
    assert got == [(layer, kind, remedy) for layer, kind, _, remedy in expected]
    for refusal, (_, _, problem, _) in zip(report["refused"], expected):
        assert problem in refusal["problem"]
    assert report["ok"] is False


@pytest.mark.parametrize("name", BAD_MODELS)
def test_check_names_every_refused_layer_with_its_remedy(name, tmp_path):
    build, expected = BAD_MODELS[name]
    path = tmp_path / f"{name}.keras"
    build().save(path)
    result = _check(path, "--json", "--preprocessing", "tf")
    report = json.loads(result.stdout)
    _assert_refusals(report, expected)
    first = report["refused"][0]
    count = f"{len(expected)} layer{'s' if len(expected) > 1 else ''}"
    assert result.exit_code == 2
    assert result.stderr == (f"error: {count} would be refused by convert (first: {first['problem']}; "
                             f"remedy: {first['remedy']})\n")


def test_models_without_a_graph_are_one_refusal_each():
    import keras

    class Subclassed(keras.Model):
        def __init__(self):
            super().__init__(name="mine")
            self.conv, self.head = keras.layers.Conv2D(4, 3), keras.layers.Dense(3)

        def call(self, x):
            return self.head(keras.ops.mean(self.conv(x), axis=(1, 2)))

    subclassed = Subclassed()
    subclassed(np.zeros((1, 16, 16, 3), np.float32))
    no_input = keras.Sequential([keras.layers.Conv2D(4, 3), keras.layers.Dense(3)], name="seq")
    for model, kind, remedy in [(subclassed, "Subclassed", "rebuild it as a functional model"),
                                (no_input, "Sequential", "start it with keras.Input((R, R, 3)) before its first layer")]:
        report = checking.check_model(model, KINDS, "tf")
        assert [(r["layer"], r["type"]) for r in report["refused"]] == [(model.name, kind)]
        assert report["refused"][0]["remedy"].startswith(remedy)
        assert report["sites"] is None and report["parameters"]["total"] is None


def test_a_graph_canonical_model_cannot_rewrite_still_lists_every_refusal():
    from keras import layers

    def build(x):
        x = layers.SeparableConv2D(4, 3, data_format="channels_first", name="sep_nchw")(x)
        x = layers.Dense(5, name="mid_dense")(layers.Flatten(name="flat")(x))
        return layers.Dense(3, activation="softmax", name="probs")(x)

    report = checking.check_model(_model(build), KINDS, "tf")
    assert [(r["layer"], r["remedy"]) for r in report["refused"]] == [
        ("sep_nchw", checking._CONV_REMEDY), ("mid_dense", checking._LAYER_REMEDIES["Dense"])]


def test_a_good_model_lists_sites_parameters_and_preprocessing(tmp_path):
    model = small_cnn(num_classes=4)
    path = tmp_path / "good.keras"
    model.save(path)
    result = _check(path, "--json", "--base", "resnet50")
    assert (result.exit_code, result.stderr) == (0, "")
    report = json.loads(result.stdout)
    assert set(report) == REPORT_KEYS and report["ok"] and report["refused"] == [] and report["notes"] == []
    assert [(s["name"], s["op"], s["bn"], s["kinds"]) for s in report["sites"]] == [
        ("stem", "conv", "stem_norm", {"scale_bias": ["scale", "bias"]}),
        ("dw", "depthwise", "dw_norm", {"scale_bias": ["scale", "bias"]}),
        ("pw", "conv", "pw_norm", {"scale_bias": ["scale", "bias"]}),
        ("plain_conv", "conv", None, {}),
        ("classifier", "dense", None, {"logits": ["kernel", "bias"]})]
    assert [s["parameters"] for s in report["sites"]] == [  # what a budget keeps or shares, per site
        {"scale_bias": 16}, {"scale_bias": 32}, {"scale_bias": 16}, {}, {"logits": 12 * 4 + 4}]
    gamma_beta = 2 * (8 + 16 + 8)
    head = 12 * 4 + 4
    assert report["parameters"] == {"kinds": {"scale_bias": gamma_beta, "logits": head}, "total": gamma_beta + head}
    assert report["preprocessing"] == {"mode": "caffe", "scale": [1.0, 1.0, 1.0],
                                       "offset": [-103.939, -116.779, -123.68], "channels": "bgr"}
    text = _check(path, "--patch", "depthwise")
    assert text.exit_code == 0
    assert "  dw " in text.stdout and "depthwise (kernel/bias, 144)" in text.stdout
    assert "parameters: depthwise 144; total 144" in text.stdout
    assert "preprocessing: cannot tell the model's preprocessing" in text.stdout
    assert text.stdout.rstrip().endswith("convert would accept this model")


def _nested_separable():
    """Keras' transfer recipe around a backbone holding a SeparableConv2D and a Rescaling input."""
    import keras
    from keras import layers

    inner_in = keras.Input((16, 16, 3))
    x = layers.Rescaling(1 / 255.0, name="rescale")(inner_in)
    x = layers.Conv2D(6, 3, strides=2, use_bias=False, name="stem")(x)
    x = layers.BatchNormalization(name="stem_bn")(x)
    x = layers.SeparableConv2D(10, 3, padding="same", use_bias=False, name="sep")(layers.ReLU(name="relu")(x))
    x = layers.BatchNormalization(name="sep_bn")(x)
    backbone = keras.Model(inner_in, layers.GlobalAveragePooling2D(name="pool")(x), name="backbone")
    set_real_bn_statistics(backbone)
    inputs = keras.Input((16, 16, 3))
    outputs = layers.Dense(3, name="head")(layers.Dropout(0.2, name="drop")(backbone(inputs, training=False)))
    return keras.Model(inputs, outputs, name="outer"), backbone


def test_a_nested_separable_model_counts_every_gamma_beta_inside(tmp_path):
    import keras

    model, backbone = _nested_separable()
    path = tmp_path / "nested.keras"
    model.save(path)
    result = _check(path, "--json")
    assert (result.exit_code, result.stderr) == (0, ""), result.stderr
    report = json.loads(result.stdout)
    assert [(s["name"], s["op"], s["bn"]) for s in report["sites"]] == [
        ("stem", "conv", "stem_bn"), ("sep_depthwise", "depthwise", None), ("sep", "conv", "sep_bn"),
        ("head", "dense", None)]
    inside = sum(int(np.prod(v.shape)) for layer in backbone.layers
                 if isinstance(layer, keras.layers.BatchNormalization) for v in (layer.gamma, layer.beta))
    assert inside == 2 * (6 + 10)
    assert report["parameters"]["kinds"] == {"scale_bias": inside, "logits": 10 * 3 + 3}
    assert any("inlined sub-model `backbone`" in note for note in report["notes"])
    assert any("split SeparableConv2D `sep`" in note for note in report["notes"])
    assert report["preprocessing"]["mode"] == "raw"  # auto: the model rescales inside


def test_check_option_errors_are_one_line_with_empty_stdout(tmp_path):
    notes = tmp_path / "notes.txt"
    notes.write_text("x")
    cases = {
        (str(tmp_path / "nope.keras"),): f"error: model '{tmp_path / 'nope.keras'}' does not exist",
        (str(notes),): f"error: check reads a .keras model file. Received '{notes}'",
        (str(tmp_path),): f"error: check reads a .keras model file. Received '{tmp_path}'",
        (str(notes), "--patch", "bogus"): "error: unknown patch kind 'bogus'. Allowed: scale_bias, depthwise, logits",
    }
    for args, message in cases.items():
        result = CliRunner().invoke(main, ["check", *args])
        assert (result.exit_code, result.stderr, result.stdout) == (2, message + "\n", ""), args
    junk = tmp_path / "junk.keras"
    junk.write_bytes(bytes(range(64)))
    result = CliRunner().invoke(main, ["check", str(junk), "--json"])
    assert (result.exit_code, result.stdout, len(result.stderr.splitlines())) == (2, "", 1)
    assert result.stderr.startswith(f"error: '{junk}' is not a loadable Keras model: ")


def _image_folders(root):
    rng = np.random.default_rng(0)
    for label in ("a", "b"):
        (root / label).mkdir(parents=True)
        for i in range(3):
            Image.fromarray(rng.integers(0, 256, (16, 16, 3), dtype=np.uint8)).save(root / label / f"{i}.png")
    return root


def test_train_stops_before_the_first_epoch_when_convert_would_refuse(tmp_path):
    path = tmp_path / "odd.keras"
    _model(_odd_layers).save(path)
    data, out = _image_folders(tmp_path / "data"), tmp_path / "out"
    result = CliRunner().invoke(main, ["train", "--weights", str(path), "--data", str(data), "--resolution", "16",
                                       "--epochs", "1", "--preprocessing", "tf", "--out", str(out)])
    first = checking.refusals(_model(_odd_layers))[0]
    assert result.exit_code == 2 and result.stdout == ""
    assert result.stderr == (f"error: model would be refused by convert: {first.problem} ({first.remedy}); "
                             f"3 more; run `edgepatch check {path}` for all\n")
    assert not out.exists() or not list(out.glob("*.patch"))


def test_check_help_does_not_import_tensorflow():
    import subprocess
    import sys

    from conftest import REPO

    code = ("import sys\nfrom edgepatch.cli.main import main\n"
            "try:\n    main(['check', '--help'])\nexcept SystemExit:\n    pass\n"
            "print('tensorflow' in sys.modules, 'keras' in sys.modules)")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, timeout=120)
    assert "edgepatch check my_model.keras" in result.stdout
    assert result.stdout.splitlines()[-1] == "False False", result.stderr
