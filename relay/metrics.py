"""The relay's own metrics (prometheus-client), served on its ``/metrics``.

One :class:`SelfMetrics` per running relay, each with its own registry, so that several relays in
one process (tests) do not clash. Labels are per job and per remote-write endpoint, never per
target, so a fleet of 10,000 targets does not make the relay's own /metrics huge.

Every remote-write metric has the labels ``remote_name`` and ``url`` (as Prometheus'
``prometheus_remote_storage_*``: the endpoint's ``name``, or a short hash when it has none; the URL
with any ``user:password@`` shown as ``<secret>@``). Beside them, prometheus-client's process and
platform collectors (``process_*``, ``python_info``), ``relay_build_info`` and the config reload
gauges, so that Prometheus' own alerts port over with a rename (README: "Self-metrics").
"""

from __future__ import annotations

import time
from collections.abc import Callable

import anyio
from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    PlatformCollector,
    ProcessCollector,
)

from .buildinfo import build_info

__all__ = ["LOOP_LAG_BUCKETS", "RW", "SelfMetrics", "watch_loop_lag"]

RW = ["remote_name", "url"]  # the labels of every remote-write metric

LOOP_LAG_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)


class SelfMetrics:
    def __init__(self) -> None:
        r = self.registry = CollectorRegistry(auto_describe=True)
        ProcessCollector(registry=r)
        PlatformCollector(registry=r)
        info = build_info()
        self.build_info = Gauge("relay_build_info", "A metric with a constant 1 labelled by version, git revision, "
                                "Python version and whether the C extensions are in use.", list(info), registry=r)
        self.build_info.labels(**info).set(1)
        self.config_last_reload_successful = Gauge(
            "relay_config_last_reload_successful", "Whether the last config (re)load succeeded (1) or failed (0).",
            registry=r)
        self.config_last_reload_success_timestamp = Gauge(
            "relay_config_last_reload_success_timestamp_seconds", "When the config was last loaded successfully.",
            registry=r)
        self.scrapes = Counter("relay_scrapes", "Scrapes attempted.", ["job"], registry=r)
        self.scrape_failures = Counter(
            "relay_scrape_failures", "Scrapes that failed, by reason.", ["job", "reason"], registry=r
        )
        self.scrape_duration = Histogram(
            "relay_scrape_duration_seconds",
            "Duration of scrapes (HTTP and parse).",
            ["job"],
            buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
            registry=r,
        )
        self.scraped_samples = Counter(
            "relay_scraped_samples", "Samples scraped, after metric relabeling.", ["job"], registry=r
        )
        self.missed_intervals = Counter(
            "relay_scrape_missed_intervals", "Scrape intervals skipped because a scrape ran late.", ["job"], registry=r
        )
        self.targets = Gauge("relay_targets", "Targets currently scraped.", ["job"], registry=r)
        self.series_cache = Gauge("relay_series_cache_series", "Series held in all per-target series caches.", registry=r)
        self.discovery_errors = Counter(
            "relay_discovery_errors", "Discovery refreshes that failed.", ["job", "mechanism"], registry=r
        )
        self.discovery_dropped = Counter(
            "relay_discovery_dropped", "Discovered objects refused (e.g. an etcd member whose client URL is not "
            "http or https), by reason.", ["job", "mechanism", "reason"], registry=r
        )
        self.config_reloads = Counter("relay_config_reloads", "Config reloads, by result.", ["result"], registry=r)
        self.web_accept_errors = Counter(
            "relay_web_accept_errors", "Failed accept() calls on the web listener (out of file descriptors, ...).",
            registry=r
        )
        self.loop_lag = Histogram(
            "relay_event_loop_lag_seconds",
            "How late the event loop ran a timer due now (a monitor task sleeps 50 ms and measures how much "
            "longer it took): a long step on the loop shows here.",
            buckets=LOOP_LAG_BUCKETS,
            registry=r,
        )
        self.loop_cpu = Histogram(
            "relay_event_loop_cpu_seconds",
            "CPU time the event loop's thread used between two wake-ups of the lag monitor (50 ms apart "
            "when nothing stalls): far above 50 ms is one long step of the relay's own, not a busy machine.",
            buckets=LOOP_LAG_BUCKETS,
            registry=r,
        )
        # remote write, per endpoint: labelled remote_name, url (RW below)
        self.rw_highest_timestamp = Gauge(
            "relay_remote_write_highest_timestamp_seconds",
            "Timestamp of the newest sample handed to remote write (all endpoints).", registry=r)
        self.rw_highest_sent_timestamp = Gauge(
            "relay_remote_write_queue_highest_sent_timestamp_seconds",
            "Timestamp of the newest sample an endpoint accepted (2xx); the lag is "
            "relay_remote_write_highest_timestamp_seconds minus this.", RW, registry=r)
        self.rw_samples_sent = Counter("relay_remote_write_samples_sent", "Samples sent.", RW, registry=r)
        self.rw_samples_failed = Counter(
            "relay_remote_write_samples_failed", "Samples in sends that failed and will be retried.", RW, registry=r
        )
        self.rw_samples_retried = Counter(
            "relay_remote_write_samples_retried", "Samples sent again after a failed send.", RW, registry=r
        )
        self.rw_samples_dropped = Counter(
            "relay_remote_write_samples_dropped", "Samples dropped, by reason.", [*RW, "reason"], registry=r
        )
        self.rw_bytes_sent = Counter("relay_remote_write_bytes_sent", "Compressed bytes sent.", RW, registry=r)
        self.rw_metadata_sent = Counter(
            "relay_remote_write_metadata_sent", "Metadata entries sent (metadata_config).", RW, registry=r
        )
        self.rw_metadata_failed = Counter(
            "relay_remote_write_metadata_failed", "Metadata entries the receiver refused (4xx).", RW, registry=r
        )
        self.rw_queue_bytes = Gauge(
            "relay_remote_write_queue_bytes", "Encoded bytes waiting to be sent.", RW, registry=r
        )
        self.rw_queue_max_bytes = Gauge(
            "relay_remote_write_queue_max_bytes", "The queue's bound (--queue-max-bytes); past it the oldest "
            "blocks are dropped.", RW, registry=r
        )
        self.rw_pending_samples = Gauge(
            "relay_remote_write_pending_samples", "Samples accepted and not yet sent.", RW, registry=r
        )
        self.rw_shards = Gauge("relay_remote_write_shards", "Shards currently running.", RW, registry=r)
        self.rw_send_latency = Histogram(
            "relay_remote_write_send_duration_seconds",
            "Duration of one remote-write request.",
            RW,
            buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
            registry=r,
        )
        self._highest_appended = 0.0

    def appended(self, timestamp_ms: int) -> None:
        """A batch whose newest sample is ``timestamp_ms`` went to remote write."""
        seconds = timestamp_ms / 1000
        if seconds > self._highest_appended:
            self._highest_appended = seconds
            self.rw_highest_timestamp.set(seconds)

    def config_loaded(self, ok: bool, when: float) -> None:
        self.config_last_reload_successful.set(1 if ok else 0)
        if ok:
            self.config_last_reload_success_timestamp.set(when)

    def set_series_cache_source(self, fn: Callable[[], float]) -> None:
        self.series_cache.set_function(fn)


async def watch_loop_lag(metrics: SelfMetrics, period: float = 0.05) -> None:
    """Sleep ``period`` again and again; observe how much later than asked each wake-up came
    (``relay_event_loop_lag_seconds``), and the CPU time the loop's thread used meanwhile
    (``relay_event_loop_cpu_seconds``).

    Whatever holds the event loop (a long parse, a large discovery update) delays every timer
    due meanwhile; the delay of this one is the stall, to within a period (a stall that ends
    just before the timer is due is not seen). The lag also grows when the process waits for a
    CPU (a busy machine) or for the GIL (another thread); the CPU time does not: a window that
    took much more CPU than its ``period`` is one long step of the relay's own."""
    observe_lag = metrics.loop_lag.observe
    observe_cpu = metrics.loop_cpu.observe
    clock, cpu = time.monotonic, time.thread_time
    while True:
        t0, c0 = clock(), cpu()
        await anyio.sleep(period)
        observe_lag(max(0.0, clock() - t0 - period))
        observe_cpu(cpu() - c0)
