"""tf.distribute for real on this machine: mirrored over 2 logical CPUs, and a 2-worker cluster on loopback."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys

from conftest import REPO

JOB = os.path.join(REPO, "tests", "helpers", "distributed_job.py")


def _env(**extra) -> dict:
    return {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3", "PYTHONPATH": REPO, **extra}


def _result(stdout: str) -> dict:
    return json.loads(stdout.strip().splitlines()[-1])


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_mirrored_two_cpu_replicas_share_weights(tmp_path):
    done = subprocess.run([sys.executable, JOB, "mirrored", str(tmp_path)], capture_output=True, text=True,
                          env=_env(), timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    result = _result(done.stdout)
    assert result["replicas"] == 2 and result["copies"] == 2
    assert result["copies_agree"] and result["patches_differ"]


def test_two_worker_cluster_on_loopback_stays_in_sync(tmp_path):
    ports = [_free_port(), _free_port()]
    cluster = {"worker": [f"127.0.0.1:{p}" for p in ports]}
    workers = [
        subprocess.Popen([sys.executable, JOB, "multi_worker", str(tmp_path / f"w{i}")], stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE, text=True,
                         env=_env(TF_CONFIG=json.dumps({"cluster": cluster, "task": {"type": "worker", "index": i}})))
        for i in range(2)
    ]
    outputs = []
    try:
        for worker in workers:
            stdout, stderr = worker.communicate(timeout=400)
            assert worker.returncode == 0, stderr[-2000:]
            outputs.append(_result(stdout))
    finally:
        for worker in workers:
            worker.kill()
    assert [o["replicas"] for o in outputs] == [2, 2]
    assert outputs[0]["shared_sha256"] == outputs[1]["shared_sha256"]  # all-reduce kept the workers equal
    assert all(o["patches_differ"] for o in outputs)
