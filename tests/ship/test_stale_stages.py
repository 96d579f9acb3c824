"""Published outputs are world-readable; stages left by killed pack/convert runs are removed by the next run
(and nothing else is); keygen creates missing directories."""

from __future__ import annotations

import os
import select
import stat
import subprocess
import sys

from click.testing import CliRunner
from conftest import REPO
from helpers.killing import run_until_killed

from edgepatch.atomic import discard_stage, make_stage_dir, remove_stale_stages
from edgepatch.cli.ship import keygen
from edgepatch.ship.bundle import pack_bundle, ship_inputs, verify_bundle
from edgepatch.ship.signing import write_keypair


def mode(path) -> int:
    return stat.S_IMODE(os.lstat(path).st_mode)


def leftovers(parent) -> list[str]:
    return sorted(name for name in os.listdir(parent) if name.startswith("."))


def pack_code(small_ship, target: str) -> str:
    return (f"from edgepatch.ship.bundle import pack_bundle, ship_inputs\n"
            f"pack_bundle(*ship_inputs({str(small_ship[0])!r}), {target!r}, '2')\n")


def test_outputs_are_world_readable_whatever_the_umask(small_ship, tmp_path):
    ship = str(small_ship[0])
    assert mode(ship) == 0o755 and {mode(os.path.join(ship, n)) for n in os.listdir(ship)} == {0o644}  # convert
    previous = os.umask(0o077)
    try:
        report = pack_bundle(*ship_inputs(ship), str(tmp_path / "bundle"), "1")
    finally:
        os.umask(previous)
    modes = {os.path.relpath(os.path.join(d, n), report.path): mode(os.path.join(d, n))
             for d, subdirs, files in os.walk(report.path) for n in subdirs + files}
    assert mode(report.path) == 0o755 and modes.pop("files") == 0o755 and set(modes.values()) == {0o644}


def test_next_pack_removes_the_stages_of_killed_packs(small_ship, tmp_path):
    target = str(tmp_path / "bundle")
    assert run_until_killed(pack_code(small_ship, target), "os.replace", 1)  # killed while staging
    assert [name[:len(".bundle.pack-")] for name in leftovers(tmp_path)] == [".bundle.pack-"]
    pack_bundle(*ship_inputs(str(small_ship[0])), target, "1")
    assert leftovers(tmp_path) == []
    assert run_until_killed(pack_code(small_ship, target), "os.rename", 2)  # killed between the two renames
    assert not os.path.exists(target)
    assert [name[:len(".bundle.old-")] for name in leftovers(tmp_path)] == [".bundle.old-", ".bundle.pack"]
    pack_bundle(*ship_inputs(str(small_ship[0])), target, "3")
    assert leftovers(tmp_path) == [] and verify_bundle(target).manifest.model_version == "3"


def test_live_stages_and_other_files_are_kept(tmp_path):
    target = str(tmp_path / "ship")
    code = ("import sys\nfrom edgepatch.atomic import make_stage_dir\n"
            f"print(make_stage_dir({target!r}, 'convert'), flush=True)\nsys.stdin.read()\n")
    child = subprocess.Popen([sys.executable, "-c", code], cwd=REPO, env={**os.environ, "PYTHONPATH": REPO},
                             stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert select.select([child.stdout], [], [], 60)[0], "the child made no stage"
        live = child.stdout.readline().strip()
        elsewhere = tmp_path / "elsewhere"
        elsewhere.mkdir()
        (elsewhere / "keep.txt").write_text("mine")
        kept = [".ship.convert-short", ".ship.notes-abcdefgh", ".ship.convert-abcdefgh.txt", ".shipx.convert-abcdefgh"]
        for name in kept:
            os.mkdir(tmp_path / name)
        os.symlink(str(elsewhere), str(tmp_path / ".ship.convert-linkedxx"))
        own = make_stage_dir(target, "convert")  # this process's own live stage
        assert remove_stale_stages(target, "convert") == []
        assert sorted(leftovers(tmp_path)) == sorted(kept + [".ship.convert-linkedxx", os.path.basename(live),
                                                             os.path.basename(own)])
    finally:
        child.kill()
        child.wait(30)
        child.stdout.close()
        child.stdin.close()
    assert remove_stale_stages(target, "convert") == [live]  # its process is gone now
    assert (elsewhere / "keep.txt").read_text() == "mine" and os.path.isdir(own)
    discard_stage(own)


def test_keygen_creates_missing_directories(tmp_path, monkeypatch):
    private, public, _ = write_keypair(str(tmp_path / "a" / "b" / "k"))
    assert os.path.isfile(public) and mode(private) == 0o600 and mode(tmp_path / "a" / "b") == 0o700
    monkeypatch.chdir(tmp_path)
    result = CliRunner().invoke(keygen, ["--out", "keys/publisher"])
    assert result.exit_code == 0, result.output
    assert os.path.isfile(tmp_path / "keys" / "publisher.key") and os.path.isfile(tmp_path / "keys" / "publisher.pub")
