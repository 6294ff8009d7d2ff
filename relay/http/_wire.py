"""A lean HTTP/1.1 transport: the wire side (connections, request out, response head in, framing).

httpx's default transport (httpcore + h11) costs about 2 ms of CPU per GET of a 162 KB etcd
``/metrics`` body; most of it is per-event bookkeeping in h11 and httpcore. `FastTransport` keeps
httpx's client model (``AsyncClient``, ``Request``/``Response``, timeouts, auth, event hooks) and
speaks HTTP/1.1 itself on an anyio byte stream: large receives, ``bytes.find`` for the end of the
head, one pass over the header lines, and body chunks handed to the caller as they arrive::

    transport = FastTransport(ssl_context=ctx)
    client = HTTPClient(transport)          # relay.http.client: auth, redirects, limits, errors
    response = await client.get("https://10.0.0.1:2379/metrics", limit=16 << 20)

The body side (chunked decoding, gzip, limits) is in `relay.http.fetch`.

Forward proxies (``proxy=ProxyRoute``, see `relay.http.proxy`): an http target is asked of the proxy
in absolute form, an https one through a ``CONNECT`` tunnel; a proxy that cannot be reached, refuses
the tunnel or asks for credentials is a `ProxyError` (reason "proxy").

What it does not do (use httpx's default transport for these): HTTP/2, ``Expect:
100-continue``, upgrades. It never offers ``h2`` in ALPN: etcd's client port treats HTTP/2 as gRPC.

Errors are the relay's (`relay._exceptions.HTTPError` and its subclasses), each raised where
the failure is known: `ConnectError` at the TCP connect, `TLSError` in the TLS handshake (and when
a TLS server hangs up before any response: a rejected client certificate under TLS 1.3),
`HTTPTimeout` with the phase that ran out, `ConnectionClosed` when the peer closes or resets
mid-message, `ProtocolError` for a response that is not HTTP/1.1. Still an httpx transport, it also
works under ``httpx.AsyncClient``.
"""

from __future__ import annotations

import math
import select
import socket
import ssl
import time
from collections.abc import AsyncIterator
from typing import Any, Final

import anyio
import anyio.abc
import httpx
from anyio.streams.tls import TLSAttribute, TLSStream

from .._exceptions import ConnectError, ConnectionClosed, HTTPTimeout, ProtocolError, ProxyError, TLSError
from .fetch import EMPTY, ChunkDecoder
from .proxy import Proxy, ProxyRoute

__all__ = ["FastTransport"]

#: Largest single receive. The asyncio selector transport reads at most 256 KiB per syscall.
RECEIVE_SIZE: Final = 262_144
#: A response head (status line and headers) larger than this is a protocol error.
MAX_HEAD_SIZE: Final = 65_536
_NETWORK_ERRORS: Final = (OSError, anyio.BrokenResourceError, anyio.ClosedResourceError)

# Body framing of a response.
_NO_BODY: Final = 0
_LENGTH: Final = 1
_CHUNKED: Final = 2
_UNTIL_CLOSE: Final = 3


class _Connection:
    """One TCP (or TLS) connection. Owned by exactly one request, or idle in the pool."""

    __slots__ = ("expires", "fresh", "socket", "ssl_object", "stream")

    def __init__(self, stream: anyio.abc.ByteStream) -> None:
        self.stream = stream
        self.socket: socket.socket | None = stream.extra(anyio.abc.SocketAttribute.raw_socket, None)
        self.ssl_object: ssl.SSLObject | None = stream.extra(TLSAttribute.ssl_object, None)
        self.expires = 0.0
        # True until the first response on this connection has started: a TLS 1.3 server that
        # rejects the client certificate says so only after the client's handshake has finished.
        self.fresh = True

    def is_stale(self) -> bool:
        """An idle connection that the peer has closed (or sent anything on) is not reusable."""
        sock = self.socket
        if sock is None:  # pragma: no cover - every TCP stream has one
            return False
        if sock.fileno() < 0:
            return True
        try:
            readable, _, _ = select.select([sock], [], [], 0)
        except (OSError, ValueError):
            return True
        return bool(readable)

    async def aclose(self) -> None:
        await anyio.aclose_forcefully(self.stream)


class _ConnectionLost(Exception):
    """A reused connection failed before any byte of the response arrived (the peer closed it)."""


# scheme, host, port, TLS server name ("" for http), proxy ("" direct); a proxied http request's
# host and port are the proxy's (its connections serve every target)
_Key = tuple[bytes, bytes, int, str, str]


def _timeouts(request: httpx.Request) -> dict[str, float | None]:
    timeouts: Any = request.extensions.get("timeout")
    return timeouts if isinstance(timeouts, dict) else {}


class FastTransport(httpx.AsyncBaseTransport):
    """HTTP/1.1 over anyio streams, with a keep-alive pool per (scheme, host, port).

    Example::

        async with httpx.AsyncClient(transport=FastTransport()) as client:
            response = await client.get("http://127.0.0.1:2379/metrics")

    ``ssl_context`` is used for https (default: ``ssl.create_default_context()``); its ALPN list is
    set to ``["http/1.1"]``. ``server_hostname`` overrides the name used for SNI and certificate
    checks (e.g. when the URL holds an IP address but the certificate names a host); a request can
    also carry it in ``request.extensions["sni_hostname"]``.

    At most ``max_keepalive_per_host`` idle connections are kept per origin, each for at most
    ``keepalive_expiry`` seconds. The number of connections in use is not limited here: the caller
    bounds concurrency (one scrape per target at a time). The ``pool`` timeout is therefore never
    reached.
    """

    def __init__(
        self,
        *,
        ssl_context: ssl.SSLContext | None = None,
        max_keepalive_per_host: int = 4,
        keepalive_expiry: float = 60.0,
        server_hostname: str | None = None,
        proxy: ProxyRoute | None = None,
    ) -> None:
        self._ssl_context = ssl_context
        self._proxy = proxy
        if ssl_context is not None:
            ssl_context.set_alpn_protocols(["http/1.1"])
        self._max_keepalive = max(0, max_keepalive_per_host)
        self._keepalive_expiry = keepalive_expiry
        self._server_hostname = server_hostname
        self._idle: dict[_Key, list[_Connection]] = {}
        self._next_sweep = 0.0
        self._closed = False

    # -- pool ----------------------------------------------------------------------------------

    def _get_ssl_context(self) -> ssl.SSLContext:
        if self._ssl_context is None:
            context = ssl.create_default_context()
            context.set_alpn_protocols(["http/1.1"])
            self._ssl_context = context
        return self._ssl_context

    async def _acquire(
        self, key: _Key, request: httpx.Request, timeouts: dict[str, float | None], proxy: Proxy | None
    ) -> _Connection:
        now = time.monotonic()
        if now >= self._next_sweep:
            await self._sweep(now)
        idle = self._idle.get(key)
        if idle:
            while idle:
                conn = idle.pop()
                if conn.expires > now and not conn.is_stale():
                    return conn
                await conn.aclose()
        return await self._connect(key, request, timeouts.get("connect"), proxy)

    async def _connect(
        self, key: _Key, request: httpx.Request, timeout: float | None, proxy: Proxy | None = None
    ) -> _Connection:
        """TCP connect (to the proxy, and CONNECT through it for https), then the TLS handshake
        for https: each failure says which step failed."""
        scheme, _, port, sni, _ = key
        host = request.url.host
        url = _safe_url(request)
        deadline = anyio.current_time() + timeout if timeout is not None else math.inf
        phase = "connect"
        with anyio.CancelScope(deadline=deadline) as scope:
            if proxy is None:
                try:
                    stream: anyio.abc.ByteStream = await anyio.connect_tcp(host, port)
                except socket.gaierror as exc:
                    raise ConnectError(f"cannot resolve {host}: {exc.strerror or exc}", url=url) from exc
                except (*_NETWORK_ERRORS, anyio.EndOfStream) as exc:
                    raise ConnectError(_describe(f"cannot connect to {host}:{port}", exc), url=url) from exc
            else:
                phase = "proxy"
                stream = await _proxy_stream(proxy, request, scheme == b"https", url)
            if scheme == b"https":
                phase = "tls"
                try:
                    stream = await TLSStream.wrap(
                        stream,
                        hostname=sni,
                        ssl_context=self._get_ssl_context(),
                        standard_compatible=False,
                    )
                except BaseException as exc:
                    await anyio.aclose_forcefully(stream)
                    if isinstance(exc, (*_NETWORK_ERRORS, anyio.EndOfStream)):
                        raise TLSError(
                            _describe(f"TLS handshake with {host}:{port} failed", exc), url=url
                        ) from exc
                    raise
        if scope.cancelled_caught:
            if phase == "proxy":
                assert proxy is not None
                raise ProxyError(f"timed out connecting to {host}:{port} through proxy {proxy.shown}", url=url)
            what = "connecting to" if phase == "connect" else "in the TLS handshake with"
            raise HTTPTimeout(f"timed out {what} {host}:{port}", phase=phase, url=url)
        return _Connection(stream)

    async def _sweep(self, now: float) -> None:
        """Close idle connections past their expiry, for origins that are no longer asked for too."""
        self._next_sweep = now + max(1.0, min(self._keepalive_expiry, 60.0) / 2)
        expired: list[_Connection] = []
        for key, conns in list(self._idle.items()):
            live = [conn for conn in conns if conn.expires > now]
            if len(live) != len(conns):
                expired += (conn for conn in conns if conn.expires <= now)
                conns[:] = live  # in place: an _acquire suspended in a close may hold this list
                if not live:
                    del self._idle[key]
        for conn in expired:
            await conn.aclose()

    def _release(self, key: _Key, conn: _Connection) -> bool:
        """Put a connection whose response was read completely back in the pool (False: close it)."""
        if self._closed or self._max_keepalive == 0:
            return False
        idle = self._idle.setdefault(key, [])
        if len(idle) >= self._max_keepalive:
            return False
        conn.expires = time.monotonic() + self._keepalive_expiry
        idle.append(conn)
        return True

    async def aclose(self) -> None:
        self._closed = True
        idle, self._idle = self._idle, {}
        for conns in idle.values():
            for conn in conns:
                await conn.aclose()

    # -- one exchange --------------------------------------------------------------------------

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        if self._closed:
            raise RuntimeError("FastTransport is closed")
        url = request.url
        scheme = url.raw_scheme
        if scheme not in (b"http", b"https"):
            raise ProtocolError(f"FastTransport handles http and https, not {url.scheme!r}", url=_safe_url(request))
        port = url.port or (443 if scheme == b"https" else 80)
        sni: Any = (
            (self._server_hostname or request.extensions.get("sni_hostname") or url.host)
            if scheme == b"https"
            else ""
        )
        proxy = self._proxy.choose(url) if self._proxy is not None else None
        if proxy is None:
            key: _Key = (scheme, url.raw_host, port, sni, "")
            head, close = _request_head(request)
        elif scheme == b"http":  # absolute form to the proxy, over the proxy's connections
            key = (scheme, proxy.host.encode(), proxy.port, "", proxy.shown)
            head, close = _request_head(request, url.raw_scheme + b"://" + url.netloc + url.raw_path, proxy.auth)
        else:  # a tunnel per target connection
            key = (scheme, url.raw_host, port, sni, proxy.shown)
            head, close = _request_head(request)
        timeouts = _timeouts(request)
        body = await _request_body(request)
        if isinstance(body, bytes):
            # A small body goes out with the head in one write.
            data = [head + body] if len(body) < 65_536 else [head, body]
        else:
            data = [head, *(piece for piece in body if piece)]

        conn = await self._acquire(key, request, timeouts, proxy)
        try:
            response = await _exchange(self, key, conn, request, data, close, timeouts)
        except _ConnectionLost:
            # The peer closed an idle keep-alive connection as we reused it: one retry on a new one
            # (as Go's transport does, POSTs included). The request says so, whatever comes of
            # the resend (extension "relay_resent"): a peer that had taken the first one now has
            # it twice, and the remote writer counts the resend as a retry.
            request.extensions["relay_resent"] = True
            conn = await self._connect(key, request, timeouts.get("connect"), proxy)
            response = await _exchange(self, key, conn, request, data, close, timeouts)
        if proxy is not None and response.status_code == 407 and scheme == b"http":
            await response.aclose()
            raise ProxyError(f"proxy {proxy.shown} asks for credentials (HTTP 407 Proxy Authentication "
                             "Required): give them in proxy_url (http://user:password@host:port)",
                             url=_safe_url(request))
        return response


def _safe_url(request: httpx.Request) -> str:
    """The request's URL without user and password (for error messages and logs)."""
    url = request.url
    if url.userinfo:
        url = url.copy_with(username=None, password=None)
    return str(url)


def _describe(what: str, exc: BaseException) -> str:
    cause = exc.__cause__ if isinstance(exc, anyio.BrokenResourceError) and exc.__cause__ else exc
    detail = str(cause) or type(cause).__name__
    return f"{what}: {detail}"


def _request_head(
    request: httpx.Request, target: bytes | None = None, extra: tuple[tuple[bytes, bytes], ...] = ()
) -> tuple[bytes, bool]:
    """The request line and headers, and whether the request asks to close the connection.
    ``target``: the request target when not the path (the absolute URL, to a proxy); ``extra``:
    more header lines (Proxy-Authorization)."""
    parts = [request.method.encode("ascii"), b" ", target or request.url.raw_path, b" HTTP/1.1\r\n"]
    close = False
    for name, value in request.headers.raw:
        parts += (name, b": ", value, b"\r\n")
        if len(name) == 10 and name.lower() == b"connection" and b"close" in value.lower():
            close = True
    for name, value in extra:
        parts += (name, b": ", value, b"\r\n")
    parts.append(b"\r\n")
    return b"".join(parts), close


async def _proxy_stream(proxy: Proxy, request: httpx.Request, tunnel: bool, url: str) -> anyio.abc.ByteStream:
    """A connection to ``proxy``; with ``tunnel``, a CONNECT tunnel through it to the request's host."""
    try:
        stream: anyio.abc.ByteStream = await anyio.connect_tcp(proxy.host, proxy.port)
    except socket.gaierror as exc:
        raise ProxyError(f"cannot resolve proxy {proxy.shown}: {exc.strerror or exc}", url=url) from exc
    except (*_NETWORK_ERRORS, anyio.EndOfStream) as exc:
        raise ProxyError(_describe(f"cannot connect to proxy {proxy.shown}", exc), url=url) from exc
    if not tunnel:
        return stream
    target = request.url.netloc  # host:port, the port always given for CONNECT
    if request.url.port is None:
        target += b":443"
    lines = [b"CONNECT ", target, b" HTTP/1.1\r\nHost: ", target, b"\r\n"]
    for name, value in (*proxy.auth, *proxy.connect):
        lines += (name, b": ", value, b"\r\n")
    lines.append(b"\r\n")
    buf = b""
    try:
        await stream.send(b"".join(lines))
        while (end := buf.find(b"\r\n\r\n")) < 0:
            if len(buf) > MAX_HEAD_SIZE:
                raise ProxyError(f"proxy {proxy.shown} sent a CONNECT answer head larger than {MAX_HEAD_SIZE} bytes",
                                 url=url)
            buf += await stream.receive(RECEIVE_SIZE)
    except (*_NETWORK_ERRORS, anyio.EndOfStream) as exc:
        await anyio.aclose_forcefully(stream)
        raise ProxyError(_describe(f"proxy {proxy.shown} closed the connection during CONNECT to "
                                   f"{target.decode('ascii', 'replace')}", exc), url=url) from exc
    except BaseException:
        await anyio.aclose_forcefully(stream)
        raise
    status_line = buf[: buf.find(b"\r\n")]
    version, _, rest = status_line.partition(b" ")
    code = rest[:3]
    if not (version.startswith(b"HTTP/1.") and code.isdigit() and code.startswith(b"2")) or end + 4 != len(buf):
        await anyio.aclose_forcefully(stream)
        shown = status_line[:100].decode("latin-1")
        hint = ": give credentials in proxy_url (http://user:password@host:port)" if code == b"407" else ""
        raise ProxyError(f"proxy {proxy.shown} refused CONNECT to {target.decode('ascii', 'replace')}: "
                         f"{shown!r}{hint}", url=url)
    return stream


async def _request_body(request: httpx.Request) -> bytes | list[bytes]:
    """The request body, framed for the wire (chunked when the request says so)."""
    try:
        content = request.content
    except httpx.RequestNotRead:
        pieces: list[bytes] = []
        stream: Any = request.stream
        async for piece in stream:
            pieces.append(bytes(piece))
        if request.headers.get("transfer-encoding", "").lower() == "chunked":
            framed: list[bytes] = []
            for piece in pieces:
                if piece:
                    framed += (b"%x\r\n" % len(piece), piece, b"\r\n")
            framed.append(b"0\r\n\r\n")
            return framed
        return pieces
    return content


async def _receive(conn: _Connection, timeout: float | None) -> bytes:
    """One receive of up to RECEIVE_SIZE bytes; TimeoutError after `timeout` seconds."""
    if timeout is None:
        data = await conn.stream.receive(RECEIVE_SIZE)
    else:
        # A bare CancelScope is cheaper than fail_after (two context managers on top of it).
        with anyio.CancelScope(deadline=anyio.current_time() + timeout) as scope:
            data = await conn.stream.receive(RECEIVE_SIZE)
        if scope.cancelled_caught:
            raise TimeoutError  # the scope expired (and swallowed its own cancellation)
    return data if conn.ssl_object is None else _drain_tls(conn.ssl_object, data)


def _drain_tls(ssl_object: ssl.SSLObject, data: bytes) -> bytes:
    """Add the plaintext already received and buffered by the TLS stream (no waiting).

    anyio's TLS stream returns one TLS record (16 KiB at most) per receive although it reads 64 KiB
    from the socket at a time; handing records over one by one multiplies the per-chunk costs.
    """
    pieces: list[bytes] | None = None
    size = len(data)
    while size < RECEIVE_SIZE:
        try:
            more = ssl_object.read(RECEIVE_SIZE - size)
        except ssl.SSLError:  # SSLWantReadError: nothing buffered; anything else: the next receive says
            break
        if not more:
            break
        if pieces is None:
            pieces = [data]
        pieces.append(more)
        size += len(more)
    return data if pieces is None else b"".join(pieces)


async def _exchange(
    transport: FastTransport,
    key: _Key,
    conn: _Connection,
    request: httpx.Request,
    data: list[bytes],
    close: bool,
    timeouts: dict[str, float | None],
) -> httpx.Response:
    """Send the request and read the response head; the body is streamed by `_ResponseStream`.

    One cancel scope covers both, its deadline moved from the write timeout to the read timeout.
    """
    reused = not conn.fresh
    write_timeout = timeouts.get("write")
    read_timeout = timeouts.get("read")
    stream = conn.stream
    buf = b""
    start = 0
    writing = True
    try:
        with anyio.CancelScope() as scope:
            if write_timeout is not None:
                scope.deadline = anyio.current_time() + write_timeout
            try:
                for piece in data:
                    await stream.send(piece)
            except _NETWORK_ERRORS as exc:
                if reused:
                    raise _ConnectionLost from exc
                raise ConnectionClosed(_describe("error sending the request", exc), url=_safe_url(request)) from exc
            writing = False
            while True:
                end = buf.find(b"\r\n\r\n", start) if buf else -1
                if end < 0:
                    if len(buf) > MAX_HEAD_SIZE:
                        raise ProtocolError("response head too large", url=_safe_url(request))
                    start = max(0, len(buf) - 3)
                    scope.deadline = (
                        anyio.current_time() + read_timeout if read_timeout is not None else math.inf
                    )
                    try:
                        received = await stream.receive(RECEIVE_SIZE)
                        if conn.ssl_object is not None:
                            received = _drain_tls(conn.ssl_object, received)
                    except anyio.EndOfStream:
                        if reused and not buf:
                            raise _ConnectionLost from None
                        if conn.fresh and key[0] == b"https":
                            # TLS 1.3: a server that rejects the client certificate hangs up after the
                            # client has finished its side of the handshake.
                            raise TLSError(
                                "TLS connection closed by the server before any response "
                                "(client certificate rejected?)",
                                url=_safe_url(request),
                            ) from None
                        raise ConnectionClosed(
                            "server disconnected without sending a complete response head",
                            url=_safe_url(request),
                        ) from None
                    except _NETWORK_ERRORS as exc:
                        if reused and not buf:
                            raise _ConnectionLost from exc
                        if conn.fresh and isinstance(exc.__cause__ or exc, ssl.SSLError):
                            raise TLSError(_describe("TLS handshake failed", exc), url=_safe_url(request)) from exc
                        raise ConnectionClosed(
                            _describe("error reading the response", exc), url=_safe_url(request)
                        ) from exc
                    conn.fresh = False
                    buf = buf + received if buf else received
                    continue
                status, reason, version, headers, mode, length, keep_alive = _parse_head(buf[:end], request)
                rest = buf[end + 4 :]
                if status >= 200:
                    break
                if status == 101:
                    raise ProtocolError("unexpected 101 Switching Protocols", url=_safe_url(request))
                # Interim response (100 Continue, 103 Early Hints): the real one follows.
                buf, start = rest, 0
        if scope.cancelled_caught:
            if writing:
                raise HTTPTimeout("timed out sending the request", phase="write", url=_safe_url(request))
            raise HTTPTimeout("timed out waiting for the response", phase="read", url=_safe_url(request))
    except BaseException:
        await conn.aclose()
        raise

    if close:
        keep_alive = False
    extensions = {"http_version": version, "reason_phrase": reason}
    if mode == _NO_BODY or (mode == _LENGTH and length == 0):
        if not (keep_alive and not rest and transport._release(key, conn)):
            await conn.aclose()
        return httpx.Response(status, headers=headers, stream=EMPTY, extensions=extensions)
    if mode == _LENGTH and len(rest) >= length:
        # The whole body came with the head.
        if not (keep_alive and len(rest) == length and transport._release(key, conn)):
            await conn.aclose()
        return httpx.Response(status, headers=headers, stream=_Complete(rest[:length]), extensions=extensions)
    body_stream = _ResponseStream(transport, key, conn, request, read_timeout, mode, length, rest, keep_alive)
    return httpx.Response(status, headers=headers, stream=body_stream, extensions=extensions)


def _parse_head(
    head: bytes, request: httpx.Request
) -> tuple[int, bytes, bytes, list[tuple[bytes, bytes]], int, int, bool]:
    """Status line and header lines -> (status, reason, version, headers, framing, length, keep-alive)."""
    lines = head.split(b"\r\n")
    status_line = lines[0]
    version, _, rest = status_line.partition(b" ")
    code, _, reason = rest.partition(b" ")
    if version[:7] != b"HTTP/1." or len(code) != 3 or not code.isdigit():
        raise ProtocolError(f"malformed status line {status_line[:80]!r}", url=_safe_url(request))
    status = int(code)
    headers: list[tuple[bytes, bytes]] = []
    length = -1
    chunked = False
    connection = b""
    for line in lines[1:]:
        name, sep, value = line.partition(b":")
        if not sep or not name or name[-1] in b" \t" or name[0] in b" \t":
            raise ProtocolError(f"malformed header line {line[:80]!r}", url=_safe_url(request))
        value = value.strip(b" \t")
        headers.append((name, value))
        lname = name.lower()
        if lname == b"content-length":
            try:
                parts = {int(v) for v in value.split(b",")}
            except ValueError:
                parts = set()
            if len(parts) != 1 or length not in (-1, *parts) or min(parts) < 0:
                raise ProtocolError(f"bad Content-Length {value[:40]!r}", url=_safe_url(request))
            length = parts.pop()
        elif lname == b"transfer-encoding":
            codings = value.lower()
            if codings.rsplit(b",", 1)[-1].strip() == b"chunked":
                chunked = True
            else:
                raise ProtocolError(f"unsupported Transfer-Encoding {value[:40]!r}", url=_safe_url(request))
        elif lname == b"connection":
            connection += b"," + value.lower()
    keep_alive = b"close" not in connection if version == b"HTTP/1.1" else b"keep-alive" in connection
    if request.method == "HEAD" or status in (204, 304) or status < 200:
        mode = _NO_BODY
    elif chunked:
        mode = _CHUNKED
        if length >= 0:  # both framings: chunked wins, and the connection is not trusted again
            keep_alive = False
    elif length >= 0:
        mode = _LENGTH
    else:
        mode = _UNTIL_CLOSE
        keep_alive = False
    return status, reason, version, headers, mode, length, keep_alive


class _Complete(httpx.AsyncByteStream):
    """A body that arrived whole with the response head (the connection is already released)."""

    __slots__ = ("_body",)

    def __init__(self, body: bytes) -> None:
        self._body = body

    async def __aiter__(self) -> AsyncIterator[bytes]:
        body, self._body = self._body, b""  # not kept alive by the response once handed over
        yield body


class _ResponseStream(httpx.AsyncByteStream):
    """Yields the body as it arrives; puts the connection back in the pool once it is all read.

    A response that is closed early, cancelled or broken closes its connection instead, so a pooled
    connection is always at a message boundary.
    """

    def __init__(
        self,
        transport: FastTransport,
        key: _Key,
        conn: _Connection,
        request: httpx.Request,
        timeout: float | None,
        mode: int,
        length: int,
        initial: bytes,
        keep_alive: bool,
    ) -> None:
        self._transport = transport
        self._key = key
        self._conn: _Connection | None = conn
        self._request = request
        self._timeout = timeout
        self._mode = mode
        self._length = length
        self._initial = initial
        self._keep_alive = keep_alive

    def __aiter__(self) -> AsyncIterator[bytes]:
        # The reader generator is returned as is: one generator frame per chunk, not two.
        conn = self._conn
        if conn is None:
            raise httpx.StreamConsumed()
        if self._mode == _LENGTH:
            return self._read_length(conn)
        if self._mode == _CHUNKED:
            return self._read_chunked(conn)
        return self._read_until_close(conn)

    def _done(self, conn: _Connection, clean: bool) -> None:
        """The body is complete: the connection goes back to the pool, or is marked for closing."""
        if clean and self._keep_alive and self._transport._release(self._key, conn):
            self._conn = None

    async def _receive(self, conn: _Connection, got: int, expected: str) -> bytes:
        try:
            return await _receive(conn, self._timeout)
        except TimeoutError:
            raise HTTPTimeout(
                "timed out reading the response body", phase="read", url=_safe_url(self._request)
            ) from None
        except anyio.EndOfStream:
            raise ConnectionClosed(
                f"peer closed connection without sending complete message body: "
                f"received {got} bytes, expected {expected}",
                url=_safe_url(self._request),
            ) from None
        except _NETWORK_ERRORS as exc:
            raise ConnectionClosed(
                _describe("error reading the response body", exc), url=_safe_url(self._request)
            ) from exc

    async def _read_length(self, conn: _Connection) -> AsyncIterator[bytes]:
        remaining = self._length
        data = self._initial
        self._initial = b""
        try:
            while True:
                if data:
                    size = len(data)
                    if size >= remaining:
                        self._done(conn, size == remaining)
                        yield data[:remaining] if size > remaining else data
                        break
                    remaining -= size
                    yield data
                data = await self._receive(conn, self._length - remaining, str(self._length))
        finally:
            # Not released to the pool (closed early, cancelled, failed, or not reusable): close.
            await self.aclose()

    async def _read_until_close(self, conn: _Connection) -> AsyncIterator[bytes]:
        data = self._initial
        self._initial = b""
        try:
            while True:
                if data:
                    yield data
                try:
                    data = await _receive(conn, self._timeout)
                except anyio.EndOfStream:
                    break
                except TimeoutError:
                    raise HTTPTimeout(
                        "timed out reading the response body", phase="read", url=_safe_url(self._request)
                    ) from None
                except _NETWORK_ERRORS as exc:
                    raise ConnectionClosed(
                        _describe("error reading the response body", exc), url=_safe_url(self._request)
                    ) from exc
        finally:
            await self.aclose()

    async def _read_chunked(self, conn: _Connection) -> AsyncIterator[bytes]:
        decoder = ChunkDecoder()
        data = self._initial
        self._initial = b""
        got = 0
        try:
            while True:
                out = decoder.feed(data) if data else b""
                if decoder.done:
                    self._done(conn, not decoder.extra)
                    if out:
                        yield out
                    break
                if out:
                    got += len(out)
                    yield out
                data = await self._receive(conn, got, "chunked body")
        finally:
            await self.aclose()

    async def aclose(self) -> None:
        """Close the connection unless it went back to the pool (the body was read to its end)."""
        conn, self._conn = self._conn, None
        if conn is not None:
            await conn.aclose()
