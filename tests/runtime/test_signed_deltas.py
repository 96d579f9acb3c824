"""Finding 11 (issue 17): a loose delta is integrity-checked, not authenticated, unless the caller trusts keys.

With ``trusted_keys`` (runtime) or ``--pubkey`` (``run``, ``bench``) a delta is accepted only with a valid
detached signature ``DELTA.sig`` by one of them; ``edgepatch sign-delta`` writes it.
"""

from __future__ import annotations

import dataclasses
import os
import shutil

import numpy as np
import pytest
from click.testing import CliRunner
from conftest import REPO

from edgepatch.cli.main import main
from edgepatch.errors import SignatureError, UsageError
from edgepatch.format.delta import read_delta, write_delta
from edgepatch.runtime import TaskSwitcher, load_base, read_task_delta
from edgepatch.ship.signing import write_detached_signature, write_keypair

TESTDATA = os.path.join(REPO, "android_demo", "patchloader", "testdata")


@pytest.fixture()
def ship(tmp_path):
    for name in ("base.tflite", "gamma.delta", "base_int8_compact.tflite", "gamma_compact.int8.delta"):
        shutil.copy(os.path.join(TESTDATA, name), tmp_path / name)
    keys = {name: write_keypair(str(tmp_path / "keys" / name)) for name in ("publisher", "stranger")}
    return tmp_path, keys


def test_an_unsigned_delta_is_refused_only_when_keys_are_trusted(ship):
    root, keys = ship
    delta = str(root / "gamma.delta")
    assert read_task_delta(delta) == read_delta(delta)  # integrity only: the default
    with pytest.raises(SignatureError) as error:
        read_task_delta(delta, trusted_keys=[keys["publisher"][1]])
    assert str(error.value) == f"{delta}: no valid detached signature: signature '{delta}.sig' does not exist"


@pytest.mark.parametrize("name", ["gamma.delta", "gamma_compact.int8.delta"])
def test_a_signed_delta_reads_the_same_and_only_with_a_trusted_key(ship, name):
    root, keys = ship
    delta = str(root / name)
    signature, key_id = write_detached_signature(delta, keys["publisher"][0])
    assert (signature, key_id) == (delta + ".sig", keys["publisher"][2])
    signed = read_task_delta(delta, trusted_keys=[keys["stranger"][1], keys["publisher"][1]])
    assert type(signed) is type(read_task_delta(delta)) and signed.task == read_task_delta(delta).task
    with pytest.raises(SignatureError) as error:
        read_task_delta(delta, trusted_keys=[keys["stranger"][1]])
    assert str(error.value) == (f"{delta}: signed by key {keys['publisher'][2]}, which is not trusted "
                                f"(trusted: {keys['stranger'][2]})")


def test_a_delta_forged_after_signing_is_refused(ship):
    """The issue's attack: base_sha256 rewritten for another base, the trailer recomputed (a valid file)."""
    root, keys = ship
    delta = str(root / "gamma.delta")
    write_detached_signature(delta, keys["publisher"][0])
    forged = read_delta(delta)
    write_delta(delta, dataclasses.replace(forged, base_sha256={"tflite": "ab" * 32}))
    read_delta(delta)  # integrity holds: the container cannot tell
    with pytest.raises(SignatureError) as error:
        read_task_delta(delta, trusted_keys=[keys["publisher"][1]])
    assert str(error.value) == f"{delta}: signature by key {keys['publisher'][2]} does not match the file's bytes"


def test_the_switcher_checks_signatures_on_every_miss(ship):
    root, keys = ship
    delta = str(root / "gamma.delta")
    base = load_base(str(root / "base.tflite"))
    switcher = TaskSwitcher(base, trusted_keys=keys["publisher"][1])
    with pytest.raises(SignatureError):
        switcher.switch(delta)
    write_detached_signature(delta, keys["publisher"][0])
    runner = switcher.switch(delta)
    assert runner.predict(np.zeros((1, 32, 32, 3), np.float32)).shape == (1, 3)
    with pytest.raises(UsageError) as error:
        TaskSwitcher(base, read=read_task_delta, trusted_keys=keys["publisher"][1])
    assert str(error.value) == "give TaskSwitcher a read function or trusted_keys, not both"


def _one_error(result) -> str:
    lines = result.stderr.splitlines()
    assert (result.exit_code, len(lines), result.stdout) == (2, 1, ""), (result.stderr, result.exception)
    return lines[0]


def test_the_cli_signs_and_then_runs_only_signed_deltas(ship):
    from PIL import Image

    root, keys = ship
    delta, image = str(root / "gamma.delta"), str(root / "x.png")
    Image.fromarray(np.zeros((40, 40, 3), np.uint8)).save(image)
    run = ["run", "--base", str(root / "base.tflite"), "--delta", delta, "--pubkey", keys["publisher"][1], image]
    assert _one_error(CliRunner().invoke(main, run)) == (
        f"error: {delta}: no valid detached signature: signature '{delta}.sig' does not exist")
    not_a_delta = str(root / "base.tflite")
    assert _one_error(CliRunner().invoke(main, ["sign-delta", not_a_delta, "--key", keys["publisher"][0]])) == (
        f"error: {not_a_delta}: bad magic: expected b'EDGEPTCH', got b' \\x00\\x00\\x00TFL3'")
    assert not os.path.exists(not_a_delta + ".sig")
    signed = CliRunner().invoke(main, ["sign-delta", delta, "--key", keys["publisher"][0]])
    assert (signed.exit_code, signed.stdout) == (0, f"signed {delta} -> {delta}.sig (key id {keys['publisher'][2]})\n")
    ran = CliRunner().invoke(main, run)
    assert ran.exit_code == 0 and ran.stdout.startswith(f"{image}: gamma_")
    stranger = run[:-3] + ["--pubkey", keys["stranger"][1], image]
    assert _one_error(CliRunner().invoke(main, stranger)) == (
        f"error: {delta}: signed by key {keys['publisher'][2]}, which is not trusted (trusted: {keys['stranger'][2]})")


def test_bench_checks_every_delta_signature_before_measuring(ship):
    root, keys = ship
    delta = str(root / "gamma.delta")
    bench = ["bench", "--base", str(root / "base.tflite"), "--delta", delta, "--pubkey", keys["publisher"][1],
             "--resolutions", "32", "--threads", "1", "--runs", "1", "--warmup", "0"]
    assert _one_error(CliRunner().invoke(main, bench)) == (
        f"error: {delta}: no valid detached signature: signature '{delta}.sig' does not exist")
    write_detached_signature(delta, keys["stranger"][0])
    assert _one_error(CliRunner().invoke(main, bench)) == (
        f"error: {delta}: signed by key {keys['stranger'][2]}, which is not trusted (trusted: {keys['publisher'][2]})")
