"""Test helpers for relay.health: etcd-like bodies with chosen values, and members that feed them
to a HealthEngine through the real parser, with the scrape loop's staleness and ``up``."""

from __future__ import annotations

from array import array
from collections.abc import Mapping, Sequence

from relay.batch import STALE_NAN, Batch
from relay.labels import LabelMerge
from relay.textparse import Parser

FSYNC_LE = ("0.001", "0.002", "0.004", "0.008", "0.016", "0.032", "0.064", "0.128", "0.256", "0.512", "1.024",
            "2.048", "4.096", "8.192", "+Inf")


def histogram(name: str, les: Sequence[str], cumulative: Sequence[float], labels: str = "") -> str:
    sep = "," if labels else ""
    lines = [f"# TYPE {name} histogram"]
    lines += [f'{name}_bucket{{{labels}{sep}le="{le}"}} {c:g}' for le, c in zip(les, cumulative, strict=True)]
    lines.append(f"{name}_sum{{{labels}}} 0" if labels else f"{name}_sum 0")
    lines.append(f"{name}_count{{{labels}}} {cumulative[-1]:g}" if labels else f"{name}_count {cumulative[-1]:g}")
    return "\n".join(lines)


def fast(total: float) -> list[float]:
    """Cumulative fsync buckets with every observation under 1 ms."""
    return [total] * len(FSYNC_LE)


def slow(total: float, fast_share: float = 0.0) -> list[float]:
    """Cumulative buckets with (1 - fast_share) of the observations between 2.048 s and 4.096 s."""
    quick = total * fast_share
    return [quick] * 12 + [total, total, total]


def etcd_body(*, has_leader: int = 1, is_leader: int = 0, leader_changes: float = 1, fsync: Sequence[float] | None = None,
              commit: Sequence[float] | None = None, version: str = "3.5.1", db: float = 49152, in_use: float = 45056,
              quota: float = 2147483648, proposals_failed: float = 0,
              grpc: Mapping[tuple[str, str], float] | None = None, peers: Sequence[str] = ("p1", "p2"),
              peer_failures: float = 0, rtt: Sequence[float] | None = None,
              grpc_handling: Sequence[float] | None = None) -> bytes:
    parts = [
        "# TYPE etcd_server_has_leader gauge", f"etcd_server_has_leader {has_leader}",
        "# TYPE etcd_server_is_leader gauge", f"etcd_server_is_leader {is_leader}",
        "# TYPE etcd_server_leader_changes_seen_total counter", f"etcd_server_leader_changes_seen_total {leader_changes:g}",
        "# TYPE etcd_server_proposals_failed_total counter", f"etcd_server_proposals_failed_total {proposals_failed:g}",
        "# TYPE etcd_server_quota_backend_bytes gauge", f"etcd_server_quota_backend_bytes {quota:g}",
        "# TYPE etcd_mvcc_db_total_size_in_bytes gauge", f"etcd_mvcc_db_total_size_in_bytes {db:g}",
        "# TYPE etcd_mvcc_db_total_size_in_use_in_bytes gauge", f"etcd_mvcc_db_total_size_in_use_in_bytes {in_use:g}",
        "# TYPE etcd_server_version gauge", f'etcd_server_version{{server_version="{version}"}} 1',
        histogram("etcd_disk_wal_fsync_duration_seconds", FSYNC_LE, fsync or fast(100)),
        histogram("etcd_disk_backend_commit_duration_seconds", FSYNC_LE, commit or fast(100)),
        histogram("etcd_network_peer_round_trip_time_seconds", FSYNC_LE, rtt or fast(10), 'To="p1"'),
        "# TYPE etcd_network_peer_sent_failures_total counter",
        *[f'etcd_network_peer_sent_failures_total{{To="{p}"}} {peer_failures:g}' for p in peers],
        "# TYPE grpc_server_handled_total counter",
    ]
    if grpc_handling is not None:  # --metrics=extensive
        parts.insert(-1, histogram("grpc_server_handling_seconds", FSYNC_LE, grpc_handling,
                                   'grpc_method="Range",grpc_service="etcdserverpb.KV",grpc_type="unary"'))
    for (method, code), n in sorted((grpc or {("Range", "OK"): 0.0}).items()):
        parts.append(f'grpc_server_handled_total{{grpc_code="{code}",grpc_method="{method}",'
                     f'grpc_service="etcdserverpb.KV",grpc_type="unary"}} {n:g}')
    return ("\n".join(parts) + "\n").encode()


class FakeMember:
    """One target as a scrape loop sees it: parser, series table, staleness, synthetic ``up``."""

    def __init__(self, instance: str, job: str = "etcd", extra: tuple[tuple[str, str], ...] = ()) -> None:
        self.labels = tuple(sorted((("instance", instance), ("job", job), *extra)))
        self.parser = Parser(on_new_series=LabelMerge(self.labels, False, ()))
        self.up = self.parser.series.add("up", self.labels)
        self.last: array[int] = array("I")

    def scrape(self, ts_ms: int, body: bytes | None) -> Batch:
        if body is None:
            out = Batch(self.parser.series)
            for sid in self.last:
                out.append(sid, STALE_NAN, ts_ms)
            self.last = array("I")
            out.append(self.up, 0.0, ts_ms)
            return out
        out = self.parser.parse(body, None, ts_ms)
        gone = set(self.last).difference(out.ids)
        self.last = out.ids[: len(out.ids)]
        for sid in gone:
            out.append(sid, STALE_NAN, ts_ms)
        out.append(self.up, 1.0, ts_ms)
        return out

    def gone(self, ts_ms: int) -> Batch:
        """The target went away: staleness markers for all of its series, up included."""
        out = Batch(self.parser.series)
        for sid in [*self.last, self.up]:
            out.append(sid, STALE_NAN, ts_ms)
        self.last = array("I")
        return out
