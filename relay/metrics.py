"""The relay's own metrics (prometheus-client), served on its ``/metrics``.

One :class:`SelfMetrics` per running relay, each with its own registry, so that several relays in
one process (tests) do not clash. Labels are per job and per remote-write endpoint, never per
target, so a fleet of 10,000 targets does not make the relay's own /metrics huge.
"""

from __future__ import annotations

from collections.abc import Callable

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

__all__ = ["SelfMetrics"]


class SelfMetrics:
    def __init__(self) -> None:
        r = self.registry = CollectorRegistry(auto_describe=True)
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
        self.config_last_reload_ok = Gauge(
            "relay_config_last_reload_successful", "Whether the last config reload succeeded (1 at start).", registry=r
        )
        self.config_last_reload_ok.set(1)
        self.web_accept_errors = Counter(
            "relay_web_accept_errors", "Failed accept() calls on the web listener (out of file descriptors, ...).",
            registry=r
        )
        # remote write, per endpoint
        self.rw_samples_sent = Counter("relay_remote_write_samples_sent", "Samples sent.", ["url"], registry=r)
        self.rw_samples_failed = Counter(
            "relay_remote_write_samples_failed", "Samples in sends that failed and will be retried.", ["url"], registry=r
        )
        self.rw_samples_retried = Counter(
            "relay_remote_write_samples_retried", "Samples sent again after a failed send.", ["url"], registry=r
        )
        self.rw_samples_dropped = Counter(
            "relay_remote_write_samples_dropped", "Samples dropped, by reason.", ["url", "reason"], registry=r
        )
        self.rw_bytes_sent = Counter("relay_remote_write_bytes_sent", "Compressed bytes sent.", ["url"], registry=r)
        self.rw_queue_bytes = Gauge(
            "relay_remote_write_queue_bytes", "Encoded bytes waiting to be sent.", ["url"], registry=r
        )
        self.rw_pending_samples = Gauge(
            "relay_remote_write_pending_samples", "Samples accepted and not yet sent.", ["url"], registry=r
        )
        self.rw_shards = Gauge("relay_remote_write_shards", "Shards currently running.", ["url"], registry=r)
        self.rw_send_latency = Histogram(
            "relay_remote_write_send_duration_seconds",
            "Duration of one remote-write request.",
            ["url"],
            buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
            registry=r,
        )

    def set_series_cache_source(self, fn: Callable[[], float]) -> None:
        self.series_cache.set_function(fn)
