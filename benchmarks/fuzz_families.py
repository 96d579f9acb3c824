"""Multi-field float and int8 delta mutations, and the semantic oracle that judges accepted ones (issue 17).

``benchmarks/fuzz_deltas.py`` runs them. A mutation decodes a valid file down to
its container (meta and tensors), changes 1 to 4 fields at once (a tensor's
shape with its bytes, values, site and quantization entries, classes,
resolution, ...) and encodes it again as a canonical, checksummed file of the
current version, so that every lie reaches the delta rules and the loader.

Oracle for a mutant the reader accepts and the base applies:

* float: the patched model differs from the base only inside the kernel and
  bias of sites the mutant names; the spec's limits hold (resolution
  8..1024, site scales 1e-12..1e12, a dense site as wide as the class list,
  no more classes than the base's head);
* int8: the patched model differs from the base only in the data of
  conv/depthwise/dense weights and biases and in the quantization of those and
  of activations (tensors without data), with scales in 1e-15..1e6, weight and
  bias zero points 0, activation zero points int8 and activation scales within
  64x of the base's (ownership computed here from the operators, independently
  of the loader);
* both: a run gives finite logits of one column per class, or an EdgepatchError.
"""

from __future__ import annotations

import json
import random
from dataclasses import dataclass

import numpy as np

from edgepatch.errors import EdgepatchError
from edgepatch.format.container import decode_tensor_file, encode_tensor_file

EVIL_FLOATS = [0.0, -0.0, 1e-40, 1e-13, 2e-12, 2e12, 3e38, -3e38, 65504.0, 1e-8, -1.0, 0.5, 1e6]
EVIL_INTS = [-(2**31), -129, -128, -1, 0, 1, 5, 127, 128, 2**31 - 1]
SITE_OPCODES = ("CONV_2D", "DEPTHWISE_CONV_2D", "FULLY_CONNECTED")


@dataclass(frozen=True)
class Mutant:
    kind: str
    data: bytes


def _pick(rng: random.Random, tensors: dict, prefix: str = "") -> str | None:
    names = [n for n in tensors if n.startswith(prefix) and tensors[n].size]
    return rng.choice(names) if names else None


def _values(tensors, rng, name, choices) -> None:
    flat = tensors[name].reshape(-1)
    for _ in range(rng.randint(1, 3)):
        with np.errstate(all="ignore"):  # a float for an int tensor (after a dtype step) wraps, as a C cast does
            flat[rng.randrange(flat.size)] = np.array(rng.choice(choices)).astype(flat.dtype)


def _reshape(tensors, rng, name) -> None:
    """A new shape and, with it, new bytes: elements dropped or added, axes swapped, a dim of 1 added or removed."""
    array = tensors[name]
    how = rng.choice(["fewer", "more", "swap", "unsqueeze", "squeeze"])
    flat = array.reshape(-1)
    if how == "fewer" and flat.size > 1:
        tensors[name] = flat[:-rng.randint(1, flat.size - 1)].copy()
    elif how == "more":
        tensors[name] = np.concatenate([flat, flat[:rng.randint(1, flat.size)]])
    elif how == "swap" and array.ndim > 1:
        tensors[name] = np.ascontiguousarray(np.swapaxes(array, 0, array.ndim - 1))
    elif how == "unsqueeze" and array.ndim < 4:
        tensors[name] = array[None]
    else:
        tensors[name] = array.reshape([d for d in array.shape if d != 1] or [1])


def _float_step(meta, tensors, rng) -> str:
    step = rng.choice(["values", "shape", "drop", "rename", "dtype", "reorder", "channels", "roles", "op",
                       "site_name", "classes", "resolution", "preprocessing"])
    name, sites, task = _pick(rng, tensors), meta["sites"], meta["task"]
    site = rng.choice(sites)
    if step == "values" and name:
        _values(tensors, rng, name, EVIL_FLOATS)
    elif step == "shape" and name:
        _reshape(tensors, rng, name)
    elif step == "drop" and name:
        del tensors[name]
    elif step == "rename" and name:
        tensors[f"{rng.choice(sites)[0]}/{rng.choice(['kernel', 'scale', 'bias'])}"] = tensors.pop(name)
    elif step == "dtype" and name:
        tensors[name] = tensors[name].astype(rng.choice([np.float16, np.float32, np.int32, np.uint8]))
    elif step == "reorder" and len(tensors) > 1:
        items = list(tensors.items())
        rng.shuffle(items)
        tensors.clear()
        tensors.update(items)
    elif step == "channels":
        site[2] = max(1, site[2] + rng.choice([-2, -1, 1, 2]))
    elif step == "roles":
        site[3] = rng.choice(["scale", "bias", "scale+bias", "kernel", "kernel+bias"])
    elif step == "op":
        site[1] = rng.choice(["conv", "depthwise", "dense"])
    elif step == "site_name":
        site[0] = rng.choice([s[0] for s in sites] + ["stem", "classifier", "nowhere"])
    elif step == "classes":
        task["classes"] = task["classes"][:-1] if rng.random() < 0.5 else task["classes"] + ["ghost"]
    elif step == "resolution":
        task["resolution"] = rng.choice([7, 8, 32, 1024, 1025, 4096])
    else:
        task["preprocessing"]["scale"][rng.randrange(3)] = rng.choice([0.0, 1e-31, 1e7, -1.0, 1e-30, 1e6])
    return step


def _quant_entry(meta, tensors, rng, layout) -> None:
    """A new quant entry for a tensor that has vectors of those lengths (in index order, the packing kept)."""
    index = rng.choice([i for i, (_, scales, _) in enumerate(layout) if scales])
    if index in [e[0] for e in meta["quant"]]:
        return
    at = sum(1 for e in meta["quant"] if e[0] < index)
    _, scales, zero_points = layout[index]
    scale_at = sum(e[1] for e in meta["quant"][:at])
    zero_at = sum(e[2] for e in meta["quant"][:at])
    meta["quant"].insert(at, [index, scales, zero_points])
    value = float(tensors["scale"][0]) if tensors["scale"].size else 0.01
    tensors["scale"] = np.insert(tensors["scale"], scale_at, np.full(scales, value, np.float32))
    tensors["zero_point"] = np.insert(tensors["zero_point"], zero_at, np.full(zero_points, rng.choice([0, 1, -5]),
                                                                            np.int32))


def _int8_step(meta, tensors, rng, layout) -> str:
    """One field of an int8 delta; ``layout``: per base tensor (data bytes, scales, zero points)."""
    step = rng.choice(["scales", "zero_points", "quant_index", "quant_entry", "quant_counts", "data_target",
                       "data_bytes", "edit", "refold_index", "refold_channels", "refold_codes", "rice_k",
                       "bias_step", "classes", "resolution"])
    tensor_count = len(layout)
    with_data = [i for i, (size, _, _) in enumerate(layout) if size]
    quant, refold, task = meta["quant"], meta.get("refold") or [], meta["task"]
    data = _pick(rng, tensors, "data/")
    if step == "scales" and tensors["scale"].size:
        base = float(tensors["scale"][0])
        _values(tensors, rng, "scale", EVIL_FLOATS + [base * 100, base / 100, base * 1.5, 1e-16, 2e6])
    elif step == "zero_points" and tensors["zero_point"].size:
        _values(tensors, rng, "zero_point", EVIL_INTS)
    elif step == "quant_index" and quant:
        rng.choice(quant)[0] = rng.randrange(tensor_count + 3)
    elif step == "quant_counts" and quant:
        entry, column = rng.choice(quant), rng.choice([1, 2])
        name = "scale" if column == 1 else "zero_point"
        at = sum(e[column] for e in quant[:quant.index(entry)])
        entry[column] += 1
        tensors[name] = np.insert(tensors[name], at, tensors[name][at - 1] if at else 1)
    elif step == "quant_entry":
        _quant_entry(meta, tensors, rng, layout)
    elif step == "data_target" and data:
        index = rng.choice(with_data)  # bytes of the target's own size: only ownership can refuse them
        tensors.pop(data)
        tensors[f"data/{index}"] = np.array([rng.randrange(256) for _ in range(layout[index][0])], np.uint8)
    elif step == "data_bytes" and data:
        _reshape(tensors, rng, data) if rng.random() < 0.5 else _values(tensors, rng, data, list(range(256)))
    elif step == "edit":
        index = rng.choice(with_data) if rng.random() < 0.8 else rng.randrange(tensor_count)
        size = layout[index][0] or 4096
        positions = sorted(rng.sample(range(size), min(size, rng.randint(1, 4))))
        tensors[f"at/{index}"] = np.array(positions, np.int32)
        tensors[f"put/{index}"] = np.array([rng.randrange(256) for _ in positions], np.uint8)
    elif step == "refold_index" and refold:
        rng.choice(refold)[rng.randrange(3)] = rng.randrange(tensor_count + 2)
    elif step == "refold_channels" and refold:
        entry = rng.choice(refold)
        entry[3] = max(1, entry[3] + rng.choice([-1, 1]))
    elif step == "refold_codes" and "refold/codes" in tensors:
        codes = tensors["refold/codes"]
        codes[rng.randrange(codes.size)] ^= np.uint8(1 << rng.randrange(8))
    elif step == "rice_k" and "refold/rice_k" in tensors:
        _values(tensors, rng, "refold/rice_k", list(range(17)))
    elif step == "bias_step" and "refold/bias_step" in tensors:
        _values(tensors, rng, "refold/bias_step", EVIL_FLOATS)
    elif step == "classes":
        task["classes"] = task["classes"][:-1] if rng.random() < 0.5 else task["classes"] + ["ghost"]
    else:
        task["resolution"] = rng.choice([7, 8, 32, 1024, 1025, 4096])
    return step


def mutate(original: bytes, kind: str, rng: random.Random, fields: int, layout: tuple = ()) -> Mutant | None:
    """``fields`` fields of a valid ``kind`` file changed together, re-encoded canonically (the current version).

    ``layout``: the int8 base's tensors (data bytes, scales, zero points), for an int8 delta (empty: a
    float delta). None when the container
    refuses what the steps made (e.g. a value that overflows float16): not a file.
    """
    stored = decode_tensor_file(original, kind)
    meta = json.loads(json.dumps(stored.meta))
    tensors = {name: np.array(array) for name, array in stored.tensors.items()}
    steps = sorted(_int8_step(meta, tensors, rng, layout) if layout else _float_step(meta, tensors, rng)
                   for _ in range(fields))
    try:
        return Mutant("+".join(steps), encode_tensor_file(kind, tensors, meta))
    except EdgepatchError:
        return None


def _changed(base: bytes, patched: bytes) -> np.ndarray:
    return np.flatnonzero(np.frombuffer(base, np.uint8) != np.frombuffer(patched, np.uint8))


def float_oracle(base, delta, patched: bytes) -> str | None:
    """Why an applied float mutant breaks the spec, or None (see the module docstring)."""
    allowed = np.zeros(len(base.bytes), bool)
    for name in delta.sites:
        for slot in (base.sites[name].kernel, base.sites[name].bias):
            allowed[slot.offset:slot.offset + 4 * slot.count] = True
    if not allowed[_changed(base.bytes, patched)].all():
        return "changed bytes outside the sites it names"
    scales = [v for n, v in delta.tensors.items() if n.endswith("/scale")]
    magnitudes = np.abs(np.concatenate(scales)).astype(np.float64) if scales else np.ones(1)
    heads = [n for n, op in delta.sites.items() if op == "dense"]
    head_width = next((s.bias.shape[0] for s in base.sites.values() if s.op == "dense"), 0)
    if not 8 <= delta.task.resolution <= 1024 or not ((magnitudes >= 1e-12) & (magnitudes <= 1e12)).all():
        return "resolution or site scale outside the spec's limits"
    if any(base.sites[h].bias.shape[0] < len(delta.task.classes) for h in heads) or \
            (head_width and len(delta.task.classes) > head_width):
        return "more classes than the head"
    return None


def _vector(data: bytes, field: tuple[int, int], dtype) -> np.ndarray:
    return np.frombuffer(data, dtype, field[1], field[0] if field[1] else 0)


def int8_oracle(base, delta, patched: bytes) -> str | None:
    """Why an applied int8 mutant breaks the spec, or None (see the module docstring)."""
    model = base.model
    owned = {i for op in model.ops if op.opcode in SITE_OPCODES and len(op.inputs) >= 3 for i in op.inputs[1:3]}
    allowed = np.zeros(len(base.bytes), bool)
    for tensor in model.tensors:
        activation = tensor.data_offset is None
        if tensor.index in owned and not activation:
            allowed[tensor.data_offset:tensor.data_offset + tensor.data_size] = True
        if tensor.index in owned or activation:
            for (offset, count), size in ((tensor.quant_scales, 4), (tensor.quant_zero_points, 8)):
                allowed[offset:offset + size * count] = True
            scales = _vector(patched, tensor.quant_scales, np.float32).astype(np.float64)
            zero_points = _vector(patched, tensor.quant_zero_points, np.int64)
            ratio = scales / _vector(base.bytes, tensor.quant_scales, np.float32)
            if not ((scales >= 1e-15) & (scales <= 1e6)).all():
                return f"tensor {tensor.index}: a scale outside 1e-15..1e6"
            int8 = ((zero_points >= -128) & (zero_points <= 127)).all()
            if activation and not (((ratio <= 64) & (ratio >= 1 / 64)).all() and int8):
                return f"activation {tensor.index}: scale past 64x the base's, or zero point outside int8"
            if not activation and zero_points.any():
                return f"weight or bias {tensor.index}: zero point not 0"
    if not allowed[_changed(base.bytes, patched)].all():
        return "changed bytes outside owned tensors and quantization"
    return None


DEADLINE_S = 2.0
ALLOCATION_FACTOR, ALLOCATION_SLACK = 4, 1 << 20
MAX_EXAMPLES = 10


@dataclass(frozen=True)
class Target:
    """What one family mutates: a valid file, its decoder, the base(s) it applies to (path, base), the oracle."""

    data: bytes
    kind: str
    decode: object
    bases: tuple
    oracle: object
    layout: tuple = ()  # an int8 base's tensors: (data bytes, scales, zero points) each


def _example(report: dict, key: str, text: str) -> None:
    report[key] += 1
    if len(report["examples"]) < MAX_EXAMPLES:
        report["examples"].append(f"{key}: {text}")


def _cli_check(path: str, base_path: str, image: str, report: dict) -> None:
    from click.testing import CliRunner

    from edgepatch.cli.main import main

    for args in (["inspect", path, "--base", base_path], ["run", "--base", base_path, "--delta", path, image]):
        result = CliRunner().invoke(main, args)
        lines = result.stderr.splitlines()
        good = result.exit_code == 0 or (result.exit_code == 2 and len(lines) == 1 and lines[0].startswith("error: ")
                                         and result.stdout == "")
        report["cli_runs"] += 1
        if not good:
            _example(report, "cli_failures", f"{args[0]}: exit {result.exit_code}, {result.stderr[-200:]!r}")


def _apply_and_run(target: Target, delta, report: dict) -> str:
    verdict = "ran"
    for _, base in target.bases:
        try:
            patched = bytes(base.patched_bytes(delta))
        except EdgepatchError:
            verdict = "refused_on_apply"
            continue
        why = target.oracle(base, delta, patched)
        if why:
            _example(report, "oracle_failures", why)
        try:
            size = delta.task.resolution
            logits = base.apply(delta).predict(np.full((1, size, size, 3), 0.5, np.float32))
        except EdgepatchError:
            verdict = "refused_on_run" if verdict == "ran" else verdict
            continue
        if logits.shape != (1, len(delta.task.classes)) or not np.all(np.isfinite(logits)):
            _example(report, "ran_non_finite", f"logits {logits.shape}")
    return verdict


def _one_case(target: Target, mutant: Mutant, report: dict, work: str, image: str, cli: bool) -> str:
    import os
    import tracemalloc

    tracemalloc.start()
    try:
        delta = target.decode(mutant.data, "<fuzz>")
    except EdgepatchError:
        return "rejected"
    finally:
        peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
        report["max_peak_alloc_bytes"] = max(report["max_peak_alloc_bytes"], peak)
        if peak > ALLOCATION_FACTOR * len(mutant.data) + ALLOCATION_SLACK:
            _example(report, "allocations_over_limit", f"{mutant.kind}: {peak} bytes")
    verdict = _apply_and_run(target, delta, report)
    report["accepted"] += 1
    if cli:
        path = os.path.join(work, "mutant.delta")
        with open(path, "wb") as handle:
            handle.write(mutant.data)
        _cli_check(path, target.bases[0][0], image, report)
    return verdict


def fuzz_structured(targets: list[Target], fields: tuple[int, int], cases: int, seed: str, work: str,
                    image: str, cli_every: int = 1) -> dict:
    """``cases`` mutants of the targets (in turn), each with ``fields`` = (fewest, most) fields changed.

    ``cli_every``: run ``edgepatch inspect`` and ``run`` on every this-many-th accepted mutant.
    """
    import collections
    import time
    import traceback

    report = {"cases": cases, "crashes": 0, "hangs": 0, "allocations_over_limit": 0, "oracle_failures": 0,
              "ran_non_finite": 0, "cli_failures": 0, "cli_runs": 0, "accepted": 0, "not_a_file": 0, "max_case_seconds": 0.0,
              "max_peak_alloc_bytes": 0, "verdicts": collections.Counter(),
              "by_step": collections.defaultdict(collections.Counter), "examples": []}
    for case in range(cases):
        rng = random.Random(f"{seed}/{case}")
        target = targets[case % len(targets)]
        mutant = mutate(target.data, target.kind, rng, rng.randint(*fields), target.layout)
        if mutant is None:
            report["not_a_file"] += 1
            continue
        started = time.perf_counter()
        try:
            verdict = _one_case(target, mutant, report, work, image, report["accepted"] % cli_every == 0)
        except Exception as error:  # noqa: BLE001 (counting crashes is the point)
            _example(report, "crashes", f"{mutant.kind}: {''.join(traceback.format_exception_only(error)).strip()}")
            verdict = "crash"
        seconds = time.perf_counter() - started
        report["max_case_seconds"] = round(max(report["max_case_seconds"], seconds), 3)
        if seconds > DEADLINE_S:
            _example(report, "hangs", f"{mutant.kind}: {seconds:.1f} s")
        report["verdicts"][verdict] += 1
        for step in set(mutant.kind.split("+")):
            report["by_step"][step][verdict] += 1
    return report


def structured_targets(delta_path: str, base_paths: list[str], repo: str) -> dict[str, list[Target]]:
    """The float delta on its bases, and the Java loader's golden int8 deltas (compact, exact) on theirs."""
    import os

    from edgepatch.format.delta import decode_delta
    from edgepatch.format.int8_delta import decode_int8_delta
    from edgepatch.runtime import load_base

    def read(path: str) -> bytes:
        with open(path, "rb") as handle:
            return handle.read()

    testdata = os.path.join(repo, "android_demo", "patchloader", "testdata")
    floats = [Target(read(delta_path), "delta", decode_delta, tuple((p, load_base(p)) for p in base_paths),
                     float_oracle)]
    int8 = []
    for mode in ("compact", "exact"):
        path = os.path.join(testdata, f"base_int8_{mode}.tflite")
        base = load_base(path)
        int8.append(Target(read(os.path.join(testdata, f"gamma_{mode}.int8.delta")), "int8_delta",
                           decode_int8_delta, ((path, base),), int8_oracle,
                           tuple((t.data_size if t.data_offset is not None else 0, t.quant_scales[1],
                                  t.quant_zero_points[1]) for t in base.model.tensors)))
    return {"float": floats, "int8": int8}


MUST_BE_ZERO = ("crashes", "hangs", "allocations_over_limit", "oracle_failures", "ran_non_finite", "cli_failures")
