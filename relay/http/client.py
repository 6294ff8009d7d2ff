"""HTTP clients: one ``httpx.AsyncClient`` per distinct TLS/auth setting, shared by its users.

SSL contexts are built once per setting and rebuilt when a certificate, key or CA file changes on
disk (rotated client certificates are picked up without a restart): :meth:`ClientPool.get` checks
the files' modification times at most every ``check_interval`` seconds.
"""

from __future__ import annotations

import base64
import os
import ssl
import time
from collections.abc import Generator
from dataclasses import dataclass

import httpx

from .._exceptions import ConfigError
from ..config import Authorization, BasicAuth, HTTPClientConfig, TLSConfig

__all__ = ["ClientPool", "Direct", "FileAuth", "build_ssl_context"]

USER_AGENT = "etcd-metrics-relay/0.1"


def build_ssl_context(tls: TLSConfig, where: str = "tls_config") -> ssl.SSLContext:
    """An SSL context for ``tls``: verification on unless insecure_skip_verify, HTTP/1.1 only."""
    try:
        ctx = ssl.create_default_context(cafile=tls.ca_file) if tls.ca_file else ssl.create_default_context()
        if tls.cert_file and tls.key_file:
            ctx.load_cert_chain(tls.cert_file, tls.key_file)
    except FileNotFoundError as exc:
        raise ConfigError(where, f"cannot read {exc.filename}: no such file") from None
    except (ssl.SSLError, OSError) as exc:
        raise ConfigError(where, f"cannot load certificates: {exc.__class__.__name__}: {exc.strerror or exc}") from None
    if tls.insecure_skip_verify:
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
    if tls.min_version == "TLS13":
        ctx.minimum_version = ssl.TLSVersion.TLSv1_3
    else:
        ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    # etcd's client port treats HTTP/2 as gRPC: never offer it.
    ctx.set_alpn_protocols(["http/1.1"])
    return ctx


def _read_secret_file(path: str, where: str) -> str:
    try:
        with open(path, encoding="utf-8") as f:
            return f.read().strip()
    except OSError as exc:
        raise ConfigError(where, f"cannot read {path}: {exc.strerror or exc}") from None


class FileAuth(httpx.Auth):
    """Basic or Authorization-header auth whose secret may live in a file re-read when it changes."""

    def __init__(self, basic: BasicAuth | None, authorization: Authorization | None) -> None:
        self.basic = basic
        self.authorization = authorization
        self._cached: tuple[float, str] | None = None

    def _secret(self, path: str | None, inline: str | None, where: str) -> str:
        if not path:
            return inline.reveal() if inline is not None and hasattr(inline, "reveal") else (inline or "")
        mtime = os.stat(path).st_mtime if os.path.exists(path) else 0.0
        if self._cached is None or self._cached[0] != mtime:
            self._cached = (mtime, _read_secret_file(path, where))
        return self._cached[1]

    def header(self) -> str:
        if self.basic is not None:
            password = self._secret(self.basic.password_file, self.basic.password, "basic_auth.password_file")
            token = base64.b64encode(f"{self.basic.username}:{password}".encode()).decode()
            return f"Basic {token}"
        assert self.authorization is not None
        cred = self._secret(
            self.authorization.credentials_file, self.authorization.credentials, "authorization.credentials_file"
        )
        return f"{self.authorization.type} {cred}"

    def auth_flow(self, request: httpx.Request) -> Generator[httpx.Request, httpx.Response, None]:
        request.headers["Authorization"] = self.header()
        yield request


@dataclass
class _Entry:
    client: httpx.AsyncClient
    files: tuple[str, ...]
    mtimes: tuple[float, ...]
    checked: float
    transport: httpx.AsyncBaseTransport | None = None
    auth: FileAuth | None = None


@dataclass(frozen=True)
class Direct:
    """The transport under a client, for requests sent without the client layer (hot paths)."""

    transport: httpx.AsyncBaseTransport
    auth: FileAuth | None
    follow_redirects: bool


def _mtimes(files: tuple[str, ...]) -> tuple[float, ...]:
    out = []
    for f in files:
        try:
            out.append(os.stat(f).st_mtime)
        except OSError:
            out.append(0.0)
    return tuple(out)


class ClientPool:
    """Hands out one AsyncClient per HTTPClientConfig, rebuilt when its certificate files change."""

    def __init__(self, *, fast: bool = True, check_interval: float = 5.0, max_connections: int = 10000) -> None:
        self.fast = fast
        self.check_interval = check_interval
        self.max_connections = max_connections
        self._clients: dict[HTTPClientConfig, _Entry] = {}
        self._retired: list[httpx.AsyncClient] = []

    def _transport(self, ctx: ssl.SSLContext | None, server_name: str | None) -> httpx.AsyncBaseTransport:
        if self.fast:
            from ._wire import FastTransport

            # Many targets can sit behind one host:port (distinct paths): keep a connection for each.
            return FastTransport(ssl_context=ctx, server_hostname=server_name,
                                 max_keepalive_per_host=self.max_connections)
        limits = httpx.Limits(max_connections=self.max_connections, max_keepalive_connections=self.max_connections)
        return httpx.AsyncHTTPTransport(verify=ctx if ctx is not None else True, http2=False, limits=limits)

    def _build(self, cfg: HTTPClientConfig) -> _Entry:
        tls = cfg.tls_config
        ctx = build_ssl_context(tls)
        auth = FileAuth(cfg.basic_auth, cfg.authorization) if (cfg.basic_auth or cfg.authorization) else None
        client = httpx.AsyncClient(
            transport=self._transport(ctx, tls.server_name),
            auth=auth,
            follow_redirects=cfg.follow_redirects,
            headers={"User-Agent": USER_AGENT},
            trust_env=False,
        )
        files = tuple(f for f in (tls.ca_file, tls.cert_file, tls.key_file) if f)
        direct = client._transport if self.fast else None  # the FastTransport we just gave it
        return _Entry(client, files, _mtimes(files), time.monotonic(), direct, auth)

    def get(self, cfg: HTTPClientConfig) -> httpx.AsyncClient:
        entry = self._clients.get(cfg)
        if entry is None:
            entry = self._clients[cfg] = self._build(cfg)
        elif entry.files and time.monotonic() - entry.checked > self.check_interval:
            entry.checked = time.monotonic()
            if _mtimes(entry.files) != entry.mtimes:
                try:
                    fresh = self._build(cfg)
                except ConfigError:
                    return entry.client  # a half-written rotation: keep the old one until it is complete
                self._retired.append(entry.client)
                entry = self._clients[cfg] = fresh
        return entry.client

    def direct(self, cfg: HTTPClientConfig) -> Direct | None:
        """The fast transport and auth for ``cfg`` (None when the pool uses httpx's own transport)."""
        self.get(cfg)  # builds, or rebuilds after a certificate rotation
        entry = self._clients.get(cfg)
        if entry is None or entry.transport is None:
            return None
        return Direct(entry.transport, entry.auth, cfg.follow_redirects)

    def validate(self, cfg: HTTPClientConfig, where: str) -> None:
        """Fail early (at config load) on unreadable certificate files."""
        build_ssl_context(cfg.tls_config, f"{where}.tls_config")

    async def aclose(self) -> None:
        for entry in self._clients.values():
            await entry.client.aclose()
        for client in self._retired:
            await client.aclose()
        self._clients.clear()
        self._retired.clear()
