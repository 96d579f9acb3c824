"""Fuzz real deltas and manifests (>= 10,000 mutations each); print the counts as JSON.

Each case mutates a real file (``tests/helpers/mutations.py``: bit flips, truncation,
header lies about sizes, offsets, dtypes and shapes, huge declared lengths,
duplicate names, NaN/Inf payloads, manifest lies and path traversal) and
judges the reader:

* ``crashes``: an exception outside ``EdgepatchError`` (must be 0);
* ``accepted_invalid``: a mutated file accepted although invalid (must be 0);
* ``allocations_over_limit``: decodes whose peak Python allocation (tracemalloc)
  exceeded ``4 * file size + 1 MiB`` (must be 0: lies must not drive allocation);
* deltas that stay valid are applied to the TFLite and ONNX bases: a runtime
  may refuse them (an EdgepatchError, when applied or when run on a constant
  image) but must not crash, nor return NaN/Inf logits (``ran_non_finite``,
  must be 0);
* every changed manifest must fail its signature.

Then four structured families (``fuzz_families.py``), each ``--cases`` cases: float and int8
deltas (the int8 ones are the golden compact and exact deltas of the Java loader's test
data, on their own bases), with one field changed (``single``) or 2 to 4 at once
(``multi``: e.g. a tensor's shape, nbytes and bytes, and the site entry or class list that
should match them). Each mutant is decoded, applied and run; must be 0:

* ``crashes`` (anything but an EdgepatchError), ``hangs`` (a case over ``DEADLINE_S``),
  ``allocations_over_limit`` (decode peak over 4x the file + 1 MiB);
* ``oracle_failures``: an applied mutant that changed bytes it may not, or broke a limit
  of the spec (``fuzz_families`` docstring); ``ran_non_finite``; ``cli_failures``:
  ``edgepatch inspect`` or ``run`` on an accepted mutant ended other than exit 0, or exit
  2 with exactly one ``error:`` line.

Usage::

    python benchmarks/fuzz_deltas.py --cases 10000 --seed 0 [--ship DIR] [--out result.json]

Exits 1 if any must-be-0 count is not 0.
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import random
import sys
import tempfile
import time
import traceback
import tracemalloc

import numpy as np

from ship_fixture import REPO, ensure_ship, use_repo_paths

use_repo_paths()

from helpers.mutations import judge_delta, judge_manifest, mutate_delta, mutate_manifest  # noqa: E402
from fuzz_families import MUST_BE_ZERO, fuzz_structured, structured_targets  # noqa: E402
from PIL import Image  # noqa: E402

from edgepatch.ship.bundle import pack_bundle, ship_inputs  # noqa: E402
from edgepatch.format.delta import decode_delta, encode_delta  # noqa: E402
from edgepatch.errors import EdgepatchError, SignatureError  # noqa: E402
from edgepatch.ship.manifest import encode_manifest, parse_manifest  # noqa: E402
from edgepatch.runtime import load_base  # noqa: E402
from edgepatch.ship.signing import trusted_keys, verify_manifest, write_keypair  # noqa: E402

ALLOCATION_FACTOR, ALLOCATION_SLACK = 4, 1 << 20
MAX_EXAMPLES = 10


def _record_crash(report: dict, kind: str, error: BaseException) -> None:
    report["crashes"] += 1
    if len(report["crash_examples"]) < MAX_EXAMPLES:
        report["crash_examples"].append(f"{kind}: {''.join(traceback.format_exception_only(error)).strip()}")


def _judged_decode(original: bytes, mutation, report: dict) -> str:
    tracemalloc.reset_peak()
    before = tracemalloc.get_traced_memory()[0]
    verdict = judge_delta(original, mutation, lambda b: decode_delta(b, "<fuzz>"), encode_delta)
    peak = tracemalloc.get_traced_memory()[1] - before
    report["max_peak_alloc_bytes"] = max(report["max_peak_alloc_bytes"], peak)
    if peak > ALLOCATION_FACTOR * len(mutation.data) + ALLOCATION_SLACK:
        report["allocations_over_limit"] += 1
    return verdict


def fuzz_deltas(original: bytes, bases: dict, cases: int, seed: int) -> dict:
    report = {"cases": cases, "crashes": 0, "accepted_invalid": 0, "allocations_over_limit": 0,
              "ran_non_finite": 0, "max_peak_alloc_bytes": 0, "file_bytes": len(original), "verdicts": collections.Counter(),
              "by_kind": collections.defaultdict(collections.Counter), "applied": collections.Counter(),
              "crash_examples": []}
    tracemalloc.start()
    for case in range(cases):
        mutation = mutate_delta(original, random.Random(f"{seed}/delta/{case}"))
        try:
            verdict = _judged_decode(original, mutation, report)
        except Exception as error:  # noqa: BLE001 (counting crashes is the point)
            _record_crash(report, mutation.kind, error)
            verdict = "crash"
        report["verdicts"][verdict] += 1
        report["by_kind"][mutation.kind][verdict] += 1
        report["accepted_invalid"] += verdict == "accepted_invalid"
        if verdict == "accepted_valid":
            for fmt, base in bases.items():
                try:
                    delta = decode_delta(mutation.data, "<fuzz>")
                    size = delta.task.resolution
                    logits = base.apply(delta).predict(np.full((1, size, size, 3), 0.5, np.float32))
                    report["applied"][f"{fmt}_ran"] += 1
                    report["ran_non_finite"] += not np.all(np.isfinite(logits))
                except EdgepatchError:
                    report["applied"][f"{fmt}_refused"] += 1
                except Exception as error:  # noqa: BLE001
                    _record_crash(report, f"apply {fmt} after {mutation.kind}", error)
    tracemalloc.stop()
    return report


def fuzz_manifests(original: bytes, signature: bytes, trusted: dict, cases: int, seed: int) -> dict:
    report = {"cases": cases, "crashes": 0, "accepted_invalid": 0, "signature_accepted_changed": 0,
              "verdicts": collections.Counter(), "by_kind": collections.defaultdict(collections.Counter),
              "crash_examples": []}
    for case in range(cases):
        mutation = mutate_manifest(original, random.Random(f"{seed}/manifest/{case}"))
        try:
            verdict = judge_manifest(original, mutation, parse_manifest, encode_manifest)
            if mutation.data != original:
                try:
                    verify_manifest(mutation.data, signature, trusted)
                    report["signature_accepted_changed"] += 1
                except SignatureError:
                    pass
        except Exception as error:  # noqa: BLE001
            _record_crash(report, mutation.kind, error)
            verdict = "crash"
        report["verdicts"][verdict] += 1
        report["by_kind"][mutation.kind][verdict] += 1
        report["accepted_invalid"] += verdict == "accepted_invalid"
    return report


STRUCTURED = {"float_single": ("float", (1, 1)), "float_multi": ("float", (2, 4)),
              "int8_single": ("int8", (1, 1)), "int8_multi": ("int8", (2, 4))}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cases", type=int, default=10_000, help="mutations per family")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--ship", default=None, help="a convert output dir (default: build a small one)")
    parser.add_argument("--families", default="single,manifest," + ",".join(STRUCTURED),
                        help="which to run (default: all): single (the float delta, one field of the container), "
                             "manifest, " + ", ".join(STRUCTURED))
    parser.add_argument("--cli-every", type=int, default=1,
                        help="run `edgepatch inspect` and `run` on every N-th accepted structured mutant (default: all)")
    parser.add_argument("--out", default=None, help="also write the JSON result here")
    args = parser.parse_args()
    families = [f.strip() for f in args.families.split(",") if f.strip()]
    unknown = sorted(set(families) - {"single", "manifest", *STRUCTURED})
    if args.cases < 1 or args.cli_every < 1 or unknown:
        parser.error(f"--cases must be >= 1 and --families known; received {args.cases}, unknown {unknown}")
    started = time.perf_counter()
    result = {"seed": args.seed, "ship": args.ship or "built: small CNN, task gamma"}
    with tempfile.TemporaryDirectory(prefix="edgepatch-fuzz-") as work:
        ship = ensure_ship(args.ship, work)
        bases, deltas = ship_inputs(ship)
        read = lambda *parts: open(os.path.join(*parts), "rb").read()  # noqa: E731
        if "single" in families:
            runtime_bases = {fmt: load_base(path) for fmt, path in bases.items()}
            result["delta"] = fuzz_deltas(read(deltas[0]), runtime_bases, args.cases, args.seed)
        if "manifest" in families:
            private, public, _ = write_keypair(os.path.join(work, "key"))
            bundle = pack_bundle(bases, deltas[:1], os.path.join(work, "bundle"), "1", private)
            result["manifest"] = fuzz_manifests(read(bundle.path, "manifest.json"), read(bundle.path, "manifest.sig"),
                                                trusted_keys(public), args.cases, args.seed)
        targets = structured_targets(deltas[0], list(bases.values()), REPO)
        image = os.path.join(work, "image.png")
        Image.fromarray(np.full((48, 48, 3), 128, np.uint8)).save(image)
        for family in (f for f in families if f in STRUCTURED):
            kind, fields = STRUCTURED[family]
            result[family] = fuzz_structured(targets[kind], fields, args.cases, f"{args.seed}/{family}", work, image,
                                             args.cli_every)
    result["seconds"] = round(time.perf_counter() - started, 1)
    text = json.dumps(result, indent=2, sort_keys=True)
    print(text)
    if args.out:
        with open(args.out, "w") as handle:
            handle.write(text + "\n")
    bad = [result["delta"][k] for k in ("crashes", "accepted_invalid", "allocations_over_limit", "ran_non_finite")
           if "delta" in result]
    bad += [result["manifest"][k] for k in ("crashes", "accepted_invalid", "signature_accepted_changed")
            if "manifest" in result]
    bad += [result[family][k] for family in STRUCTURED if family in result for k in MUST_BE_ZERO]
    return 1 if any(bad) else 0


if __name__ == "__main__":
    sys.exit(main())
