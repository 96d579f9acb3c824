"""edgepatch serve: ETag and If-None-Match, Range and If-Range, no listing, no traversal; the CLI command."""

from __future__ import annotations

import hashlib
import http.client
import os
import signal
import subprocess
import sys

import pytest
from conftest import REPO
from helpers.served import Served

from edgepatch.ship.bundle import pack_bundle, ship_inputs


@pytest.fixture(scope="module")
def packed(small_ship, tmp_path_factory):
    return pack_bundle(*ship_inputs(str(small_ship[0])), str(tmp_path_factory.mktemp("serve") / "bundle"), "1")


@pytest.fixture
def served(packed, tmp_path):
    served = Served(packed.path, str(tmp_path / "www"))
    yield served
    served.close()


def delta_path(packed) -> str:
    return packed.manifest.tasks[0].delta.file


def test_serve_etag_and_conditional_get(served, packed):
    manifest = open(os.path.join(served.root, "manifest.json"), "rb").read()
    status, headers, body = served.get("/manifest.json")
    assert (status, body, headers["ETag"]) == (200, manifest, f'"{hashlib.sha256(manifest).hexdigest()}"')
    assert (headers["Cache-Control"], headers["Content-Type"]) == ("no-cache", "application/json")
    for tag in (headers["ETag"], "W/" + headers["ETag"], '"x", ' + headers["ETag"], "*"):
        status, again, body = served.get("/manifest.json", **{"If-None-Match": tag})
        assert (status, body, again["ETag"]) == (304, b"", headers["ETag"])
    assert served.get("/manifest.json", **{"If-None-Match": '"other"'})[0] == 200
    path = delta_path(packed)
    status, headers, body = served.get("/" + path, "HEAD")
    size = os.path.getsize(os.path.join(served.root, path))
    assert (status, body, headers["Content-Length"]) == (200, b"", str(size))
    assert headers["ETag"] == f'"{path[6:70]}"' and headers["Cache-Control"].endswith("immutable")


def test_serve_ranges(served, packed):
    path = "/" + delta_path(packed)
    data = open(os.path.join(served.root, path[1:]), "rb").read()
    size = len(data)
    for header, start, end in (("bytes=0-9", 0, 10), ("bytes=100-", 100, size), ("bytes=-16", size - 16, size),
                               (f"bytes=10-{size + 50}", 10, size)):
        status, headers, body = served.get(path, Range=header)
        assert (status, body, headers["Content-Range"]) == (206, data[start:end], f"bytes {start}-{end - 1}/{size}")
    for header in ("bytes=0-1,5-6", "bytes=9-2", "items=0-1", "bytes=-"):  # ignored: the whole file
        assert served.get(path, Range=header)[::2] == (200, data)
    status, headers, body = served.get(path, Range=f"bytes={size}-")
    assert (status, headers["Content-Range"]) == (416, f"bytes */{size}")
    assert served.get(path, Range="bytes=0-9", **{"If-Range": '"stale"'})[::2] == (200, data)


def test_serve_no_listing_no_traversal(served, tmp_path):
    (tmp_path / "secret.txt").write_text("secret")
    target = os.path.join(served.root, "files", "a" * 64 + ".delta")
    os.symlink(str(tmp_path / "secret.txt"), target)
    for path in ("/", "/files", "/files/", "/../secret.txt", "/files/../manifest.json", "/%2e%2e/secret.txt",
                 "/files/%2e%2e%2fmanifest.json", "/manifest.json/", "/files/" + "a" * 64 + ".delta",
                 "/files/" + "b" * 64 + ".delta", "/manifest.json%00", "/MANIFEST.JSON"):
        status, _, body = served.get(path)
        assert (path, status, body) == (path, 404, b"not found\n")
    assert served.get("/manifest.json?v=1")[0] == 200
    assert served.get("/manifest.json", "POST")[0] == 501
    assert served.get("/manifest.json", "DELETE")[0] == 501


def _default_interrupt():
    """As in a terminal: a shell that starts jobs in the background (CI) has them ignore SIGINT, and Python keeps that."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


@pytest.mark.parametrize("stop", [signal.SIGINT, signal.SIGTERM])
def test_serve_command_prints_its_url_and_stops_on_interrupt_or_kill(packed, tmp_path, stop):
    command = [sys.executable, "-c", "from edgepatch.cli.ship import serve; serve()"]
    child = subprocess.Popen(command + [packed.path, "--port", "0", "--quiet"], cwd=REPO, text=True,
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                             preexec_fn=_default_interrupt if stop == signal.SIGINT else None)
    try:
        url = child.stdout.readline().strip()
        assert url.startswith("http://127.0.0.1:")
        port = int(url.rsplit(":", 1)[1].rstrip("/"))
        connection = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
        connection.request("GET", "/manifest.json")
        assert connection.getresponse().read() == open(os.path.join(packed.path, "manifest.json"), "rb").read()
        connection.close()
        child.send_signal(stop)
        assert child.wait(30) == 0 and child.stderr.read() == ""
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()
        child.stdout.close()
        child.stderr.close()
    result = subprocess.run(command + [str(tmp_path)], cwd=REPO, capture_output=True, text=True, timeout=60)
    assert (result.returncode, result.stderr) == (
        2, f"error: {tmp_path}: no manifest.json; not a bundle (make one with `edgepatch pack`)\n")
