"""``relay run --workers N``: N relay processes from one command and one config, behind one address.

One relay process uses one core (one event loop, one GIL). ``--workers N`` (``auto``: one per core
this process may run on) makes the command a supervisor that starts N workers, each an ordinary
``relay run`` with the same flags, told apart by the ``RELAY_WORKER`` environment variable:

- targets are shared by the existing cluster hash: worker ``i`` of replica ``k`` (with
  ``--cluster.members-count M --cluster.member-num k``) is member ``k*N + i`` of ``M*N``, so every
  target is scraped by exactly one worker (or ``replication-factor`` of them);
- each worker has its own remote-write queue directory, ``<--queue-dir>/worker-<i>``, and listens
  on its own loopback port, which only the supervisor uses;
- the supervisor serves the one ``--listen`` address (with ``--web.config.file``'s TLS and basic
  auth): ``/metrics`` merges the workers' self-metrics, each sample with a ``worker`` label (a
  worker that does not answer within 10 s is shown with its last body), and adds its own
  (``relay_worker_up``, ``relay_worker_ready``, ``relay_worker_restarts_total``); ``/api/v1/targets`` and
  ``/targets`` join the workers' active targets (dropped ones are the same in every worker:
  discovery is not sharded, so they come from one); ``/-/ready`` is ready when every worker
  answered its own ``/-/ready`` at the last check (once a second, in the background, so that a
  busy worker does not make the supervisor's answer slow; also ``relay_worker_ready``);
  ``/-/reload`` (with ``--web.enable-lifecycle``) and SIGHUP reach every worker; SIGTERM stops
  them all (each drains its queue as a single relay does); any other GET is answered by the first
  worker that is up (``/service-discovery``, status pages);
- a worker that exits is started again at once (then after 1, 2, 4 ... 30 s while it keeps
  failing within a minute of its start); its queue directory is replayed and its targets are
  scraped again within an interval.

Not with workers (one-line errors, exit 2): ``--sink-jsonl`` (N processes would interleave one
file) and an ``etcd_health`` section (a cluster's members may be scraped by different workers,
so no worker could judge it whole).
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
import re
import signal
import socket
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import anyio
import anyio.abc
import httpx
import orjson
from prometheus_client import CollectorRegistry, Counter, Gauge, generate_latest

from ._exceptions import ConfigError
from .config import ClusterConfig, Config
from .http import ui
from .http.server import _HTML_HEADERS, Response, WebServer
from .http.webconfig import load_web_config

__all__ = ["WORKER_ENV", "Supervisor", "WorkerIdentity", "add_worker_label", "merge_metrics", "merge_stats",
           "parse_workers", "worker_cluster", "worker_identity"]

log = logging.getLogger("relay.workers")

#: "<index>/<count>/<port>": set by the supervisor for each worker it starts.
WORKER_ENV = "RELAY_WORKER"
#: A worker restarted within this many seconds of its start counts as failing: back off.
_FAILING_WITHIN = 60.0
_MAX_BACKOFF = 30.0
_WORKER_TIMEOUT = 10.0


@dataclass(frozen=True)
class WorkerIdentity:
    index: int
    count: int
    port: int


def parse_workers(value: str) -> int:
    """``--workers``: a positive integer, or ``auto`` (the cores this process may run on)."""
    if value == "auto":
        try:
            return max(1, len(os.sched_getaffinity(0)))
        except AttributeError:  # not on Linux
            return max(1, os.cpu_count() or 1)
    if not value.isdigit() or int(value) < 1:
        raise ConfigError("--workers", f"{value[:32]!r} is not a positive integer or 'auto'")
    return int(value)


def worker_identity(environ: dict[str, str] | None = None) -> WorkerIdentity | None:
    """This process's place among the workers, or None when it is not a worker."""
    raw = (os.environ if environ is None else environ).get(WORKER_ENV)
    if not raw:
        return None
    m = re.fullmatch(r"(\d+)/(\d+)/(\d+)", raw)
    if m is None or not int(m[1]) < int(m[2]) or not 0 < int(m[3]) < 65536:
        raise ConfigError(WORKER_ENV, f"{raw[:64]!r} is not <index>/<count>/<port> with index < count")
    return WorkerIdentity(int(m[1]), int(m[2]), int(m[3]))


def worker_cluster(base: ClusterConfig | None, w: WorkerIdentity) -> ClusterConfig:
    """Worker ``i`` of replica ``k`` of ``M``: member ``k*N + i`` of ``M*N``."""
    b = base or ClusterConfig()
    return replace(b, members_count=b.members_count * w.count, member_num=b.member_num * w.count + w.index)


def worker_queue_dir(queue_dir: str | None, index: int) -> str | None:
    return None if queue_dir is None else str(Path(queue_dir) / f"worker-{index}")


def install_log_prefix(index: int) -> None:
    """Every log record of this worker names it (``relay.scrape[worker 1]``), whatever the format."""
    old = logging.getLogRecordFactory()
    suffix = f"[worker {index}]"

    def factory(*args: Any, **kwargs: Any) -> logging.LogRecord:
        record = old(*args, **kwargs)
        record.name = record.name + suffix
        return record

    logging.setLogRecordFactory(factory)


def check_worker_config(config: Config, workers: int) -> None:
    if workers > 1 and config.etcd_health.enabled:
        raise ConfigError("etcd_health", "is not supported with --workers above 1: a cluster's members may be "
                          "scraped by different workers (run one process, or shard with --cluster.* flags)")


# -- merging what the workers serve ----------------------------------------------------------------

_NAME = re.compile(rb"[a-zA-Z_:][a-zA-Z0-9_:]*")


def add_worker_label(line: bytes, worker: bytes) -> bytes:
    """A sample line of the text format with ``worker="<n>"`` as its first label."""
    m = _NAME.match(line)
    if m is None:
        return line
    end = m.end()
    if line[end : end + 1] == b"{":
        sep = b"" if line[end + 1 : end + 2] == b"}" else b","
        return line[: end + 1] + b'worker="' + worker + b'"' + sep + line[end + 1 :]
    return line[:end] + b'{worker="' + worker + b'"}' + line[end:]


def merge_metrics(texts: Sequence[tuple[str, bytes]]) -> bytes:
    """Text-format bodies of the workers (``(worker, body)``) as one body: each family once, with
    its HELP and TYPE, then every worker's samples of it, labelled."""
    families: dict[bytes, list[bytes]] = {}
    heads: dict[bytes, list[bytes]] = {}
    for worker, text in texts:
        w = worker.encode()
        family = b""
        for line in text.splitlines():
            if not line:
                continue
            if line.startswith(b"# "):
                parts = line.split(b" ", 3)
                if len(parts) >= 3 and parts[1] in (b"HELP", b"TYPE"):
                    family = parts[2]
                    families.setdefault(family, [])
                    head = heads.setdefault(family, [])
                    if len(head) < 2 and line not in head:
                        head.append(line)
                continue
            families.setdefault(family, []).append(add_worker_label(line, w))
    out: list[bytes] = []
    for family, samples in families.items():
        out += heads.get(family, [])
        out += samples
    return b"\n".join(out) + b"\n" if out else b""


def merge_stats(parts: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """The workers' ``--stats-file`` summaries as one: counts summed, remote_write by URL."""
    out: dict[str, Any] = {"targets": 0, "scrapes": 0, "remote_write": [], "jsonl_samples": 0, "workers": len(parts)}
    writers: dict[str, dict[str, Any]] = {}
    for part in parts:
        for key in ("targets", "scrapes", "jsonl_samples"):
            out[key] += int(part.get(key, 0))
        for w in part.get("remote_write", []):
            into = writers.setdefault(w["url"], {"url": w["url"], "dropped": {}})
            for key, value in w.items():
                if key == "dropped":
                    for reason, n in value.items():
                        into["dropped"][reason] = into["dropped"].get(reason, 0) + n
                elif isinstance(value, int | float) and key != "url":
                    into[key] = into.get(key, 0) + value
    out["remote_write"] = list(writers.values())
    return out


# -- the supervisor ----------------------------------------------------------------------------------


@dataclass
class _Worker:
    index: int
    port: int
    proc: anyio.abc.Process | None = None
    started: float = 0.0
    restarts: int = 0


def _free_loopback_ports(n: int) -> list[int]:
    socks = []
    try:
        for _ in range(n):
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            s.bind(("127.0.0.1", 0))
            socks.append(s)
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


class _FrontDoor(WebServer):
    """The supervisor's WebServer: its routes merge or forward the workers' answers."""

    def __init__(self, sup: Supervisor, host: str, port: int, **kwargs: Any) -> None:
        super().__init__(host, port, registry=sup.registry, targets=list, ready=lambda: True,
                         reload=sup.reload_all if sup.enable_lifecycle else None, **kwargs)
        self.sup = sup

    async def route(self, method: str, target: str, headers: dict[str, str]) -> Response:
        parts = urlsplit(target)
        path = parts.path
        sup = self.sup
        if path == "/metrics":
            got = await sup.fetch_all(target)
            for i, (status, body) in got.items():
                if status == 200:
                    sup.last_metrics[i] = body
            # A worker too busy to answer in time: its last body, so that no counter of the merged
            # output seems to go back (a worker that restarted starts its own from 0, as any process).
            merged = merge_metrics([(str(i), body) for i, body in sorted(sup.last_metrics.items())])
            own = generate_latest(sup.registry)
            return Response(200, own + merged, "text/plain; version=0.0.4; charset=utf-8")
        if path == "/-/ready":  # from the watcher's last round: a busy worker must not make this slow
            return Response(200, b"Ready.\n") if sup.all_ready else Response(503, b"Not ready.\n")
        if path in ("/targets", "/api/v1/targets") and method == "GET":
            query = parts.query.replace("format=html", "").strip("&")
            got = await sup.fetch_all("/api/v1/targets" + (f"?{query}" if query else ""))
            return self._targets(got, path, parts.query, headers)
        if path in ("/-/healthy", "/-/reload") or method != "GET":
            return await super().route(method, target, headers)
        status, body, kind = await sup.fetch_first(target)
        extra = _HTML_HEADERS if kind.startswith("text/html") else ()
        return Response(status, body, kind, extra)

    def _targets(self, got: dict[int, tuple[int, bytes]], path: str, query: str,
                 headers: dict[str, str]) -> Response:
        active: list[dict[str, Any]] = []
        dropped: list[Any] | None = None
        counts: dict[str, int] | None = None
        for _, (status, body) in sorted(got.items()):
            if status == 400:  # a bad parameter: every worker says the same
                return Response(400, body, "application/json")
            if status != 200:
                continue
            data = orjson.loads(body)["data"]
            active += data.get("activeTargets", [])
            if dropped is None:  # discovery is not sharded: every worker drops the same targets
                dropped = data.get("droppedTargets", [])
                counts = data.get("droppedTargetCounts")
        wants_html = "format=html" in query or ("text/html" in headers.get("accept", "") and path == "/targets")
        if wants_html:
            page = ui.targets_page(active, parse_qs(query))
            return Response(200, page, "text/html; charset=utf-8", _HTML_HEADERS)
        out: dict[str, Any] = {"activeTargets": active, "droppedTargets": dropped or []}
        if counts is not None:
            out["droppedTargetCounts"] = counts
        return Response(200, orjson.dumps({"status": "success", "data": out}), "application/json")


class Supervisor:
    """Starts, watches and stops the workers; serves their one front door."""

    def __init__(
        self,
        argv: Sequence[str],
        count: int,
        *,
        listen: tuple[str, int],
        enable_lifecycle: bool,
        web_config_file: str | None,
        web_max_connections: int,
        web_read_timeout: float,
        drain_timeout: float,
        duration: float,
        stats_file: str | None,
        python: str = sys.executable,
    ) -> None:
        self.argv = list(argv)
        self.listen = listen
        self.enable_lifecycle = enable_lifecycle
        self.web_config = load_web_config(web_config_file) if web_config_file else None
        self.web_max_connections = web_max_connections
        self.web_read_timeout = web_read_timeout
        self.drain_timeout = drain_timeout
        self.duration = duration
        self.stats_file = stats_file
        self.python = python
        self.workers = [_Worker(i, port) for i, port in enumerate(_free_loopback_ports(count))]
        self.registry = CollectorRegistry()
        self.up = Gauge("relay_worker_up", "1 while the worker process runs", ["worker"], registry=self.registry)
        self.restarts = Counter("relay_worker_restarts", "Times a worker that exited was started again",
                                ["worker"], registry=self.registry)
        Gauge("relay_workers", "Worker processes this relay runs (--workers)", registry=self.registry).set(count)
        self.ready_gauge = Gauge("relay_worker_ready", "1 when the worker answered /-/ready with 200 at the last check",
                                 ["worker"], registry=self.registry)
        self.ready: set[int] = set()
        self.last_metrics: dict[int, bytes] = {}  # each worker's last /metrics body
        self.stopping = anyio.Event()
        self.client = httpx.AsyncClient(timeout=_WORKER_TIMEOUT, trust_env=False)
        self.bound_port = 0
        self.started: Callable[[int], None] | None = None  # tests: called with the bound port

    def command(self) -> list[str]:
        return [self.python, "-m", "relay.cli", *self.argv]

    def env(self, w: _Worker) -> dict[str, str]:
        env = dict(os.environ)
        env[WORKER_ENV] = f"{w.index}/{len(self.workers)}/{w.port}"
        return env

    async def run(self) -> dict[str, Any]:
        host, port = self.listen
        front = _FrontDoor(self, host, port, web_config=self.web_config, max_connections=self.web_max_connections,
                           head_timeout=self.web_read_timeout)
        try:
            async with anyio.create_task_group() as tg:
                self.bound_port = await tg.start(front.run)
                for w in self.workers:
                    tg.start_soon(self._keep, w)
                tg.start_soon(self._signals, tg.cancel_scope)
                tg.start_soon(self._watch_ready)
                log.info("relay supervisor: %d workers (loopback ports %s), listening on %s:%d",
                         len(self.workers), ",".join(str(w.port) for w in self.workers), host, self.bound_port)
                if self.started is not None:
                    self.started(self.bound_port)
                with anyio.move_on_after(self.duration if self.duration > 0 else math.inf):
                    await self.stopping.wait()
                self.stopping.set()
                await self._stop_all()
                tg.cancel_scope.cancel()
        finally:
            await self.client.aclose()
        return self._stats()

    @property
    def all_ready(self) -> bool:
        return len(self.ready) == len(self.workers)

    async def _watch_ready(self) -> None:
        """Every second, which workers answer /-/ready with 200 (within the worker timeout)."""
        while not self.stopping.is_set():
            got = await self.fetch_all("/-/ready")
            self.ready = {i for i, (status, _) in got.items() if status == 200}
            for w in self.workers:
                self.ready_gauge.labels(str(w.index)).set(1 if w.index in self.ready else 0)
            with anyio.move_on_after(1.0):
                await self.stopping.wait()

    async def _keep(self, w: _Worker) -> None:
        backoff = 0.0
        while not self.stopping.is_set():
            w.started = time.monotonic()
            w.proc = await anyio.open_process(self.command(), env=self.env(w), stdin=None, stdout=None, stderr=None)
            self.up.labels(str(w.index)).set(1)
            rc = await w.proc.wait()
            self.up.labels(str(w.index)).set(0)
            self.ready.discard(w.index)
            if self.stopping.is_set():
                return
            w.restarts += 1
            self.restarts.labels(str(w.index)).inc()
            failing = time.monotonic() - w.started < _FAILING_WITHIN
            backoff = min(max(backoff * 2, 1.0), _MAX_BACKOFF) if failing and w.restarts > 1 else 0.0
            log.error("worker %d (pid %d) exited with status %s; starting it again%s", w.index, w.proc.pid, rc,
                      f" in {backoff:.0f}s" if backoff else "")
            with anyio.move_on_after(backoff):
                await self.stopping.wait()

    async def _signals(self, scope: anyio.CancelScope) -> None:
        with anyio.open_signal_receiver(signal.SIGTERM, signal.SIGINT, signal.SIGHUP) as signals:
            async for signum in signals:
                if signum == signal.SIGHUP:
                    self._signal_all(signal.SIGHUP)
                    log.info("SIGHUP passed to %d workers", len(self.workers))
                    continue
                log.info("stopping %d workers", len(self.workers))
                self.stopping.set()

    def _signal_all(self, signum: signal.Signals) -> None:
        for w in self.workers:
            if w.proc is not None and w.proc.returncode is None:
                with contextlib.suppress(ProcessLookupError):
                    w.proc.send_signal(signum)

    async def _stop_all(self) -> None:
        self._signal_all(signal.SIGTERM)
        with anyio.CancelScope(shield=True), anyio.move_on_after(self.drain_timeout + 15):
            for w in self.workers:
                if w.proc is not None:
                    await w.proc.wait()
        for w in self.workers:
            if w.proc is not None and w.proc.returncode is None:
                log.error("worker %d did not stop in time: killed", w.index)
                w.proc.kill()
                with anyio.CancelScope(shield=True):
                    await w.proc.wait()

    def _stats(self) -> dict[str, Any]:
        parts = []
        if self.stats_file:
            for w in self.workers:
                path = Path(f"{self.stats_file}.worker-{w.index}")
                try:
                    parts.append(orjson.loads(path.read_bytes()))
                except (OSError, orjson.JSONDecodeError) as exc:
                    log.error("worker %d left no stats in %s: %s", w.index, path, exc)
        stats = merge_stats(parts)
        stats["restarts"] = {str(w.index): w.restarts for w in self.workers}
        if self.stats_file:
            Path(self.stats_file).write_bytes(orjson.dumps(stats))
        return stats

    # -- talking to the workers --

    async def _get(self, w: _Worker, path: str, method: str = "GET") -> tuple[int, bytes, str]:
        try:
            resp = await self.client.request(method, f"http://127.0.0.1:{w.port}{path}")
        except httpx.HTTPError as exc:
            return 502, f"worker {w.index}: {type(exc).__name__}: {exc}\n".encode(), "text/plain"
        return resp.status_code, resp.content, resp.headers.get("content-type", "text/plain")

    async def fetch_all(self, path: str, method: str = "GET") -> dict[int, tuple[int, bytes]]:
        """Every worker's answer to ``path`` that came (a worker down is left out), by index."""
        out: dict[int, tuple[int, bytes]] = {}

        async def one(w: _Worker) -> None:
            status, body, _ = await self._get(w, path, method)
            if status != 502:
                out[w.index] = (status, body)

        async with anyio.create_task_group() as tg:
            for w in self.workers:
                tg.start_soon(one, w)
        return out

    async def fetch_first(self, path: str) -> tuple[int, bytes, str]:
        last = (503, b"no worker is up\n", "text/plain")
        for w in self.workers:
            got = await self._get(w, path)
            if got[0] != 502:
                return got
            last = got
        return last

    async def reload_all(self) -> str | None:
        got = await self.fetch_all("/-/reload", "POST")
        errors = [f"worker {i}: {body.decode('utf-8', 'replace').strip()}"
                  for i, (status, body) in sorted(got.items()) if status != 200]
        missing = [str(w.index) for w in self.workers if w.index not in got]
        if missing:
            errors.append(f"workers {','.join(missing)} did not answer")
        return "; ".join(errors) if errors else None
