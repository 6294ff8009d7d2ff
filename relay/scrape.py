"""Scraping: one loop per target, all in one anyio task group, handing batches to sinks.

``ScrapeManager`` runs discovery, turns target groups into targets, and keeps one
:class:`ScrapeLoop` per target; a reload keeps the loops of unchanged targets. A ``ScrapeLoop``
scrapes its target every interval, starting at an offset spread by a hash of the target; a
scrape that outlives its timeout is cancelled and recorded; scrapes of one target never overlap;
each loop is independent, so a slow target delays nobody else.

The scraper knows nothing of remote write: each result, a :class:`~relay.batch.Batch`, goes to
every sink (a callable), as vmagent's ``pushData``.

Per scrape, like Prometheus: target labels are merged into each new series (``honor_labels``
conflicts become ``exported_*``), ``metric_relabel_configs`` run once per new series (the parser's
series cache), synthetic series ``up``, ``scrape_duration_seconds``, ``scrape_samples_scraped``,
``scrape_samples_post_metric_relabeling`` and ``scrape_series_added`` are added, and staleness
markers are written for series that vanished, and for all series of a target that fails or goes.
"""

from __future__ import annotations

import functools
import logging
import math
import time
from array import array
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field, replace

import anyio
import httpx

from ._exceptions import HTTPError, ParseError, ScrapeError, StatusError
from .batch import STALE_NAN, Batch, Family, Labels, mix_label_hashes
from .config import SCRAPE_PROTOCOLS, ClusterConfig, Config, ScrapeConfig, field_default
from .discovery import (
    DNSSDProvider,
    EtcdSDProvider,
    FileSDProvider,
    HTTPSDProvider,
    KubernetesHub,
    KubernetesSDProvider,
    Provider,
    StaticProvider,
    TargetGroup,
)
from .http.client import ClientPool, Response
from .labels import LabelMerge, merge_target_labels
from .metrics import SelfMetrics
from .relabel import RelabelConfig, Relabeler
from .target import Target, TargetError, build_target, discovered_labels
from .textparse import Parser

__all__ = [
    "DiscoveredTarget",
    "ScrapeLoop",
    "ScrapeManager",
    "Sink",
    "TargetHealth",
    "merge_target_labels",
    "select_for_member",
]

log = logging.getLogger("relay.scrape")
#: A discovery mechanism that raised is started again after this pause (its last targets kept).
PROVIDER_RESTART_PAUSE = 5.0

Sink = Callable[[Batch], None]

SLICE_SECONDS = 0.02
"""A large sync (a reload, a discovery update of many targets) lets the event loop go after this
much work, so that no target waits longer than about this for its scrape."""
CHECK_EVERY = 64
"""Targets between two looks at the clock during a sync."""
PARSE_IN_THREAD = 1 << 20
"""A body of this many bytes or more is parsed in a worker thread: the C parser lets go of the GIL
every 4,096 lines there, the Python one at the interpreter's switch interval, so the loop runs on
(an etcd member's body is about 160 KB: parsed on the loop, which costs no thread hop)."""
FORGET_FACTOR = 1.5
FORGET_SLACK = 1024
"""A target's series cache (and table) is cut back to its last scrape's series once it holds more
than FORGET_FACTOR times them plus FORGET_SLACK: a churning target costs about two scrapes' series."""


def accept_header(protocols: Sequence[str], escaping: str = "allow-utf-8") -> str:
    """The Accept header for ``scrape_protocols``, as Prometheus 3 writes it: each format with a
    weight one tenth below the last (from ``q=0.6``), ``escaping=`` on the 1.0.0 formats, ``*/*``
    last. PrometheusProto keeps its weight but is left out (the relay parses text formats only)."""
    weight = len(SCRAPE_PROTOCOLS) + 1
    parts = []
    for name in protocols:
        if name != "PrometheusProto":
            value = SCRAPE_PROTOCOLS[name]
            if name in ("PrometheusText1.0.0", "OpenMetricsText1.0.0"):
                value += f";escaping={escaping}"
            parts.append(f"{value};q=0.{weight}")
        weight -= 1
    parts.append(f"*/*;q=0.{weight}")
    return ",".join(parts)


ACCEPT = accept_header(field_default(ScrapeConfig, "scrape_protocols"))
_KNOWN_MEDIA_TYPES = ("text/plain", "application/openmetrics-text")


def body_content_type(content_type: str | None, fallback: str) -> str | None:
    """The Content-Type to parse a body as: the response's, or ``fallback_scrape_protocol``'s media
    type when the response has none, one that does not parse, or one the relay does not know (as
    Prometheus 3). Without a fallback the response's is kept (a body without one is text 0.0.4)."""
    if not fallback:
        return content_type
    media = (content_type or "").split(";", 1)[0].strip().lower()
    if media in _KNOWN_MEDIA_TYPES and "/" in media:
        return content_type
    return SCRAPE_PROTOCOLS[fallback]

SYNTHETIC = (
    "up",
    "scrape_duration_seconds",
    "scrape_samples_scraped",
    "scrape_samples_post_metric_relabeling",
    "scrape_series_added",
)


@dataclass
class TargetHealth:
    health: str = "unknown"  # "up" | "down" | "unknown"
    last_error: str = ""
    last_reason: str = ""
    last_scrape: float = 0.0  # wall-clock seconds
    last_duration: float = 0.0
    last_samples: int = 0
    scrapes: int = 0
    failures: int = 0
    missed_intervals: int = 0


def _error_reason(exc: BaseException) -> tuple[str, str]:
    """A short reason (labels a counter) and a one-line message for a failed scrape. HTTP failures
    carry theirs, decided where they happened (relay._exceptions)."""
    if isinstance(exc, HTTPError | ScrapeError):
        return exc.reason, str(exc)
    if isinstance(exc, ParseError):
        return "parse_error", f"body does not parse: {exc}"
    return "error", f"{exc.__class__.__name__}: {exc}"


@functools.lru_cache(maxsize=64)
def _metric_relabeler(configs: tuple[RelabelConfig, ...]) -> Relabeler:
    """One compiled rule list per distinct metric_relabel_configs, shared by the job's targets (a
    keep/drop list remembers its decisions: a fleet's targets expose the same metric names)."""
    return Relabeler(configs)


class ScrapeLoop:
    """Scrapes one target every interval until stopped; see the module docstring."""

    def __init__(
        self,
        target: Target,
        clients: ClientPool,
        sinks: Sequence[Sink],
        metrics: SelfMetrics,
        *,
        extra_labels: Labels = (),
        keep_exemplars: bool = False,
    ) -> None:
        self.target = target
        self.clients = clients
        self.sinks = sinks
        self.metrics = metrics
        self.health = TargetHealth()
        self.extra_labels = extra_labels  # external labels and the replica label: added if missing
        sc = target.config
        relabel = _metric_relabeler(tuple(sc.metric_relabel_configs)) if sc.metric_relabel_configs else None
        self.labeler = LabelMerge(target.labels, sc.honor_labels, extra_labels, relabel)
        self.parser = Parser(
            on_new_series=self.labeler,
            keep_exemplars=keep_exemplars,  # a remote_write has send_exemplars: true
            honor_timestamps=sc.honor_timestamps,
            sample_limit=sc.sample_limit,
            label_limit=sc.label_limit,
            label_name_length_limit=sc.label_name_length_limit,
            label_value_length_limit=sc.label_value_length_limit,
            name_validation=sc.metric_name_validation_scheme,
        )
        # Remote write keeps this target's batches whole (one shard, by a hash of the target that
        # a reload keeps, and that is mixed so as not to follow the cluster's target split).
        self.parser.series.shard_key = mix_label_hashes((target.stable_hash(),))
        self._synthetic_ids = [self._synthetic_id(n) for n in SYNTHETIC]
        self._last_ids: array[int] = array("I")
        self._good = 0  # samples of the last good scrape, dropped ones included
        self._size_mark = 0  # max(cache, table) after the last scrape
        self.forgotten = 0  # times the series cache was cut back to the live series (_forget)
        self._headers = {
            "Accept": accept_header(sc.scrape_protocols, sc.metric_name_escaping_scheme),
            "Accept-Encoding": "gzip" if sc.enable_compression else "identity",
            "X-Prometheus-Scrape-Timeout-Seconds": f"{target.scrape_timeout:g}",
        }
        self._request: httpx.Request | None = None  # built once, sent every interval
        self.cancel_scope = anyio.CancelScope()
        self._stale_on_stop = False
        self._stopped = False
        self.forced_error: str = ""  # set while the job is over its target_limit: every scrape fails

    # -- series ------------------------------------------------------------------------------

    def _synthetic_id(self, name: str) -> int:
        finished = LabelMerge(self.target.labels, False, self.extra_labels)(name, ())
        assert finished is not None
        return self.parser.series.add(*finished)

    # -- running -----------------------------------------------------------------------------

    async def run(self) -> None:
        """Scrape every interval, on a grid offset by the target's hash, until cancelled."""
        interval = self.target.scrape_interval
        with self.cancel_scope:
            try:
                now = time.monotonic()
                start = now - (now % interval) + self.target.offset()
                if start < now:
                    start += interval
                await anyio.sleep(start - now)
                deadline = start
                while True:
                    await self.scrape_once()
                    deadline += interval
                    now = time.monotonic()
                    if now > deadline:
                        missed = math.ceil((now - deadline) / interval)
                        deadline += missed * interval
                        self.health.missed_intervals += missed
                        self.metrics.missed_intervals.labels(self.target.job).inc(missed)
                    await anyio.sleep(deadline - now)
            finally:
                if self._stale_on_stop:
                    self._emit_all_stale()

    def stop(self, *, stale: bool = True) -> None:
        """Stop the loop. A target that goes away gets staleness markers for all its series; at
        shutdown (``stale=False``) none are written, as Prometheus does, so a restart continues."""
        self._stale_on_stop = stale
        self.cancel_scope.cancel()

    def _emit_all_stale(self) -> None:
        if self._stopped:
            return
        self._stopped = True
        if len(self._last_ids) == 0:
            return
        now_ms = int(time.time() * 1000)
        batch = Batch(self.parser.series)
        for sid in self._last_ids:
            batch.append(sid, STALE_NAN, now_ms)
        for sid in self._synthetic_ids:
            batch.append(sid, STALE_NAN, now_ms)
        self._last_ids = array("I")
        self._emit(batch)

    def _emit(self, batch: Batch) -> None:
        for sink in self.sinks:
            try:
                sink(batch)
            except Exception:
                log.exception("sink failed for target %s", self.target.url)

    async def _fetch(self, sc: ScrapeConfig) -> Response:
        client = self.clients.get(sc.http)  # per scrape: a certificate rotation gives a new client
        timeout = self.target.scrape_timeout
        request = self._request
        if request is None:
            request = self._request = client.build_request("GET", self.target.url, headers=self._headers,
                                                           timeout=timeout)
        return await client.send(request, timeout=timeout, limit=sc.body_size_limit)

    async def scrape_once(self) -> Batch:
        """One scrape: fetch, parse, staleness, synthetic series; the batch goes to the sinks."""
        target = self.target
        sc: ScrapeConfig = target.config
        job = target.job
        wall = time.time()
        ts_ms = int(wall * 1000)
        t0 = time.perf_counter()
        series_before = len(self.parser.series)
        batch: Batch | None = None
        error: BaseException | None = None
        self.metrics.scrapes.labels(job).inc()
        try:
            if self.forced_error:
                raise ScrapeError("target_limit", self.forced_error)
            response = await self._fetch(sc)  # bounded by scrape_timeout
            if response.status_code != 200:
                raise StatusError(response.status_code, url=target.url)
            body = response.content
            content_type = body_content_type(response.headers.get("content-type"), sc.fallback_scrape_protocol)
            if len(body) >= PARSE_IN_THREAD:  # a large body: parsed off the event loop's thread
                batch, error = await anyio.to_thread.run_sync(_parse_off_loop, self.parser, body, content_type, ts_ms)
            else:
                batch = self.parser.parse(body, content_type, ts_ms)
        except anyio.get_cancelled_exc_class():
            raise
        except Exception as exc:
            error = exc
        duration = time.perf_counter() - t0
        h = self.health
        h.scrapes += 1
        h.last_scrape = wall
        h.last_duration = duration
        self.metrics.scrape_duration.labels(job).observe(duration)
        up_id, dur_id, scraped_id, post_id, added_id = self._synthetic_ids
        if batch is None:
            assert error is not None
            reason, message = _error_reason(error)
            # the exception's traceback holds this frame, whose locals hold the exception and the
            # body: a cycle that would keep every failed scrape's body until a full collection
            error = None
            h.health, h.last_error, h.last_reason, h.last_samples = "down", message, reason, 0
            h.failures += 1
            self.metrics.scrape_failures.labels(job, reason).inc()
            out = Batch(self.parser.series)
            for sid in self._last_ids:
                out.append(sid, STALE_NAN, ts_ms)
            self._last_ids = array("I")
            values = (0.0, duration, 0.0, 0.0, 0.0)
            size = max(len(self.parser), len(self.parser.series))
            if size - self._size_mark > FORGET_SLACK and size > 2 * self._good + FORGET_SLACK:
                self._forget(array("I"))  # new series in a failed scrape, and many: churn (Prometheus
                # forces a flush at twice the last good size too)
        else:
            out = batch
            ids = batch.ids
            n = len(ids)
            if ids != self._last_ids and len(self._last_ids):
                gone = set(self._last_ids).difference(ids)
                for sid in gone:
                    out.append(sid, STALE_NAN, ts_ms)
            self._last_ids = ids[:n] if sc.track_timestamps_staleness else staleness_tracked(batch, n, ts_ms)
            h.health, h.last_error, h.last_reason, h.last_samples = "up", "", "", n
            self.metrics.scraped_samples.labels(job).inc(n)
            added = len(self.parser.series) - series_before
            scraped = n + self.parser.last_dropped
            values = (1.0, duration, float(scraped), float(n), float(added))
            self._good = scraped
        for sid, value in zip((up_id, dur_id, scraped_id, post_id, added_id), values, strict=True):
            out.append(sid, value, ts_ms)
        self._emit(out)
        if batch is not None and max(len(self.parser), len(self.parser.series)) > (
                FORGET_FACTOR * (self._good + len(SYNTHETIC)) + FORGET_SLACK):
            self._forget(batch.ids[: self.health.last_samples])  # this scrape's (not its stale markers)
        self._size_mark = max(len(self.parser), len(self.parser.series))
        return out

    def _forget(self, live: array[int]) -> None:
        """Forget every series but ``live`` (this scrape's) and the synthetic ones, as Prometheus'
        scrape cache forgets entries not seen in the last scrape: the parser's cache keeps only
        theirs and a new series table holds only them (renumbered). Batches already out keep the
        old table; remote write and etcd health take the new one as a new table of the target.
        Only when the target's series churn (more series kept than FORGET_FACTOR times a scrape's):
        a target whose series stay the same never pays for it."""
        keep = array("I", live)
        keep.extend(self._synthetic_ids)
        table, remap = self.parser.series.subset(keep)
        self.parser.retain(remap, table)
        self._last_ids = array("I", [remap[sid] for sid in self._last_ids])
        self._synthetic_ids = [remap[sid] for sid in self._synthetic_ids]
        self.forgotten += 1


def _parse_off_loop(parser: Parser, body: bytes, content_type: str | None,
                    ts_ms: int) -> tuple[Batch | None, Exception | None]:
    """``parser.parse`` in a worker thread; a parse error is returned without its traceback.

    Raised across the thread, the error's traceback would hold the worker's frames (the body among
    their locals) in a reference cycle with the thread pool's future: every failed scrape of a large
    body would stay in memory until a full garbage collection (tests/test_faults.py saw 230 MiB after
    20 failed scrapes of a 4 MiB body)."""
    try:
        return parser.parse(body, content_type, ts_ms), None
    except Exception as exc:
        return None, exc.with_traceback(None)


def staleness_tracked(batch: Batch, n: int, default_ms: int) -> array[int]:
    """The ids of the first ``n`` samples that get staleness markers when they vanish: as Prometheus
    without ``track_timestamps_staleness``, not those exposed with their own timestamp."""
    ids = batch.ids
    stamps = batch.timestamps
    if stamps[:n].count(default_ms) == n:  # the common case (no exposed timestamps): one C-speed pass
        return ids[:n]
    return array("I", (sid for sid, t in zip(ids[:n], stamps[:n], strict=True) if t == default_ms))


def select_for_member(target: Target, cluster: ClusterConfig) -> bool:
    """Does this replica scrape ``target``? (stable hash of its labels, replication factor R)."""
    if cluster.members_count <= 1:
        return True
    first = target.stable_hash() % cluster.members_count
    return any((first + r) % cluster.members_count == cluster.member_num for r in range(cluster.replication_factor))


def scrape_settings(sc: ScrapeConfig) -> ScrapeConfig:
    """A scrape config without its discovery part: what a running loop depends on."""
    return replace(
        sc, static_configs=(), file_sd_configs=(), etcd_sd_configs=(), dns_sd_configs=(), http_sd_configs=(),
        kubernetes_sd_configs=(), keep_dropped_targets=0,
    )


@dataclass(frozen=True)
class DiscoveredTarget:
    """One discovered address of a job and what relabeling made of it (for /service-discovery)."""

    discovered: dict[str, str]
    state: str  # "active" | "dropped" (by relabel_configs) | "other member" (sharding) | "error"
    target: Target | None = None
    error: str = ""


@dataclass
class _Job:
    config: ScrapeConfig
    providers: list[Provider]
    groups: dict[int, list[TargetGroup]] = field(default_factory=dict)
    scope: anyio.CancelScope = field(default_factory=anyio.CancelScope)
    # After a reload that changed discovery: the old groups stay until every new provider has
    # reported once, so that unchanged targets keep running instead of flapping.
    carry: list[TargetGroup] | None = None
    waiting: set[int] = field(default_factory=set)
    # What each (address, group object) relabeled to at the last sync: discovery that resends the
    # same group objects (Kubernetes, on every change) costs a lookup per target, not a relabeling.
    built: dict[tuple[str, int], tuple[TargetGroup, Target | str | None]] = field(default_factory=dict)


class ScrapeManager:
    """Discovery, targets and their loops, for one config; ``apply`` swaps configs in place."""

    def __init__(self, clients: ClientPool, sinks: Sequence[Sink], metrics: SelfMetrics) -> None:
        self.clients = clients
        self.sinks = sinks
        self.metrics = metrics
        self.loops: dict[tuple[str, str, Labels], ScrapeLoop] = {}
        self.jobs: dict[str, _Job] = {}
        self.config: Config | None = None
        self._tg: anyio.abc.TaskGroup | None = None
        self.target_errors: dict[str, list[str]] = {}
        self.over_limit: dict[str, str] = {}  # job -> why its scrapes fail (target_limit)
        self.kubernetes = KubernetesHub(clients)  # watchers shared by the jobs' kubernetes_sd_configs
        self._sync_lock = anyio.Lock()
        self._stopped = False
        self._sync_wanted = anyio.Event()
        metrics.set_series_cache_source(lambda: float(sum(len(lp.parser) for lp in self.loops.values())))

    @property
    def extra_labels(self) -> Labels:
        assert self.config is not None
        out = dict(self.config.global_config.external_labels)
        c = self.config.cluster
        if c.members_count > 1 and c.replication_factor > 1:
            out[c.replica_label] = str(c.member_num)
        return tuple(sorted(out.items()))

    async def run(self, config: Config, *, task_status: anyio.abc.TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
        async with anyio.create_task_group() as tg:
            self._tg = self.kubernetes.tg = tg
            await self.apply_async(config)
            tg.start_soon(self._syncer)
            task_status.started()
            await anyio.sleep_forever()

    def apply(self, config: Config) -> None:
        """Switch to ``config`` in one step (tests, small configs): see :meth:`apply_async`."""
        for _ in self._switch_jobs(config):
            pass
        for _ in self._sync_steps():
            pass

    async def apply_async(self, config: Config) -> None:
        """Switch to ``config``: jobs whose config is unchanged keep their discovery and loops.

        Done in slices of at most SLICE_SECONDS of work with the event loop let go between them
        (a reload of thousands of jobs must not stall the scrapes); returns once the new targets
        run. One sync at a time (with discovery updates)."""
        async with self._sync_lock:
            await self._run_sliced(self._switch_jobs(config))
            await self._run_sliced(self._sync_steps())

    def _request_sync(self) -> None:
        """A discovery update: the syncer task applies it (and any that come meanwhile) soon."""
        self._sync_wanted.set()

    async def _syncer(self) -> None:
        while True:
            await self._sync_wanted.wait()
            self._sync_wanted = anyio.Event()
            async with self._sync_lock:
                await self._run_sliced(self._sync_steps())

    @staticmethod
    async def _run_sliced(steps: Iterator[None]) -> None:
        """Run ``steps`` (a generator yielding at its checkpoints), letting the loop go whenever a
        slice has taken SLICE_SECONDS."""
        clock = time.perf_counter
        until = clock() + SLICE_SECONDS
        for _ in steps:
            if clock() > until:
                await anyio.sleep(0)
                until = clock() + SLICE_SECONDS

    def _switch_jobs(self, config: Config) -> Iterator[None]:
        """Drop the jobs gone, start the new and the changed ones; yields every CHECK_EVERY jobs."""
        assert self._tg is not None
        self.config = config
        wanted = {sc.job_name: sc for sc in config.scrape_configs}
        for name in list(self.jobs):
            if name not in wanted:
                self._drop_job(name)
        for n, (name, sc) in enumerate(wanted.items(), 1):
            if n % CHECK_EVERY == 0:
                yield
            old = self.jobs.get(name)
            if old is None:
                self._start_job(sc, None)
            elif old.config != sc:
                old.scope.cancel()
                self._start_job(sc, old)

    def _drop_job(self, name: str) -> None:
        job = self.jobs.pop(name)
        job.scope.cancel()
        self.metrics.targets.labels(name).set(0)

    def _start_job(self, sc: ScrapeConfig, old: _Job | None) -> None:
        # the job's counters exported at 0 from the start, so rate() and increase() in alerts see 0
        for counter in (self.metrics.scrapes, self.metrics.scraped_samples, self.metrics.missed_intervals):
            counter.labels(sc.job_name)
        providers: list[Provider] = []
        if sc.static_configs:
            providers.append(StaticProvider(sc.static_configs, sc.job_name))
        providers += [FileSDProvider(f, sc.job_name) for f in sc.file_sd_configs]
        providers += [EtcdSDProvider(e, sc.job_name, self.clients) for e in sc.etcd_sd_configs]
        providers += [DNSSDProvider(d, sc.job_name) for d in sc.dns_sd_configs]
        providers += [HTTPSDProvider(h, sc.job_name, self.clients) for h in sc.http_sd_configs]
        providers += [KubernetesSDProvider(k, sc.job_name, self.kubernetes) for k in sc.kubernetes_sd_configs]
        job = self.jobs[sc.job_name] = _Job(sc, providers)
        assert self._tg is not None
        for i, p in enumerate(providers):
            p.on_error = functools.partial(self._discovery_failed, sc.job_name, p.name)
            p.on_dropped = functools.partial(self._discovery_dropped, sc.job_name, p.name)
            if isinstance(p, StaticProvider):
                job.groups[i] = p.groups  # known now: no gap before the first report
            else:
                job.waiting.add(i)
                self._tg.start_soon(self._run_provider, job, i, p)
        if old is not None and job.waiting:
            job.carry = [g for gs in old.groups.values() for g in gs] + (old.carry or [])

    def _discovery_failed(self, job: str, mechanism: str, error: str) -> None:
        if job in self.jobs:
            self.metrics.discovery_errors.labels(job, mechanism).inc()

    def _discovery_dropped(self, job: str, mechanism: str, reason: str, n: int) -> None:
        if job in self.jobs:
            self.metrics.discovery_dropped.labels(job, mechanism, reason).inc(n)

    # -- what discovery found (the built cache holds every discovered address and its outcome) --

    def dropped_targets(self, pool: str | None = None) -> tuple[list[dict[str, object]], dict[str, int]]:
        """Targets relabel_configs dropped, as Prometheus' ``droppedTargets`` (at most the job's
        ``keep_dropped_targets`` each, 0 = all) and ``droppedTargetCounts`` (all of them)."""
        out: list[dict[str, object]] = []
        counts: dict[str, int] = {}
        for name, job in self.jobs.items():
            if pool is not None and name != pool:
                continue
            keep = job.config.keep_dropped_targets
            n = 0
            for (addr, _), (g, t) in job.built.items():
                if t is not None:
                    continue
                n += 1
                if keep == 0 or n <= keep:
                    out.append({"discoveredLabels": discovered_labels(addr, dict(g.labels), job.config),
                                "scrapePool": name})
            counts[name] = n
        return out, counts

    def discovered(self, name: str, offset: int = 0, limit: int = 0) -> tuple[list[DiscoveredTarget], dict[str, int]]:
        """The job's discovered targets from ``offset`` (at most ``limit``, 0 = all), and how many
        of all its targets are in each state."""
        job = self.jobs.get(name)
        if job is None:
            return [], {}
        assert self.config is not None
        cluster = self.config.cluster
        out: list[DiscoveredTarget] = []
        counts: dict[str, int] = {}
        end = offset + limit if limit else len(job.built)
        for i, ((addr, _), (g, t)) in enumerate(job.built.items()):
            state = ("dropped" if t is None else "error" if isinstance(t, str) else
                     "active" if select_for_member(t, cluster) else "other member")
            counts[state] = counts.get(state, 0) + 1
            if offset <= i < end:
                labels = discovered_labels(addr, dict(g.labels), job.config)
                out.append(DiscoveredTarget(labels, state, t if isinstance(t, Target) else None,
                                            t if isinstance(t, str) else ""))
        return out, counts

    def discovery_errors(self, name: str) -> list[tuple[str, str | None]]:
        """Each of the job's providers: (mechanism, its current error or None)."""
        job = self.jobs.get(name)
        return [(p.name, p.current_error()) for p in job.providers] if job is not None else []

    async def _run_provider(self, job: _Job, index: int, provider: Provider) -> None:
        def send(groups: list[TargetGroup]) -> None:
            if self.jobs.get(job.config.job_name) is not job:
                return
            job.groups[index] = groups
            job.waiting.discard(index)
            if not job.waiting:
                job.carry = None
            self._request_sync()

        with job.scope:
            last: str | None = None
            while True:
                try:
                    await provider.run(send)
                    await anyio.sleep_forever()
                except Exception as exc:
                    # Whatever a mechanism's input made it raise: its last groups stay (job.groups),
                    # the failure is counted and shown, logged once per change, and it starts again.
                    error = f"{exc.__class__.__name__}: {exc}"[:500]
                    del exc
                    provider.last_error = error
                    provider.failed(error)
                    if error != last:
                        log.error("%s discovery for job %s failed, keeping its last targets: %s", provider.name,
                                  job.config.job_name, error)
                        last = error
                await anyio.sleep(PROVIDER_RESTART_PAUSE)

    def _desired(self) -> dict[tuple[str, str, Labels], Target]:
        """The targets all jobs' discovery gives now, in one step (see :meth:`_desired_steps`)."""
        out: dict[tuple[str, str, Labels], Target] = {}
        for _ in self._desired_steps(out):
            pass
        return out

    def _desired_steps(self, desired: dict[tuple[str, str, Labels], Target]) -> Iterator[None]:
        """Fill ``desired`` with the targets all jobs' discovery gives now; yields every
        CHECK_EVERY addresses (a checkpoint for :meth:`_run_sliced`)."""
        assert self.config is not None
        cluster = self.config.cluster
        errors: dict[str, list[str]] = {}
        n = 0
        for name, job in list(self.jobs.items()):
            count = 0
            built: dict[tuple[str, int], tuple[TargetGroup, Target | str | None]] = {}
            for groups in [*job.groups.values(), job.carry or []]:
                for g in groups:
                    for addr in g.targets:
                        n += 1
                        if n % CHECK_EVERY == 0:
                            yield
                        key = (addr, id(g))  # the entry holds g: its id is not reused meanwhile
                        known = job.built.get(key)
                        if known is not None and known[0] is g:
                            t = known[1]
                        else:
                            try:
                                t = build_target(addr, dict(g.labels), job.config)
                            except TargetError as exc:
                                t = str(exc)
                        built[key] = (g, t)
                        if isinstance(t, str):
                            errors.setdefault(name, []).append(t)
                            continue
                        if t is None or not select_for_member(t, cluster):
                            continue
                        desired.setdefault(t.key, t)
                        count += 1
            job.built = built
            self.metrics.targets.labels(name).set(count)
            self._target_limit(job.config, count)
        self.target_errors = errors

    def _target_limit(self, sc: ScrapeConfig, count: int) -> None:
        """``target_limit``: over it, every scrape of the job fails (as Prometheus) until it has fewer."""
        if sc.target_limit and count > sc.target_limit:
            message = f"target_limit exceeded (number of targets: {count}, limit: {sc.target_limit})"
            if self.over_limit.get(sc.job_name) != message:
                log.warning("job %s: %s: its scrapes fail until it has fewer targets", sc.job_name, message)
            self.over_limit[sc.job_name] = message
        else:
            self.over_limit.pop(sc.job_name, None)

    def _sync_all(self) -> None:
        """Bring the loops to what discovery gives now, in one step."""
        for _ in self._sync_steps():
            pass

    def _sync_steps(self) -> Iterator[None]:
        """Bring the loops to what discovery gives now: stop the gone, start the new; yields at
        checkpoints (every CHECK_EVERY targets), so that a large change can be cut into slices."""
        assert self._tg is not None
        desired: dict[tuple[str, str, Labels], Target] = {}
        yield from self._desired_steps(desired)
        for n, key in enumerate(list(self.loops), 1):
            if n % CHECK_EVERY == 0:
                yield
            if key not in desired:
                loop = self.loops.pop(key, None)
                if loop is not None:
                    loop.stop()
        extra = self.extra_labels
        exemplars = self.keep_exemplars
        # scrape_settings of each distinct config once per sync (by id; the entry holds the config)
        settings: dict[int, tuple[ScrapeConfig, ScrapeConfig]] = {}

        def settings_of(sc: ScrapeConfig) -> ScrapeConfig:
            got = settings.get(id(sc))
            if got is None:
                got = settings[id(sc)] = (sc, scrape_settings(sc))
            return got[1]

        for n, (key, target) in enumerate(desired.items(), 1):
            if n % CHECK_EVERY == 0:
                yield
            if self._stopped:
                return
            loop = self.loops.get(key)
            if loop is not None and loop.extra_labels == extra:
                old_sc, new_sc = loop.target.config, target.config
                if old_sc is new_sc or settings_of(old_sc) == settings_of(new_sc):
                    loop.target = target  # the same target; what discovery says of it may have changed
                    loop.parser.keep_exemplars = exemplars
                    continue
            if loop is not None:
                loop.stop()
            loop = self.loops[key] = ScrapeLoop(target, self.clients, self.sinks, self.metrics, extra_labels=extra,
                                                keep_exemplars=exemplars)
            self._tg.start_soon(loop.run)
        for loop in self.loops.values():
            loop.forced_error = self.over_limit.get(loop.target.job, "")

    @property
    def keep_exemplars(self) -> bool:
        """Exemplars are collected only when a remote_write sends them (else they cost nothing)."""
        return self.config is not None and any(rw.send_exemplars for rw in self.config.remote_write)

    def metadata(self) -> Iterator[dict[str, Family]]:
        """The metric families (HELP/TYPE/UNIT) of each running target, as its parser keeps them:
        the remote writers' ``metadata_source``."""
        for loop in list(self.loops.values()):
            yield loop.parser.families

    def stop_all(self) -> None:
        self._stopped = True  # a sync under way (in slices) starts nothing more
        for loop in self.loops.values():
            loop.stop(stale=False)
        for job in self.jobs.values():
            job.scope.cancel()
