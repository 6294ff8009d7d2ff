"""FastTransport, the body side (relay.http.fetch) and HTTPClient against real servers on 127.0.0.1
(asyncio servers in the test's loop). FastTransport is tested under httpx.AsyncClient too: it is an
httpx transport, raising the relay's errors."""

from __future__ import annotations

import asyncio
import datetime
import gzip
import ipaddress
import random
import socket
import ssl
import tracemalloc
import zlib
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import anyio
import httpx
import pytest

from relay._exceptions import (
    BodyLimitError,
    ConnectError,
    ConnectionClosed,
    DecodeError,
    HTTPTimeout,
    ProtocolError,
    TLSError,
)
from relay.http._wire import FastTransport, _Connection
from relay.http.client import HTTPClient, Response
from relay.http.fetch import ChunkDecoder

pytestmark = [pytest.mark.anyio, pytest.mark.timeout(30)]


async def fetch(c: httpx.AsyncClient, request: httpx.Request, body_limit: int = 0) -> tuple[Response, bytes]:
    """The request through an HTTPClient over the AsyncClient's transport; (response, body)."""
    response = await HTTPClient(c._transport).send(request, limit=body_limit)
    return response, response.content

ETCD_BODY = Path(__file__).resolve().parent / "data" / "etcd-metrics" / "etcd-3.5.1-member-3381.prom"


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


# -- a small HTTP/1.1 server ---------------------------------------------------------------------

Handler = Callable[["Exchange"], Awaitable[bool]]


class Exchange:
    """One request as the test server saw it, with the writer to answer on."""

    def __init__(
        self, method: str, path: str, headers: dict[str, str], body: bytes, writer: asyncio.StreamWriter
    ) -> None:
        self.method = method
        self.path = path
        self.headers = headers
        self.body = body
        self.writer = writer

    async def reply(
        self,
        status: int,
        body: bytes = b"",
        headers: list[tuple[str, str]] | None = None,
        *,
        length: bool = True,
    ) -> None:
        head = [f"HTTP/1.1 {status} X"]
        for name, value in headers or []:
            head.append(f"{name}: {value}")
        if length:
            head.append(f"Content-Length: {len(body)}")
        self.writer.write(("\r\n".join(head) + "\r\n\r\n").encode() + body)
        await self.writer.drain()


class Server:
    """Serves `routes` (path -> handler; a handler returns False to close the connection)."""

    def __init__(self, routes: dict[str, Handler], ssl_context: ssl.SSLContext | None = None) -> None:
        self.routes = routes
        self.ssl_context = ssl_context
        self.accepted = 0
        self.requests = 0
        self.alpn: list[str | None] = []
        self._server: asyncio.Server | None = None
        self._writers: set[asyncio.StreamWriter] = set()
        self.port = 0

    async def __aenter__(self) -> Server:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0, ssl=self.ssl_context)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._server is not None
        self._server.close()
        for writer in list(self._writers):
            writer.transport.abort()
        with anyio.move_on_after(2):
            await self._server.wait_closed()

    def url(self, path: str) -> str:
        scheme = "https" if self.ssl_context else "http"
        return f"{scheme}://127.0.0.1:{self.port}{path}"

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.accepted += 1
        self._writers.add(writer)
        ssl_object = writer.get_extra_info("ssl_object")
        if ssl_object is not None:
            self.alpn.append(ssl_object.selected_alpn_protocol())
        try:
            for _ in range(1000):
                try:
                    head = await reader.readuntil(b"\r\n\r\n")
                except (asyncio.IncompleteReadError, ConnectionError, ssl.SSLError):
                    return
                lines = head.decode("latin-1").split("\r\n")
                method, path, _ = lines[0].split(" ")
                headers = {}
                for line in lines[1:]:
                    if line:
                        name, _, value = line.partition(":")
                        headers[name.strip().lower()] = value.strip()
                body = await reader.readexactly(int(headers.get("content-length", "0")))
                if headers.get("transfer-encoding") == "chunked":
                    body = await _read_chunked_request(reader)
                self.requests += 1
                handler = self.routes[path.split("?")[0]]
                if not await handler(Exchange(method, path, headers, body, writer)):
                    return
        except (ConnectionError, ssl.SSLError):
            return
        finally:
            self._writers.discard(writer)
            writer.close()


async def _read_chunked_request(reader: asyncio.StreamReader) -> bytes:
    out = b""
    for _ in range(100_000):
        size = int((await reader.readuntil(b"\r\n")).split(b";")[0], 16)
        if size == 0:
            await reader.readuntil(b"\r\n")
            return out
        out += await reader.readexactly(size)
        await reader.readexactly(2)
    raise AssertionError("too many chunks")


def _chunked(body: bytes, size: int) -> bytes:
    parts = [
        b"%x\r\n%s\r\n" % (len(body[i : i + size]), body[i : i + size]) for i in range(0, len(body), size)
    ]
    return b"".join(parts) + b"0\r\n\r\n"


BODY = bytes(range(256)) * 400  # 100 KiB, every byte value


async def h_length(ex: Exchange) -> bool:
    await ex.reply(200, BODY, [("Content-Type", "application/octet-stream")])
    return True


async def h_small(ex: Exchange) -> bool:
    await ex.reply(200, b"hello", [("X-Multi", "a"), ("x-multi", "b"), ("set-cookie", "k=v")])
    return True


async def h_chunked(ex: Exchange) -> bool:
    ex.writer.write(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n")
    data = _chunked(BODY, 1000)
    # dribble it out in odd pieces so that chunk lines are split across reads
    for i in range(0, len(data), 7777):
        ex.writer.write(data[i : i + 7777])
        await ex.writer.drain()
        await asyncio.sleep(0)
    return True


async def h_chunked_ext(ex: Exchange) -> bool:
    ex.writer.write(
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
        b"5;name=value\r\nhello\r\n6\r\n world\r\n0\r\nX-Trailer: 1\r\n\r\n"
    )
    await ex.writer.drain()
    return True


async def h_close_delimited(ex: Exchange) -> bool:
    ex.writer.write(b"HTTP/1.1 200 OK\r\nConnection: close\r\n\r\n")
    for i in range(0, len(BODY), 10_000):
        ex.writer.write(BODY[i : i + 10_000])
        await ex.writer.drain()
    return False


async def h_conn_close(ex: Exchange) -> bool:
    await ex.reply(200, b"bye", [("Connection", "close")])
    return False


async def h_gzip(ex: Exchange) -> bool:
    await ex.reply(200, gzip.compress(BODY), [("Content-Encoding", "gzip")])
    return True


async def h_deflate(ex: Exchange) -> bool:
    raw = "raw" in ex.path
    compressor = zlib.compressobj(wbits=-15 if raw else 15)
    await ex.reply(200, compressor.compress(BODY) + compressor.flush(), [("Content-Encoding", "deflate")])
    return True


async def h_gzip_truncated(ex: Exchange) -> bool:
    ex.writer.write(b"HTTP/1.1 200 OK\r\nContent-Encoding: gzip\r\nConnection: close\r\n\r\n")
    ex.writer.write(gzip.compress(BODY)[:300])
    await ex.writer.drain()
    return False


async def h_echo(ex: Exchange) -> bool:
    await ex.reply(
        200, ex.body, [("X-Method", ex.method), ("X-Got-Length", ex.headers.get("content-length", "-"))]
    )
    return True


async def h_reset(ex: Exchange) -> bool:
    ex.writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 100000\r\n\r\n" + b"x" * 1000)
    await ex.writer.drain()
    sock = ex.writer.get_extra_info("socket")
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
    ex.writer.transport.abort()
    return False


async def h_short(ex: Exchange) -> bool:
    ex.writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 100000\r\n\r\n" + b"x" * 1000)
    await ex.writer.drain()
    return False


async def h_slow(ex: Exchange) -> bool:
    await asyncio.sleep(5)
    return False


async def h_slow_body(ex: Exchange) -> bool:
    ex.writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 100000\r\n\r\n" + b"x" * 1000)
    await ex.writer.drain()
    await asyncio.sleep(5)
    return False


async def h_no_content(ex: Exchange) -> bool:
    await ex.reply(204, length=False)
    return True


async def h_not_modified(ex: Exchange) -> bool:
    # a 304 may carry the Content-Length of the full representation, but never a body
    ex.writer.write(b'HTTP/1.1 304 Not Modified\r\nContent-Length: 1234\r\nETag: "x"\r\n\r\n')
    await ex.writer.drain()
    return True


async def h_head(ex: Exchange) -> bool:
    if ex.method == "HEAD":
        ex.writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 102400\r\n\r\n")
        await ex.writer.drain()
        return True
    return await h_length(ex)


async def h_continue(ex: Exchange) -> bool:
    ex.writer.write(b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 103 Early Hints\r\nLink: </a>\r\n\r\n")
    await ex.reply(200, b"after interim")
    return True


async def h_bad_status(ex: Exchange) -> bool:
    ex.writer.write(b"HTTQ/1.1 200 OK\r\n\r\n")
    await ex.writer.drain()
    return False


async def h_bad_chunk(ex: Exchange) -> bool:
    ex.writer.write(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\nhello\r\n0\r\n\r\n")
    await ex.writer.drain()
    return False


async def h_endless_gzip(ex: Exchange) -> bool:
    ex.writer.write(b"HTTP/1.1 200 OK\r\nContent-Encoding: gzip\r\nTransfer-Encoding: chunked\r\n\r\n")
    compressor = zlib.compressobj(9, zlib.DEFLATED, 31)
    block = b"etcd_debugging_mvcc_keys_total 1\n" * 30_000  # ~1 MB that deflates to ~1 KB
    first = compressor.compress(block) + compressor.flush(zlib.Z_FULL_FLUSH)
    # after a full flush nothing refers back: the same compressed block can be sent again and again
    again = compressor.compress(block) + compressor.flush(zlib.Z_FULL_FLUSH)
    ex.writer.write(b"%x\r\n%s\r\n" % (len(first), first))
    piece = b"%x\r\n%s\r\n" % (len(again), again)
    for _ in range(100_000):  # ~100 GB decoded: never finished inside the test's timeout
        ex.writer.write(piece)
        await ex.writer.drain()
    return False


async def h_endless_plain(ex: Exchange) -> bool:
    ex.writer.write(b"HTTP/1.1 200 OK\r\n\r\n")
    block = b"x" * 65536
    for _ in range(1_000_000):
        ex.writer.write(block)
        await ex.writer.drain()
    return False


async def h_etcd(ex: Exchange) -> bool:
    body = ETCD_BODY.read_bytes()
    if "gzip" in ex.headers.get("accept-encoding", ""):
        await ex.reply(
            200, gzip.compress(body), [("Content-Encoding", "gzip"), ("Content-Type", "text/plain")]
        )
    else:
        await ex.reply(200, body, [("Content-Type", "text/plain; version=0.0.4")])
    return True


ROUTES: dict[str, Handler] = {
    "/length": h_length,
    "/small": h_small,
    "/chunked": h_chunked,
    "/chunked-ext": h_chunked_ext,
    "/close-delimited": h_close_delimited,
    "/conn-close": h_conn_close,
    "/gzip": h_gzip,
    "/deflate": h_deflate,
    "/deflate-raw": h_deflate,
    "/echo": h_echo,
    "/gzip-truncated": h_gzip_truncated,
    "/reset": h_reset,
    "/short": h_short,
    "/slow": h_slow,
    "/slow-body": h_slow_body,
    "/204": h_no_content,
    "/304": h_not_modified,
    "/head": h_head,
    "/continue": h_continue,
    "/bad-status": h_bad_status,
    "/bad-chunk": h_bad_chunk,
    "/endless-gzip": h_endless_gzip,
    "/endless-plain": h_endless_plain,
    "/etcd": h_etcd,
}


@pytest.fixture
async def server() -> AsyncIterator[Server]:
    async with Server(ROUTES) as srv:
        yield srv


@pytest.fixture
async def client() -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(transport=FastTransport(), timeout=5.0) as c:
        yield c


# -- bodies and framing --------------------------------------------------------------------------


@pytest.mark.parametrize(
    "path", ["/length", "/chunked", "/close-delimited", "/gzip", "/deflate", "/deflate-raw"]
)
async def test_bodies(server: Server, client: httpx.AsyncClient, path: str) -> None:
    response = await client.get(server.url(path))
    assert response.status_code == 200
    assert response.content == BODY


async def test_chunk_extensions_and_trailers(server: Server, client: httpx.AsyncClient) -> None:
    for _ in range(3):
        response = await client.get(server.url("/chunked-ext"))
        assert response.content == b"hello world"
    assert server.accepted == 1


async def test_headers_multiple_and_case_insensitive(server: Server, client: httpx.AsyncClient) -> None:
    response = await client.get(server.url("/small"))
    assert response.headers.get_list("x-multi") == ["a", "b"]
    assert response.headers["X-MULTI"] == "a, b"
    assert response.headers["content-length"] == "5"
    assert response.http_version == "HTTP/1.1"
    assert response.reason_phrase == "X"
    assert response.text == "hello"


async def test_no_body_responses_keep_the_connection(server: Server, client: httpx.AsyncClient) -> None:
    assert (await client.get(server.url("/204"))).content == b""
    r304 = await client.get(server.url("/304"))
    assert r304.status_code == 304 and r304.content == b"" and r304.headers["etag"] == '"x"'
    head = await client.head(server.url("/head"))
    assert head.status_code == 200 and head.content == b"" and head.headers["content-length"] == "102400"
    assert (await client.get(server.url("/head"))).content == BODY
    assert server.accepted == 1


async def test_interim_responses_are_skipped(server: Server, client: httpx.AsyncClient) -> None:
    response = await client.get(server.url("/continue"))
    assert response.status_code == 200 and response.content == b"after interim"


async def test_post_round_trip(server: Server, client: httpx.AsyncClient) -> None:
    for body in (b"", b"small", bytes(range(256)) * 4096):
        response = await client.post(server.url("/echo"), content=body)
        assert response.content == body
        assert response.headers["x-method"] == "POST"
        assert response.headers["x-got-length"] == str(len(body))

    async def pieces() -> AsyncIterator[bytes]:
        for i in range(3):
            yield b"part%d;" % i

    streamed = await client.post(server.url("/echo"), content=pieces())
    assert streamed.content == b"part0;part1;part2;"
    assert server.accepted == 1


# -- the chunked decoder, fed in every kind of split ------------------------------------------------

CHUNKED_CASES = [
    (_chunked(BODY, 2048), BODY),
    (_chunked(BODY[:3000], 1), BODY[:3000]),
    (
        b'5;ext=1;q="a"\r\nhello\r\nB\r\n 0123456789\r\n0\r\nTrailer: x\r\nMore: y\r\n\r\n',
        b"hello 0123456789",
    ),
    (b"000\r\n\r\n", b""),
    (b"10000\r\n" + b"z" * 65536 + b"\r\n0\r\n\r\n", b"z" * 65536),
]


@pytest.mark.parametrize(
    "encoded,decoded", CHUNKED_CASES, ids=["2k", "1byte", "ext-trailers", "empty", "64k"]
)
def test_chunk_decoder_any_split(encoded: bytes, decoded: bytes) -> None:
    rng = random.Random(1)
    splits: list[list[int]] = [[len(encoded)], [1] * min(len(encoded), 20_000)]
    splits += [[rng.randint(1, 9000) for _ in range(200)] for _ in range(20)]
    for sizes in splits:
        decoder = ChunkDecoder()
        out = []
        pos = 0
        for size in sizes:
            if pos >= len(encoded) or decoder.done:
                break
            out.append(decoder.feed(encoded[pos : pos + size]))
            pos += size
        if not decoder.done and pos < len(encoded):
            out.append(decoder.feed(encoded[pos:]))
        assert decoder.done and not decoder.extra
        assert b"".join(out) == decoded
    decoder = ChunkDecoder()
    decoder.feed(encoded + b"HTTP/1.1")
    assert decoder.done and decoder.extra


@pytest.mark.parametrize(
    "encoded",
    [
        b"5\r\nhelloXX0\r\n\r\n",
        b"0x5\r\nhello\r\n",
        b"-5\r\n",
        b" \r\n",
        b"1_0\r\n",
        b"+5\r\nhello\r\n",
        b"12345678901234567\r\n",
        b"ffffffffffffffff\r\n",  # 16 EiB: over MAX_CHUNK_SIZE, refused before any data is awaited
        b"10000001\r\n",  # 256 MiB + 1
    ],
)
def test_chunk_decoder_rejects(encoded: bytes) -> None:
    with pytest.raises(ProtocolError) as info:
        ChunkDecoder().feed(encoded)
    assert info.value.reason == "http"


async def test_http10_server_in_a_thread() -> None:
    """Python's http.server answers HTTP/1.0, without keep-alive and here without Content-Length."""
    import http.server
    import threading

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self.send_response(200)
            self.send_header("Content-Type", "text/plain")
            self.end_headers()
            self.wfile.write(BODY)

        def log_message(self, format: str, *args: Any) -> None:
            pass

    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        transport = FastTransport()
        async with httpx.AsyncClient(transport=transport) as c:
            for _ in range(3):
                response = await c.get(f"http://127.0.0.1:{httpd.server_address[1]}/")
                assert response.http_version == "HTTP/1.0"
                assert response.content == BODY
            assert not any(transport._idle.values())  # HTTP/1.0 without keep-alive: never pooled
    finally:
        httpd.shutdown()
        httpd.server_close()
        thread.join(5)


# -- the pool ------------------------------------------------------------------------------------


async def test_keepalive_reuse(server: Server, client: httpx.AsyncClient) -> None:
    for path in ["/length", "/chunked", "/gzip", "/small", "/echo"] * 4:
        assert (await client.get(server.url(path))).status_code == 200
    assert server.accepted == 1
    assert server.requests == 20


async def test_connection_close_is_not_reused(server: Server, client: httpx.AsyncClient) -> None:
    for _ in range(3):
        assert (await client.get(server.url("/conn-close"))).content == b"bye"
    for _ in range(2):
        assert (await client.get(server.url("/close-delimited"))).content == BODY
    assert server.accepted == 5


async def test_request_connection_close_is_honoured(server: Server, client: httpx.AsyncClient) -> None:
    for _ in range(3):
        await client.get(server.url("/small"), headers={"Connection": "close"})
    assert server.accepted == 3


async def test_keepalive_expiry_and_limit(server: Server) -> None:
    async with httpx.AsyncClient(transport=FastTransport(keepalive_expiry=0.0)) as c:
        for _ in range(3):
            await c.get(server.url("/small"))
    assert server.accepted == 3
    async with httpx.AsyncClient(transport=FastTransport(max_keepalive_per_host=0)) as c:
        for _ in range(2):
            await c.get(server.url("/small"))
    assert server.accepted == 5


async def test_concurrent_requests_never_share_a_connection(server: Server) -> None:
    transport = FastTransport(max_keepalive_per_host=2)
    results: list[bytes] = []
    async with httpx.AsyncClient(transport=transport) as c:

        async def one(path: str) -> None:
            results.append((await c.get(server.url(path))).content)

        for _ in range(3):
            async with anyio.create_task_group() as tg:
                for i in range(8):
                    tg.start_soon(one, ["/length", "/chunked", "/gzip", "/close-delimited"][i % 4])
    assert results == [BODY] * 24
    # each round of 8 at once opens the connections that the pool (2 idle kept) cannot supply
    assert 8 <= server.accepted <= 24
    assert server.requests == 24


@pytest.mark.parametrize("detect", [True, False], ids=["detected-idle", "retried"])
async def test_server_closing_an_idle_connection(
    server: Server, client: httpx.AsyncClient, monkeypatch: pytest.MonkeyPatch, detect: bool
) -> None:
    if not detect:  # the close is not seen before reuse: the request fails on it and is retried once
        monkeypatch.setattr(_Connection, "is_stale", lambda self: False)
    assert (await client.get(server.url("/small"))).content == b"hello"
    for writer in list(server._writers):  # the server drops idle keep-alive connections
        writer.close()
    await anyio.sleep(0.05)
    again = await client.get(server.url("/small"))
    assert again.content == b"hello"
    # a resend says so: the remote writer counts it as a retry (the peer may have had it twice)
    assert again.request.extensions.get("relay_resent", False) is (not detect)
    assert (await client.post(server.url("/echo"), content=b"again")).content == b"again"
    assert server.accepted == 2


async def test_expired_idle_connections_are_closed(server: Server) -> None:
    async with Server(ROUTES) as other, httpx.AsyncClient(transport=FastTransport(keepalive_expiry=0.2)) as c:
        await c.get(server.url("/small"))
        assert len(server._writers) == 1
        await anyio.sleep(1.1)  # past the expiry and the sweep interval (1 s at least)
        await c.get(other.url("/small"))  # any request sweeps the pool
        with anyio.fail_after(2):
            while server._writers:
                await anyio.sleep(0.01)


async def test_cancellation_at_any_point_never_poisons_the_pool(server: Server) -> None:
    transport = FastTransport()
    async with httpx.AsyncClient(transport=transport) as c:
        for i in range(40):
            with anyio.move_on_after(i * 0.0005):
                response = await c.get(server.url(["/chunked", "/length", "/gzip", "/echo"][i % 4]))
                assert response.status_code == 200
            # whatever was interrupted, the next request on the pool is whole and correct
            assert (await c.get(server.url("/length"))).content == BODY
            assert all(len(conns) <= 1 for conns in transport._idle.values())


async def test_early_close_drops_the_connection(server: Server, client: httpx.AsyncClient) -> None:
    async with client.stream("GET", server.url("/chunked")) as response:
        async for _ in response.aiter_raw():
            break
    assert (await client.get(server.url("/small"))).content == b"hello"
    assert server.accepted == 2


async def test_cancelled_request_does_not_return_its_connection(
    server: Server, client: httpx.AsyncClient
) -> None:
    with anyio.move_on_after(0.2) as scope:
        await client.get(server.url("/slow-body"))
    assert scope.cancelled_caught
    with anyio.move_on_after(0.2) as scope:
        await client.get(server.url("/slow"))
    assert scope.cancelled_caught
    assert (await client.get(server.url("/length"))).content == BODY
    assert (await client.get(server.url("/length"))).content == BODY
    assert server.accepted == 3  # neither cancelled connection went back to the pool


# -- errors --------------------------------------------------------------------------------------


async def test_reset_mid_body(server: Server, client: httpx.AsyncClient) -> None:
    with pytest.raises(ConnectionClosed) as info:
        await client.get(server.url("/reset"))
    assert info.value.reason == "http"
    with pytest.raises(ConnectionClosed, match="received 1000 bytes, expected 100000"):
        await client.get(server.url("/short"))


async def test_read_timeout(server: Server) -> None:
    async with httpx.AsyncClient(transport=FastTransport(), timeout=httpx.Timeout(5.0, read=0.2)) as c:
        with pytest.raises(HTTPTimeout) as info:
            await c.get(server.url("/slow"))
        assert info.value.reason == "timeout" and info.value.phase == "read"
        with pytest.raises(HTTPTimeout):
            await c.get(server.url("/slow-body"))


async def test_connect_refused(client: httpx.AsyncClient) -> None:
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    sock.close()
    with pytest.raises(ConnectError) as info:
        await client.get(f"http://127.0.0.1:{port}/metrics")
    assert info.value.reason == "connect" and f"127.0.0.1:{port}" in str(info.value)


async def test_connect_timeout() -> None:
    # a loopback listener that never accepts, with its accept queue filled: the next SYN is dropped
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(0)
    port = listener.getsockname()[1]
    fillers = []
    try:
        for _ in range(8):
            filler = socket.socket()
            filler.setblocking(False)
            filler.connect_ex(("127.0.0.1", port))
            fillers.append(filler)
        async with httpx.AsyncClient(transport=FastTransport(), timeout=httpx.Timeout(5.0, connect=0.2)) as c:
            with pytest.raises(HTTPTimeout) as info:
                await c.get(f"http://127.0.0.1:{port}/metrics")
            assert info.value.phase == "connect" and info.value.reason == "timeout"
    finally:
        for filler in fillers:
            filler.close()
        listener.close()


async def test_protocol_errors(server: Server, client: httpx.AsyncClient) -> None:
    with pytest.raises(ProtocolError, match="status line"):
        await client.get(server.url("/bad-status"))
    with pytest.raises(ProtocolError, match="chunk size"):
        await client.get(server.url("/bad-chunk"))


async def test_unsupported_scheme(client: httpx.AsyncClient) -> None:
    with pytest.raises(ProtocolError):
        await client.get("ftp://127.0.0.1/x")


# -- fetch ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("fast", [True, False], ids=["fast", "httpx"])
@pytest.mark.parametrize(
    "path", ["/length", "/chunked", "/close-delimited", "/gzip", "/deflate", "/deflate-raw"]
)
async def test_fetch(server: Server, fast: bool, path: str) -> None:
    transport: httpx.AsyncBaseTransport = FastTransport() if fast else httpx.AsyncHTTPTransport()
    async with httpx.AsyncClient(transport=transport) as c:
        response, body = await fetch(c, c.build_request("GET", server.url(path)), body_limit=len(BODY))
        assert response.status_code == 200 and body == BODY
        with pytest.raises(
            BodyLimitError, match=f"body exceeds body_size_limit of {len(BODY) - 1} bytes"
        ) as info:
            await fetch(c, c.build_request("GET", server.url(path)), body_limit=len(BODY) - 1)
        assert info.value.reason == "body_size_limit"
        response, body = await fetch(c, c.build_request("GET", server.url(path)))
        assert body == BODY


@pytest.mark.parametrize("fast", [True, False], ids=["fast", "httpx"])
async def test_fetch_truncated_gzip(server: Server, fast: bool) -> None:
    transport: httpx.AsyncBaseTransport = FastTransport() if fast else httpx.AsyncHTTPTransport()
    async with httpx.AsyncClient(transport=transport) as c:
        with pytest.raises(DecodeError, match="truncated") as info:
            await fetch(c, c.build_request("GET", server.url("/gzip-truncated")))
        assert info.value.reason == "http"


@pytest.mark.parametrize("fast", [True, False], ids=["fast", "httpx"])
@pytest.mark.parametrize("path", ["/endless-gzip", "/endless-plain"])
async def test_fetch_endless_body_stops_at_limit(server: Server, fast: bool, path: str) -> None:
    limit = 8_000_000
    transport: httpx.AsyncBaseTransport = FastTransport() if fast else httpx.AsyncHTTPTransport()
    async with httpx.AsyncClient(transport=transport) as c:
        tracemalloc.start()
        try:
            with anyio.fail_after(20), pytest.raises(BodyLimitError) as info:
                await fetch(c, c.build_request("GET", server.url(path)), body_limit=limit)
            _, peak = tracemalloc.get_traced_memory()
        finally:
            tracemalloc.stop()
    assert info.value.reason == "body_size_limit"
    assert peak < 3 * limit, peak


# -- equivalence with httpx's own transport -------------------------------------------------------

INTERESTING = (
    "content-type",
    "content-length",
    "content-encoding",
    "transfer-encoding",
    "etag",
    "x-multi",
    "x-method",
    "x-got-length",
    "connection",
    "set-cookie",
)


@pytest.mark.parametrize(
    "method,path",
    [
        ("GET", "/length"),
        ("GET", "/small"),
        ("GET", "/chunked"),
        ("GET", "/chunked-ext"),
        ("GET", "/close-delimited"),
        ("GET", "/conn-close"),
        ("GET", "/gzip"),
        ("GET", "/deflate"),
        ("GET", "/204"),
        ("GET", "/304"),
        ("HEAD", "/head"),
        ("GET", "/continue"),
        ("POST", "/echo"),
        ("GET", "/etcd"),
    ],
)
async def test_equivalent_to_httpx_default_transport(server: Server, method: str, path: str) -> None:
    seen: list[tuple[int, list[tuple[str, str]], bytes, bytes]] = []
    for transport in (FastTransport(), httpx.AsyncHTTPTransport()):
        async with httpx.AsyncClient(transport=transport) as c:
            for _ in range(2):
                content = b"posted body" if method == "POST" else None
                response = await c.request(
                    method, server.url(path), content=content, headers={"Accept-Encoding": "gzip"}
                )
                headers = [(k, v) for k, v in response.headers.multi_items() if k in INTERESTING]
                seen.append((response.status_code, headers, response.content, response.read()))
    assert seen[0] == seen[1] == seen[2] == seen[3]


# -- TLS -----------------------------------------------------------------------------------------


class PKI:
    """A CA, a server certificate for 127.0.0.1/localhost and a client certificate, in `directory`."""

    def __init__(self, directory: Path, name: str = "test-ca") -> None:
        from cryptography import x509
        from cryptography.hazmat.primitives import hashes, serialization
        from cryptography.hazmat.primitives.asymmetric import ec
        from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

        now = datetime.datetime.now(datetime.UTC)

        def key_pem(key: Any) -> bytes:
            return bytes(
                key.private_bytes(
                    serialization.Encoding.PEM,
                    serialization.PrivateFormat.PKCS8,
                    serialization.NoEncryption(),
                )
            )

        ca_key = ec.generate_private_key(ec.SECP256R1())
        ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
        ca_cert = (
            x509.CertificateBuilder()
            .subject_name(ca_name)
            .issuer_name(ca_name)
            .public_key(ca_key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(days=1))
            .not_valid_after(now + datetime.timedelta(days=2))
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .add_extension(
                x509.KeyUsage(
                    digital_signature=True,
                    content_commitment=False,
                    key_encipherment=False,
                    data_encipherment=False,
                    key_agreement=False,
                    key_cert_sign=True,
                    crl_sign=True,
                    encipher_only=False,
                    decipher_only=False,
                ),
                critical=True,
            )
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), critical=False)
            .sign(ca_key, hashes.SHA256())
        )

        def leaf(cn: str, usage: Any, sans: list[Any]) -> tuple[bytes, bytes]:
            key = ec.generate_private_key(ec.SECP256R1())
            builder = (
                x509.CertificateBuilder()
                .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)]))
                .issuer_name(ca_name)
                .public_key(key.public_key())
                .serial_number(x509.random_serial_number())
                .not_valid_before(now - datetime.timedelta(days=1))
                .not_valid_after(now + datetime.timedelta(days=2))
                .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
                .add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
                .add_extension(
                    x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False
                )
            )
            if sans:
                builder = builder.add_extension(x509.SubjectAlternativeName(sans), critical=False)
            cert = builder.sign(ca_key, hashes.SHA256())
            return cert.public_bytes(serialization.Encoding.PEM), key_pem(key)

        server_cert, server_key = leaf(
            "server",
            ExtendedKeyUsageOID.SERVER_AUTH,
            [
                x509.DNSName("localhost"),
                x509.DNSName("etcd.test"),
                x509.IPAddress(ipaddress.ip_address("127.0.0.1")),
            ],
        )
        client_cert, client_key = leaf("relay", ExtendedKeyUsageOID.CLIENT_AUTH, [])
        self.ca = directory / f"{name}.pem"
        self.ca.write_bytes(ca_cert.public_bytes(serialization.Encoding.PEM))
        self.server_cert, self.server_key = (
            directory / f"{name}-server.pem",
            directory / f"{name}-server-key.pem",
        )
        self.server_cert.write_bytes(server_cert)
        self.server_key.write_bytes(server_key)
        self.client_cert, self.client_key = (
            directory / f"{name}-client.pem",
            directory / f"{name}-client-key.pem",
        )
        self.client_cert.write_bytes(client_cert)
        self.client_key.write_bytes(client_key)

    def server_context(self) -> ssl.SSLContext:
        ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH, cafile=str(self.ca))
        ctx.load_cert_chain(str(self.server_cert), str(self.server_key))
        ctx.verify_mode = ssl.CERT_REQUIRED
        ctx.set_alpn_protocols(["h2", "http/1.1"])  # like etcd: would pick h2 if offered
        return ctx

    def client_context(self, *, with_cert: bool = True) -> ssl.SSLContext:
        ctx = ssl.create_default_context(cafile=str(self.ca))
        if with_cert:
            ctx.load_cert_chain(str(self.client_cert), str(self.client_key))
        return ctx


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> PKI:
    return PKI(tmp_path_factory.mktemp("pki"))


@pytest.fixture
async def tls_server(pki: PKI) -> AsyncIterator[Server]:
    async with Server(ROUTES, ssl_context=pki.server_context()) as srv:
        yield srv


@pytest.mark.parametrize("tls_version", [ssl.TLSVersion.TLSv1_2, ssl.TLSVersion.TLSv1_3])
async def test_tls_client_certificate(pki: PKI, tls_server: Server, tls_version: ssl.TLSVersion) -> None:
    ctx = pki.client_context()
    ctx.maximum_version = tls_version
    async with httpx.AsyncClient(transport=FastTransport(ssl_context=ctx)) as c:
        for path in ["/length", "/chunked", "/gzip", "/small", "/close-delimited"]:
            assert (await c.get(tls_server.url(path))).status_code == 200
        assert (await c.get(tls_server.url("/length"))).content == BODY
        assert (await c.post(tls_server.url("/echo"), content=b"x" * 100_000)).content == b"x" * 100_000
        _response, body = await fetch(c, c.build_request("GET", tls_server.url("/gzip")), body_limit=1 << 20)
        assert body == BODY
    assert tls_server.accepted == 2  # one keep-alive connection, plus one after the close-delimited body
    assert set(tls_server.alpn) == {"http/1.1"}  # h2 is never offered


async def test_tls_server_hostname(pki: PKI, tls_server: Server) -> None:
    transport = FastTransport(ssl_context=pki.client_context(), server_hostname="etcd.test")
    async with httpx.AsyncClient(transport=transport) as c:
        assert (await c.get(tls_server.url("/small"))).content == b"hello"
    transport = FastTransport(ssl_context=pki.client_context(), server_hostname="wrong.test")
    async with httpx.AsyncClient(transport=transport) as c:
        with pytest.raises(TLSError, match="certificate") as info:
            await c.get(tls_server.url("/small"))
        assert info.value.reason == "tls"


@pytest.mark.parametrize("tls_version", [ssl.TLSVersion.TLSv1_2, ssl.TLSVersion.TLSv1_3])
async def test_tls_missing_client_certificate(
    pki: PKI, tls_server: Server, tls_version: ssl.TLSVersion
) -> None:
    ctx = pki.client_context(with_cert=False)
    ctx.maximum_version = tls_version
    async with httpx.AsyncClient(transport=FastTransport(ssl_context=ctx)) as c:
        with pytest.raises(TLSError):
            await c.get(tls_server.url("/small"))


async def test_tls_untrusted_server(tmp_path: Path, tls_server: Server) -> None:
    other = PKI(tmp_path, "other-ca")
    async with httpx.AsyncClient(transport=FastTransport(ssl_context=other.client_context())) as c:
        with pytest.raises(TLSError, match="certificate verify failed"):
            await c.get(tls_server.url("/small"))


# -- real etcd members ---------------------------------------------------------------------------


def _type_lines(body: bytes) -> set[bytes]:
    return {line for line in body.splitlines() if line.startswith(b"# TYPE ")}


@pytest.mark.services
@pytest.mark.timeout(120)
async def test_real_etcd_member(etcd_cluster: Any) -> None:
    member = etcd_cluster.members[0]
    urls = [f"http://{member.metrics_target}/metrics", f"{member.client_url}/metrics"]
    seen: dict[str, set[bytes]] = {}
    for name, transport in (("fast", FastTransport()), ("httpx", httpx.AsyncHTTPTransport())):
        async with httpx.AsyncClient(transport=transport, timeout=10.0) as c:
            for url in urls:
                for encoding in ("identity", "gzip", "gzip"):
                    request = c.build_request("GET", url, headers={"Accept-Encoding": encoding})
                    response, body = await fetch(c, request, body_limit=50_000_000)
                    assert response.status_code == 200
                    assert response.headers["content-type"].startswith("text/plain")
                    assert response.headers.get("content-encoding", "identity") == encoding
                    assert b"etcd_server_has_leader" in body
                    seen.setdefault(name, set()).update(_type_lines(body))
                    with pytest.raises(BodyLimitError):
                        await fetch(
                            c,
                            c.build_request("GET", url, headers={"Accept-Encoding": encoding}),
                            body_limit=1000,
                        )
        if isinstance(transport, FastTransport):
            # one kept-alive connection per listener, reused across the scrapes above
            assert sorted(len(conns) for conns in transport._idle.values()) in ([1, 1], [])
    assert seen["fast"] == seen["httpx"]


@pytest.fixture(scope="module")
def etcd_tls(tmp_path_factory: pytest.TempPathFactory) -> Any:
    from relay.devtools.localenv import EtcdCluster, ServiceUnavailable, TLSFiles

    from .conftest import missing_service

    pki = PKI(tmp_path_factory.mktemp("etcd-pki"))
    files = TLSFiles(
        str(pki.ca), str(pki.server_cert), str(pki.server_key), str(pki.client_cert), str(pki.client_key)
    )
    try:
        cluster = EtcdCluster(1, version="3.5", base_dir=tmp_path_factory.mktemp("etcd-tls"), tls=files)
    except ServiceUnavailable as exc:
        missing_service(str(exc))
    with cluster:
        yield cluster, pki


@pytest.mark.services
@pytest.mark.timeout(120)
async def test_real_etcd_tls_client_certificate(etcd_tls: Any) -> None:
    cluster, pki = etcd_tls
    url = f"{cluster.members[0].client_url}/metrics"
    assert url.startswith("https://")
    async with httpx.AsyncClient(
        transport=FastTransport(ssl_context=pki.client_context()), timeout=10.0
    ) as c:
        for _ in range(3):
            response, body = await fetch(c, c.build_request("GET", url, headers={"Accept-Encoding": "gzip"}))
            assert response.status_code == 200
            assert b"etcd_server_has_leader" in body
    async with httpx.AsyncClient(
        transport=FastTransport(ssl_context=pki.client_context(with_cert=False))
    ) as c:
        with pytest.raises(TLSError):
            await c.get(url)
