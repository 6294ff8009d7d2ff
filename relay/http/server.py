"""The relay's own HTTP endpoints: /metrics, /targets, /service-discovery, /-/healthy, /-/ready, /-/reload.

A deliberately small HTTP/1.1 server on anyio (one request per connection): these endpoints are
read by people and by one Prometheus, not by a fleet. It binds to loopback unless told otherwise.
"""

from __future__ import annotations

import errno
import ipaddress
import logging
import ssl
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any, cast
from urllib.parse import parse_qs, urlsplit

import anyio
import anyio.abc
import anyio.to_thread
import orjson
from anyio.streams.tls import TLSStream
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from . import ui
from .webconfig import WebConfig

__all__ = ["Response", "WebServer", "listens_everywhere", "parse_listen"]

log = logging.getLogger("relay.http.server")


def parse_listen(value: str, where: str = "--listen") -> tuple[str, int]:
    """``HOST:PORT`` (``[::1]:PORT`` for IPv6) -> (host, port); ``:PORT`` (as Prometheus'
    ``--web.listen-address``) -> ("", port), every interface (IPv4 and IPv6)."""
    from .._exceptions import ConfigError

    host, sep, port = value.rpartition(":")
    host = host.strip("[]")
    if not sep or any(c.isspace() for c in host) or not port.isdigit() or not 0 <= int(port) <= 65535:
        raise ConfigError(where, f"{value!r} is not HOST:PORT (or :PORT for every interface)")
    return host, int(port)


def listens_everywhere(host: str) -> bool:
    """True for an address that takes connections from other machines on every interface."""
    return host in ("", "0.0.0.0", "::")


@dataclass
class Response:
    status: int
    body: bytes
    content_type: str = "text/plain; charset=utf-8"
    headers: tuple[tuple[str, str], ...] = ()


_REASONS = {200: "OK", 302: "Found", 400: "Bad Request", 401: "Unauthorized", 403: "Forbidden", 404: "Not Found",
            405: "Method Not Allowed", 408: "Request Timeout", 413: "Payload Too Large", 431:
            "Request Header Fields Too Large", 500: "Internal Server Error", 503: "Service Unavailable"}

# accept() errors that mean "not now" (out of file descriptors, of memory for a socket): the
# listener pauses and tries again; they never end the process.
_ACCEPT_RETRY = {errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM}
_SAFE_METHODS = ("GET", "HEAD", "OPTIONS")


class WebServer:
    """Serves the relay's endpoints for an app object that provides the data (see ``relay.app``).

    Guarded: at most ``max_connections`` at a time (past that new ones wait in the kernel's
    backlog), a request head of at most ``max_head_bytes`` read within ``head_timeout`` seconds
    (TLS handshake included), ``accept`` failures retried after a pause, state-changing requests
    (POST, PUT) from another origin refused, and TLS plus basic auth from ``web_config``.
    """

    def __init__(
        self,
        host: str,
        port: int,
        *,
        registry: Any,
        targets: Callable[[], list[dict[str, Any]]],
        ready: Callable[[], bool],
        reload: Callable[[], Awaitable[str | None]] | None,
        web_config: WebConfig | None = None,
        max_connections: int = 512,
        max_head_bytes: int = 16384,
        head_timeout: float = 10.0,
        write_timeout: float = 30.0,
        pages: Mapping[str, Callable[[], Response]] | None = None,
        dropped: Callable[[str | None], tuple[list[dict[str, Any]], dict[str, int]]] | None = None,
        service_discovery: Callable[[str | None, int], bytes] | None = None,
        query_pages: Mapping[str, Callable[[dict[str, list[str]]], Response]] | None = None,
    ) -> None:
        self.host = host
        self.port = port
        self.registry = registry
        self.targets = targets
        self.ready = ready
        self.reload = reload
        self.web_config = web_config or WebConfig()
        self.max_connections = max_connections
        self.max_head_bytes = max_head_bytes
        self.head_timeout = head_timeout
        self.write_timeout = write_timeout
        self.pages = pages or {}  # more GET endpoints: path -> response (relay.health: /fleet, /api/v1/alerts)
        self.dropped = dropped
        self.service_discovery = service_discovery
        self.query_pages = query_pages or {}  # GET endpoints given the query: /config, /api/v1/status/*, ...
        self.bound_port = 0
        self.connections = 0
        self.accept_errors = 0
        self._slots = anyio.Semaphore(max_connections)

    async def run(self, *, task_status: anyio.abc.TaskStatus[int] = anyio.TASK_STATUS_IGNORED) -> None:
        listener = await anyio.create_tcp_listener(local_host=self.host or None, local_port=self.port, reuse_port=False)
        async with listener, anyio.create_task_group() as tg:
            self.bound_port = listener.listeners[0].extra(anyio.abc.SocketAttribute.local_port)
            for sub in listener.listeners:
                tg.start_soon(self._accept_loop, cast(anyio.abc.SocketListener, sub), tg)
            task_status.started(self.bound_port)

    async def _accept_loop(self, listener: anyio.abc.SocketListener, tg: anyio.abc.TaskGroup) -> None:
        """Accept forever. Out of descriptors (EMFILE/ENFILE) or socket memory: wait (0.1 s doubling
        up to 1 s) and try again, logged once when it starts and once when it ends."""
        pause = 0.0
        failing: str | None = None
        while True:
            await self._slots.acquire()
            try:
                stream = await listener.accept()
            except OSError as exc:
                self._slots.release()
                self.accept_errors += 1
                reason = exc.strerror or str(exc)
                if failing != reason:
                    failing = reason
                    log.error("web: cannot accept connections (%s); retrying until it can", reason)
                # Out of descriptors lasts until some free up: back off. Anything else is one
                # connection's trouble (ECONNABORTED, ...): the next may be fine.
                pause = min(1.0, max(0.1, pause * 2)) if exc.errno in _ACCEPT_RETRY else 0.01
                await anyio.sleep(pause)
                continue
            except BaseException:
                self._slots.release()
                raise
            if failing is not None:
                log.warning("web: accepting connections again (after: %s)", failing)
                failing = None
            pause = 0.0
            tg.start_soon(self._serve_one, stream)

    async def _serve_one(self, stream: anyio.abc.SocketStream) -> None:
        self.connections += 1
        try:
            await self._handle(stream)
        except Exception as exc:  # a connection never ends the server
            log.debug("web: connection failed: %r", exc)
        finally:
            self.connections -= 1
            self._slots.release()

    async def _handle(self, raw: anyio.abc.SocketStream) -> None:
        stream: anyio.abc.ByteStream = raw
        async with raw:
            local = raw.extra(anyio.abc.SocketAttribute.local_address)
            try:
                with anyio.fail_after(self.head_timeout):
                    if self.web_config.ssl_context is not None:
                        stream = await TLSStream.wrap(raw, server_side=True, ssl_context=self.web_config.ssl_context,
                                                      standard_compatible=False)
                    head = await self._read_head(stream)
            except (anyio.EndOfStream, anyio.BrokenResourceError, TimeoutError, OSError, ssl.SSLError):
                return
            if head is None:
                await self._send(stream, Response(431, b"request head too large\n"))
                return
            try:
                request_line, *header_lines = head.split("\r\n")
                method, target, _ = request_line.split(" ", 2)
                headers: dict[str, str] = {}
                for line in header_lines:
                    k, _, v = line.partition(":")
                    headers[k.strip().lower()] = v.strip()
            except ValueError:
                await self._send(stream, Response(400, b"bad request\n"))
                return
            try:
                resp = await self._guarded(method, target, headers, local)
            except Exception as exc:  # an endpoint's bug is a 500 for that request, not a dead server
                log.exception("web: %s %s failed", method, target[:200])
                resp = Response(500, f"internal error: {exc.__class__.__name__}\n".encode())
            await self._send(stream, resp)

    async def _read_head(self, stream: anyio.abc.ByteStream) -> str | None:
        """The request head (up to the blank line), or None when it is larger than the bound."""
        data = b""
        while b"\r\n\r\n" not in data:
            if len(data) > self.max_head_bytes:
                return None
            data += await stream.receive(65536)
        head = data.split(b"\r\n\r\n", 1)[0]
        return None if len(head) > self.max_head_bytes else head.decode("latin-1")

    async def _guarded(self, method: str, target: str, headers: dict[str, str], local: Any) -> Response:
        users = self.web_config.users
        if users is not None and not await users.check(headers.get("authorization")):
            return Response(401, b"unauthorized\n", headers=(("WWW-Authenticate", 'Basic realm="relay"'),))
        if method not in _SAFE_METHODS:
            refused = self._cross_origin(headers, local)
            if refused:
                return Response(403, f"{refused}\n".encode())
        return await self.route(method, target, headers)

    def _cross_origin(self, headers: dict[str, str], local: Any) -> str | None:
        """Why a state-changing request is refused as cross-origin, or None. A browser tells:
        ``Sec-Fetch-Site: cross-site``, or an ``Origin`` whose host:port is not this listener's
        own address (the configured host, the address the connection came in on, or localhost on
        loopback). curl and Prometheus' tooling send neither."""
        if headers.get("sec-fetch-site", "").lower() == "cross-site":
            return "cross-site request refused (Sec-Fetch-Site: cross-site)"
        origin = headers.get("origin")
        if origin is None:
            return None
        parts = urlsplit(origin)
        try:
            port = parts.port or (443 if parts.scheme == "https" else 80)
        except ValueError:
            port = -1
        host = (parts.hostname or "").lower()
        own_port = self.bound_port or self.port
        own = {self.host.lower()}
        if isinstance(local, tuple) and local:
            own.add(str(local[0]).lower())
        if any(_is_loopback(h) for h in own):
            own |= {"localhost", "127.0.0.1", "::1"}
        if port == own_port and host in own:
            return None
        return f"cross-origin request refused (Origin {origin!r} is not this server)"

    async def _send(self, stream: anyio.abc.ByteStream, resp: Response) -> None:
        extra = "".join(f"{k}: {v}\r\n" for k, v in (*self.web_config.headers.items(), *resp.headers))
        head = (
            f"HTTP/1.1 {resp.status} {_REASONS.get(resp.status, 'Unknown')}\r\n"
            f"Content-Type: {resp.content_type}\r\nContent-Length: {len(resp.body)}\r\n{extra}Connection: close\r\n\r\n"
        )
        try:
            with anyio.fail_after(self.write_timeout):
                await stream.send(head.encode() + resp.body)
        except (anyio.BrokenResourceError, anyio.ClosedResourceError, TimeoutError, OSError, ssl.SSLError):
            return

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
                return Response(403, b"Lifecycle API is not enabled (start the relay with --web.enable-lifecycle)\n")
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
                # built in a thread: 10,000 targets take about 0.1 s (benchmarks/bench_ui.py), which
                # the event loop must not wait for
                page = await anyio.to_thread.run_sync(ui.targets_page, self.targets(), query)
                return Response(200, page, "text/html; charset=utf-8", _HTML_HEADERS)
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
            return Response(200, ui.with_nav(page, path), "text/html; charset=utf-8", _HTML_HEADERS)
        extra_page = self.pages.get(path)
        if extra_page is not None:
            resp = extra_page()
            if resp.content_type.startswith("text/html"):
                resp = Response(resp.status, ui.with_nav(resp.body, path), resp.content_type, _HTML_HEADERS)
            return resp
        query_page = self.query_pages.get(path)
        if query_page is not None:
            return query_page(query)
        if path == "/":
            return Response(302, b"", "text/plain", (("Location", "/targets?format=html"),))
        return Response(404, b"not found\n")


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


#: every HTML page's headers: no script, no external resource, no MIME sniffing
HTML_HEADERS = _HTML_HEADERS = (("Content-Security-Policy", "default-src 'none'; style-src 'unsafe-inline'"),
                                ("X-Content-Type-Options", "nosniff"))

