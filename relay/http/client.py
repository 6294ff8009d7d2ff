"""The relay's HTTP client: one `HTTPClient` per HTTP client config, for scrape, remote write and discovery.

`HTTPClient` is the one place where a request gets its auth (``basic_auth``, ``authorization``,
secret files re-read when they change; an ``oauth2`` token, fetched anew once when the target
answers 401 to a cached one; a ``sigv4`` signature), follows redirects (when ``follow_redirects``), runs under
its timeout and reads its body under a limit; every failure is a `relay._exceptions.HTTPError`
whose ``reason`` was decided where it happened::

    client = pool.get(scrape_config.http)
    response = await client.get("http://127.0.0.1:2381/metrics", timeout=10.0, limit=16 << 20)
    response.status_code, response.headers["content-type"], response.content

    request = client.build_request("GET", url, headers=headers, timeout=10.0)   # once
    response = await client.send(request, timeout=10.0, limit=limit)           # every scrape

    async with client.stream("GET", watch_url, read_timeout=None) as stream:    # watch streams
        async for line in stream.aiter_lines(max_line=1 << 20):
            ...

Under it is a transport: the relay's own `FastTransport` (default), or httpx's
``AsyncHTTPTransport`` (``--http-transport httpx``); their errors come out alike. `ClientPool` builds
one client per distinct config (with its proxy route, `relay.http.proxy`), and rebuilds it when a
certificate, key or CA file changes on disk
(rotated client certificates are picked up without a restart), checking the files' modification
times at most every ``check_interval`` seconds.
"""

from __future__ import annotations

import base64
import contextlib
import os
import ssl
import time
import warnings
from collections.abc import AsyncIterator, Iterator, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Final

import anyio
import httpx
import orjson

from .._exceptions import (
    BodyLimitError,
    ConfigError,
    ConnectError,
    ConnectionClosed,
    CredentialsError,
    DecodeError,
    HTTPError,
    HTTPTimeout,
    ProtocolError,
    ProxyError,
    TLSError,
    TransferError,
)
from ..config import Authorization, BasicAuth, HTTPClientConfig, TLSConfig
from .fetch import decoded_chunks, read_body
from .oauth2 import TokenSource
from .proxy import ProxyRoute

if TYPE_CHECKING:
    from .sigv4 import SigV4Signer  # imports botocore only when a config has sigv4

__all__ = ["ClientPool", "FileAuth", "HTTPClient", "Response", "StreamResponse", "build_ssl_context"]

USER_AGENT = "etcd-metrics-relay/0.1"


_TLS_VERSIONS: Final = {"TLS10": ssl.TLSVersion.TLSv1, "TLS11": ssl.TLSVersion.TLSv1_1,
                        "TLS12": ssl.TLSVersion.TLSv1_2, "TLS13": ssl.TLSVersion.TLSv1_3}


def _check_readable(path: str, where: str) -> None:
    """A ConfigError naming the key and the path when ``path`` cannot be read."""
    try:
        with open(path, "rb") as f:
            f.read(1)
    except OSError as exc:
        raise ConfigError(where, f"cannot read {path}: {exc.strerror or exc}") from None


@contextlib.contextmanager
def _pem_path(pem: str) -> Iterator[str]:
    """A path that reads as ``pem`` (for ssl's file-only load_cert_chain): an anonymous memory file
    where the system has them, else a private temporary file removed at once."""
    data = pem.encode()
    if hasattr(os, "memfd_create") and os.path.isdir("/proc/self/fd"):
        fd = os.memfd_create("relay-tls", 0)
        try:
            os.write(fd, data)
            yield f"/proc/self/fd/{fd}"
        finally:
            os.close(fd)
        return
    import tempfile

    with tempfile.TemporaryDirectory() as folder:
        path = os.path.join(folder, "pem")
        fd = os.open(path, os.O_WRONLY | os.O_CREAT, 0o600)
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        yield path


def build_ssl_context(tls: TLSConfig, where: str = "tls_config") -> ssl.SSLContext:
    """An SSL context for ``tls``: verification on unless insecure_skip_verify, HTTP/1.1 only.

    The CA, certificate and key come inline (``ca``, ``cert``, ``key``: PEM) or from files; a file
    that cannot be read is a ConfigError naming its key and path."""
    for key in ("ca_file", "cert_file", "key_file"):
        path = getattr(tls, key)
        if path:
            _check_readable(path, f"{where}.{key}")
    try:
        ctx = ssl.create_default_context(cafile=tls.ca_file or None, cadata=tls.ca or None)
    except (ssl.SSLError, ValueError, OSError) as exc:
        key = "ca" if tls.ca else "ca_file"
        raise ConfigError(f"{where}.{key}", f"{'the inline CA' if tls.ca else tls.ca_file} does not load as "
                          f"PEM certificates: {exc.__class__.__name__}: {exc}") from None
    if (tls.cert or tls.cert_file) and (tls.key or tls.key_file):
        with contextlib.ExitStack() as stack:
            cert = tls.cert_file or stack.enter_context(_pem_path(tls.cert or ""))
            key_pem = tls.key.reveal() if tls.key is not None and hasattr(tls.key, "reveal") else (tls.key or "")
            key = tls.key_file or stack.enter_context(_pem_path(key_pem))
            try:
                ctx.load_cert_chain(cert, key)
            except (ssl.SSLError, OSError) as exc:
                names = f"{'cert' if tls.cert else 'cert_file'} and {'key' if tls.key else 'key_file'}"
                detail = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
                raise ConfigError(where, f"{names} do not load as a PEM certificate and its key: "
                                  f"{exc.__class__.__name__}: {detail}") from None
    if tls.insecure_skip_verify:
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
    try:
        with warnings.catch_warnings():  # TLS 1.0 and 1.1 are deprecated, and asked for by tls_config
            warnings.simplefilter("ignore", DeprecationWarning)
            ctx.minimum_version = _TLS_VERSIONS[tls.min_version or "TLS12"]
            if tls.max_version:
                ctx.maximum_version = _TLS_VERSIONS[tls.max_version]
    except (ValueError, KeyError, ssl.SSLError) as exc:
        raise ConfigError(f"{where}.min_version", f"not usable with this OpenSSL: {exc}") from None
    # etcd's client port treats HTTP/2 as gRPC: never offer it.
    ctx.set_alpn_protocols(["http/1.1"])
    return ctx


class FileAuth:
    """Basic or Authorization-header auth whose secret may live in a file re-read when it changes.

    A secret file that cannot be read (deleted during a rotation, unreadable) makes the request
    fail with `CredentialsError` (reason ``auth``); it is not sent without its credentials.
    """

    def __init__(self, basic: BasicAuth | None, authorization: Authorization | None) -> None:
        self.basic = basic
        self.authorization = authorization
        self._cached: tuple[float, str] | None = None

    def _secret(self, path: str | None, inline: str | None, where: str) -> str:
        if not path:
            return inline.reveal() if inline is not None and hasattr(inline, "reveal") else (inline or "")
        try:
            mtime = os.stat(path).st_mtime
            if self._cached is None or self._cached[0] != mtime:
                with open(path, encoding="utf-8") as f:
                    self._cached = (mtime, f.read().strip())
        except (OSError, UnicodeDecodeError) as exc:
            detail = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
            raise CredentialsError(f"cannot read {where} {path}: {detail}") from None
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


class Response:
    """A response read whole: status, headers and the decoded body (``content``)."""

    __slots__ = ("content", "headers", "status_code", "url")

    def __init__(self, status_code: int, headers: httpx.Headers, content: bytes, url: httpx.URL) -> None:
        self.status_code = status_code
        self.headers = headers
        self.content = content
        self.url = url

    def json(self) -> Any:
        """The body as JSON (``ValueError`` when it is not)."""
        return orjson.loads(self.content)

    def __repr__(self) -> str:
        return f"<Response {self.status_code} {len(self.content)} bytes>"


class StreamResponse:
    """A response whose body is read as it arrives (watch streams). From `HTTPClient.stream`."""

    def __init__(self, response: httpx.Response, url: str) -> None:
        self._response = response
        self._url = url
        self.status_code = response.status_code
        self.headers = response.headers

    async def aiter_bytes(self) -> AsyncIterator[bytes]:
        """The decoded body, piece by piece as it arrives (gzip pieces at most fetch.INFLATE_STEP)."""
        with _Errors(self._url):
            async for data in decoded_chunks(self._response):
                yield data

    async def aiter_lines(self, *, max_line: int = 1 << 20) -> AsyncIterator[bytes]:
        """Complete lines (without the newline), each at most ``max_line`` bytes (`BodyLimitError`).
        A last line without a newline is yielded when the stream ends."""
        pending = b""
        async for data in self.aiter_bytes():
            buf = pending + data if pending else data
            start = 0
            while (nl := buf.find(b"\n", start)) >= 0:
                if nl - start > max_line:
                    raise BodyLimitError(max_line, url=self._url)
                yield buf[start:nl]
                start = nl + 1
            pending = buf[start:]
            if len(pending) > max_line:
                raise BodyLimitError(max_line, url=self._url)
        if pending:
            yield pending

    async def read(self, limit: int = 0) -> bytes:
        """The rest of the body, at most ``limit`` bytes (0: no limit)."""
        with _Errors(self._url):
            return await read_body(self._response, limit)


def _safe(url: httpx.URL) -> str:
    """A URL without user and password, for messages."""
    return str(url.copy_with(username=None, password=None) if url.userinfo else url)


def _caused_by_ssl(exc: BaseException) -> bool:
    seen = 0
    cause: BaseException | None = exc
    while cause is not None and seen < 8:
        if isinstance(cause, ssl.SSLError):
            return True
        cause = cause.__cause__ or cause.__context__
        seen += 1
    return False


def _from_httpx(exc: httpx.HTTPError, url: str) -> HTTPError:
    """httpx's errors (its own transport, or a mock one) as the relay's: the one place they are mapped."""
    message = str(exc) or type(exc).__name__
    if isinstance(exc, httpx.TimeoutException):
        phase = {httpx.ConnectTimeout: "connect", httpx.WriteTimeout: "write", httpx.PoolTimeout: "pool"}
        return HTTPTimeout(f"timed out: {message}", phase=phase.get(type(exc), "read"), url=url)
    if isinstance(exc, httpx.ConnectError):
        if _caused_by_ssl(exc):
            return TLSError(f"TLS handshake failed: {message}", url=url)
        return ConnectError(f"cannot connect: {message}", url=url)
    if isinstance(exc, httpx.DecodingError):
        return DecodeError(f"cannot decode the body: {message}", url=url)
    if isinstance(exc, httpx.ProtocolError | httpx.UnsupportedProtocol):
        return ProtocolError(message, url=url)
    if isinstance(exc, httpx.NetworkError):
        return ConnectionClosed(message, url=url)
    return TransferError(f"{type(exc).__name__}: {message}", url=url)


class _Errors:
    """Inside: a relay HTTPError gets the URL when it has none; httpx's errors become the relay's."""

    __slots__ = ("url",)

    def __init__(self, url: httpx.URL | str) -> None:
        self.url = url

    def __enter__(self) -> None:
        return None

    def __exit__(self, kind: object, exc: BaseException | None, tb: object) -> None:
        if isinstance(exc, HTTPError):
            if not exc.url:
                exc.url = self.url if isinstance(self.url, str) else _safe(self.url)
        elif isinstance(exc, httpx.HTTPError):
            raise _from_httpx(exc, self.url if isinstance(self.url, str) else _safe(self.url)) from exc


_REDIRECTS: Final = frozenset((301, 302, 303, 307, 308))
#: build_request's read_timeout default: the same as timeout.
_SAME: Final = -1.0
#: A redirect response's body is read (to keep the connection) up to this much, then dropped.
_REDIRECT_BODY: Final = 65_536


class HTTPClient:
    """Requests for one HTTP client config; see the module docstring. Built by `ClientPool`.

    ``transport`` is any httpx transport (`FastTransport`, ``httpx.AsyncHTTPTransport``,
    ``httpx.MockTransport``); requests are sent to it directly, without ``httpx.AsyncClient``.
    """

    def __init__(
        self,
        transport: httpx.AsyncBaseTransport,
        *,
        auth: FileAuth | None = None,
        follow_redirects: bool = True,
        server_name: str | None = None,
        max_redirects: int = 10,
        user_agent: str = USER_AGENT,
        oauth2: TokenSource | None = None,
        signer: SigV4Signer | None = None,
    ) -> None:
        self.transport = transport
        self.auth = auth
        self.oauth2 = oauth2
        self.signer = signer
        self.follow_redirects = follow_redirects
        self.max_redirects = max_redirects
        self.user_agent = user_agent
        self._extensions = {"sni_hostname": server_name} if server_name else {}

    def build_request(
        self,
        method: str,
        url: str | httpx.URL,
        *,
        headers: Mapping[str, str] | None = None,
        content: bytes | None = None,
        timeout: float | None = 10.0,
        read_timeout: float | None = _SAME,
    ) -> httpx.Request:
        """A request to `send`, reusable (a scrape loop builds one and sends it every interval).

        ``timeout`` bounds each step (connect, TLS, send, each receive); ``read_timeout`` (when not
        -1) bounds each receive instead, e.g. None for a watch stream that may be idle for long.
        """
        extensions: dict[str, Any] = {
            "timeout": {"connect": timeout, "write": timeout, "pool": timeout,
                        "read": timeout if read_timeout == _SAME else read_timeout},
            **self._extensions,
        }
        all_headers = {"User-Agent": self.user_agent, **headers} if headers else {"User-Agent": self.user_agent}
        url = httpx.URL(url) if isinstance(url, str) else url
        if url.userinfo:
            # user:password@ in a URL is sent as basic auth (configured auth wins), never on the wire
            user, password = url.username, url.password
            url = url.copy_with(username=None, password=None)
            token = base64.b64encode(f"{user}:{password}".encode()).decode()
            all_headers.setdefault("Authorization", f"Basic {token}")
        return httpx.Request(method, url, headers=all_headers, content=content, extensions=extensions)

    async def get(
        self, url: str | httpx.URL, *, headers: Mapping[str, str] | None = None,
        timeout: float | None = 10.0, limit: int = 0,
    ) -> Response:
        """GET ``url``; the whole body, at most ``limit`` decoded bytes (0: no limit)."""
        request = self.build_request("GET", url, headers=headers, timeout=timeout)
        return await self.send(request, timeout=timeout, limit=limit)

    async def post(
        self, url: str | httpx.URL, content: bytes, *, headers: Mapping[str, str] | None = None,
        timeout: float | None = 10.0, limit: int = 0, truncate: bool = False,
    ) -> Response:
        """POST ``content`` to ``url``; the response body as for `send`."""
        request = self.build_request("POST", url, headers=headers, content=content, timeout=timeout)
        return await self.send(request, timeout=timeout, limit=limit, truncate=truncate)

    async def send(
        self, request: httpx.Request, *, timeout: float | None = None, limit: int = 0, truncate: bool = False
    ) -> Response:
        """Send ``request`` (auth added, redirects followed) and read the body under ``limit``.

        ``timeout`` bounds the whole exchange, redirects included (`HTTPTimeout`, phase "total").
        Past ``limit``: `BodyLimitError`, or with ``truncate`` the first ``limit`` bytes.
        Any status is returned: the caller decides what it accepts (`StatusError`).
        """
        if timeout is None:
            return await self._send(request, limit, truncate)
        with anyio.CancelScope(deadline=anyio.current_time() + timeout):
            return await self._send(request, limit, truncate)
        # only reached when the scope's deadline cancelled the exchange
        raise HTTPTimeout(f"timed out after {timeout:g}s", phase="total", url=_safe(request.url)) from None

    async def _send(self, request: httpx.Request, limit: int, truncate: bool) -> Response:
        with _Errors(request.url):
            response = await self._open(request)
            body = await read_body(response, limit, truncate=truncate)
        return Response(response.status_code, response.headers, body, response.request.url)

    async def _open(self, request: httpx.Request) -> httpx.Response:
        """Auth, the exchange up to the response head, and redirects (their bodies dropped)."""
        fresh = True
        if self.auth is not None:
            request.headers["Authorization"] = self.auth.header()
        elif self.oauth2 is not None:
            request.headers["Authorization"], fresh = await self.oauth2.header()
        if self.signer is not None:
            await self.signer.sign(request)
        response = await self.transport.handle_async_request(request)
        response.request = request
        if response.status_code == 401 and not fresh and self.oauth2 is not None:
            # the cached token was refused (revoked, or expired early): once more with a new one
            await read_body(response, _REDIRECT_BODY, truncate=True)
            self.oauth2.invalidate()
            request.headers["Authorization"], _ = await self.oauth2.header()
            response = await self.transport.handle_async_request(request)
            response.request = request
        hops = 0
        while response.status_code in _REDIRECTS and self.follow_redirects:
            location = response.headers.get("location")
            if not location:
                break
            await read_body(response, _REDIRECT_BODY, truncate=True)
            hops += 1
            if hops > self.max_redirects:
                raise ProtocolError(f"more than {self.max_redirects} redirects", url=_safe(request.url))
            request = _redirected(request, response.status_code, location)
            response = await self.transport.handle_async_request(request)
            response.request = request
        return response

    @contextlib.asynccontextmanager
    async def stream(
        self,
        method: str,
        url: str | httpx.URL,
        *,
        headers: Mapping[str, str] | None = None,
        content: bytes | None = None,
        timeout: float | None = 10.0,
        read_timeout: float | None = None,
    ) -> AsyncIterator[StreamResponse]:
        """A response whose body is read as it arrives; closed (its connection too) on exit.

        ``timeout`` bounds the connect and each step up to the response head; ``read_timeout``
        each receive of the body (None: none, for a watch stream). Redirects are followed.
        """
        request = self.build_request(method, url, headers=headers, content=content, timeout=timeout,
                                     read_timeout=read_timeout)
        with _Errors(request.url):
            response = await self._open(request)
        try:
            yield StreamResponse(response, _safe(response.request.url))
        finally:
            await response.aclose()

    async def aclose(self) -> None:
        await self.transport.aclose()
        if self.oauth2 is not None:
            await self.oauth2.client.aclose()


class _ProxiedHTTPX(httpx.AsyncBaseTransport):
    """``--http-transport httpx`` with a proxy: httpx's transports (one direct, one per proxy and
    scheme), chosen per request by the route; proxy failures come out as `ProxyError`, as from
    FastTransport. proxy_connect_header goes only on CONNECT (https targets), never to a target."""

    def __init__(self, route: ProxyRoute, make: Any) -> None:
        self.route = route
        self._make = make
        self.direct: httpx.AsyncBaseTransport = make(None)
        self._via: dict[tuple[str, str], httpx.AsyncBaseTransport] = {}

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        proxy = self.route.choose(request.url)
        if proxy is None:
            return await self.direct.handle_async_request(request)
        https = request.url.scheme == "https"
        transport = self._via.get((proxy.shown, request.url.scheme))
        if transport is None:
            headers = [(k.decode("latin-1"), v.decode("latin-1")) for k, v in (*proxy.auth, *(proxy.connect if https
                                                                                                 else ()))]
            where = f"http://{proxy.host}:{proxy.port}" if ":" not in proxy.host else f"http://[{proxy.host}]:{proxy.port}"
            transport = self._via[(proxy.shown, request.url.scheme)] = self._make(httpx.Proxy(where, headers=headers))
        try:
            response = await transport.handle_async_request(request)
        except httpx.ProxyError as exc:
            raise ProxyError(f"proxy {proxy.shown} refused CONNECT: {exc}", url=_safe(request.url)) from exc
        except httpx.ConnectError as exc:
            if https and _caused_by_ssl(exc):
                raise
            raise ProxyError(f"cannot connect to proxy {proxy.shown}: {exc}", url=_safe(request.url)) from exc
        except httpx.ConnectTimeout as exc:
            raise ProxyError(f"timed out connecting through proxy {proxy.shown}", url=_safe(request.url)) from exc
        if response.status_code == 407 and not https:
            await response.aclose()
            raise ProxyError(f"proxy {proxy.shown} asks for credentials (HTTP 407 Proxy Authentication Required): "
                             "give them in proxy_url (http://user:password@host:port)", url=_safe(request.url))
        return response

    async def aclose(self) -> None:
        await self.direct.aclose()
        for transport in self._via.values():
            await transport.aclose()


def _same_origin(a: httpx.URL, b: httpx.URL) -> bool:
    return a.scheme == b.scheme and a.host == b.host and a.port == b.port


def _redirected(request: httpx.Request, status: int, location: str) -> httpx.Request:
    """The request a redirect asks for (as httpx and Go do it): 303, and 301/302 after a POST,
    become a GET without body; credentials are not sent to another origin."""
    try:
        url = request.url.join(location)
    except httpx.InvalidURL as exc:
        raise ProtocolError(f"bad redirect Location {location[:100]!r}: {exc}", url=_safe(request.url)) from None
    if url.scheme not in ("http", "https"):
        raise ProtocolError(f"redirect to unsupported scheme {url.scheme!r}", url=_safe(request.url))
    method = request.method
    content: bytes | None = None
    drop = {"host"}
    if (status == 303 and method != "HEAD") or (status in (301, 302) and method == "POST"):
        method = "GET"
        drop |= {"content-length", "content-type", "content-encoding", "transfer-encoding"}
    else:
        content = request.content if request.method != "GET" else None
    if not _same_origin(url, request.url):
        drop.add("authorization")
    headers = [(k, v) for k, v in request.headers.multi_items() if k.lower() not in drop]
    return httpx.Request(method, url, headers=headers, content=content, extensions=dict(request.extensions))


@dataclass
class _Entry:
    client: HTTPClient
    files: tuple[str, ...]
    mtimes: tuple[float, ...]
    checked: float

def _mtimes(files: tuple[str, ...]) -> tuple[float, ...]:
    out = []
    for f in files:
        try:
            out.append(os.stat(f).st_mtime)
        except OSError:
            out.append(0.0)
    return tuple(out)


class ClientPool:
    """Hands out one `HTTPClient` per HTTPClientConfig, rebuilt when its certificate files change.

    ``fast``: the relay's `FastTransport` under each client; False: httpx's ``AsyncHTTPTransport``
    (``--http-transport httpx``), for HTTP/2-less setups where FastTransport would not do.
    """

    def __init__(self, *, fast: bool = True, check_interval: float = 5.0, max_connections: int = 10000) -> None:
        self.fast = fast
        self.check_interval = check_interval
        self.max_connections = max_connections
        self._clients: dict[HTTPClientConfig, _Entry] = {}
        self._retired: list[HTTPClient] = []

    def _transport(
        self, ctx: ssl.SSLContext | None, server_name: str | None, route: ProxyRoute | None = None
    ) -> httpx.AsyncBaseTransport:
        if self.fast:
            from ._wire import FastTransport

            # Many targets can sit behind one host:port (distinct paths): keep a connection for each.
            return FastTransport(ssl_context=ctx, server_hostname=server_name,
                                 max_keepalive_per_host=self.max_connections, proxy=route)
        limits = httpx.Limits(max_connections=self.max_connections, max_keepalive_connections=self.max_connections)

        def make(proxy: httpx.Proxy | None) -> httpx.AsyncBaseTransport:
            return httpx.AsyncHTTPTransport(verify=ctx if ctx is not None else True, http2=False, limits=limits,
                                            proxy=proxy)

        return make(None) if route is None else _ProxiedHTTPX(route, make)

    def _build(self, cfg: HTTPClientConfig, where: str = "") -> _Entry:
        tls = cfg.tls_config
        ctx = build_ssl_context(tls, f"{where}.tls_config" if where else "tls_config")
        auth = FileAuth(cfg.basic_auth, cfg.authorization) if (cfg.basic_auth or cfg.authorization) else None
        route = ProxyRoute.from_config(cfg.proxy) if cfg.proxy.enabled else None
        files = tuple(f for f in (tls.ca_file, tls.cert_file, tls.key_file) if f)
        oauth2: TokenSource | None = None
        signer: SigV4Signer | None = None
        if cfg.oauth2 is not None:
            o = cfg.oauth2
            o_tls = o.tls_config if o.tls_config is not None else TLSConfig()
            token_where = f"{where}.oauth2" if where else "oauth2"
            token = self._build(HTTPClientConfig(tls_config=o_tls, proxy=o.proxy), token_where)
            oauth2 = TokenSource(o, token.client)
            files += token.files
        if cfg.sigv4 is not None:
            from .sigv4 import SigV4Signer

            signer = SigV4Signer(cfg.sigv4, f"{where}.sigv4" if where else "sigv4")
        client = HTTPClient(
            self._transport(ctx, tls.server_name, route),
            auth=auth,
            follow_redirects=cfg.follow_redirects,
            server_name=tls.server_name,
            oauth2=oauth2,
            signer=signer,
        )
        return _Entry(client, files, _mtimes(files), time.monotonic())

    def get(self, cfg: HTTPClientConfig) -> HTTPClient:
        """The client for ``cfg`` (cheap: call it per request, so a certificate rotation is seen)."""
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

    def validate(self, cfg: HTTPClientConfig, where: str) -> None:
        """Fail early (at config load) on unreadable certificate files, a sigv4 without botocore
        or region, proxy environment variables that do not parse."""
        build_ssl_context(cfg.tls_config, f"{where}.tls_config")
        if cfg.oauth2 is not None and cfg.oauth2.tls_config is not None:
            build_ssl_context(cfg.oauth2.tls_config, f"{where}.oauth2.tls_config")
        if cfg.proxy.enabled:
            ProxyRoute.from_config(cfg.proxy)
        if cfg.sigv4 is not None:
            from .sigv4 import SigV4Signer

            SigV4Signer(cfg.sigv4, f"{where}.sigv4")

    async def aclose(self) -> None:
        for entry in self._clients.values():
            await entry.client.aclose()
        for client in self._retired:
            await client.aclose()
        self._clients.clear()
        self._retired.clear()
