"""Load test of ``edgepatch serve`` on loopback: concurrent clients, bounded, stops by itself; JSON result.

The server runs in its own process (``edgepatch.ship.serve.make_server``); the
clients are threads with keep-alive connections. Two phases:

1. every client runs a full ``edgepatch.ship.fetch.fetch`` into its own empty cache
   (signature, hashes and fingerprints verified; every format, int8 included): ``fetches``;
2. until ``--requests`` requests or ``--seconds`` seconds, whichever comes
   first, each client sends a mix of full GETs (manifest and content files),
   single-range GETs and conditional GETs (If-None-Match, expecting 304).

Every body is checked on the client against the bytes on disk by SHA-256:
``corrupt`` counts mismatches (must be 0); ``errors`` counts failed requests
and unexpected statuses. Reports requests/s, MB/s and latency percentiles.

Usage::

    python benchmarks/serve_load.py --clients 16 --requests 20000 --seconds 30 [--ship DIR | --bundle DIR]

Exits 1 if any request failed or any delivery was corrupt.
"""

from __future__ import annotations

import argparse
import collections
import hashlib
import http.client
import json
import os
import random
import subprocess
import sys
import tempfile
import threading
import time

from ship_fixture import REPO, ensure_ship, use_repo_paths

use_repo_paths()

from edgepatch.ship.bundle import pack_bundle, ship_inputs  # noqa: E402
from edgepatch.errors import EdgepatchError  # noqa: E402
from edgepatch.ship.fetch import fetch  # noqa: E402
from edgepatch.ship.signing import write_keypair  # noqa: E402

SERVER = ("import sys\nfrom edgepatch.ship.serve import make_server\n"
          "server = make_server(sys.argv[1], port=0, quiet=True)\n"
          "print(server.server_address[1], flush=True)\nserver.serve_forever()\n")


class Tally:
    """Counters shared by the client threads, and the stop condition."""

    def __init__(self, max_requests: int, deadline: float):
        self.lock = threading.Lock()
        self.max_requests, self.deadline = max_requests, deadline
        self.started = 0
        self.status = collections.Counter()
        self.errors, self.corrupt, self.bytes = 0, 0, 0
        self.latencies: list[float] = []
        self.error_examples: list[str] = []

    def claim(self) -> bool:
        with self.lock:
            if self.started >= self.max_requests or time.perf_counter() >= self.deadline:
                return False
            self.started += 1
            return True

    def record(self, status, seconds: float, nbytes: int, ok: bool, corrupt: bool, error: str = "") -> None:
        with self.lock:
            self.status[str(status)] += 1
            self.latencies.append(seconds)
            self.bytes += nbytes
            self.errors += not ok
            self.corrupt += corrupt
            if error and len(self.error_examples) < 10:
                self.error_examples.append(error)


def _one_request(connection, files: dict[str, bytes], rng: random.Random):
    """Send one request of the mix; returns (status, body bytes, ok, corrupt)."""
    path = rng.choice(list(files))
    data = files[path]
    mode = rng.choice(["full", "full", "range", "conditional"])
    headers = {}
    if mode == "range":
        start = rng.randrange(len(data))
        end = rng.randrange(start, len(data))
        headers["Range"] = f"bytes={start}-{end}"
        expected, want_status = data[start:end + 1], 206
    elif mode == "conditional":
        tag = path[len("/files/"):].split(".")[0] if path.startswith("/files/") else hashlib.sha256(data).hexdigest()
        headers["If-None-Match"] = f'"{tag}"'
        expected, want_status = b"", 304
    else:
        expected, want_status = data, 200
    connection.request("GET", path, headers=headers)
    response = connection.getresponse()
    body = response.read()
    ok = response.status == want_status
    corrupt = ok and hashlib.sha256(body).digest() != hashlib.sha256(expected).digest()
    return response.status, len(body), ok, corrupt


def client(port: int, files: dict[str, bytes], tally: Tally, seed: int) -> None:
    rng = random.Random(seed)
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    while tally.claim():
        began = time.perf_counter()
        try:
            status, nbytes, ok, corrupt = _one_request(connection, files, rng)
            tally.record(status, time.perf_counter() - began, nbytes, ok, corrupt,
                         "" if ok else f"unexpected status {status}")
        except (OSError, http.client.HTTPException) as error:
            tally.record("error", time.perf_counter() - began, 0, False, False, repr(error))
            connection.close()
            connection = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    connection.close()


def run_fetches(url: str, pubkey: str, work: str, clients: int) -> dict:
    results = collections.Counter()
    examples: list[str] = []

    def one(index: int) -> None:
        try:
            fetch(url, pubkey, os.path.join(work, f"cache-{index}"), timeout=30)
            results["ok"] += 1
        except EdgepatchError as error:
            results["errors"] += 1
            examples.append(str(error))

    threads = [threading.Thread(target=one, args=(i,)) for i in range(clients)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return {"ok": results["ok"], "errors": results["errors"], "error_examples": examples[:5]}


def _percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))] if ordered else 0.0


def load(bundle: str, pubkey: str, work: str, clients: int, max_requests: int, seconds: float) -> dict:
    files = {"/manifest.json": open(os.path.join(bundle, "manifest.json"), "rb").read()}
    for name in sorted(os.listdir(os.path.join(bundle, "files"))):
        files[f"/files/{name}"] = open(os.path.join(bundle, "files", name), "rb").read()
    server = subprocess.Popen([sys.executable, "-c", SERVER, bundle], cwd=REPO, stdout=subprocess.PIPE, text=True,
                              env={**os.environ, "PYTHONPATH": REPO})
    try:
        port = int(server.stdout.readline())
        fetches = run_fetches(f"http://127.0.0.1:{port}/", pubkey, work, clients)
        began = time.perf_counter()
        tally = Tally(max_requests, began + seconds)
        threads = [threading.Thread(target=client, args=(port, files, tally, i)) for i in range(clients)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        elapsed = time.perf_counter() - began
    finally:
        server.terminate()
        try:
            server.wait(10)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()
    done = sum(tally.status.values())
    return {
        "clients": clients, "max_requests": max_requests, "max_seconds": seconds,
        "stopped_by": "requests" if tally.started >= max_requests else "time",
        "requests": done, "seconds": round(elapsed, 2), "requests_per_s": round(done / elapsed, 1),
        "bytes": tally.bytes, "mb_per_s": round(tally.bytes / elapsed / 1e6, 2),
        "errors": tally.errors, "corrupt": tally.corrupt, "status": dict(tally.status),
        "latency_ms": {name: round(1e3 * _percentile(tally.latencies, q), 2)
                       for name, q in (("p50", 0.5), ("p99", 0.99), ("max", 1.0))},
        "error_examples": tally.error_examples, "fetches": fetches,
        "bundle_files": {path: len(data) for path, data in files.items()},
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clients", type=int, default=16)
    parser.add_argument("--requests", type=int, default=20_000, help="stop after this many requests")
    parser.add_argument("--seconds", type=float, default=30.0, help="stop after this many seconds")
    parser.add_argument("--ship", default=None,
                        help="a convert output dir to pack (default: build a small one, float + int8)")
    parser.add_argument("--out", default=None, help="also write the JSON result here")
    args = parser.parse_args()
    if not (1 <= args.clients <= 256 and args.requests >= 1 and 0 < args.seconds <= 600):
        parser.error("need 1 <= --clients <= 256, --requests >= 1, 0 < --seconds <= 600")
    with tempfile.TemporaryDirectory(prefix="edgepatch-load-") as work:
        ship = ensure_ship(args.ship, work, int8=True)
        private, public, _ = write_keypair(os.path.join(work, "key"))
        bundle = pack_bundle(*ship_inputs(ship), os.path.join(work, "bundle"), "1", private).path
        result = load(bundle, public, work, args.clients, args.requests, args.seconds)
    text = json.dumps(result, indent=2, sort_keys=True)
    print(text)
    if args.out:
        with open(args.out, "w") as handle:
            handle.write(text + "\n")
    return 1 if result["errors"] or result["corrupt"] or result["fetches"]["errors"] else 0


if __name__ == "__main__":
    sys.exit(main())
