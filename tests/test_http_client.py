"""HTTPClient against real servers on 127.0.0.1: auth, redirects, limits, streams, and the same
failure reasons whichever transport is under it (FastTransport, or httpx's with --http-transport httpx)."""

from __future__ import annotations

import asyncio
import base64
import gzip
import socket
import ssl
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest

from relay._exceptions import BodyLimitError, CredentialsError, HTTPError, HTTPTimeout, ProtocolError
from relay.config import Authorization, BasicAuth, HTTPClientConfig, Secret, TLSConfig
from relay.http.client import ClientPool, HTTPClient
from relay.http.fetch import INFLATE_STEP, decoded_chunks
from relay.scrape import _error_reason
from tests.test_transport import BODY, PKI, ROUTES, Exchange, Handler, Server

pytestmark = [pytest.mark.anyio, pytest.mark.timeout(60)]


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


def _pool(fast: bool) -> ClientPool:
    return ClientPool(fast=fast)


FAST = pytest.mark.parametrize("fast", [True, False], ids=["fast", "httpx"])


# -- routes of this file ---------------------------------------------------------------------------


async def h_auth(ex: Exchange) -> bool:
    await ex.reply(200, ex.headers.get("authorization", "-").encode())
    return True


def redirect_to(location: str, status: int = 302) -> Handler:
    async def handler(ex: Exchange) -> bool:
        await ex.reply(status, b"moved", [("Location", location)])
        return True

    return handler


async def h_method(ex: Exchange) -> bool:
    await ex.reply(200, f"{ex.method} {len(ex.body)}".encode())
    return True


async def h_loop(ex: Exchange) -> bool:
    await ex.reply(302, b"", [("Location", "/loop")])
    return True


async def h_bomb(ex: Exchange) -> bool:
    data = gzip.compress(b"\0" * (64 << 20), 9)  # 64 MiB of zeros in about 64 KB
    await ex.reply(200, data, [("Content-Encoding", "gzip")])
    return True


class Lines:
    """A chunked stream of lines that waits for the test between lines (a watch stream)."""

    def __init__(self) -> None:
        self.next = asyncio.Event()

    async def __call__(self, ex: Exchange) -> bool:
        ex.writer.write(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n")
        for i in range(3):
            line = b'{"event": %d}\n' % i
            ex.writer.write(b"%x\r\n%s\r\n" % (len(line), line))
            await ex.writer.drain()
            await asyncio.wait_for(self.next.wait(), 10)
            self.next.clear()
        ex.writer.write(b"6\r\nno-eol\r\n0\r\n\r\n")
        await ex.writer.drain()
        return True


@pytest.fixture
async def server() -> AsyncIterator[Server]:
    routes = dict(ROUTES)
    routes.update({"/auth": h_auth, "/method": h_method, "/loop": h_loop, "/bomb": h_bomb})
    async with Server(routes) as srv:
        srv.routes["/to-auth"] = redirect_to(srv.url("/auth"))
        srv.routes["/see-other"] = redirect_to("/method", 303)
        srv.routes["/temporary"] = redirect_to("/method", 307)
        srv.routes["/bad-scheme"] = redirect_to("ftp://127.0.0.1/x")
        yield srv


# -- auth ------------------------------------------------------------------------------------------


@FAST
async def test_basic_auth_and_credentials_file_reread(server: Server, tmp_path: Path, fast: bool) -> None:
    pool = _pool(fast)
    basic = HTTPClientConfig(basic_auth=BasicAuth("etcd", Secret("pw")))
    response = await pool.get(basic).get(server.url("/auth"))
    assert response.content == b"Basic " + base64.b64encode(b"etcd:pw")
    token = tmp_path / "token"
    token.write_text("one\n")
    cfg = HTTPClientConfig(authorization=Authorization("Bearer", credentials_file=str(token)))
    client = pool.get(cfg)
    assert (await client.get(server.url("/auth"))).content == b"Bearer one"
    token.write_text("two-and-longer\n")  # a rotation: new size and mtime
    assert (await client.get(server.url("/auth"))).content == b"Bearer two-and-longer"
    # credentials in the URL are sent as basic auth (and not in the request line)
    url = server.url("/auth").replace("http://", "http://user:p%40ss@")
    response = await pool.get(HTTPClientConfig()).get(url)
    assert response.content == b"Basic " + base64.b64encode(b"user:p@ss") and "p%40ss" not in str(response.url)
    token.unlink()
    before = server.requests
    with pytest.raises(CredentialsError, match="credentials_file") as info:
        await client.get(server.url("/auth"))
    assert info.value.reason == "auth" and server.requests == before  # not sent without its credentials
    await pool.aclose()


# -- redirects -------------------------------------------------------------------------------------


@FAST
async def test_redirects(server: Server, fast: bool) -> None:
    pool = _pool(fast)
    cfg = HTTPClientConfig(authorization=Authorization("Bearer", Secret("tok")))
    client = pool.get(cfg)
    # same origin: followed, credentials kept
    response = await client.get(server.url("/to-auth"))
    assert response.status_code == 200 and response.content == b"Bearer tok"
    assert str(response.url) == server.url("/auth")
    # another origin (localhost is not 127.0.0.1): followed, credentials not sent there
    server.routes["/elsewhere"] = redirect_to(f"http://localhost:{server.port}/auth")
    assert (await client.get(server.url("/elsewhere"))).content == b"-"
    # 303 after a POST: a GET without body; 307: the same method and body again
    assert (await client.post(server.url("/see-other"), b"x" * 10)).content == b"GET 0"
    assert (await client.post(server.url("/temporary"), b"x" * 10)).content == b"POST 10"
    with pytest.raises(ProtocolError, match="more than 10 redirects"):
        await client.get(server.url("/loop"))
    with pytest.raises(ProtocolError, match="unsupported scheme"):
        await client.get(server.url("/bad-scheme"))
    # follow_redirects: false returns the redirect as it is
    plain = pool.get(HTTPClientConfig(follow_redirects=False))
    response = await plain.get(server.url("/to-auth"))
    assert response.status_code == 302 and response.headers["location"] == server.url("/auth")
    await pool.aclose()


# -- limits ----------------------------------------------------------------------------------------


@FAST
async def test_limit_and_truncate(server: Server, fast: bool) -> None:
    pool = _pool(fast)
    client = pool.get(HTTPClientConfig())
    for path in ("/length", "/chunked", "/gzip"):
        headers = {"Accept-Encoding": "gzip"}
        assert (await client.get(server.url(path), headers=headers, limit=len(BODY))).content == BODY
        with pytest.raises(BodyLimitError) as info:
            await client.get(server.url(path), headers=headers, limit=1000)
        assert info.value.reason == "body_size_limit" and info.value.url == server.url(path)
        request = client.build_request("GET", server.url(path), headers=headers)
        assert (await client.send(request, limit=1000, truncate=True)).content == BODY[:1000]
    assert (await client.get(server.url("/length"))).content == BODY  # the pool is still sound
    await pool.aclose()


async def test_gzip_bomb_is_inflated_in_bounded_steps(server: Server) -> None:
    """64 MiB from a 64 KB body: no piece larger than INFLATE_STEP, and a limit stops it early."""
    transport = ClientPool().get(HTTPClientConfig()).transport
    request = httpx.Request("GET", server.url("/bomb"), headers={"Accept-Encoding": "gzip"})
    response = await transport.handle_async_request(request)
    sizes = [len(piece) async for piece in decoded_chunks(response)]
    await response.aclose()
    assert sum(sizes) == 64 << 20 and max(sizes) <= INFLATE_STEP and len(sizes) >= 64
    client = HTTPClient(transport)
    with pytest.raises(BodyLimitError):
        await client.get(server.url("/bomb"), headers={"Accept-Encoding": "gzip"}, limit=2 << 20)
    await transport.aclose()


@FAST
async def test_total_timeout(server: Server, fast: bool) -> None:
    client = _pool(fast).get(HTTPClientConfig())
    with pytest.raises(HTTPTimeout) as info:
        # each receive is quick enough for the step timeout (5 s); the whole exchange is not
        await client.get(server.url("/slow-body"), timeout=0.3)
    assert info.value.reason == "timeout"
    assert (await client.get(server.url("/small"))).content == b"hello"
    await client.aclose()


# -- streams ---------------------------------------------------------------------------------------


@FAST
async def test_stream_lines_arrive_as_sent(server: Server, fast: bool) -> None:
    lines = Lines()
    server.routes["/watch"] = lines
    client = _pool(fast).get(HTTPClientConfig())
    got: list[bytes] = []
    async with client.stream("GET", server.url("/watch")) as stream:
        assert stream.status_code == 200
        async for line in stream.aiter_lines(max_line=100):
            got.append(line)
            lines.next.set()  # the server sends the next line only now: nothing is buffered to the end
    assert got == [b'{"event": 0}', b'{"event": 1}', b'{"event": 2}', b"no-eol"]
    async with client.stream("GET", server.url("/length")) as stream:
        with pytest.raises(BodyLimitError):
            async for _ in stream.aiter_lines(max_line=100):  # BODY has a newline every 256 bytes
                pass
    async with client.stream("GET", server.url("/gzip"), headers={"Accept-Encoding": "gzip"}) as stream:
        assert await stream.read() == BODY
    await client.aclose()


# -- the same reasons from both transports ---------------------------------------------------------


def _free_port() -> int:
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    sock.close()
    return port


@FAST
async def test_reasons_are_the_same_for_both_transports(server: Server, tmp_path: Path, fast: bool) -> None:
    pki = PKI(tmp_path)
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ctx.load_cert_chain(str(pki.server_cert), str(pki.server_key))
    pool = _pool(fast)
    plain = pool.get(HTTPClientConfig())
    untrusted = pool.get(HTTPClientConfig(tls_config=TLSConfig()))  # the system CAs do not know test-ca
    trusted = pool.get(HTTPClientConfig(tls_config=TLSConfig(ca_file=str(pki.ca))))
    async with Server(ROUTES, ssl_context=ctx) as tls_server:
        cases: list[tuple[str, HTTPClient, str, float]] = [
            ("connect", plain, f"http://127.0.0.1:{_free_port()}/", 5.0),
            ("tls", untrusted, tls_server.url("/small"), 5.0),
            ("timeout", plain, server.url("/slow"), 0.3),
            ("http", plain, server.url("/short"), 5.0),
            ("http", plain, server.url("/bad-status"), 5.0),
            ("http", plain, server.url("/gzip-truncated"), 5.0),
        ]
        for reason, client, url, timeout in cases:
            with pytest.raises(HTTPError) as info:
                await client.get(url, timeout=timeout, headers={"Accept-Encoding": "gzip"})
            assert info.value.reason == reason, (url, info.value)
            assert _error_reason(info.value) == (reason, str(info.value))
            assert "\n" not in str(info.value)
        assert (await trusted.get(tls_server.url("/small"))).content == b"hello"
    await pool.aclose()


async def test_httpx_errors_from_a_mock_transport_are_mapped() -> None:
    def refuse(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("connection refused")

    def bad_deflate(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, headers={"Content-Encoding": "deflate"}, content=b"not deflate at all")

    with pytest.raises(HTTPError) as info:
        await HTTPClient(httpx.MockTransport(refuse)).get("http://127.0.0.1:1/")
    assert info.value.reason == "connect" and info.value.url == "http://127.0.0.1:1/"
    with pytest.raises(HTTPError) as info:
        await HTTPClient(httpx.MockTransport(bad_deflate)).get("http://127.0.0.1:1/")
    assert info.value.reason == "http"
