"""Property-based fuzzing of real deltas and manifests (a few hundred cases; benchmarks/fuzz_deltas.py runs 10,000+).

Readers raise only EdgepatchError subclasses; they accept a mutated file only
if it is still valid (reference check + round trip); a runtime base returns
a model only for such a delta, and that model returns finite logits or a
NonFiniteError; a signed manifest accepts no changed byte. The structured
families (benchmarks/fuzz_families.py: float and int8, one field or several
changed together) also hold every applied mutant to the semantic oracle and
run ``edgepatch inspect`` and ``run`` on each accepted one.
"""

from __future__ import annotations

import os

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from helpers.mutations import judge_delta, judge_manifest, mutate_delta, mutate_manifest

from edgepatch.ship.bundle import pack_bundle, ship_inputs
from edgepatch.format.delta import decode_delta, encode_delta
from edgepatch.errors import EdgepatchError, SignatureError
from edgepatch.ship.manifest import encode_manifest, parse_manifest
from edgepatch.runtime import load_base
from edgepatch.ship.signing import trusted_keys, verify_manifest, write_keypair

FUZZ = settings(max_examples=150, deadline=None, derandomize=True, database=None,
                suppress_health_check=[HealthCheck.too_slow])


@pytest.fixture(scope="module")
def originals(small_ship, tmp_path_factory):
    """(delta bytes, tflite base, manifest bytes, signature bytes, trusted keys) of a real shipment."""
    ship = str(small_ship[0])
    root = tmp_path_factory.mktemp("fuzz")
    private, public, _ = write_keypair(str(root / "key"))
    bundle = pack_bundle(*ship_inputs(ship), str(root / "bundle"), "1", private)
    read = lambda *parts: open(os.path.join(*parts), "rb").read()  # noqa: E731
    return (read(ship, "gamma.delta"), load_base(os.path.join(ship, "base.tflite")),
            read(bundle.path, "manifest.json"), read(bundle.path, "manifest.sig"), trusted_keys(public))


def decode(data: bytes):
    return decode_delta(data, "<fuzz>")


@FUZZ
@given(rng=st.randoms(use_true_random=False))
def test_mutated_deltas_raise_only_edgepatch_errors_and_never_run_invalid(originals, rng):
    delta_bytes, base = originals[0], originals[1]
    mutation = mutate_delta(delta_bytes, rng)
    verdict = judge_delta(delta_bytes, mutation, decode, encode_delta)
    assert verdict in ("rejected", "unchanged", "accepted_valid"), (mutation.kind, verdict)
    if verdict == "rejected":
        return
    try:  # only a delta that is still valid gets this far; the base may still refuse it, or its run
        delta = decode(mutation.data)
        size = delta.task.resolution
        logits = base.apply(delta).predict(np.full((1, size, size, 3), 0.5, np.float32))
    except EdgepatchError:
        return
    assert logits.shape == (1, len(delta.task.classes)) and np.all(np.isfinite(logits))


@FUZZ
@given(rng=st.randoms(use_true_random=False))
def test_mutated_manifests_raise_only_bundle_errors_and_fail_the_signature(originals, rng):
    manifest, signature, trusted = originals[2], originals[3], originals[4]
    mutation = mutate_manifest(manifest, rng)
    verdict = judge_manifest(manifest, mutation, parse_manifest, encode_manifest)
    assert verdict in ("rejected", "unchanged", "accepted_valid"), (mutation.kind, verdict)
    if mutation.data != manifest:
        with pytest.raises(SignatureError):
            verify_manifest(mutation.data, signature, trusted)


@settings(max_examples=60, deadline=None, derandomize=True, database=None)
@given(data=st.binary(max_size=300))
def test_arbitrary_bytes(originals, data):
    """Bytes with no relation to a real file: signature files, manifests and deltas all refuse cleanly."""
    for reader in (decode, parse_manifest, lambda b: verify_manifest(originals[2], b, originals[4])):
        with pytest.raises(EdgepatchError):
            reader(data)


STRUCTURED = {"float_single": ("float", (1, 1)), "float_multi": ("float", (2, 4)),
              "int8_single": ("int8", (1, 1)), "int8_multi": ("int8", (2, 4))}


@pytest.mark.parametrize("family", list(STRUCTURED))
def test_structured_mutants_never_crash_hang_or_break_the_oracle(small_ship, tmp_path, family):
    import sys

    from conftest import REPO
    from PIL import Image

    sys.path.insert(0, REPO)
    from benchmarks.fuzz_families import MUST_BE_ZERO, fuzz_structured, structured_targets

    ship = small_ship[0]
    targets = structured_targets(str(ship / "gamma.delta"), [str(ship / "base.tflite"), str(ship / "base.onnx")],
                                 REPO)
    image = str(tmp_path / "image.png")
    Image.fromarray(np.full((48, 48, 3), 128, np.uint8)).save(image)
    kind, fields = STRUCTURED[family]
    report = fuzz_structured(targets[kind], fields, 120, f"test/{family}", str(tmp_path), image)
    assert {key: report[key] for key in MUST_BE_ZERO} == dict.fromkeys(MUST_BE_ZERO, 0), report["examples"]
    verdicts = report["verdicts"]
    assert verdicts["rejected"] and report["accepted"] and report["cli_runs"] == 2 * report["accepted"], verdicts
