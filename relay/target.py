"""A scrape target: its identity (URL, labels, settings) and how it is built from discovery.

A :class:`Target` is immutable. It is made from one discovered ``__address__`` plus its group's
labels, by the Prometheus rules: the job's defaults (``job``, ``__scheme__``, ``__metrics_path__``,
``__scrape_interval__``, ``__scrape_timeout__``, ``__param_<name>``) are added, ``relabel_configs``
run, ``instance`` defaults to ``__address__``, and every label starting with ``__`` is removed
from the final set.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from dataclasses import dataclass, field
from urllib.parse import urlencode

from ._exceptions import ConfigError
from .batch import Labels
from .config import ScrapeConfig, field_default, parse_duration
from .relabel import relabel

__all__ = ["Target", "TargetError", "build_target", "discovered_labels", "format_duration"]

_DEFAULT_METRICS_PATH: str = field_default(ScrapeConfig, "metrics_path")  # where __metrics_path__ is emptied


class TargetError(ValueError):
    """A discovered target that relabeling left without a usable address or settings."""


def format_duration(seconds: float) -> str:
    """Seconds as a Prometheus duration string (``15s``, ``1m30s``, ``500ms``)."""
    ms = round(seconds * 1000)
    if ms == 0:
        return "0s"
    out = []
    for unit, size in (("h", 3600_000), ("m", 60_000), ("s", 1000), ("ms", 1)):
        if ms >= size:
            out.append(f"{ms // size}{unit}")
            ms %= size
    return "".join(out)


@dataclass(frozen=True)
class Target:
    """One endpoint to scrape, with the labels every one of its series gets."""

    job: str
    url: str
    labels: Labels
    """Final target labels (``job``, ``instance`` and whatever relabeling kept), sorted."""
    scrape_interval: float
    scrape_timeout: float
    config: ScrapeConfig = field(repr=False, compare=False)
    discovered_labels: Labels = field(default=(), compare=False, repr=False)

    @property
    def key(self) -> tuple[str, str, Labels]:
        """Identity across reloads: the same key means the same running scrape loop is kept."""
        return (self.job, self.url, self.labels)

    @property
    def instance(self) -> str:
        return dict(self.labels).get("instance", "")

    def offset(self, interval: float | None = None) -> float:
        """Start offset within the interval, from a stable hash of the target (no thundering herd)."""
        interval = self.scrape_interval if interval is None else interval
        digest = hashlib.blake2b(repr(self.key).encode(), digest_size=8).digest()
        return (int.from_bytes(digest, "little") / 2**64) * interval

    def stable_hash(self) -> int:
        """Hash of the target's labels; used to shard targets across relay replicas."""
        text = "\xff".join(f"{k}={v}" for k, v in self.labels)
        return int.from_bytes(hashlib.blake2b(text.encode(), digest_size=8).digest(), "little")


def discovered_labels(address: str, group_labels: Mapping[str, str], sc: ScrapeConfig) -> dict[str, str]:
    """The labels relabel_configs start from: the group's, ``__address__`` and the job's defaults."""
    labels: dict[str, str] = dict(group_labels)
    labels["__address__"] = address
    base = {
        "job": sc.job_name,
        "__scheme__": sc.scheme,
        "__metrics_path__": sc.metrics_path,
        "__scrape_interval__": format_duration(sc.scrape_interval),
        "__scrape_timeout__": format_duration(sc.scrape_timeout),
    }
    for name, values in sc.params:
        if values:
            base[f"__param_{name}"] = values[0]
    for k, v in base.items():
        labels.setdefault(k, v)
    return labels


def build_target(
    address: str, group_labels: Mapping[str, str], sc: ScrapeConfig, meta_source: str = ""
) -> Target | None:
    """Build the target for one discovered address, or None if relabeling dropped it."""
    labels = discovered_labels(address, group_labels, sc)
    discovered = tuple(sorted(labels.items()))
    out = relabel(labels, sc.relabel_configs) if sc.relabel_configs else labels
    if out is None:
        return None
    addr = out.get("__address__", "")
    if not addr:
        raise TargetError(f"job {sc.job_name!r}: target {address!r} has no __address__ after relabeling")
    if "/" in addr:
        raise TargetError(f"job {sc.job_name!r}: __address__ {addr!r} must be host:port")
    scheme = out.get("__scheme__", sc.scheme)
    if scheme not in ("http", "https"):
        raise TargetError(f"job {sc.job_name!r}: target {addr!r} has invalid __scheme__ {scheme!r}")
    path = out.get("__metrics_path__", sc.metrics_path) or _DEFAULT_METRICS_PATH
    try:
        interval = parse_duration(out.get("__scrape_interval__", ""), "__scrape_interval__")
        timeout = parse_duration(out.get("__scrape_timeout__", ""), "__scrape_timeout__")
    except ConfigError as exc:
        raise TargetError(f"job {sc.job_name!r}: target {addr!r}: {exc}") from None
    if interval <= 0 or timeout <= 0 or timeout > interval:
        raise TargetError(f"job {sc.job_name!r}: target {addr!r}: scrape timeout must be in (0, interval]")
    params: list[tuple[str, str]] = []
    for name, values in sc.params:
        first = out.get(f"__param_{name}")
        if first is not None:
            params.append((name, first))
            params.extend((name, v) for v in values[1:])
        else:
            params.extend((name, v) for v in values)
    for k, v in out.items():
        if k.startswith("__param_") and k[8:] not in dict(sc.params):
            params.append((k[8:], v))
    url = f"{scheme}://{addr}{path}"
    if params:
        url += "?" + urlencode(params)
    final = {k: v for k, v in out.items() if not k.startswith("__") and v != ""}
    final.setdefault("instance", addr)
    return Target(
        job=sc.job_name,
        url=url,
        labels=tuple(sorted(final.items())),
        scrape_interval=interval,
        scrape_timeout=timeout,
        config=sc,
        discovered_labels=discovered,
    )
