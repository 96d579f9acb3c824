"""fetch never goes back a version, is bounded in time and rate, writes through no planted link, and
cleans up after killed runs; after each refusal the previous version stays active and the lock is free."""

from __future__ import annotations

import dataclasses
import fcntl
import os
import time

import pytest
from helpers.served import Served
from ship_servers import DripServer

from edgepatch.errors import FetchTimeoutError, RollbackError, UnsafeCacheError, UsageError
from edgepatch.format.delta import read_delta, write_delta
from edgepatch.ship.bundle import pack_bundle, ship_inputs
from edgepatch.ship.fetch import fetch, open_cached
from edgepatch.ship.manifest import version_key
from edgepatch.ship.signing import write_keypair

DEADLINE_S = 3.0
SLACK_S = 2.0  # scheduling on two shared cores


@pytest.fixture(scope="module")
def keys(tmp_path_factory):
    return write_keypair(str(tmp_path_factory.mktemp("keys") / "publisher"))


@pytest.fixture(scope="module")
def versions(small_ship, keys, tmp_path_factory):
    """v1 (task gamma), v2 (+ gamma2, a new delta to download), v2.0 (version 2 again, other content), v10."""
    root = tmp_path_factory.mktemp("versions")
    bases, deltas = ship_inputs(str(small_ship[0]))
    delta = read_delta(deltas[0])
    write_delta(str(root / "gamma2.delta"), dataclasses.replace(delta, task=dataclasses.replace(delta.task,
                                                                                                name="gamma2")))
    both = deltas + [str(root / "gamma2.delta")]
    return {"1": pack_bundle(bases, deltas, str(root / "v1"), "1", keys[0]),
            "2": pack_bundle(bases, both, str(root / "v2"), "2", keys[0]),
            "2.0": pack_bundle(bases, deltas, str(root / "v2.0"), "2.0", keys[0]),
            "10": pack_bundle(bases, both, str(root / "v10"), "10", keys[0])}


@pytest.fixture
def served(versions, tmp_path):
    served = Served(versions["1"].path, str(tmp_path / "www"))
    yield served
    served.close()


def lock_is_free(cache: str) -> bool:
    with open(os.path.join(cache, "lock"), "a+b") as handle:
        try:
            fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return False
    return True


def new_delta_file(versions) -> str:
    return next(t.delta.file for t in versions["2"].manifest.tasks if t.name == "gamma2")


def test_version_order_is_numeric():
    assert version_key("10") > version_key("9") and version_key("1.10") > version_key("1.9")
    assert version_key("2") == version_key("2.0") == version_key("2.0.0") and version_key("2024.06.1") == (2024, 6, 1)
    for text in ("", "x", "1.", ".1", "1..2", " 1", "-1", "1e3", "v2", "1" * 129, 2, None):
        assert version_key(text) is None, text


def test_rollback_is_refused_and_the_active_version_stays(served, versions, keys, tmp_path):
    cache, url = str(tmp_path / "cache"), served.url
    served.publish(versions["2"].path)
    fetch(url, keys[1], cache)
    for older, message in (("1", f"{url}manifest.json: model version 1 is older than the active 2; "),
                           ("2.0", f"{url}manifest.json: model version 2.0 equals the active 2, but the manifest "
                                   f"differs; publish a higher version; ")):
        served.publish(versions[older].path)
        with pytest.raises(RollbackError) as error:
            fetch(url, keys[1], cache)
        assert str(error.value) == message + "the active version stays (pass allow_downgrade=True to go back on purpose)"
        assert open_cached(cache, keys[1]).manifest == versions["2"].manifest and lock_is_free(cache)
    served.publish(versions["2"].path)
    assert fetch(url, keys[1], cache).downloaded_bytes == 0  # the same version again is fine
    served.publish(versions["1"].path)
    assert fetch(url, keys[1], cache, allow_downgrade=True).manifest == versions["1"].manifest
    served.publish(versions["10"].path)  # 10 > 2 numerically (not as text)
    assert fetch(url, keys[1], cache).manifest.model_version == "10"


@pytest.mark.parametrize("drip", ["body", "headers"])
def test_slow_drip_server_is_cut_off_at_the_deadline(versions, keys, tmp_path, drip):
    cache = str(tmp_path / "cache")
    good = Served(versions["1"].path, str(tmp_path / "www"))
    fetch(good.url, keys[1], cache)
    good.close()
    slow = Served(versions["2"].path, str(tmp_path / "slow"), lambda *a: DripServer(*a, drip=drip, interval=1.0))
    began = time.monotonic()
    try:
        with pytest.raises(FetchTimeoutError) as error:
            fetch(slow.url, keys[1], cache, deadline=DEADLINE_S)
    finally:
        slow.close()
    elapsed = time.monotonic() - began
    assert DEADLINE_S - 0.1 <= elapsed < DEADLINE_S + SLACK_S, elapsed
    where = f"{slow.url}{new_delta_file(versions)}" if drip == "body" else f"{slow.url}manifest.sig"
    assert str(error.value).startswith(f"{where}: the fetch deadline of 3 s passed")
    assert open_cached(cache, keys[1]).manifest == versions["1"].manifest and lock_is_free(cache)


def test_transfer_slower_than_the_minimum_rate_is_abandoned(versions, keys, tmp_path):
    cache = str(tmp_path / "cache")
    slow = Served(versions["1"].path, str(tmp_path / "slow"), lambda *a: DripServer(*a, drip="body", interval=0.02))
    began = time.monotonic()
    try:
        with pytest.raises(FetchTimeoutError) as error:
            fetch(slow.url, keys[1], cache, min_rate=1024, min_rate_window=1.0)
    finally:
        slow.close()
    assert time.monotonic() - began < 1.0 + SLACK_S
    assert "bytes/s over 1." in str(error.value) and "below the minimum of 1024 after " in str(error.value)
    assert lock_is_free(cache)
    with pytest.raises(UsageError) as error:
        fetch(slow.url, keys[1], cache, deadline=0)
    assert str(error.value) == "deadline must be a number of seconds in (0, 1e7); received 0"


def test_planted_part_symlink_is_refused_and_nothing_is_written_through_it(served, versions, keys, tmp_path):
    cache = str(tmp_path / "cache")
    fetch(served.url, keys[1], cache)
    served.publish(versions["2"].path)
    victim = tmp_path / "victim.txt"
    victim.write_text("precious")
    part = os.path.join(cache, new_delta_file(versions) + ".part")
    os.symlink(str(victim), part)
    with pytest.raises(UnsafeCacheError) as error:
        fetch(served.url, keys[1], cache)
    assert str(error.value) == f"{part}: a symbolic link; fetch writes only files it creates (delete it)"
    assert victim.read_text() == "precious" and os.path.islink(part)
    assert open_cached(cache, keys[1]).manifest == versions["1"].manifest and lock_is_free(cache)
    os.unlink(part)
    assert fetch(served.url, keys[1], cache).manifest == versions["2"].manifest


def test_fetch_removes_what_killed_fetches_left(served, versions, keys, tmp_path):
    cache = str(tmp_path / "cache")
    fetch(served.url, keys[1], cache)
    stale = [os.path.join(cache, ".current.0123456789ab.tmp"),
             os.path.join(cache, "manifests", f".{'e' * 64}.json.0123456789ab.tmp"),
             os.path.join(cache, "files", f".{'f' * 64}.delta.ba9876543210.tmp"),
             os.path.join(cache, "files", f"{'a' * 64}.delta.part")]  # listed by no manifest
    for path in stale:
        open(path, "wb").write(b"left by a killed fetch")
    open(os.path.join(cache, "notes.txt"), "w").write("mine")
    served.publish(versions["2"].path)
    fetch(served.url, keys[1], cache)
    assert [path for path in stale if os.path.lexists(path)] == []
    assert open(os.path.join(cache, "notes.txt")).read() == "mine"
