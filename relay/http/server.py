"""The relay's own HTTP endpoints: /metrics, /targets, /service-discovery, /-/healthy, /-/ready, /-/reload.

A deliberately small HTTP/1.1 server on anyio (one request per connection): these endpoints are
read by people and by one Prometheus, not by a fleet. It binds to loopback unless told otherwise.
"""

from __future__ import annotations

import html
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qs, urlsplit

import anyio
import anyio.abc
import orjson
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

__all__ = ["Response", "WebServer", "parse_listen"]

log = logging.getLogger("relay.http.server")


def parse_listen(value: str, where: str = "--listen") -> tuple[str, int]:
    """``HOST:PORT`` (``[::1]:PORT`` for IPv6) -> (host, port)."""
    from .._exceptions import ConfigError

    host, sep, port = value.rpartition(":")
    host = host.strip("[]")
    if not sep or not host or not port.isdigit() or not 0 <= int(port) <= 65535:
        raise ConfigError(where, f"{value!r} is not HOST:PORT")
    return host, int(port)


@dataclass
class Response:
    status: int
    body: bytes
    content_type: str = "text/plain; charset=utf-8"
    headers: tuple[tuple[str, str], ...] = ()


_REASONS = {200: "OK", 400: "Bad Request", 403: "Forbidden", 404: "Not Found", 405: "Method Not Allowed",
            413: "Payload Too Large", 500: "Internal Server Error", 503: "Service Unavailable"}


class WebServer:
    """Serves the relay's endpoints for an app object that provides the data (see ``relay.app``)."""

    def __init__(
        self,
        host: str,
        port: int,
        *,
        registry: Any,
        targets: Callable[[], list[dict[str, Any]]],
        ready: Callable[[], bool],
        reload: Callable[[], Awaitable[str | None]] | None,
        dropped: Callable[[str | None], tuple[list[dict[str, Any]], dict[str, int]]] | None = None,
        service_discovery: Callable[[str | None, int], bytes] | None = None,
    ) -> None:
        self.host = host
        self.port = port
        self.registry = registry
        self.targets = targets
        self.ready = ready
        self.reload = reload
        self.dropped = dropped
        self.service_discovery = service_discovery
        self.bound_port = 0

    async def run(self, *, task_status: anyio.abc.TaskStatus[int] = anyio.TASK_STATUS_IGNORED) -> None:
        listener = await anyio.create_tcp_listener(local_host=self.host, local_port=self.port, reuse_port=False)
        async with listener:
            sock = listener.listeners[0]
            self.bound_port = sock.extra(anyio.abc.SocketAttribute.local_port)
            task_status.started(self.bound_port)
            await listener.serve(self._handle)

    async def _handle(self, stream: anyio.abc.SocketStream) -> None:
        async with stream:
            try:
                with anyio.fail_after(10):
                    data = b""
                    while b"\r\n\r\n" not in data:
                        chunk = await stream.receive(65536)
                        data += chunk
                        if len(data) > 65536:
                            await self._send(stream, Response(413, b"request too large\n"))
                            return
                    head = data.split(b"\r\n\r\n", 1)[0].decode("latin-1")
                    request_line, *header_lines = head.split("\r\n")
                    method, target, _ = request_line.split(" ", 2)
                    headers = {}
                    for line in header_lines:
                        k, _, v = line.partition(":")
                        headers[k.strip().lower()] = v.strip()
                    resp = await self.route(method, target, headers)
                    await self._send(stream, resp)
            except (anyio.EndOfStream, anyio.BrokenResourceError, TimeoutError, ValueError, OSError):
                return

    async def _send(self, stream: anyio.abc.SocketStream, resp: Response) -> None:
        head = (
            f"HTTP/1.1 {resp.status} {_REASONS.get(resp.status, 'Unknown')}\r\n"
            f"Content-Type: {resp.content_type}\r\nContent-Length: {len(resp.body)}\r\nConnection: close\r\n"
            + "".join(f"{k}: {v}\r\n" for k, v in resp.headers) + "\r\n"
        )
        await stream.send(head.encode() + resp.body)

    async def route(self, method: str, target: str, headers: dict[str, str]) -> Response:
        parts = urlsplit(target)
        path = parts.path
        query = parse_qs(parts.query)
        if path == "/metrics":
            return Response(200, generate_latest(self.registry), CONTENT_TYPE_LATEST)
        if path == "/-/healthy":
            return Response(200, b"Healthy.\n")
        if path == "/-/ready":
            return Response(200, b"Ready.\n") if self.ready() else Response(503, b"Not ready.\n")
        if path == "/-/reload":
            if self.reload is None:
                return Response(403, b"reload is disabled (start without --web.disable-reload)\n")
            if method not in ("POST", "PUT"):
                return Response(405, b"use POST or PUT\n")
            error = await self.reload()
            return Response(200, b"config reloaded\n") if error is None else Response(400, f"{error}\n".encode())
        if path in ("/targets", "/api/v1/targets"):
            pool = query.get("scrapePool", [None])[0] or None
            state = query.get("state", [""])[0].lower()
            if state not in ("", "any", "active", "dropped"):
                return Response(400, orjson.dumps({"status": "error", "errorType": "bad_data", "error": (
                    f"parameter state: {state[:64]!r} is not one of active, dropped, any")}), "application/json")
            data = [t for t in self.targets() if pool is None or t["scrapePool"] == pool]
            wants_html = query.get("format", [""])[0] == "html" or (
                "text/html" in headers.get("accept", "") and path == "/targets"
            )
            if wants_html:
                return Response(200, _targets_html(data), "text/html; charset=utf-8", _HTML_HEADERS)
            dropped, counts = self.dropped(pool) if self.dropped is not None and state != "active" else ([], {})
            body: dict[str, Any] = {"activeTargets": data if state != "dropped" else [], "droppedTargets": dropped}
            if state != "active":
                body["droppedTargetCounts"] = counts
            return Response(200, orjson.dumps({"status": "success", "data": body}), "application/json")
        if path == "/service-discovery" and self.service_discovery is not None:
            offset = query.get("offset", ["0"])[0]
            if not offset.isdigit():
                return Response(400, f"parameter offset: {offset[:64]!r} is not a non-negative integer\n".encode())
            page = self.service_discovery(query.get("scrapePool", [None])[0] or None, int(offset))
            return Response(200, page, "text/html; charset=utf-8", _HTML_HEADERS)
        if path == "/":
            return Response(200, b'etcd metrics relay: <a href="/targets?format=html">targets</a> '
                            b'<a href="/service-discovery">service discovery</a> '
                            b'<a href="/metrics">metrics</a>\n', "text/html; charset=utf-8", _HTML_HEADERS)
        return Response(404, b"not found\n")


_HTML_HEADERS = (("Content-Security-Policy", "default-src 'none'; style-src 'unsafe-inline'"),
                 ("X-Content-Type-Options", "nosniff"))


def _targets_html(targets: list[dict[str, Any]]) -> bytes:
    rows = []
    now = time.time()
    for t in sorted(targets, key=lambda t: (t["labels"].get("job", ""), t["scrapeUrl"])):
        color = {"up": "#2a2", "down": "#c22"}.get(t["health"], "#888")
        ago = f"{now - t['lastScrapeTs']:.1f}s ago" if t["lastScrapeTs"] else "never"
        labels = ", ".join(f"{k}={v!r}" for k, v in sorted(t["labels"].items()))
        rows.append(
            f"<tr><td>{html.escape(t['scrapeUrl'])}</td><td style='color:{color}'>{html.escape(t['health'])}</td>"
            f"<td>{html.escape(labels)}</td><td>{ago}</td><td>{t['lastScrapeDuration'] * 1000:.1f} ms</td>"
            f"<td>{t['lastSamples']}</td><td>{html.escape(t['lastError'])}</td></tr>"
        )
    page = (
        "<!doctype html><html><head><meta charset='utf-8'><title>relay targets</title>"
        "<style>body{font-family:sans-serif}td,th{padding:2px 8px;text-align:left}</style></head><body>"
        f"<h1>Targets ({len(targets)})</h1><table><tr><th>Endpoint</th><th>State</th><th>Labels</th>"
        "<th>Last scrape</th><th>Duration</th><th>Samples</th><th>Error</th></tr>"
        + "".join(rows)
        + "</table></body></html>"
    )
    return page.encode()
