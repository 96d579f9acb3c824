"""Servers for shipping tests: edgepatch servers that misbehave, and static servers nobody here wrote.

* ``CutServer``: sends half of each delta's body, then hangs up.
* ``DripServer``: sends one byte per ``interval`` seconds, of content bodies or of every header.
* ``static_server("http.server" | "nginx", root, work)``: ``python -m http.server`` or Debian's nginx
  serving ``root`` on a free 127.0.0.1 port, in a subprocess stopped by its PID (bounded waits).
  Yields (url, requested paths): the second is a function reading the server's access log.
"""

from __future__ import annotations

import contextlib
import grp
import os
import pwd
import re
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time

from edgepatch.ship.serve import BundleHandler, BundleServer

START_TIMEOUT_S = 15
STOP_TIMEOUT_S = 10
REQUEST_LINE = re.compile(r'"(?:GET|HEAD) (\S+) HTTP/1\.[01]"')


class CutHandler(BundleHandler):
    """Sends the headers of a delta, then half its body, then hangs up."""

    def _send_span(self, handle, data, start, end):
        if self.path.endswith(".delta"):
            handle.seek(start)
            self.wfile.write(handle.read((end - start) // 2))
            self.close_connection = True
            return
        super()._send_span(handle, data, start, end)


class CutServer(BundleServer):
    handler_class = CutHandler


class DripHandler(BundleHandler):
    """Drips content bodies (``server.drip == "body"``) or every response's headers (``"headers"``)."""

    def _drip(self, data: bytes) -> None:
        for index in range(len(data)):
            if self.server.stopped.wait(self.server.interval):
                return
            self.wfile.write(data[index:index + 1])

    def flush_headers(self):
        if self.server.drip != "headers":
            return super().flush_headers()
        data, self._headers_buffer = b"".join(self._headers_buffer), []
        self._drip(data)

    def _send_span(self, handle, data, start, end):
        if self.server.drip == "body" and data is None:
            handle.seek(start)
            self._drip(handle.read(end - start))
            return
        super()._send_span(handle, data, start, end)


class DripServer(BundleServer):
    handler_class = DripHandler

    def __init__(self, address, bundle_root, quiet, drip: str = "body", interval: float = 1.0):
        self.drip, self.interval, self.stopped = drip, interval, threading.Event()
        super().__init__(address, bundle_root, quiet)

    def server_close(self):
        self.stopped.set()
        super().server_close()


def nginx_binary() -> str | None:
    """Debian's nginx lives in /usr/sbin, which a non-root PATH may lack."""
    return shutil.which("nginx") or shutil.which("nginx", path="/usr/sbin:/sbin")


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _wait_listening(process: subprocess.Popen, port: int) -> bool:
    ends = time.monotonic() + START_TIMEOUT_S
    while time.monotonic() < ends and process.poll() is None:
        with contextlib.suppress(OSError):
            socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
            return True
        time.sleep(0.05)
    return False


def _stop(process: subprocess.Popen) -> None:
    if process.poll() is None:
        os.kill(process.pid, signal.SIGTERM)
        try:
            process.wait(STOP_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            os.kill(process.pid, signal.SIGKILL)
            process.wait(STOP_TIMEOUT_S)


def _requested(log_path: str):
    def paths() -> list[str]:
        with open(log_path, encoding="utf-8", errors="replace") as handle:
            return REQUEST_LINE.findall(handle.read())
    return paths


def _nginx_conf(root: str, work: str, port: int) -> str:
    user = ""
    if os.geteuid() == 0:  # workers must not run as root: use the distribution's web user
        name = next((n for n in ("www-data", "nobody") if _has_user(n)), "nobody")
        user = f"user {name} {grp.getgrgid(pwd.getpwnam(name).pw_gid).gr_name};"
    temps = "\n".join(f"    {kind}_temp_path {work}/{kind};" for kind in ("client_body", "proxy", "fastcgi",
                                                                            "uwsgi", "scgi"))
    return f"""{user}
worker_processes 1;
daemon off;
pid {work}/nginx.pid;
error_log {work}/error.log warn;
events {{ worker_connections 64; }}
http {{
    access_log {work}/access.log;
{temps}
    default_type application/octet-stream;
    server {{
        listen 127.0.0.1:{port};
        root {root};
    }}
}}
"""


def _has_user(name: str) -> bool:
    try:
        pwd.getpwnam(name)
    except KeyError:
        return False
    return True


def _start_nginx(root: str, work: str) -> tuple[subprocess.Popen, int]:
    for _ in range(3):  # a free port may be taken between the probe and nginx's bind
        port = free_port()
        with open(os.path.join(work, "nginx.conf"), "w") as handle:
            handle.write(_nginx_conf(root, work, port))
        process = subprocess.Popen([nginx_binary(), "-p", work, "-c", os.path.join(work, "nginx.conf"),
                                    "-e", os.path.join(work, "error.log")],
                                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        if _wait_listening(process, port):
            return process, port
        _stop(process)
    with open(os.path.join(work, "error.log")) as handle:
        raise RuntimeError(f"nginx did not start: {handle.read()[-2000:]}")


def _start_http_server(root: str, work: str) -> tuple[subprocess.Popen, int]:
    log = open(os.path.join(work, "access.log"), "w")
    process = subprocess.Popen([sys.executable, "-u", "-m", "http.server", "0", "--bind", "127.0.0.1",
                                "--directory", root], stdout=subprocess.PIPE, stderr=log, text=True)
    log.close()
    found = {}
    reader = threading.Thread(target=lambda: found.update(line=process.stdout.readline()), daemon=True)
    reader.start()
    reader.join(START_TIMEOUT_S)
    match = re.search(r" port (\d+) ", found.get("line", ""))
    if not (match and _wait_listening(process, int(match.group(1)))):
        _stop(process)
        raise RuntimeError(f"http.server did not start: {found.get('line')!r}")
    return process, int(match.group(1))


@contextlib.contextmanager
def static_server(kind: str, root: str, work: str):
    """Serve ``root`` with ``kind`` ("http.server" or "nginx"); yields (url, function -> requested paths)."""
    os.makedirs(work, exist_ok=True)
    process, port = (_start_nginx if kind == "nginx" else _start_http_server)(root, work)
    try:
        yield f"http://127.0.0.1:{port}/", _requested(os.path.join(work, "access.log"))
    finally:
        _stop(process)
        if process.stdout:
            process.stdout.close()
