"""A faulty remote-write receiver: a real TCP proxy on loopback in front of a real VictoriaMetrics.

Used by tests/test_receiver_faults.py and benchmarks/bench_faults.py. The proxy speaks HTTP/1.1 to
the relay (keep-alive, Content-Length bodies) and forwards each request to VictoriaMetrics on a
connection of its own, injecting the fault currently set::

    with ReceiverProxy(vm.port) as proxy:          # the relay writes to proxy.write_url
        proxy.set_fault("reset_mid_request", share=0.5)
        ...
        proxy.set_fault("pass")

Faults (``share`` is the fraction of requests hit, drawn from a seeded random generator):

- ``pass``: forward and answer (the reference).
- ``down``: nothing listens on the port (connects are refused); open connections are reset.
- ``slow``: forward, wait ``delay`` seconds, then answer (a receiver that takes long to answer;
  past the sender's timeout the receiver has stored what the sender will send again).
- ``reset_mid_request``: read the head and half of the body, then reset the connection (TCP RST):
  nothing reaches VictoriaMetrics.
- ``close_no_answer``: read the whole request, then close without answering: nothing forwarded.
- ``close_after_response``: answer, then close the keep-alive connection (no ``Connection: close``
  header: the sender learns it only from the FIN).
- ``reset_after_forward``: forward (VictoriaMetrics stores it), then reset instead of answering:
  the sender cannot know that the write happened, so it sends it again. Remote write is
  at-least-once; these duplicates are unavoidable and are counted exactly (``duplicate_samples``).
- ``status``: answer ``status`` (e.g. 500, 429, 400) without forwarding.
- ``huge_answer``: forward (VictoriaMetrics stores it), then answer 200 with a Content-Length of
  2 GiB and stream zeros until the sender closes (at most 20 s or 2 GiB): a bounded reader takes
  what it needs and hangs up.

Every request forwarded and answered 2xx by VictoriaMetrics is decoded, and each sample's
(series, timestamp) is counted: ``stored_samples`` is what VictoriaMetrics acknowledged,
``distinct_samples`` how many different samples that was, ``duplicate_samples`` the difference.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import random
import resource
import signal
import socket
import struct
import subprocess
import sys
import threading
import urllib.request
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Self

import orjson

from relay.devtools.localenv import LOOPBACK, Service, free_ports, wait_http
from relay.remote.encode import decompress
from tests.remote_write_pb import WriteRequest


def peak_rss_mib(pid: int) -> float:
    """VmHWM of a process, in MiB (0 when it cannot be read)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return 0.0


FAULTS = ("pass", "down", "slow", "reset_mid_request", "close_no_answer", "close_after_response", "reset_after_forward",
          "status", "huge_answer")

Handler = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


class LoopbackServer(Service):
    """An asyncio TCP server on 127.0.0.1, run in a daemon thread; a context manager."""

    def __init__(self, handler: Handler, port: int = 0) -> None:
        self.handler = handler
        self.port = port or free_ports(1)[0]
        self.loop = asyncio.new_event_loop()
        self._started = threading.Event()
        self._stop: asyncio.Event | None = None
        self._thread = threading.Thread(target=self._run, daemon=True, name=f"loopback-{self.port}")
        self._error: BaseException | None = None
        self._server: asyncio.Server | None = None
        self._open: set[asyncio.StreamWriter] = set()

    def _run(self) -> None:
        async def main() -> None:
            self._stop = asyncio.Event()
            await self._listen()
            self._started.set()
            await self._stop.wait()
            await self._close()

        try:
            self.loop.run_until_complete(main())
        except BaseException as exc:  # pragma: no cover - reported by start()
            self._error = exc
            self._started.set()

    async def _listen(self) -> None:
        if self._server is None:
            self._server = await asyncio.start_server(self._serve, LOOPBACK, self.port)

    async def _close(self) -> None:
        """Stop listening (connects are refused) and reset every open connection."""
        if self._server is not None:
            self._server.close()
            self._server = None
        for writer in list(self._open):
            _reset(writer)

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._open.add(writer)
        try:
            await self.handler(reader, writer)
        finally:
            self._open.discard(writer)

    def listening(self, on: bool) -> None:
        """Listen again, or go down: nothing listens on the port (connection refused), open
        connections reset."""
        asyncio.run_coroutine_threadsafe(self._listen() if on else self._close(), self.loop).result(10)

    def start(self) -> Self:
        self._thread.start()
        if not self._started.wait(10) or self._error is not None:
            raise RuntimeError(f"loopback server on port {self.port} did not start: {self._error}")
        return self

    def stop(self) -> None:
        if self._stop is not None and self._thread.is_alive():
            self.loop.call_soon_threadsafe(self._stop.set)
            self._thread.join(30)



def _reset(writer: asyncio.StreamWriter) -> None:
    """Close with a TCP RST (SO_LINGER 0), not a FIN."""
    sock = writer.get_extra_info("socket")
    if sock is not None:
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    writer.transport.abort()


def _content_length(head: bytes) -> int:
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            return int(value.strip())
    return 0


async def _read_response(reader: asyncio.StreamReader) -> tuple[int, bytes]:
    """One HTTP/1.1 response from upstream: (status, its raw bytes). Content-Length or chunked."""
    head = await reader.readuntil(b"\r\n\r\n")
    status = int(head.split(b" ", 2)[1])
    lower = head.lower()
    if status in (204, 304) or 100 <= status < 200:
        return status, head
    if b"transfer-encoding: chunked" in lower:
        parts = [head]
        while True:
            size_line = await reader.readuntil(b"\r\n")
            parts.append(size_line)
            size = int(size_line.split(b";", 1)[0], 16)
            parts.append(await reader.readexactly(size + 2))
            if size == 0:
                return status, b"".join(parts)
    return status, head + await reader.readexactly(_content_length(head))


@dataclass
class ProxyStats:
    requests: int = 0
    forwarded: int = 0
    faults: Counter[str] = field(default_factory=Counter)
    stored_samples: int = 0  # in requests VictoriaMetrics answered 2xx
    unanswered_stored_samples: int = 0  # stored, but the sender never had the answer (reset, or gave up)
    upstream_errors: int = 0
    huge_answer_bytes: int = 0  # the most of a 2 GiB answer (huge_answer) sent before the sender hung up


class ReceiverProxy(Service):
    """A remote-write receiver with faults: forwards to VictoriaMetrics on ``upstream_port``."""

    def __init__(self, upstream_port: int, *, seed: int = 1, port: int = 0) -> None:
        self.upstream_port = upstream_port
        self.rng = random.Random(seed)
        self.fault = "pass"
        self.share = 1.0
        self.delay = 0.0
        self.status = 500
        self.stats = ProxyStats()
        self._series: dict[tuple[tuple[str, str], ...], int] = {}
        self._samples: Counter[tuple[int, int]] = Counter()
        self._lock = threading.Lock()
        self.server = LoopbackServer(self._handle, port)

    # -- control (from any thread) -------------------------------------------------------------

    @property
    def port(self) -> int:
        return self.server.port

    @property
    def write_url(self) -> str:
        return f"http://{LOOPBACK}:{self.port}/api/v1/write"

    def set_fault(self, fault: str, *, share: float = 1.0, delay: float = 0.0, status: int = 500) -> None:
        if fault not in FAULTS:
            raise ValueError(f"unknown fault {fault!r} (known: {', '.join(FAULTS)})")
        with self._lock:
            was_down = self.fault == "down"
            self.fault, self.share, self.delay, self.status = fault, share, delay, status
        if (fault == "down") != was_down:
            self.server.listening(fault != "down")

    @property
    def distinct_samples(self) -> int:
        with self._lock:
            return len(self._samples)

    @property
    def duplicate_samples(self) -> int:
        """Samples VictoriaMetrics stored more than once (copies beyond the first)."""
        with self._lock:
            return sum(self._samples.values()) - len(self._samples)

    def start(self) -> Self:
        self.server.start()
        return self

    def stop(self) -> None:
        self.server.stop()


    # -- serving -----------------------------------------------------------------------------

    def _pick(self) -> tuple[str, float, int]:
        with self._lock:
            self.stats.requests += 1
            fault = self.fault
            if fault != "pass" and self.rng.random() >= self.share:
                fault = "pass"
            if fault != "pass":
                self.stats.faults[fault] += 1
            return fault, self.delay, self.status

    def _record(self, body: bytes) -> int:
        request: Any = WriteRequest.FromString(decompress(body))
        n = 0
        with self._lock:
            for ts in request.timeseries:
                labels = tuple((lb.name, lb.value) for lb in ts.labels)
                sid = self._series.setdefault(labels, len(self._series))
                for s in ts.samples:
                    self._samples[(sid, s.timestamp)] += 1
                    n += 1
            self.stats.stored_samples += n
        return n

    async def _forward(self, head: bytes, body: bytes) -> tuple[int, bytes]:
        reader, writer = await asyncio.open_connection(LOOPBACK, self.upstream_port)
        try:
            # A connection of our own per request: close it after the answer.
            lines = [ln for ln in head[:-4].split(b"\r\n") if not ln.lower().startswith(b"connection:")]
            writer.write(b"\r\n".join([*lines, b"Connection: close"]) + b"\r\n\r\n" + body)
            await writer.drain()
            status, response = await _read_response(reader)
        finally:
            writer.close()
        # The answer goes back on a keep-alive connection: drop upstream's "Connection: close".
        resp_head, sep, resp_body = response.partition(b"\r\n\r\n")
        kept = [ln for ln in resp_head.split(b"\r\n") if not ln.lower().startswith(b"connection:")]
        return status, b"\r\n".join(kept) + sep + resp_body

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                try:
                    head = await reader.readuntil(b"\r\n\r\n")
                except (asyncio.IncompleteReadError, asyncio.LimitOverrunError):
                    return
                length = _content_length(head)
                fault, delay, status = self._pick()
                if fault == "reset_mid_request":
                    await reader.readexactly(length // 2)
                    _reset(writer)
                    return
                body = await reader.readexactly(length)
                if fault == "close_no_answer":
                    writer.close()
                    return
                if fault == "status":
                    text = b"simulated receiver error\n"
                    writer.write(b"HTTP/1.1 %d Error\r\nContent-Type: text/plain\r\nContent-Length: %d\r\n\r\n%s"
                                 % (status, len(text), text))
                    await writer.drain()
                    continue
                try:
                    up_status, response = await self._forward(head, body)
                except (OSError, asyncio.IncompleteReadError, ValueError):
                    with self._lock:
                        self.stats.upstream_errors += 1
                    _reset(writer)  # the receiver behind us failed: the sender sees a broken connection
                    return
                with self._lock:
                    self.stats.forwarded += 1
                n = self._record(body) if 200 <= up_status < 300 and head.startswith(b"POST") else 0
                if fault == "slow":
                    await asyncio.sleep(delay)
                    if reader.at_eof() or reader.exception() is not None:  # the sender gave up waiting
                        with self._lock:
                            self.stats.unanswered_stored_samples += n
                        return
                if fault == "reset_after_forward":
                    with self._lock:
                        self.stats.unanswered_stored_samples += n
                    _reset(writer)
                    return
                if fault == "huge_answer":
                    writer.write(b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: %d\r\n\r\n" % (2 << 30))
                    zeros, sent, until = b"0" * (1 << 20), 0, asyncio.get_running_loop().time() + 20
                    while sent < (2 << 30) and asyncio.get_running_loop().time() < until:
                        writer.write(zeros)
                        await writer.drain()
                        sent += len(zeros)
                    with self._lock:
                        self.stats.huge_answer_bytes = max(self.stats.huge_answer_bytes, sent)
                    return
                writer.write(response)
                await writer.drain()
                if fault == "close_after_response":
                    writer.close()
                    return
        except (ConnectionError, asyncio.IncompleteReadError):
            return
        finally:
            if not writer.is_closing():
                writer.close()


# -- the relay as a subprocess ------------------------------------------------------------------


def _limit_files(n: int) -> None:
    resource.setrlimit(resource.RLIMIT_NOFILE, (n, n))


class RelayProcess:
    """``relay run`` as a subprocess on loopback, its log in a file (a chatty relay never blocks on a
    full pipe), its summary read from ``--stats-file`` at exit."""

    def __init__(self, config: Path, folder: Path, *extra: str, queue: bool = True, nofile: int = 0) -> None:
        folder.mkdir(parents=True, exist_ok=True)
        self.folder = folder
        self.stats_file = folder / "stats.json"
        self.stats_file.unlink(missing_ok=True)
        self.log_path = folder / "relay.log"
        self.port = free_ports(1)[0]
        args = [sys.executable, "-m", "relay.cli", "run", "--config", str(config),
                "--listen", f"{LOOPBACK}:{self.port}", "--stats-file", str(self.stats_file), *extra]
        args += ["--queue-dir", str(folder.parent / "queue")] if queue else ["--queue.memory"]
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen(args, stdout=log, stderr=log, stdin=subprocess.DEVNULL,
                                         cwd=Path(__file__).resolve().parents[1],
                                         preexec_fn=functools.partial(_limit_files, nofile) if nofile else None)
        self.peak_rss = 0.0

    @property
    def url(self) -> str:
        return f"http://{LOOPBACK}:{self.port}"

    def wait_ready(self, timeout: float = 30.0) -> None:
        wait_http(self.url + "/-/ready", timeout, self.proc)

    def sample_rss(self) -> float:
        """Read the peak RSS so far (kept as ``peak_rss``; /proc is gone once it exits)."""
        with contextlib.suppress(OSError):
            self.peak_rss = max(self.peak_rss, peak_rss_mib(self.proc.pid))
        return self.peak_rss

    def metrics(self) -> str:
        with urllib.request.urlopen(self.url + "/metrics", timeout=10) as resp:
            text: str = resp.read().decode()
        return text

    def stop(self, timeout: float = 90.0) -> dict[str, Any]:
        """SIGTERM, wait, and return the relay's summary (its only remote_write endpoint's)."""
        self.sample_rss()
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(10)
            raise
        if self.proc.returncode != 0:
            raise RuntimeError(f"relay exited with {self.proc.returncode}: {self.log_tail()}")
        (rw,) = orjson.loads(self.stats_file.read_bytes())["remote_write"]
        return dict(rw)

    def kill(self) -> None:
        """SIGKILL (no summary)."""
        self.sample_rss()
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)

    def log_tail(self, n: int = 2000) -> str:
        return self.log_path.read_text(errors="replace")[-n:]

    def __enter__(self) -> RelayProcess:
        return self

    def __exit__(self, *exc: object) -> None:
        if self.proc.poll() is None:
            self.kill()


# -- a hostile HTTP server whose answers are set while it runs -----------------------------------


@dataclass
class Answer:
    """One path's answer: ``status``, ``body`` (sent with its length), or ``stream_bytes`` bytes of
    ``fill`` announced with a Content-Length of ``length`` (0: as many as are streamed)."""

    status: int = 200
    body: bytes = b""
    content_type: str = "application/json"
    stream_bytes: int = 0
    length: int = 0
    fill: bytes = b"0" * 65536


class Stage(Service):
    """A threaded HTTP/1.1 server on loopback answering each path as set (``answer(path, ...)``);
    ``require_auth`` (an Authorization header value) makes it answer 401 to any other. Counts
    requests per path and remembers the last Authorization header it saw."""

    def __init__(self) -> None:
        self.answers: dict[str, Answer] = {}
        self.require_auth: str | None = None
        self.requests: Counter[str] = Counter()
        self.last_auth: str | None = None
        self.streamed = 0
        self._server: Any = None

    @property
    def port(self) -> int:
        return int(self._server.server_address[1])

    def answer(self, path: str, **kwargs: Any) -> None:
        self.answers[path] = Answer(**kwargs)

    def start(self) -> Self:
        import http.server

        stage = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def _reply(self) -> None:
                path = self.path.split("?", 1)[0]
                length = int(self.headers.get("Content-Length") or 0)
                if length:
                    self.rfile.read(length)
                stage.requests[path] += 1
                stage.last_auth = self.headers.get("Authorization")
                a = stage.answers.get(path, Answer(404, b"not here\n", "text/plain"))
                if stage.require_auth is not None and stage.last_auth != stage.require_auth:
                    a = Answer(401, b"unauthorized\n", "text/plain")
                self.send_response(a.status)
                self.send_header("Content-Type", a.content_type)
                if a.stream_bytes:
                    self.send_header("Content-Length", str(a.length or a.stream_bytes))
                    self.send_header("Connection", "close")
                    self.end_headers()
                    sent = 0
                    try:
                        while sent < a.stream_bytes:
                            self.wfile.write(a.fill)
                            sent += len(a.fill)
                    except OSError:
                        pass
                    stage.streamed = max(stage.streamed, sent)
                    self.close_connection = True
                    return
                self.send_header("Content-Length", str(len(a.body)))
                self.end_headers()
                with contextlib.suppress(OSError):  # a client that stopped reading (a size bound)
                    self.wfile.write(a.body)

            do_GET = _reply
            do_POST = _reply

            def log_message(self, *args: object) -> None:
                pass

        self._server = http.server.ThreadingHTTPServer((LOOPBACK, 0), Handler)
        self._server.daemon_threads = True
        threading.Thread(target=self._server.serve_forever, daemon=True).start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
