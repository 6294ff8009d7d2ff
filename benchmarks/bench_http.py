"""CPU per GET of one etcd /metrics body: httpx's default transport vs FastTransport and the relay's HTTPClient vs a bare floor.

A minimal keep-alive server in a separate process serves the etcd 3.5.1 body (162 KB) plain, gzipped,
chunked in 2 KiB chunks (as Go's net/http sends a streamed body), and plain over TLS 1.3 (a
self-signed certificate made for the run). The client process measures its own CPU time
(``time.process_time``) per GET, as the median of several rounds in which every case runs once, so
that the noise of a shared machine hits all cases alike. "relay scrape path" is what a scrape loop
does (`HTTPClient.send` of a request built once, with a total timeout and a body limit, over
FastTransport); "HTTPClient, httpx transport" the same with ``--http-transport httpx``. The "bare
anyio stream floor" is the least a Python client can do: send a canned request, find the head,
read Content-Length bytes::

    python benchmarks/bench_http.py [--requests 200] [--rounds 7] [--baseline DIR]

``--baseline DIR`` (a checkout of an earlier commit, e.g. ``git worktree add /tmp/base main``) adds
"baseline scrape path": that checkout's scrape path (its ``HTTPClient.send``, or for checkouts from
before HTTPClient its ``fetch_direct`` under ``fail_after``), measured in the same rounds, so the two
are compared in one process, round by round.
"""

from __future__ import annotations

import argparse
import asyncio
import gzip
import importlib
import multiprocessing
import shutil
import ssl
import statistics
import sys
import tempfile
import time
import zlib
from collections.abc import Awaitable, Callable
from importlib.metadata import version
from pathlib import Path
from typing import Any

import anyio
import anyio.abc
import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from relay.http._wire import FastTransport
from relay.http.client import HTTPClient

ETCD_BODY = Path(__file__).resolve().parents[1] / "relay" / "devtools" / "data" / "etcd-3.5.1-member-3381.prom"
SCRAPE_HEADERS = {"Accept": "text/plain;version=0.0.4", "Accept-Encoding": "gzip",
                  "X-Prometheus-Scrape-Timeout-Seconds": "10"}
#: an earlier checkout's relay package, imported as relay_baseline (--baseline)
BASELINE: Any = None


def load_baseline(checkout: Path, into: Path) -> Any:
    """An earlier checkout's ``relay`` package under the name ``relay_baseline`` (its http modules
    import each other relatively, so they stay together)."""
    shutil.copytree(checkout / "relay", into / "relay_baseline", ignore=shutil.ignore_patterns("*.so", "*.c"))
    sys.path.insert(0, str(into))
    return importlib.import_module("relay_baseline.http._wire"), importlib.import_module("relay_baseline.http.client")


# -- server (separate process) -------------------------------------------------------------------


def _responses(body: bytes) -> dict[bytes, bytes]:
    gz = gzip.compress(body, 6)
    chunks = b"".join(
        b"%x\r\n%s\r\n" % (len(body[i : i + 2048]), body[i : i + 2048]) for i in range(0, len(body), 2048)
    )
    head = b"HTTP/1.1 200 OK\r\nContent-Type: text/plain; version=0.0.4; charset=utf-8\r\nDate: Wed, 25 Nov 2026 00:00:00 GMT\r\n"
    return {
        b"/metrics": head + b"Content-Length: %d\r\n\r\n" % len(body) + body,
        b"/metrics.gz": head + b"Content-Encoding: gzip\r\nContent-Length: %d\r\n\r\n" % len(gz) + gz,
        b"/metrics.chunked": head + b"Transfer-Encoding: chunked\r\n\r\n" + chunks + b"0\r\n\r\n",
    }


class _Protocol(asyncio.Protocol):
    def __init__(self, responses: dict[bytes, bytes]) -> None:
        self.responses = responses
        self.buf = b""
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        assert self.transport is not None
        self.buf += data
        while True:
            end = self.buf.find(b"\r\n\r\n")
            if end < 0:
                return
            head, self.buf = self.buf[:end], self.buf[end + 4 :]
            path = head.split(b" ", 2)[1]
            self.transport.write(
                self.responses.get(path, b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n")
            )


def _serve(port_queue: multiprocessing.Queue[tuple[int, int]], body_path: str, cert: str, key: str) -> None:
    responses = _responses(Path(body_path).read_bytes())
    tls = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    tls.load_cert_chain(cert, key)

    async def main() -> None:
        loop = asyncio.get_running_loop()
        server = await loop.create_server(lambda: _Protocol(responses), "127.0.0.1", 0)
        tls_server = await loop.create_server(lambda: _Protocol(responses), "127.0.0.1", 0, ssl=tls)
        port_queue.put((server.sockets[0].getsockname()[1], tls_server.sockets[0].getsockname()[1]))
        await asyncio.sleep(3600)

    asyncio.run(main())


# -- clients -------------------------------------------------------------------------------------


class BareFloor:
    """The least a Python client can do: one anyio stream, send, find the head, read Content-Length bytes."""

    def __init__(self, port: int, path: str, gunzip: bool = False, tls: ssl.SSLContext | None = None) -> None:
        self.port = port
        self.request = f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nAccept-Encoding: gzip\r\n\r\n".encode()
        self.gunzip = gunzip
        self.tls = tls
        self.stream: anyio.abc.ByteStream | None = None

    async def get(self) -> bytes:
        if self.stream is None:
            if self.tls is not None:
                self.stream = await anyio.connect_tcp("127.0.0.1", self.port, tls=True, ssl_context=self.tls)
            else:
                self.stream = await anyio.connect_tcp("127.0.0.1", self.port)
        stream = self.stream
        await stream.send(self.request)
        buf = await stream.receive(262_144)
        while (end := buf.find(b"\r\n\r\n")) < 0:
            buf += await stream.receive(262_144)
        start = buf.find(b"Content-Length: ", 0, end) + 16
        length = int(buf[start : buf.find(b"\r\n", start)])
        pieces = [buf[end + 4 :]]
        got = len(pieces[0])
        while got < length:
            data = await stream.receive(262_144)
            pieces.append(data)
            got += len(data)
        body = b"".join(pieces)
        return zlib.decompress(body, 47) if self.gunzip else body

    async def aclose(self) -> None:
        if self.stream is not None:
            await self.stream.aclose()


Case = tuple[str, Callable[[], Awaitable[bytes]]]


async def build_cases(
    port: int, tls_port: int, tls: ssl.SSLContext, stack: list[Callable[[], Awaitable[None]]]
) -> list[tuple[str, list[Case]]]:
    groups: list[tuple[str, list[Case]]] = []
    for label, path in [
        ("plain, Content-Length", "/metrics"),
        ("gzip, decoded by the client", "/metrics.gz"),
        ("chunked (2 KiB chunks, like Go net/http)", "/metrics.chunked"),
    ]:
        groups.append((label, _cases(port, path, None, stack)))
    groups.append(("TLS 1.3, plain, Content-Length", _cases(tls_port, "/metrics", tls, stack)))
    return groups


def _cases(
    port: int, path: str, tls: ssl.SSLContext | None, stack: list[Callable[[], Awaitable[None]]]
) -> list[Case]:
    base = f"{'https' if tls else 'http'}://127.0.0.1:{port}"
    default = httpx.AsyncClient(timeout=10.0, verify=tls if tls else True)
    fast = httpx.AsyncClient(transport=FastTransport(ssl_context=tls), timeout=10.0)
    fast_transport = FastTransport(ssl_context=tls)
    stack += [default.aclose, fast.aclose, fast_transport.aclose]

    def via_get(client: httpx.AsyncClient, path: str) -> Callable[[], Awaitable[bytes]]:
        async def run() -> bytes:
            return (await client.get(base + path)).content

        return run

    def via_send(client: httpx.AsyncClient, path: str) -> Callable[[], Awaitable[bytes]]:
        request = client.build_request("GET", base + path)

        async def run() -> bytes:
            return (await client.send(request)).content

        return run

    def via_transport(transport: FastTransport, path: str) -> Callable[[], Awaitable[bytes]]:
        request = fast.build_request("GET", base + path)

        async def run() -> bytes:
            response = await transport.handle_async_request(request)
            stream: Any = response.stream
            return b"".join([piece async for piece in stream])

        return run

    def via_relay(client: Any, path: str) -> Callable[[], Awaitable[bytes]]:
        request = client.build_request("GET", base + path, headers=SCRAPE_HEADERS, timeout=10.0)

        async def run() -> bytes:
            return (await client.send(request, timeout=10.0, limit=50_000_000)).content

        return run

    def via_relay_get(client: HTTPClient, path: str) -> Callable[[], Awaitable[bytes]]:
        async def run() -> bytes:
            return (await client.get(base + path, headers={"Accept-Encoding": "gzip"}, limit=50_000_000)).content

        return run

    relay_fast = HTTPClient(FastTransport(ssl_context=tls))
    relay_httpx = HTTPClient(httpx.AsyncHTTPTransport(verify=tls if tls else True))
    stack += [relay_fast.aclose, relay_httpx.aclose]
    baseline: list[Case] = []
    if BASELINE is not None:
        wire, client_module = BASELINE
        if hasattr(client_module, "HTTPClient"):
            old_client = client_module.HTTPClient(wire.FastTransport(ssl_context=tls))
            stack.append(old_client.aclose)
            baseline.append(("baseline scrape path (prebuilt request)", via_relay(old_client, path)))
        else:  # before HTTPClient: the scrape loop sent its request with fetch_direct
            old_transport = wire.FastTransport(ssl_context=tls)
            stack.append(old_transport.aclose)
            old_request = httpx.Request(
                "GET", base + path, headers={"User-Agent": "etcd-metrics-relay/0.1", **SCRAPE_HEADERS},
                extensions={"timeout": dict.fromkeys(("connect", "read", "write", "pool"), 10.0)},
            )

            async def run_old() -> bytes:
                with anyio.fail_after(10.0):
                    return bytes((await wire.fetch_direct(old_transport, old_request, body_limit=50_000_000))[1])

            baseline.append(("baseline scrape path (prebuilt request)", run_old))

    floor = BareFloor(port, "/metrics" if path.endswith("chunked") else path, path.endswith(".gz"), tls)
    stack.append(floor.aclose)
    return [
        ("httpx default: client.get", via_get(default, path)),
        ("HTTPClient, httpx transport (prebuilt)", via_relay(relay_httpx, path)),
        ("FastTransport: client.get", via_get(fast, path)),
        ("FastTransport: client.send(prebuilt)", via_send(fast, path)),
        ("HTTPClient.get(url)", via_relay_get(relay_fast, path)),
        ("relay scrape path (prebuilt request)", via_relay(relay_fast, path)),
        *baseline,
        ("FastTransport alone (no client, no decoding)", via_transport(fast_transport, path)),
        ("bare anyio stream floor" + (" (Content-Length)" if path.endswith("chunked") else ""), floor.get),
    ]


async def measure(
    port: int, tls_port: int, tls: ssl.SSLContext, requests: int, rounds: int, body_path: str
) -> None:
    stack: list[Callable[[], Awaitable[None]]] = []
    try:
        groups = await build_cases(port, tls_port, tls, stack)
        expected = Path(body_path).read_bytes()
        for _, cases in groups:
            for name, run in cases:
                for _ in range(20):  # warm up: connections, imports, caches
                    body = await run()
                if body[:2] == b"\x1f\x8b":  # the transport alone does not decode
                    body = gzip.decompress(body)
                assert body == expected, name
        print(
            f"CPU time of the client process per GET, median of {rounds} rounds x {requests} GETs; "
            f"body {len(expected):,} bytes (etcd 3.5.1), Python {sys.version.split()[0]}, "
            f"httpx {httpx.__version__}, anyio {version('anyio')}"
        )
        for label, cases in groups:
            samples: dict[str, list[float]] = {name: [] for name, _ in cases}
            for _ in range(rounds):
                for name, run in cases:
                    t0 = time.process_time()
                    for _ in range(requests):
                        await run()
                    samples[name].append((time.process_time() - t0) / requests * 1000)
            medians = {name: statistics.median(v) for name, v in samples.items()}
            reference = medians[cases[0][0]]
            floor = medians[cases[-1][0]]
            print()
            print(f"{label}")
            print(f"  {'case':<46} {'ms CPU/GET':>10} {'vs default':>10} {'vs floor':>9}")
            for name, _ in cases:
                m = medians[name]
                print(f"  {name:<46} {m:>10.3f} {m / reference:>9.2f}x {m / floor:>8.2f}x")
    finally:
        for close in reversed(stack):
            await close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0] if __doc__ else None)
    parser.add_argument("--requests", type=int, default=200, help="GETs per case per round")
    parser.add_argument("--rounds", type=int, default=7, help="rounds (the median is shown)")
    parser.add_argument("--body", default=str(ETCD_BODY), help="the body to serve")
    parser.add_argument("--baseline", type=Path, help="a checkout of an earlier commit: its scrape path in the same rounds")
    args = parser.parse_args()
    global BASELINE
    with tempfile.TemporaryDirectory(prefix="bench-http-") as tmp:
        if args.baseline is not None:
            if not (args.baseline / "relay" / "http").is_dir():
                parser.error(f"--baseline {args.baseline}: no relay/http package there")
            BASELINE = load_baseline(args.baseline, Path(tmp))
        cert, key = _self_signed(Path(tmp))
        tls = ssl.create_default_context(cafile=cert)
        tls.set_alpn_protocols(["http/1.1"])
        ctx = multiprocessing.get_context("spawn")
        port_queue: multiprocessing.Queue[tuple[int, int]] = ctx.Queue()
        server = ctx.Process(target=_serve, args=(port_queue, args.body, cert, key), daemon=True)
        server.start()
        try:
            port, tls_port = port_queue.get(timeout=30)
            anyio.run(measure, port, tls_port, tls, args.requests, args.rounds, args.body)
        finally:
            server.terminate()
            server.join(10)


def _self_signed(directory: Path) -> tuple[str, str]:
    """A certificate for 127.0.0.1 (and its key), signed by itself."""
    import datetime
    import ipaddress

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "bench")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(days=1))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), False
        )
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = directory / "cert.pem", directory / "key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
    )
    return str(cert_path), str(key_path)


if __name__ == "__main__":
    main()
