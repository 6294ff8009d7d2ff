"""A real HTTP server on loopback for remote-write tests: it serves one exposition body at
``/metrics`` (for a scraper: the relay, or Prometheus as the oracle) and keeps every POST to
``/api/v1/write`` (decompressed and decoded with tests/remote_write_pb.py)."""

from __future__ import annotations

import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from typing import Any

from relay.remote.encode import decompress
from tests.remote_write_pb import WriteRequest


class CaptureServer:
    """``with CaptureServer(body, content_type) as srv:`` — ``srv.url``, ``srv.requests``."""

    def __init__(self, body: bytes = b"", content_type: str = "text/plain; version=0.0.4") -> None:
        self.body = body
        self.content_type = content_type
        self.requests: list[Any] = []  # decoded WriteRequests, in arrival order
        self.status = 204
        self._lock = threading.Lock()
        owner = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: object) -> None:
                pass

            def do_GET(self) -> None:
                data = owner.body
                self.send_response(200)
                self.send_header("Content-Type", owner.content_type)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def do_POST(self) -> None:
                size = int(self.headers.get("Content-Length", "0"))
                raw = self.rfile.read(size)
                status = owner.status
                if status < 300:
                    with owner._lock:
                        owner.requests.append(WriteRequest.FromString(decompress(raw)))
                self.send_response(status)
                self.send_header("Content-Length", "0")
                self.end_headers()

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host!s}:{port}"

    @property
    def address(self) -> str:
        host, port = self._server.server_address[:2]
        return f"{host!s}:{port}"

    def snapshot(self) -> list[Any]:
        with self._lock:
            return list(self.requests)

    def wait_for(self, pred: Any, timeout: float = 60.0) -> list[Any]:
        """Poll (bounded) until ``pred(requests)`` is true; returns the requests."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            reqs = self.snapshot()
            if pred(reqs):
                return reqs
            time.sleep(0.2)
        raise AssertionError(f"condition not met within {timeout}s; {len(self.snapshot())} requests arrived")

    def __enter__(self) -> CaptureServer:
        self._thread.start()
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(10)
