"""int8 base + int8 task deltas (exact and compact): agreement with each task's own int8 model, sizes, errors."""

from __future__ import annotations

import dataclasses
import os

import numpy as np
import pytest
from helpers.models import make_patch, small_cnn, write_calibration


@pytest.fixture(scope="module")
def int8_ship(tmp_path_factory):
    from converters.convert import convert

    root = tmp_path_factory.mktemp("int8")
    base = small_cnn(num_classes=3)
    base.save(str(root / "base.keras"))
    task = make_patch(base, str(root / "kappa.patch"), "kappa", 3, seed=6)
    write_calibration(str(root), ("base", "kappa"))
    result = convert(str(root / "base.keras"), [str(root / "kappa.patch")], str(root / "ship"), formats=("tflite",),
                     quantize="int8", calibration_dir=str(root / "calibration"), int8_delta="exact")
    return root / "ship", task, result


@pytest.fixture(scope="module")
def compact_ship(int8_ship, tmp_path_factory):
    from converters.convert import convert

    root = int8_ship[0].parent
    result = convert(str(root / "base.keras"), [str(root / "kappa.patch")], str(root / "compact"),
                     formats=("tflite",), quantize="int8", calibration_dir=str(root / "calibration"),
                     int8_delta="compact")
    return root / "compact", result


def test_int8_delta_reproduces_the_task_int8_model(int8_ship):
    from edgepatch.runtime import TFLiteInt8Base, load_base, read_task_delta

    ship, task, result = int8_ship
    assert result.int8["deltas"]["kappa"]["max_abs_vs_task_int8"] == 0.0
    base = load_base(str(ship / "base_int8.tflite"))
    assert isinstance(base, TFLiteInt8Base)
    runner = base.apply(read_task_delta(str(ship / "kappa.int8.delta")))
    x = np.random.default_rng(2).uniform(-1, 1, (16, 32, 32, 3)).astype(np.float32)
    expected = np.asarray(task(x, training=False))
    got = runner.predict(x)
    assert np.max(np.abs(got - expected)) <= 0.1 * np.max(np.abs(expected))  # int8 rounding, not a wrong patch
    assert np.mean(np.argmax(got, 1) == np.argmax(expected, 1)) >= 0.8


def test_scale_patch_needs_no_new_conv_weights(int8_ship):
    """Per-channel weight quantization absorbs a positive per-channel scale: conv int8 kernels stay."""
    from edgepatch.runtime import load_base, read_task_delta

    ship, _, result = int8_ship
    assert result.int8["deltas"]["kappa"]["bytes"] == os.path.getsize(ship / "kappa.int8.delta")
    base = load_base(str(ship / "base_int8.tflite"))
    delta = read_task_delta(str(ship / "kappa.int8.delta"))
    conv_kernels = {op.inputs[1] for op in base.model.ops if op.opcode in ("CONV_2D", "DEPTHWISE_CONV_2D")}
    assert delta.data and not conv_kernels & set(delta.data)
    assert {str(base.model.tensors[i].dtype) for i in delta.data} <= {"int32", "int8"}
    assert len(delta.quant) > len(conv_kernels)  # weight scales and the task's activation ranges


def test_int8_delta_for_another_base_is_rejected(int8_ship):
    from edgepatch.errors import WrongBaseError
    from edgepatch.runtime import load_base, read_task_delta

    ship, _, _ = int8_ship
    delta = dataclasses.replace(read_task_delta(str(ship / "kappa.int8.delta")), base_sha256="cd" * 32)
    base = load_base(str(ship / "base_int8.tflite"))
    with pytest.raises(WrongBaseError) as error:
        base.apply(delta)
    assert str(error.value) == (
        f"int8 delta for task 'kappa' was made for base sha256 cdcdcdcdcdcdcdcd…, "
        f"but {ship / 'base_int8.tflite'} has sha256 {base.sha256[:16]}…"
    )


def test_float_delta_is_refused_by_the_int8_reader(int8_ship):
    from edgepatch.errors import HeaderError
    from edgepatch.format.int8_delta import read_int8_delta

    ship, _, _ = int8_ship
    with pytest.raises(HeaderError) as error:
        read_int8_delta(str(ship / "kappa.delta"))
    assert str(error.value) == f"{ship / 'kappa.delta'}: file_kind: expected 'int8_delta', got 'delta'"


def test_compact_delta_refolds_conv_scales_from_codes(int8_ship, compact_ship):
    """Compact: no conv scale vectors or biases shipped, a fraction of the bytes, nearly the same outputs."""
    from edgepatch.runtime import load_base, read_task_delta

    exact_dir, _, exact_result = int8_ship
    compact_dir, result = compact_ship
    assert result.int8["delta_mode"] == "compact" and exact_result.int8["delta_mode"] == "exact"
    compact_bytes = result.int8["deltas"]["kappa"]["bytes"]
    assert compact_bytes < exact_result.int8["deltas"]["kappa"]["bytes"]  # ~1/8 on MobileNetV2: benchmarks/int8_report.py
    assert result.int8["deltas"]["kappa"]["top1_agreement_vs_task_int8"] >= 0.8  # MIN_COMPACT_AGREEMENT
    base = load_base(str(compact_dir / "base_int8.tflite"))
    delta = read_task_delta(str(compact_dir / "kappa.int8.delta"))
    convs = [op for op in base.model.ops if op.opcode in ("CONV_2D", "DEPTHWISE_CONV_2D")]
    conv_constants = {i for op in convs for i in op.inputs[1:3]}
    refolded = {i for r in delta.refolds for i in (r.weight, r.bias)}
    assert {r.weight for r in delta.refolds} >= {op.inputs[1] for op in convs}
    assert not (refolded | conv_constants) & {index for index, scales, _ in delta.quant if scales}
    assert not {r.bias for r in delta.refolds} & (set(delta.data) | set(delta.edits))
    x = np.random.default_rng(2).uniform(-1, 1, (16, 32, 32, 3)).astype(np.float32)
    exact = load_base(str(exact_dir / "base_int8.tflite")).apply(
        read_task_delta(str(exact_dir / "kappa.int8.delta"))).predict(x)
    compact = base.apply(delta).predict(x)
    assert np.max(np.abs(compact - exact)) <= 0.1 * np.max(np.abs(exact))


def test_refold_arithmetic_matches_the_spec():
    """r from its bit pattern, scales in float32, the bias rounded half-to-even in float64."""
    from edgepatch.format.int8_delta import Refold, refolded, scale_codes_for, scale_factors

    codes = np.array([0, 1, -1, 128], np.int16)
    assert scale_factors(codes).tolist() == [1.0, 1.0078125, 0.99609375, 2.0]
    assert scale_codes_for(np.array([1.0, 1.005, 2.0, 0.996])).tolist() == [0, 1, 128, -1]
    entry = Refold(1, 2, 0, np.array([128, 0], np.int16), np.array([2, -3], np.int16), 0.25)
    weight_scale, bias_scale, bias = refolded(entry, np.array([0.5, 0.25], np.float32), np.array([10, -7], np.int32),
                                              np.array([0.125, 0.5], np.float32), 0.5)
    assert weight_scale.tolist() == [1.0, 0.25] and bias_scale.tolist() == [0.5, 0.125]
    # (10 * 0.125 + 2 * 0.25) / 0.5 = 3.5 -> 4 (half to even); (-7 * 0.5 - 3 * 0.25) / 0.125 = -34
    assert bias.tolist() == [4, -34]


def _rewritten(path, out, change):
    """Re-encode an int8 delta file with ``change(tensors, meta)`` applied (a valid container)."""
    from edgepatch.format.delta import read_tensor_file, write_tensor_file

    stored = read_tensor_file(str(path), "int8_delta")
    tensors, meta = dict(stored.tensors), dict(stored.meta)
    change(tensors, meta)
    write_tensor_file(str(out), "int8_delta", tensors, meta)
    return str(out)


def _set(tensors, name, value):
    tensors[name] = value


def _k(tensors, value):
    tensors["refold/rice_k"] = np.full_like(tensors["refold/rice_k"], value)


@pytest.mark.parametrize("change, error, message", [
    (lambda t, m: _set(t, "refold/codes", np.concatenate([t["refold/codes"], [255]]).astype(np.uint8)),
     "HeaderError", "{path}: refold/codes: {extra} bits are left over after the last value"),
    (lambda t, m: _set(t, "refold/codes", t["refold/codes"][:4]), "HeaderError",
     "{path}: refold/codes: {total} values cannot fit in 4 bytes"),
    (lambda t, m: _k(t, 16), "HeaderError", "{path}: refold/codes: parameter k=16 is outside 0..15"),
    (lambda t, m: _set(t, "refold/bias_step", np.zeros_like(t["refold/bias_step"])), "NonFiniteError",
     "{path}: refold/bias_step must be finite and > 0"),
    (lambda t, m: t.pop("refold/rice_k"), "HeaderError",
     "{path}: refold needs tensors ['refold/codes', 'refold/rice_k', 'refold/bias_step']; "
     "got ['refold/codes', 'refold/bias_step']"),
    (lambda t, m: m["refold"].reverse(), "HeaderError",
     "{path}: refold weight indices must be ascending and unique, bias indices unique"),
])
def test_bad_compact_deltas_are_refused(compact_ship, tmp_path, change, error, message):
    from edgepatch import errors
    from edgepatch.format.delta import read_tensor_file
    from edgepatch.format.int8_delta import read_int8_delta

    source = compact_ship[0] / "kappa.int8.delta"
    good = read_tensor_file(str(source), "int8_delta")
    total = 2 * sum(entry[3] for entry in good.meta["refold"])
    codes = good.tensors["refold/codes"]
    used = 8 * codes.size - int(np.unpackbits(codes)[::-1].argmax())  # bits up to the last 1 bit, at least
    path = _rewritten(source, tmp_path / "bad.int8.delta", change)
    with pytest.raises(getattr(errors, error)) as caught:
        read_int8_delta(path)
    expected = message.format(path=path, total=total, extra=8 * (codes.size + 1) - used)
    if "{extra}" in message:  # the padding after the last value is not known here: compare the rest
        assert str(caught.value).startswith(f"{path}: refold/codes: ") and str(caught.value).endswith(
            "bits are left over after the last value")
        assert int(str(caught.value).split(": ")[-1].split()[0]) >= 8
    else:
        assert str(caught.value) == expected


def test_compact_delta_with_wrong_channel_count_for_the_base(compact_ship):
    """A refold entry whose channel count differs from the base tensor's: ShapeMismatchError, nothing built."""
    from edgepatch.errors import ShapeMismatchError
    from edgepatch.format.int8_delta import Refold
    from edgepatch.runtime import load_base, read_task_delta

    ship, _ = compact_ship
    base = load_base(str(ship / "base_int8.tflite"))
    delta = read_task_delta(str(ship / "kappa.int8.delta"))
    first = delta.refolds[0]
    shorter = Refold(first.weight, first.bias, first.input, first.scale_codes[:-1], first.bias_codes[:-1],
                     first.bias_step)
    with pytest.raises(ShapeMismatchError) as caught:
        base.apply(dataclasses.replace(delta, refolds=(shorter,) + delta.refolds[1:]))
    assert str(caught.value).startswith(
        f"refold of tensors {first.weight}/{first.bias}/{first.input}: the delta has {first.channels - 1} channels; "
        f"base {ship / 'base_int8.tflite'} has an int8 kernel with {first.channels} scales")


def test_rice_codes_round_trip_and_refuse_bad_bits():
    from edgepatch.format import rice

    values = np.array([0, 1, -1, 5, -300, 32767, -32768], np.int16)
    runs = [(values, rice.best_k(values)), (np.zeros(9, np.int16), 0), (values[:2], 3)]
    data = rice.encode(runs)
    decoded = rice.decode(data, [(len(v), k) for v, k in runs])
    assert decoded.tolist() == values.tolist() + [0] * 9 + values[:2].tolist()
    # 0 at k = 0 is one 0 bit. Then [0, 1] at k = 3: remainders 000 010, quotients 0 0: 17 bits in all
    assert rice.encode([(np.zeros(9, np.int16), 0), (values[:2], 3)]) == bytes([0, 0b00000100, 0])
    for bad, runs_read, message in [
        (data[:-1], [(len(v), k) for v, k in runs], "the bits end inside a run's remainders"),
        (data + b"\x80", [(len(v), k) for v, k in runs], "bits are left over after the last value"),
        (bytes([0, 0b00000001, 0b10000000]), [(1, 15)], "a value is outside int16"),  # u = 2 << 15
        (b"\x00", [(9, 0)], "9 values cannot fit in 1 bytes"),
    ]:
        with pytest.raises(rice.RiceError) as caught:
            rice.decode(bad, runs_read)
        assert str(caught.value).endswith(message)


def test_auto_mode_keeps_compact_only_where_it_agrees(int8_ship, tmp_path):
    from converters.convert import convert
    from converters.quantize import AUTO_COMPACT_AGREEMENT

    root = int8_ship[0].parent
    result = convert(str(root / "base.keras"), [str(root / "kappa.patch")], str(tmp_path / "auto"),
                     formats=("tflite",), quantize="int8", calibration_dir=str(root / "calibration"))
    task = result.int8["deltas"]["kappa"]
    assert result.int8["delta_mode"] == "auto" and task["mode"] in ("compact", "exact")
    if task["mode"] == "compact":
        assert task["top1_agreement_vs_task_int8"] >= AUTO_COMPACT_AGREEMENT
    else:
        assert task["compact_check"]["top1_agreement_vs_task_int8"] < AUTO_COMPACT_AGREEMENT
        assert task["max_abs_vs_task_int8"] == 0.0


def test_mixed_kinds_are_refused_with_the_base_they_need(int8_ship):
    from edgepatch.errors import WrongBaseError
    from edgepatch.runtime import load_base, read_task_delta

    ship, _, _ = int8_ship
    float_base, int8_base = load_base(str(ship / "base.tflite")), load_base(str(ship / "base_int8.tflite"))
    with pytest.raises(WrongBaseError) as caught:
        int8_base.apply(read_task_delta(str(ship / "kappa.delta")))
    assert str(caught.value) == (f"float delta for task 'kappa' needs a float base; {ship / 'base_int8.tflite'} is an "
                                 "int8 base (it takes int8 deltas)")
    with pytest.raises(WrongBaseError) as caught:
        float_base.apply(read_task_delta(str(ship / "kappa.int8.delta")))
    assert str(caught.value) == (f"int8 delta for task 'kappa' needs an int8 base; {ship / 'base.tflite'} is a float "
                                 "base (it takes float deltas)")


@pytest.mark.parametrize("change, message", [
    (lambda t, m: _set(t, "data/3\n", np.zeros(4, np.uint8)),
     "{path}: int8 delta tensors must be scale, zero_point and data/<index>; got "),
    (lambda t, m: (_set(t, "at/2", np.array([2**31 - 1, -800], np.int32)), _set(t, "put/2", np.zeros(2, np.uint8))),
     "{path}: 'at/2' needs a 'put/2' of equal length and ascending positions"),
])
def test_int8_tensor_names_and_edit_positions_are_exact(int8_ship, tmp_path, change, message):
    from edgepatch.errors import HeaderError
    from edgepatch.format.int8_delta import read_int8_delta

    path = _rewritten(int8_ship[0] / "kappa.int8.delta", tmp_path / "bad.int8.delta", change)
    with pytest.raises(HeaderError) as caught:
        read_int8_delta(path)
    assert str(caught.value).startswith(message.format(path=path))


def test_inspect_describes_an_int8_base_by_its_ops(int8_ship):
    from edgepatch.apps.inspect import describe_file
    from edgepatch.runtime.tflite_file import parse_tflite

    path = str(int8_ship[0] / "base_int8.tflite")
    data = open(path, "rb").read()
    info = describe_file(path)
    assert info["kind"] == "base" and info["format"] == "tflite_int8" and info["bytes"] == len(data)
    model = parse_tflite(data, path)
    assert info["tensors"] == len(model.tensors) and sum(info["ops"].values()) == len(model.ops)
    assert info["ops"]["CONV_2D"] >= 3 and info["ops"]["FULLY_CONNECTED"] == 1
