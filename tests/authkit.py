"""Loopback servers for the managed-receiver tests: an OAuth 2.0 token endpoint that checks the
grant as RFC 6749 says, a receiver that checks each request (a Bearer token, a SigV4 signature)
and forwards remote write to a real VictoriaMetrics, and a tinyproxy on a loopback port."""

from __future__ import annotations

import base64
import os
import shutil
import signal
import subprocess
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, unquote_plus

import orjson

from relay.devtools.localenv import free_ports, wait_http

METRICS_BODY = b"# TYPE managed_metric gauge\nmanaged_metric 42\n"


class _Quiet(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *args: object) -> None:
        pass

    def reply(self, status: int, body: bytes = b"", ctype: str = "text/plain", headers: dict[str, str] | None = None) -> None:
        self.send_response(status)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        for k, v in (headers or {}).items():
            self.send_header(k, v)
        self.end_headers()
        self.wfile.write(body)

    def body(self) -> bytes:
        return self.rfile.read(int(self.headers.get("Content-Length") or 0))


class _Server:
    def __init__(self, handler: type[BaseHTTPRequestHandler], tls: tuple[str, str] | None = None) -> None:
        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self.scheme = "http"
        if tls is not None:  # (certificate file, key file): an https server
            import ssl

            ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            ctx.load_cert_chain(*tls)
            self.httpd.socket = ctx.wrap_socket(self.httpd.socket, server_side=True)
            self.scheme = "https"
        self.httpd.daemon_threads = True
        self.httpd.owner = self  # type: ignore[attr-defined]
        self.port = self.httpd.server_address[1]
        self._thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self._thread.start()

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


class TokenEndpoint(_Server):
    """``POST /token``: the client credentials grant, checked; a new token ``tok-N`` per grant.

    ``violations`` lists every way a request broke RFC 6749 (the test asserts it stays empty);
    ``mode``: "ok", "reject" (401 invalid_client), "huge" (an answer of 2 MiB).
    """

    def __init__(self, client_id: str, secret: str, *, scopes: tuple[str, ...] = (),
                 params: dict[str, str] | None = None, expires_in: float | None = 3600,
                 tls: tuple[str, str] | None = None) -> None:
        self.client_id = client_id
        self.secret = secret
        self.scopes = scopes
        self.params = params or {}
        self.expires_in = expires_in
        self.mode = "ok"
        self.grants = 0
        self.violations: list[str] = []
        self.issued: list[str] = []
        self.lock = threading.Lock()
        self.seen: list[dict[str, str]] = []
        super().__init__(_TokenHandler, tls)

    @property
    def url(self) -> str:
        return f"{self.scheme}://127.0.0.1:{self.port}/token"


class _TokenHandler(_Quiet):
    def do_POST(self) -> None:
        ep: TokenEndpoint = self.server.owner  # type: ignore[attr-defined]
        body = self.body()
        ep.seen.append({k.lower(): v for k, v in self.headers.items()})
        bad: list[str] = []
        if self.path != "/token":
            bad.append(f"path {self.path}")
        if self.headers.get("Content-Type", "").split(";")[0] != "application/x-www-form-urlencoded":
            bad.append(f"content-type {self.headers.get('Content-Type')!r}")
        form = {k: v for k, v in parse_qs(body.decode(), keep_blank_values=True, strict_parsing=True).items()}
        if any(len(v) != 1 for v in form.values()):
            bad.append("a parameter given twice")
        flat = {k: v[0] for k, v in form.items()}
        if flat.pop("grant_type", None) != "client_credentials":
            bad.append("grant_type is not client_credentials")
        want_scope = " ".join(ep.scopes)
        if flat.pop("scope", "") != want_scope:
            bad.append(f"scope is not {want_scope!r}")
        if flat != ep.params:
            bad.append(f"extra parameters {flat!r}, want {ep.params!r}")
        auth = self.headers.get("Authorization", "")
        client_ok = False
        if auth.startswith("Basic "):
            user, _, password = base64.b64decode(auth[6:]).decode().partition(":")
            # RFC 6749 2.3.1: the id and secret are form-urlencoded before Basic encoding
            client_ok = unquote_plus(user) == ep.client_id and unquote_plus(password) == ep.secret
        else:
            bad.append("client authentication is not HTTP Basic")
        with ep.lock:
            ep.grants += 1
            ep.violations += bad
            n = ep.grants
        if ep.mode == "huge":
            self.reply(200, b'{"access_token": "' + b"x" * (2 << 20) + b'"}', "application/json")
            return
        if ep.mode == "reject" or not client_ok or bad:
            self.reply(401, b'{"error": "invalid_client", "error_description": "client authentication failed"}',
                       "application/json", {"WWW-Authenticate": 'Basic realm="token"'})
            return
        token = f"tok-{n}"
        with ep.lock:
            ep.issued.append(token)
        answer: dict[str, Any] = {"access_token": token, "token_type": "bearer"}
        if ep.expires_in is not None:
            answer["expires_in"] = ep.expires_in
        self.reply(200, orjson.dumps(answer), "application/json", {"Cache-Control": "no-store"})


class Receiver(_Server):
    """Checks each request with ``check(handler, body) -> bool`` (else 401), then answers a GET with
    METRICS_BODY and forwards a POST (remote write) to ``upstream``, answering with its status.
    ``seen`` keeps the headers of every request."""

    def __init__(self, check: Callable[[BaseHTTPRequestHandler, bytes], bool], upstream: str = "",
                 tls: tuple[str, str] | None = None) -> None:
        self.check = check
        self.upstream = upstream
        self.seen: list[dict[str, str]] = []
        self.refused = 0
        self.get_body = (METRICS_BODY, "text/plain; version=0.0.4")  # what a GET is answered with
        super().__init__(_ReceiverHandler, tls)

    @property
    def url(self) -> str:
        return f"{self.scheme}://127.0.0.1:{self.port}"


class _ReceiverHandler(_Quiet):
    def _handle(self, method: str) -> None:
        rc: Receiver = self.server.owner  # type: ignore[attr-defined]
        body = self.body() if method == "POST" else b""
        rc.seen.append({k.lower(): v for k, v in self.headers.items()})
        if not rc.check(self, body):
            rc.refused += 1
            self.reply(401, b"unauthorized\n")
            return
        if method == "GET":
            self.reply(200, *rc.get_body)
            return
        forward = {k: self.headers[k] for k in ("Content-Encoding", "Content-Type",
                                                "X-Prometheus-Remote-Write-Version") if k in self.headers}
        req = urllib.request.Request(rc.upstream, data=body, headers=forward, method="POST")
        try:
            with urllib.request.urlopen(req, timeout=20) as resp:
                status, answer = resp.status, resp.read()
        except urllib.error.HTTPError as exc:
            status, answer = exc.code, exc.read()
        self.reply(status, answer)

    def do_GET(self) -> None:
        self._handle("GET")

    def do_POST(self) -> None:
        self._handle("POST")


def bearer(tokens: Callable[[], list[str]]) -> Callable[[BaseHTTPRequestHandler, bytes], bool]:
    """A check that accepts ``Bearer <t>`` for the tokens ``tokens()`` returns at the time."""
    return lambda h, _body: h.headers.get("Authorization", "") in {f"Bearer {t}" for t in tokens()}


# -- tinyproxy ----------------------------------------------------------------------------------


class Tinyproxy:
    """Debian's tinyproxy on a loopback port, its own config and log; ``log_text()`` reads the log.

    ``ConnectPort`` lines allow CONNECT to any port (tinyproxy allows only 443 and 563 by default);
    ``basic_auth`` makes it ask for Proxy-Authorization.
    """

    def __init__(self, base_dir: Path, basic_auth: tuple[str, str] | None = None) -> None:
        binary = shutil.which("tinyproxy") or ("/usr/bin/tinyproxy" if os.path.exists("/usr/bin/tinyproxy") else None)
        if binary is None:
            raise FileNotFoundError("tinyproxy is not installed (apt-get install tinyproxy)")
        self.binary = binary
        self.port = free_ports(1)[0]
        self.dir = base_dir
        self.log = base_dir / "tinyproxy.log"
        lines = [
            f"Port {self.port}", "Listen 127.0.0.1", "Timeout 30", f"LogFile \"{self.log}\"", "LogLevel Info",
            "MaxClients 50", "Allow 127.0.0.1", "ViaProxyName \"relay-test-proxy\"",
        ]
        if basic_auth is not None:
            lines.append(f"BasicAuth {basic_auth[0]} {basic_auth[1]}")
        self.conf = base_dir / "tinyproxy.conf"
        self.conf.write_text("\n".join(lines) + "\n")
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> Tinyproxy:
        self.proc = subprocess.Popen([self.binary, "-d", "-c", str(self.conf)], stdout=subprocess.DEVNULL,
                                     stderr=subprocess.PIPE)
        deadline = time.monotonic() + 10
        import socket

        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                err = self.proc.stderr.read().decode() if self.proc.stderr else ""
                raise RuntimeError(f"tinyproxy exited: {err[:500]}")
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=0.5).close()
                return self
            except OSError:
                time.sleep(0.05)
        raise RuntimeError("tinyproxy did not start listening within 10 s")

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        self.proc = None

    def log_text(self) -> str:
        return self.log.read_text(errors="replace") if self.log.exists() else ""


@contextmanager
def tinyproxy(base_dir: Path, basic_auth: tuple[str, str] | None = None) -> Iterator[Tinyproxy]:
    proxy = Tinyproxy(base_dir, basic_auth).start()
    try:
        yield proxy
    finally:
        proxy.stop()


__all__ = ["METRICS_BODY", "Receiver", "Tinyproxy", "TokenEndpoint", "bearer", "tinyproxy", "wait_http"]
