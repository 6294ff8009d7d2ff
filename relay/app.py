"""The running relay: config, scrape manager, remote writers, web endpoints and signals together."""

from __future__ import annotations

import asyncio
import hashlib
import logging
import math
import os
import platform
import signal
import socket
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import IO, Any

import anyio
import orjson

from . import __version__
from ._exceptions import ConfigError
from .batch import Batch
from .buildinfo import build_info, c_extensions, revision
from .config import ClusterConfig, Config, HTTPClientConfig, load_config, validate_cluster
from .health import HealthEngine, apply_overrides, default_rules
from .health.fleet import alerts_response, fleet_response
from .health.notify import AlertmanagerSender
from .http import ui
from .http.client import ClientPool
from .http.pages import PAGE_SIZE, JobDiscovery, service_discovery_html
from .http.server import HTML_HEADERS, Response, WebServer, listens_everywhere
from .http.status import api_ok, build_info_json, redact_config, rfc3339, targets_metadata
from .http.webconfig import load_web_config
from .metrics import SelfMetrics, watch_loop_lag
from .remote.writer import RemoteWriter
from .scrape import ScrapeManager

__all__ = ["JsonLinesSink", "Relay", "RelayOptions", "check_config"]

log = logging.getLogger("relay")


def _json_value(v: float) -> float | str:
    if math.isfinite(v):
        return v
    return "NaN" if math.isnan(v) else ("+Inf" if v > 0 else "-Inf")


class JsonLinesSink:
    """Writes every sample as one JSON line: the relay's local receiver when no TSDB is at hand."""

    def __init__(self, path: str) -> None:
        self.path = path
        self._file: IO[bytes] = sys.stdout.buffer if path == "-" else open(path, "ab")  # noqa: SIM115
        self.samples = 0

    def __call__(self, batch: Batch) -> None:
        lines = []
        for name, labels, value, ts in batch.samples():
            lines.append(
                orjson.dumps({"name": name, "labels": dict(labels), "value": _json_value(value), "timestamp_ms": ts})
            )
        if lines:
            self._file.write(b"\n".join(lines) + b"\n")
            self._file.flush()
        self.samples += len(lines)

    def close(self) -> None:
        if self._file is not sys.stdout.buffer:
            self._file.close()


@dataclass(frozen=True)
class RelayOptions:
    config_file: str
    listen: tuple[str, int] | None = ("127.0.0.1", 9091)
    enable_reload: bool = False  # POST /-/reload (--web.enable-lifecycle); SIGHUP reloads regardless
    web_config_file: str | None = None  # --web.config.file: TLS and basic auth for the endpoints
    jsonl_sink: str | None = None
    duration: float = 0.0  # 0 = until a signal
    drain_timeout: float = 30.0
    cluster: ClusterConfig | None = None  # from flags; overrides the config file's cluster section
    fast_http: bool = True
    stats_file: str | None = None
    queue_dir: str | None = None  # persistent remote-write queue; None = in memory only (the CLI's default is on disk)
    queue_max_bytes: int = 1 << 30
    web_max_connections: int = 512
    web_read_timeout: float = 10.0
    flags: tuple[tuple[str, str], ...] = ()  # every flag and its value, for /api/v1/status/flags
    auto_reload_interval: float = 0.0  # --config.auto-reload-interval: 0 = off


def check_config(path: str, cluster: ClusterConfig | None = None) -> Config:
    """Load and fully validate a config (including that certificate files load)."""
    config = load_config(path)
    if cluster is not None:
        validate_cluster(cluster, "--cluster")
        config = replace(config, cluster=cluster)
    pool = ClientPool(fast=False)
    seen: set[HTTPClientConfig] = set()  # each distinct setting once: a TLS context costs ~25 ms
    errors: list[ConfigError] = []

    def validate(http: HTTPClientConfig, where: str) -> None:
        if http not in seen:
            seen.add(http)
            try:
                pool.validate(http, where)
            except ConfigError as exc:  # every one is reported, each at its line of the file
                errors.append(exc.located(config.source, config.line_of(exc.where)))

    for i, sc in enumerate(config.scrape_configs):
        validate(sc.http, f"scrape_configs[{i}]")
        for j, e in enumerate(sc.etcd_sd_configs):
            validate(e.http, f"scrape_configs[{i}].etcd_sd_configs[{j}]")
        for j, h in enumerate(sc.http_sd_configs):
            validate(h.http, f"scrape_configs[{i}].http_sd_configs[{j}]")
        for j, k in enumerate(sc.kubernetes_sd_configs):
            validate(k.http, f"scrape_configs[{i}].kubernetes_sd_configs[{j}]")
    for i, rw in enumerate(config.remote_write):
        validate(rw.http, f"remote_write[{i}]")
    if errors:
        error = ConfigError.group(errors)
        error.warnings = config.warnings
        raise error
    return config


def log_config_warnings(config: Config) -> None:
    """One warning line per key of the config accepted without effect."""
    for text in config.warnings:
        log.warning("%s", text)


def probe_queue_dir(path: str) -> None:
    """The queue folder exists (made if need be) and takes a file; a ConfigError naming it if not."""
    folder = Path(path)
    probe = folder / f".probe-{os.getpid()}"
    try:
        folder.mkdir(parents=True, exist_ok=True)
        fd = os.open(probe, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        try:
            os.write(fd, b"ok")
            os.fsync(fd)
        finally:
            os.close(fd)
        probe.unlink()
    except OSError as exc:
        raise ConfigError("--queue-dir", f"{path}: cannot write there ({exc.strerror or exc}); "
                          "use another --queue-dir, or --queue.memory") from None


class Relay:
    """One relay process's worth of state; ``run`` until stopped."""

    def __init__(self, options: RelayOptions, config: Config) -> None:
        self.options = options
        self.web_config = load_web_config(options.web_config_file) if options.web_config_file else None
        self.config = config
        self.metrics = SelfMetrics()
        self.clients = ClientPool(fast=options.fast_http)
        self.sinks: list[Callable[[Batch], None]] = []
        self.writers: dict[Any, RemoteWriter] = {}
        self.jsonl = JsonLinesSink(options.jsonl_sink) if options.jsonl_sink else None
        self.scraper = ScrapeManager(self.clients, self.sinks, self.metrics)
        self.health: HealthEngine | None = None
        self.alertmanagers: AlertmanagerSender | None = None
        self.web: WebServer | None = None
        self._tg: anyio.abc.TaskGroup | None = None
        self._ready = False
        self._stop = anyio.Event()
        self._reload_lock = anyio.Lock()
        self.started = time.time()
        self.last_config_time = self.started
        self.reload_success = True
        self.config_text, self.config_digest = self._read_config_files(config)
        self._tried_digest = self.config_digest  # the auto-reload tries each content once
        self.metrics.config_loaded(True, self.started)

    # -- sinks and writers -------------------------------------------------------------------

    def _sync_writers(self, config: Config) -> list[RemoteWriter]:
        assert self._tg is not None
        wanted = {rw: rw for rw in config.remote_write}
        retired = [w for key, w in self.writers.items() if key not in wanted]
        self.writers = {key: w for key, w in self.writers.items() if key in wanted}
        for key, rw in wanted.items():
            if key not in self.writers:
                w = self.writers[key] = RemoteWriter(
                    rw,
                    self.clients,
                    self.metrics,
                    queue_dir=self.options.queue_dir,
                    max_queue_bytes=self.options.queue_max_bytes,
                )
                self._tg.start_soon(w.run)
        for w in self.writers.values():
            w.metadata_source = self.scraper.metadata
        self.sinks[:] = [w.push for w in self.writers.values()]
        if self.jsonl is not None:
            self.sinks.append(self.jsonl)
        self._sync_health(config)
        if self.health is not None:
            self.sinks.append(self.health.ingest)
        return retired

    def _sync_health(self, config: Config) -> None:
        """etcd_health: one engine for the process; a reload changes its rules, grouping and interval."""
        h = config.etcd_health
        if not h.enabled:
            self.health = None
            return
        rules = apply_overrides(default_rules(), h.overrides)
        drop = {k for k, _ in config.global_config.external_labels}
        if config.cluster.members_count > 1 and config.cluster.replication_factor > 1:
            drop.add(config.cluster.replica_label)
        if self.health is None:
            self.health = HealthEngine(rules, group_by=h.group_by, drop_labels=drop, interval=h.evaluation_interval)
            assert self._tg is not None
            self._tg.start_soon(self._run_health)
        else:
            self.health.configure(rules)
            self.health.group_by, self.health.drop_labels = h.group_by, frozenset(drop)
            self.health.interval = h.evaluation_interval
        self.health.external_labels = config.global_config.external_labels
        self.alertmanagers = AlertmanagerSender(h.alertmanagers, self.clients) if h.alertmanagers else None

    async def _run_health(self) -> None:
        while self.health is not None:
            engine = self.health
            with anyio.move_on_after(engine.interval * 2):
                await anyio.sleep(engine.interval - time.time() % engine.interval)
                try:
                    engine.evaluate()
                    series = engine.alert_series()  # ALERTS, ALERTS_FOR_STATE: to remote write
                    if series is not None:
                        for w in self.writers.values():
                            w.push(series)
                    if self.alertmanagers is not None and self._tg is not None:
                        self.alertmanagers.start(self._tg, engine.notifications(engine.last_eval))
                except Exception:
                    log.exception("etcd health evaluation failed")

    def _health_page(self, kind: str) -> Response:
        return (alerts_response if kind == "alerts" else fleet_response)(self.health)

    async def reload(self) -> str | None:
        """Re-read the config file; on any error keep the running config and return the error.

        The file is read, parsed and checked in a worker thread (the loop goes on scraping), then
        applied on the loop in slices (ScrapeManager.apply_async). One reload at a time."""
        async with self._reload_lock:
            try:
                config, text = await anyio.to_thread.run_sync(self._load_for_reload)
            except ConfigError as exc:
                self._reload_failed()
                log.error("config reload failed, keeping the running config: %s", exc)
                return str(exc)
            except Exception as exc:  # whatever the file makes the parser raise (RecursionError, ...)
                self._reload_failed()
                log.error("config reload failed, keeping the running config: %s: %s", exc.__class__.__name__, exc)
                return f"{self.options.config_file}: {exc.__class__.__name__}: {exc}"
            error = await self._apply(config)
            if error is None:
                self.config_text = text
                self.config_digest = self._tried_digest = self._read_config_files(config)[1]
                self.reload_success = True
                self.last_config_time = time.time()
                self.metrics.config_loaded(True, self.last_config_time)
            return error

    def _reload_failed(self) -> None:
        self.metrics.config_reloads.labels("failure").inc()
        self.reload_success = False
        self.metrics.config_loaded(False, time.time())

    def _load_for_reload(self) -> tuple[Config, str]:
        text = self._read_text(self.options.config_file)  # before: a change after it makes the watcher reload again
        config = check_config(self.options.config_file, self.options.cluster)
        if config.remote_write and self.options.queue_dir is not None:
            probe_queue_dir(self.options.queue_dir)
        return config, text

    @staticmethod
    def _read_text(path: str) -> str:
        try:
            return Path(path).read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError):
            return ""

    def _read_config_files(self, config: Config) -> tuple[str, str]:
        """The config file's text and a digest of it and of the scrape_config_files it read."""
        h = hashlib.sha256()
        text = ""
        for i, path in enumerate((self.options.config_file, *config.scrape_config_files)):
            try:
                data = Path(path).read_bytes()
            except OSError as exc:
                data = f"unreadable: {exc.strerror}".encode()
            if i == 0:
                text = data.decode("utf-8", "replace")
            h.update(path.encode() + b"\0" + hashlib.sha256(data).digest())
        return text, h.hexdigest()

    async def _auto_reload(self, interval: float) -> None:
        """--config.auto-reload-interval: reload when the files' content changed (each new content
        is tried once: a broken edit is logged once, not every interval)."""
        while True:
            await anyio.sleep(interval)
            _, digest = await anyio.to_thread.run_sync(self._read_config_files, self.config)
            if digest != self.config_digest and digest != self._tried_digest:
                self._tried_digest = digest
                log.info("config file %s changed, reloading", self.options.config_file)
                await self.reload()

    async def _apply(self, config: Config) -> str | None:
        retired = self._sync_writers(config)
        await self.scraper.apply_async(config)
        self.config = config
        self.metrics.config_reloads.labels("success").inc()
        log.info("config reloaded from %s", self.options.config_file)
        log_config_warnings(config)
        for w in retired:
            assert self._tg is not None
            self._tg.start_soon(self._retire, w)
        return None

    async def _retire(self, w: RemoteWriter) -> None:
        """Send what a removed endpoint holds, then drop its series from /metrics (as Prometheus
        unregisters a stopped queue's), so that its frozen highest-sent timestamp does not read as
        an ever-growing lag; kept when a current endpoint has the same remote_name and url."""
        await w.drain(self.options.drain_timeout)
        if all(x.metric_labels != w.metric_labels for x in self.writers.values()):
            w.forget_metrics()

    # -- endpoints ---------------------------------------------------------------------------

    def targets_json(self) -> list[dict[str, Any]]:
        out = []
        for loop in self.scraper.loops.values():
            t, h = loop.target, loop.health
            out.append(
                {
                    "scrapePool": t.job,
                    "scrapeUrl": t.url,
                    "labels": dict(t.labels),
                    "discoveredLabels": dict(t.discovered_labels),
                    "health": h.health,
                    "lastError": h.last_error,
                    "lastErrorReason": h.last_reason,
                    "lastScrapeTs": h.last_scrape,
                    "lastScrape": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(h.last_scrape)) if h.last_scrape else "",
                    "lastScrapeDuration": h.last_duration,
                    "lastSamples": h.last_samples,
                    "scrapeInterval": f"{t.scrape_interval:g}s",
                    "scrapeTimeout": f"{t.scrape_timeout:g}s",
                    "missedIntervals": h.missed_intervals,
                }
            )
        return out

    def service_discovery_page(self, pool: str | None, offset: int) -> bytes:
        """/service-discovery: every job (or one, ``pool``), PAGE_SIZE targets each from ``offset``."""
        jobs = []
        for name in self.scraper.jobs:
            if pool is not None and name != pool:
                continue
            shown, counts = self.scraper.discovered(name, offset, PAGE_SIZE)
            jobs.append(JobDiscovery(name, self.scraper.discovery_errors(name), shown, sum(counts.values()),
                                     offset, counts))
        return service_discovery_html(jobs)

    def status_pages(self) -> dict[str, Callable[[dict[str, list[str]]], Response]]:
        """/config and /api/v1/status/*, /api/v1/targets/metadata (relay.http.status)."""
        return {
            "/config": self._config_page,
            "/status": lambda q: Response(200, ui.status_page(build_info_json(build_info()), self.runtime_info(),
                                                              dict(self.options.flags)),
                                          "text/html; charset=utf-8", HTML_HEADERS),
            "/api/v1/status/config": lambda q: api_ok({"yaml": redact_config(self.config_text)}),
            "/api/v1/status/flags": lambda q: api_ok(dict(self.options.flags)),
            "/api/v1/status/buildinfo": lambda q: api_ok(build_info_json(build_info())),
            "/api/v1/status/runtimeinfo": lambda q: api_ok(self.runtime_info()),
            "/api/v1/targets/metadata": lambda q: targets_metadata(
                ((dict(loop.target.labels), loop.parser.families) for loop in self.scraper.loops.values()),
                q),
        }

    def _config_page(self, query: dict[str, list[str]]) -> Response:
        text = redact_config(self.config_text)
        if query.get("format", [""])[0] == "html":
            return Response(200, ui.config_page(text), "text/html; charset=utf-8", HTML_HEADERS)
        return Response(200, text.encode(), "text/plain; charset=utf-8")

    def runtime_info(self) -> dict[str, Any]:
        """/api/v1/status/runtimeinfo: Prometheus' fields (the Go ones as their nearest Python
        counterpart: goroutineCount = tasks on the event loop, GOMAXPROCS = CPUs), and ours."""
        try:
            tasks = len(asyncio.all_tasks())
        except RuntimeError:
            tasks = 0
        corrupt = sum(s.queue.corrupt_records for w in self.writers.values() for s in (*w.shards, *w.draining))
        return {
            "startTime": rfc3339(self.started),
            "CWD": os.getcwd(),
            "hostname": socket.gethostname(),
            "serverTime": rfc3339(time.time()),
            "reloadConfigSuccess": self.reload_success,
            "lastConfigTime": rfc3339(self.last_config_time),
            "corruptionCount": corrupt,
            "goroutineCount": tasks,
            "GOMAXPROCS": os.cpu_count() or 1,
            "GOMEMLIMIT": 0,
            "GOGC": "",
            "GODEBUG": "",
            "storageRetention": "",
            "configFile": self.options.config_file,
            "queueDir": self.options.queue_dir or "",
            "pythonVersion": platform.python_version(),
            "cExtensions": c_extensions(),
        }

    def _startup_line(self, port: int) -> None:
        """One line saying what runs (a warning when the C extensions are off)."""
        ext = c_extensions()
        listen = "no web listener"
        if self.options.listen is not None:
            host = self.options.listen[0]
            listen = f"{host}:{port}" if host else f":{port} (all interfaces)"
        n_targets = len(self.scraper.loops)
        line = (f"relay {__version__} (revision {revision()[:12]}) running: C extensions "
                f"{'on' if ext else 'OFF (pure Python, many times slower: RELAY_NO_EXTENSIONS or a build without a compiler)'}, "
                f"config {self.options.config_file}, listening on {listen}, data directory "
                f"{self.options.queue_dir or '(none: queue in memory)'}, {len(self.config.scrape_configs)} jobs, "
                f"{n_targets} targets, {len(self.config.remote_write)} remote_write endpoints")
        (log.info if ext else log.warning)(line)
        if self.options.listen is not None and listens_everywhere(self.options.listen[0]):
            log.warning("listening on every interface (port %d): /metrics, /config, /targets and the API are open to "
                        "every machine that can reach this one%s", port,
                        "" if self.web_config is not None and self.web_config.users is not None
                        else "; no basic auth (--web.config.file)")

    # -- running -----------------------------------------------------------------------------

    async def _signals(self) -> None:
        with anyio.open_signal_receiver(signal.SIGHUP, signal.SIGTERM, signal.SIGINT) as signals:
            async for signum in signals:
                if signum == signal.SIGHUP:
                    await self.reload()
                else:
                    log.info("received %s, stopping", signal.Signals(signum).name)
                    self._stop.set()
                    return

    async def run(self, *, task_status: anyio.abc.TaskStatus[int] = anyio.TASK_STATUS_IGNORED) -> dict[str, Any]:
        async with anyio.create_task_group() as tg:
            self._tg = tg
            tg.start_soon(watch_loop_lag, self.metrics)
            self._sync_writers(self.config)
            port = 0
            if self.options.listen is not None:
                host, p = self.options.listen
                self.web = WebServer(
                    host,
                    p,
                    registry=self.metrics.registry,
                    targets=self.targets_json,
                    ready=lambda: self._ready,
                    reload=self.reload if self.options.enable_reload else None,
                    web_config=self.web_config,
                    max_connections=self.options.web_max_connections,
                    head_timeout=self.options.web_read_timeout,
                    pages={"/api/v1/alerts": lambda: self._health_page("alerts"),
                           "/fleet": lambda: self._health_page("fleet")},
                    dropped=self.scraper.dropped_targets,
                    service_discovery=self.service_discovery_page,
                    on_accept_error=self.metrics.web_accept_errors.inc,
                    query_pages=self.status_pages(),
                )
                port = await tg.start(self.web.run)
            await tg.start(self.scraper.run, self.config)
            tg.start_soon(self._signals)
            if self.options.auto_reload_interval > 0:
                tg.start_soon(self._auto_reload, self.options.auto_reload_interval)
            self._ready = True
            self._startup_line(port)
            task_status.started(port)
            if self.options.duration > 0:
                with anyio.move_on_after(self.options.duration):
                    await self._stop.wait()
            else:
                await self._stop.wait()
            # Shutdown: stop scraping, then flush what was accepted.
            self._ready = False
            self.scraper.stop_all()
            await anyio.sleep(0)
            with anyio.CancelScope(shield=True):
                for w in self.writers.values():
                    if not await w.drain(self.options.drain_timeout):
                        where = f"kept in {w.queue_dir}" if w.queue_dir else "lost (no --queue-dir)"
                        log.error("remote_write %s: %d samples not delivered at shutdown: %s", w.label,
                                  w.pending_samples, where)
            tg.cancel_scope.cancel()
        for w in self.writers.values():
            w.close()
        await self.clients.aclose()
        stats = self.stats()
        if self.jsonl is not None:
            self.jsonl.close()
        if self.options.stats_file:
            Path(self.options.stats_file).write_bytes(orjson.dumps(stats))
        return stats

    def stats(self) -> dict[str, Any]:
        scrapes = sum(lp.health.scrapes for lp in self.scraper.loops.values())
        return {
            "targets": len(self.scraper.loops),
            "scrapes": scrapes,
            "remote_write": [w.stats() for w in self.writers.values()],
            "jsonl_samples": self.jsonl.samples if self.jsonl else 0,
        }

    def request_stop(self) -> None:
        self._stop.set()
