"""Serve a bundle directory over HTTP (stdlib ``ThreadingHTTPServer``), on loopback by default.

Only the bundle's own names are served: ``/manifest.json``, ``/manifest.sig``
and ``/files/<64 hex>.<tflite|onnx|int8.tflite|delta|int8.delta>``; every other path is 404, so there
is no directory listing and no path traversal (the path is matched, never
joined as given; symlinked files are refused). GET and HEAD only.

Caching and resuming:

* ``ETag``: for content files the sha256 in their name; for the manifest and
  its signature the sha256 of their bytes. ``If-None-Match`` (weak
  comparison, ``*``) answers 304.
* ``Cache-Control``: content files are ``immutable`` for a year; the
  manifest and signature must be revalidated (``no-cache``).
* ``Range``: one range ``bytes=a-b``, ``bytes=a-`` or ``bytes=-n`` answers
  206 with ``Content-Range``; a range starting past the end answers 416; a
  malformed or multi-range header is ignored (200, full body, as RFC 9110
  allows). ``If-Range`` with a different ETag also gives the full body.
"""

from __future__ import annotations

import hashlib
import os
import re
import stat
import sys
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import urlsplit

from edgepatch.errors import BundleError, MissingFileError, UsageError
from edgepatch.ship.manifest import MANIFEST_NAME, MAX_MANIFEST_BYTES

SERVED_PATH = re.compile(r"/(?:manifest\.json|manifest\.sig|files/([0-9a-f]{64})\.(?:(?:int8\.)?(?:delta|tflite)|onnx))")
RANGE = re.compile(r"bytes=(\d{0,19})-(\d{0,19})")
CHUNK = 256 * 1024
IMMUTABLE = "public, max-age=31536000, immutable"
REVALIDATE = "no-cache"
REQUEST_TIMEOUT_S = 30


def parse_range(header: str | None, size: int) -> tuple[int, int] | None:
    """The byte span [start, end) a ``Range`` header asks for; None to send the whole file.

    Raises:
      ValueError: the range is unsatisfiable (answer 416).
    """
    match = RANGE.fullmatch(header.strip()) if header else None
    if match is None or match.groups() == ("", ""):
        return None
    first, last = match.groups()
    if first == "":  # suffix: the last n bytes
        if int(last) == 0:
            raise ValueError("empty suffix range")
        return max(0, size - int(last)), size
    start = int(first)
    end = size if last == "" else int(last) + 1
    if last != "" and end <= start:
        return None  # invalid: ignore the header
    if start >= size:
        raise ValueError("range starts past the end")
    return start, min(end, size)


def etag_matches(header: str | None, etag: str) -> bool:
    """Weak comparison of an ``If-None-Match`` list against ``etag``."""
    if not header:
        return False
    tags = [tag.strip() for tag in header.split(",")]
    return "*" in tags or etag in [tag[2:] if tag.startswith("W/") else tag for tag in tags]


class BundleHandler(BaseHTTPRequestHandler):
    """Answers GET/HEAD for the bundle at ``self.server.bundle_root``."""

    protocol_version = "HTTP/1.1"  # keep-alive; every answer has a Content-Length
    server_version = "edgepatch-serve"
    sys_version = ""
    timeout = REQUEST_TIMEOUT_S
    disable_nagle_algorithm = True  # headers and body go out as separate writes: don't wait for ACKs

    def do_GET(self):
        self._answer(send_body=True)

    def do_HEAD(self):
        self._answer(send_body=False)

    def log_message(self, format, *args):  # noqa: A002 (the base class's name)
        if not self.server.quiet:
            sys.stderr.write(f"{self.address_string()} - {format % args}\n")

    def _head(self, status: HTTPStatus, headers: dict) -> None:
        self.send_response(status)
        for name, value in headers.items():
            self.send_header(name, value)
        self.end_headers()

    def _plain(self, status: HTTPStatus, text: str, send_body: bool, headers: dict | None = None) -> None:
        body = (text + "\n").encode("utf-8")
        self._head(status, {**(headers or {}), "Content-Type": "text/plain; charset=utf-8",
                            "Content-Length": str(len(body))})
        if send_body:
            self.wfile.write(body)

    def _open(self, name: str):
        """An open regular file inside the bundle, or None (missing, symlink, not a file)."""
        try:
            fd = os.open(os.path.join(self.server.bundle_root, name), os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0))
        except OSError:
            return None
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            os.close(fd)
            return None
        return os.fdopen(fd, "rb")

    def _answer(self, send_body: bool) -> None:
        path = urlsplit(self.path).path
        match = SERVED_PATH.fullmatch(path)
        handle = self._open(path[1:]) if match else None
        if handle is None:
            self._plain(HTTPStatus.NOT_FOUND, "not found", send_body)
            return
        with handle:
            # The small mutable files are read once, so that their tag and body agree.
            data = None if match.group(1) else handle.read(MAX_MANIFEST_BYTES + 1)
            size = os.fstat(handle.fileno()).st_size if data is None else len(data)
            headers = {"ETag": f'"{match.group(1) or hashlib.sha256(data).hexdigest()}"',
                       "Cache-Control": IMMUTABLE if data is None else REVALIDATE, "Accept-Ranges": "bytes"}
            if etag_matches(self.headers.get("If-None-Match"), headers["ETag"]):
                self._head(HTTPStatus.NOT_MODIFIED, headers)
                return
            try:
                use_range = self.headers.get("If-Range") in (None, headers["ETag"])
                span = parse_range(self.headers.get("Range"), size) if use_range else None
            except ValueError:
                self._plain(HTTPStatus.REQUESTED_RANGE_NOT_SATISFIABLE, "range not satisfiable", send_body,
                            {**headers, "Content-Range": f"bytes */{size}"})
                return
            start, end = span or (0, size)
            if span:
                headers["Content-Range"] = f"bytes {start}-{end - 1}/{size}"
            headers["Content-Type"] = "application/json" if path.endswith(".json") else "application/octet-stream"
            headers["Content-Length"] = str(end - start)
            self._head(HTTPStatus.PARTIAL_CONTENT if span else HTTPStatus.OK, headers)
            if send_body:
                self._send_span(handle, data, start, end)

    def _send_span(self, handle, data: bytes | None, start: int, end: int) -> None:
        if data is not None:
            self.wfile.write(data[start:end])
            return
        handle.seek(start)
        remaining = end - start
        while remaining > 0:
            chunk = handle.read(min(CHUNK, remaining))
            if not chunk:  # the file shrank under us: close rather than send a short body silently
                self.close_connection = True
                return
            self.wfile.write(chunk)
            remaining -= len(chunk)


class BundleServer(ThreadingHTTPServer):
    """A threading HTTP server for one bundle directory."""

    daemon_threads = True
    request_queue_size = 128
    handler_class = BundleHandler

    def __init__(self, address: tuple[str, int], bundle_root: str, quiet: bool):
        self.bundle_root = bundle_root
        self.quiet = quiet
        super().__init__(address, self.handler_class)

    def handle_error(self, request, client_address):
        error = sys.exc_info()[1]
        if isinstance(error, (ConnectionError, TimeoutError)):
            return  # a client that went away is not a server error
        super().handle_error(request, client_address)


def make_server(bundle_dir: str, host: str = "127.0.0.1", port: int = 0, quiet: bool = False) -> BundleServer:
    """A server for ``bundle_dir`` bound to (host, port); call ``serve_forever()`` on it.

    Args:
      bundle_dir: a bundle directory (made by ``pack_bundle``).
      host: the address to bind; loopback unless you mean to serve a network.
      port: TCP port; 0 picks a free one (see ``server.server_address``).
      quiet: do not log requests to stderr.

    Raises:
      MissingFileError: ``bundle_dir`` is not a directory.
      BundleError: it has no manifest.json.
      UsageError: the port is out of range or cannot be bound.
    """
    if not os.path.isdir(bundle_dir):
        raise MissingFileError(f"{bundle_dir}: no such bundle directory")
    if not os.path.isfile(os.path.join(bundle_dir, MANIFEST_NAME)):
        raise BundleError(f"{bundle_dir}: no {MANIFEST_NAME}; not a bundle (make one with `edgepatch pack`)")
    if not (isinstance(port, int) and 0 <= port <= 65535):
        raise UsageError(f"port must be an integer in 0..65535; received {port!r}")
    try:
        return BundleServer((host, port), os.path.abspath(bundle_dir), quiet)
    except OSError as error:
        raise UsageError(f"cannot listen on {host}:{port}: {error.strerror or error}") from None
