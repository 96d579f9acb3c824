"""A bundle server on a free loopback port, in a thread, for tests."""

from __future__ import annotations

import http.client
import shutil
import threading

from edgepatch.ship.serve import BundleServer


class Served:
    """A running server whose bundle directory ``root`` a test may replace or tamper with."""

    def __init__(self, source: str, root: str, server_class=BundleServer):
        shutil.copytree(source, root)
        self.root = root
        self.server = server_class(("127.0.0.1", 0), root, True)
        self.port = self.server.server_address[1]
        self.url = f"http://127.0.0.1:{self.port}/"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def publish(self, source: str) -> None:
        shutil.rmtree(self.root)
        shutil.copytree(source, self.root)

    def get(self, path: str, method: str = "GET", **headers) -> tuple[int, dict, bytes]:
        connection = http.client.HTTPConnection("127.0.0.1", self.port, timeout=10)
        connection.request(method, path, headers=headers)
        response = connection.getresponse()
        body = response.read()
        connection.close()
        return response.status, dict(response.headers), body

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
