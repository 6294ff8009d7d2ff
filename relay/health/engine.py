"""etcd fleet health: a sink that keeps what the mixin's rules read, clusters, rules, alert states.

``HealthEngine.ingest`` is a scrape sink (every target's batches, ``up`` included: the relay's own
scrape result). A batch's series table belongs to one scrape loop, so a table is a member; its
series are classified once when they appear (the few the rules read get a column), and a batch is
read through a plan of (position, slot) pairs that is reused while the batch's series ids are the
same as last time (one array comparison), by one call of the kernel (``_kernel_c``/``_kernel_py``:
the row, each slot's latest value and the time it last changed). Members are grouped into clusters by their target labels
but ``instance`` (the mixin's ``without (instance)``) or by ``group_by``. ``evaluate`` runs every
rule on every cluster with Prometheus' semantics (``relay.health.promql``) and keeps the alert
states as Prometheus' alerting rules do (pending, firing after ``for``, gone when the expression
returns nothing).

Exactness notes: the gRPC counters a rule sums (``sum without (grpc_type, grpc_code)``) are summed
per member and method at ingest, which equals Prometheus' sum of per-series rates when the summed
series share scrape timestamps and reset together (they do: one body, one process); a NaN sample
value is treated as no sample; the ``0*absent(...)`` arm of the leader-change rule, which only
matters when no cluster exposes the counter, is left out.
"""

from __future__ import annotations

import logging
import math
import operator
import time
from array import array
from collections import deque
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, cast

from .. import _ext
from ..batch import STALE_NAN, Batch, SeriesTable
from . import _kernel_py, promql
from .rules import Rule, expand_template, go_float
from .store import RingClass

__all__ = ["Alert", "Cluster", "HealthEngine", "Member"]

log = logging.getLogger("relay.health")

Labels = tuple[tuple[str, str], ...]
NAN = math.nan
LOOKBACK = promql.LOOKBACK_MS
RESEND_DELAY = 60.0  # Prometheus' --rules.alert.resend-delay default
RESOLVED_RETENTION = 15 * 60.0  # how long Prometheus keeps sending a resolved alert

_SCALARS = {
    "up": "up",
    "etcd_server_has_leader": "has_leader",
    "etcd_server_is_leader": "is_leader",
    "etcd_server_leader_changes_seen_total": "leader_changes",
    "etcd_server_proposals_failed_total": "proposals_failed",
    "etcd_server_proposals_pending": "proposals_pending",
    "etcd_mvcc_db_total_size_in_bytes": "db_total",
    "etcd_mvcc_db_total_size_in_use_in_bytes": "db_in_use",
    "etcd_server_quota_backend_bytes": "quota",
}
_HISTOGRAMS = {
    "etcd_disk_wal_fsync_duration_seconds_bucket": "fsync",
    "etcd_disk_backend_commit_duration_seconds_bucket": "commit",
    "etcd_network_peer_round_trip_time_seconds_bucket": "rtt",
    "grpc_server_handling_seconds_bucket": "grpc_slow",
}
_GRPC_ERRORS = frozenset(
    ("Unknown", "FailedPrecondition", "ResourceExhausted", "Internal", "Unavailable", "DataLoss", "DeadlineExceeded")
)
_kernel = _ext.load("relay.health._kernel_c") or _kernel_py
gather, kernel_rate, kernel_quantile = _kernel.gather, _kernel.rate, _kernel.quantile

_MID = frozenset(("proposals_failed", "leader_changes"))
_LONG = frozenset(("db_total",))
_CLASS_OF = {"short": 0, "mid": 1, "long": 2}


@dataclass
class Member:
    """One scrape target's kept signals."""

    labels: Labels  # the up series' labels (target labels), external labels removed
    instance: str
    rings: tuple[RingClass, RingClass, RingClass]
    slots: dict[tuple[str, ...], tuple[int, int, int]] = field(default_factory=dict)  # key -> (row, class, col)
    kinds: set[str] = field(default_factory=set)
    row_cols: tuple[list[int], list[int], list[int]] = field(default_factory=lambda: ([], [], []))
    table: Any = None
    known: int = 0  # series of the table classified so far
    sid_slot: array[int] = field(default_factory=lambda: array("i"))
    sid_sum: array[int] = field(default_factory=lambda: array("i"))  # a second row (gRPC sums): all codes
    body_labels: dict[int, Labels] = field(default_factory=dict)  # row -> the series' own labels
    plan_ids: array[int] | None = None
    plan: Plan | None = None
    index: Index | None = None
    last_ts: int = 0
    up_ts: int = 0
    leader_log: deque[tuple[int, float]] = field(default_factory=lambda: deque(maxlen=64))
    stats: dict[str, float] = field(default_factory=dict)
    prev: array[float] = field(default_factory=lambda: array("d"))  # slot -> its latest value (NaN: none)
    since: array[int] = field(default_factory=lambda: array("q"))  # slot -> ts from which prev has held
    fit: Fit | None = None
    gap_ts: int = 0  # timestamp of the newest row that followed a gap longer than the lookback

    def nbytes(self) -> int:
        return (sum(r.nbytes() for r in self.rings) + 16 * len(self.slots) + 8 * len(self.sid_slot)
                + 16 * len(self.prev))

    def stable(self, slot: int, ring: RingClass) -> bool:
        """The slot held one value, not NaN, over every row of ``ring`` (the ring's ``is_constant``,
        from the slot's change time instead of its column)."""
        v = self.prev[slot]
        return v == v and len(ring.ts) > 0 and self.since[slot] <= ring.ts[0]


def _group_stable(m: Member, get: Callable[[Sequence[float]], tuple[float, ...]], ring: RingClass) -> bool:
    """Every slot ``get`` picks is ``stable`` (C-level max and sum over the slots)."""
    if not ring.ts:
        return False
    since = get(m.since)
    if not since or max(since) > ring.ts[0]:
        return False
    total = sum(get(m.prev))
    return total == total


def _getter(indexes: list[int]) -> Callable[[Sequence[float]], tuple[float, ...]]:
    """``itemgetter`` that always returns a tuple (C speed for two and more)."""
    if not indexes:
        return lambda r: ()
    if len(indexes) == 1:
        i = indexes[0]
        return lambda r: (r[i],)
    return cast("Callable[[Sequence[float]], tuple[float, ...]]", operator.itemgetter(*indexes))


class Fit:
    """``predict_linear``'s least squares over one column's window, kept as exact running sums
    (integers: timestamps in ms, values while they are whole numbers, as a database size is):
    each evaluation adds the rows that entered the window and takes out those that left it."""

    __slots__ = ("col", "hi", "lo", "n", "odd", "st", "stt", "sty", "sy")

    def __init__(self, col: int, lo: int) -> None:
        self.col, self.lo, self.hi = col, lo, lo  # absolute rows lo:hi are summed
        self.n = self.st = self.stt = self.sty = self.sy = 0
        self.odd = 0  # samples that are not whole numbers: then the sums are not used

    def add(self, t: int, v: float, sign: int) -> None:
        if v != v:
            return
        if not v.is_integer():  # also +-Inf
            self.odd += sign
            return
        y = int(v)
        self.n += sign
        self.st += sign * t
        self.stt += sign * t * t
        self.sy += sign * y
        self.sty += sign * t * y

    def move(self, ring: RingClass, lo: int, hi: int) -> None:
        """Make the sums cover ring rows ``lo:hi`` (indexes into ``ring.ts``)."""
        a, b, base = ring.base + lo, ring.base + hi, ring.base
        if a < self.lo or b < self.hi or self.lo < base:  # moved back, or rows gone: start again
            self.__init__(self.col, a)  # type: ignore[misc]
        ts, col = ring.ts, self.col
        for i in range(self.hi, b):
            self.add(ts[i - base], ring.value(col, i - base), 1)
        for i in range(self.lo, min(a, b)):
            self.add(ts[i - base], ring.value(col, i - base), -1)
        self.lo, self.hi = a, b

    def predict(self, at_ms: int, horizon_s: int) -> float | None:
        """The fitted value ``horizon_s`` after ``at_ms`` (the intercept at ``at_ms``), exactly rounded."""
        n = self.n
        if n < 2:
            return None
        sx = self.st - n * at_ms
        sxx = self.stt - 2 * at_ms * self.st + n * at_ms * at_ms
        sxy = self.sty - at_ms * self.sy
        n1 = n * sxy - sx * self.sy
        d = n * sxx - sx * sx
        if d == 0:
            return None
        return (1000 * n1 * horizon_s * n + self.sy * d - n1 * sx) / (d * n)


@dataclass
class Plan:
    """How one batch layout (its series ids, in order) becomes a row in slot order (``gather``:
    ``row[dst[j]]`` from ``values[src[j]]``, set where ``first[j]``, else added: the gRPC sums);
    per class, a getter of its columns' slots."""

    src: array[int]
    dst: array[int]
    first: array[int]
    per_class: list[Callable[[Sequence[float]], tuple[float, ...]]]
    up_pos: int
    leader_changes: int  # slot of leader_changes, or -1


def _build_plan(member: Member, ids: array[int]) -> None:
    slot, summ = member.sid_slot, member.sid_sum
    singles: dict[int, int] = {}
    sums: dict[int, list[int]] = {}
    up_row = member.slots[("up",)][0]
    up_pos = -1
    for pos, sid in enumerate(ids):
        s = slot[sid]
        if s < 0:
            continue
        s2 = summ[sid]
        if s2 >= 0:  # gRPC counters: summed per method (s: error codes only, s2: all codes)
            sums.setdefault(s2, []).append(pos)
            if s != s2:
                sums.setdefault(s, []).append(pos)
        else:
            singles[s] = pos
            if s == up_row:
                up_pos = pos
    src, dst, first = array("i"), array("i"), array("b")
    for s, pos in singles.items():
        src.append(pos)
        dst.append(s)
        first.append(1)
    for s, positions in sums.items():
        for j, pos in enumerate(positions):
            src.append(pos)
            dst.append(s)
            first.append(1 if j == 0 else 0)
    lc = member.slots.get(("leader_changes",))
    member.plan = Plan(
        src=src,
        dst=dst,
        first=first,
        per_class=[_getter(cols) for cols in member.row_cols],
        up_pos=up_pos,
        leader_changes=lc[0] if lc is not None else -1,
    )
    member.plan_ids = array("I", ids)


@dataclass
class Index:
    """A member's kept signals by rule: histogram groups (le, key) and gRPC methods."""

    hist: dict[str, dict[tuple[str, ...], list[tuple[float, tuple[str, ...]]]]]
    grpc: list[tuple[str, ...]]
    peer_fail: list[tuple[str, ...]]
    versions: list[tuple[str, ...]]
    grpc_get: Callable[[Sequence[float]], tuple[float, ...]]  # the error sums' slots
    hist_get: dict[tuple[str, tuple[str, ...]], Callable[[Sequence[float]], tuple[float, ...]]]  # a group's buckets
    hist_cols: dict[tuple[str, tuple[str, ...]], tuple[array[int], array[float]]]  # ring columns and le, by le


def _index(member: Member) -> Index:
    if member.index is not None:
        return member.index
    hist: dict[str, dict[tuple[str, ...], list[tuple[float, tuple[str, ...]]]]] = {}
    grpc, peer_fail, versions = [], [], []
    for key in member.slots:
        kind = key[0]
        if kind in ("fsync", "commit", "rtt", "grpc_slow"):
            try:
                le = float(key[-1])
            except ValueError:
                continue
            hist.setdefault(kind, {}).setdefault(key[1:-1], []).append((le, key))
        elif kind == "grpc_err":
            grpc.append(key)
        elif kind == "peer_fail":
            peer_fail.append(key)
        elif kind == "version":
            versions.append(key)
    for groups in hist.values():
        for buckets in groups.values():
            buckets.sort(key=lambda b: b[0])
    hist_get = {(kind, g): _getter([member.slots[key][0] for _, key in buckets])
                for kind, groups in hist.items() for g, buckets in groups.items()}
    hist_cols = {(kind, g): (array("i", [member.slots[key][2] for _, key in buckets]),
                             array("d", [le for le, _ in buckets]))
                 for kind, groups in hist.items() for g, buckets in groups.items()}
    member.index = Index(hist, grpc, peer_fail, versions, _getter([member.slots[k][0] for k in grpc]), hist_get,
                         hist_cols)
    return member.index


@dataclass
class Alert:
    rule: int
    labels: Labels
    active_at: float
    value: float
    state: str = "pending"  # "pending" | "firing" | "inactive" (resolved, kept to be sent as resolved)
    fired_at: float = 0.0
    resolved_at: float = 0.0
    last_sent: float = 0.0
    valid_until: float = 0.0


@dataclass
class Cluster:
    key: Labels
    members: list[Member]


def _is_etcd_name(name: str) -> bool:
    return name == "etcd_server_has_leader"


class HealthEngine:
    """See the module docstring. ``rules`` from ``relay.health.rules``; ``drop_labels`` are label
    names left out of a member's labels (external labels, the replica label)."""

    def __init__(self, rules: Sequence[Rule], *, group_by: Sequence[str] = (), drop_labels: Iterable[str] = (),
                 interval: float = 15.0, on_alerts: Any = None) -> None:
        self.interval = interval
        self.drop_labels = frozenset(drop_labels)
        self.group_by = tuple(group_by)
        self.rules: list[Rule] = []
        self.retention = (0, 0, 0)
        self.configure(rules)
        self.members: dict[Labels, Member] = {}
        self._tables: dict[int, Member | None] = {}
        self._table_refs: dict[int, Any] = {}
        self._not_etcd: dict[int, int] = {}  # table id -> its size when it was found to hold no etcd series
        self._seen: dict[int, float] = {}  # table id -> monotonic time of its last batch
        self.alerts: dict[tuple[int, Labels], Alert] = {}
        self.not_evaluable: dict[Labels, list[str]] = {}
        self.last_eval = 0.0
        self.eval_seconds = 0.0
        self.ingest_seconds = 0.0
        self.on_alerts = on_alerts
        self.external_labels: Labels = ()
        self._alert_table: Any = None
        self._alert_prev: set[tuple[str, Labels]] = set()
        self.resolved: dict[tuple[int, Labels], Alert] = {}  # firing alerts that ended, for 15 m
        self._qcache: dict[tuple[Any, ...], float] = {}
        self._qnone: set[tuple[Any, ...]] = set()

    def configure(self, rules: Sequence[Rule]) -> None:
        self.rules = list(rules)
        short = max([LOOKBACK] + [int((r.window_s or 0) * 1000) for r in rules if r.kind not in
                                  ("failed_proposals", "leader_changes", "growth")])
        mid = max([LOOKBACK] + [int((r.window_s or 0) * 1000) for r in rules if r.kind == "failed_proposals"]
                  + [int((r.window_s or 0) * 1000 * 16 / 15) + LOOKBACK for r in rules if r.kind == "leader_changes"])
        long = max([short] + [int((r.window_s or 0) * 1000) for r in rules if r.kind == "growth"])
        self.retention = (short + 60_000, mid + 60_000, long + 60_000)
        for m in getattr(self, "members", {}).values():
            for ring, keep in zip(m.rings, self.retention, strict=True):
                ring.retention_ms = keep

    # -- ingest ------------------------------------------------------------------------------

    def ingest(self, batch: Batch) -> None:
        t0 = time.perf_counter()
        try:
            self._ingest(batch)
        finally:
            self.ingest_seconds += time.perf_counter() - t0

    def _ingest(self, batch: Batch) -> None:
        table = batch.series
        key = id(table)
        self._seen[key] = time.monotonic()
        if self._table_refs.get(key) is not table:  # a new table (or a reused id)
            member = self._bind(table)
        else:
            member = self._tables.get(key)
            if member is None:
                if len(table) == self._not_etcd.get(key, -1):
                    return
                member = self._bind(table)
        if member is None:
            return
        if member.table is not table:
            member.table, member.known = table, 0
            member.sid_slot, member.sid_sum, member.plan_ids = array("i"), array("i"), None
        if len(table) > member.known:
            self._classify(member, table)
        ids = batch.ids
        if member.plan_ids is None or member.plan_ids != ids:
            _build_plan(member, ids)
        plan = member.plan
        assert plan is not None
        vals = batch.values
        ts_ms = batch.timestamps[plan.up_pos] if plan.up_pos >= 0 else (
            batch.timestamps[-1] if len(batch.timestamps) else int(time.time() * 1000))
        row = gather(vals, plan.src, plan.dst, plan.first, len(member.prev), member.prev, member.since, ts_ms)
        if ts_ms - member.last_ts > LOOKBACK:
            member.gap_ts = ts_ms
        member.last_ts = ts_ms
        if plan.up_pos >= 0 and vals[plan.up_pos] == vals[plan.up_pos]:
            member.up_ts = ts_ms
        for ring, getter in zip(member.rings, plan.per_class, strict=True):
            ring.append(ts_ms, getter(row))
        if plan.leader_changes >= 0:
            v = row[plan.leader_changes]
            if v == v and (not member.leader_log or member.leader_log[-1][1] != v):
                member.leader_log.append((ts_ms, v))

    def _bind(self, table: Any) -> Member | None:
        """A new table: a member if its series include etcd's, else remembered as not etcd."""
        key = id(table)
        self._table_refs[key] = table
        up_labels: Labels | None = None
        etcd = False
        for sid in range(len(table)):
            name, labels = table.resolve(sid)
            if name == "up" and up_labels is None:
                up_labels = labels
            elif _is_etcd_name(name):
                etcd = True
        if up_labels is None or not etcd:
            self._tables[key] = None
            self._not_etcd[key] = len(table)
            return None
        self._not_etcd.pop(key, None)
        labels = tuple((k, v) for k, v in up_labels if k not in self.drop_labels)
        member = self.members.get(labels)
        if member is None:
            rings = (RingClass(self.retention[0]), RingClass(self.retention[1]), RingClass(self.retention[2]))
            member = Member(labels=labels, instance=dict(labels).get("instance", ""), rings=rings)
            self.members[labels] = member
        self._tables[key] = member
        return member

    def _slot(self, member: Member, key: tuple[str, ...], kind: str, body: Labels) -> int:
        got = member.slots.get(key)
        if got is not None:
            return got[0]
        cls = 2 if kind in _LONG else 1 if kind in _MID else 0
        row = len(member.slots)
        col = member.rings[cls].add_column()
        member.slots[key] = (row, cls, col)
        member.row_cols[cls].append(row)
        member.body_labels[row] = body
        member.prev.append(NAN)
        member.since.append(0)
        member.kinds.add(kind)
        member.plan_ids = None
        member.index = None
        return row

    def _classify(self, member: Member, table: Any) -> None:
        slot, summ = member.sid_slot, member.sid_sum
        for sid in range(member.known, len(table)):
            s = s2 = -1
            name, labels = table.resolve(sid)
            kind = _SCALARS.get(name)
            d = dict(labels)
            if kind is not None:
                s = self._slot(member, (kind,), kind, ())
            elif name in _HISTOGRAMS:
                kind = _HISTOGRAMS[name]
                le = d.get("le", "")
                if kind == "grpc_slow":
                    if d.get("grpc_type") == "unary" and d.get("grpc_method") != "Defragment":
                        body = (("grpc_method", d.get("grpc_method", "")), ("grpc_service", d.get("grpc_service", "")))
                        s = self._slot(member, (kind, body[0][1], body[1][1], le), kind, body)
                elif kind == "rtt":
                    s = self._slot(member, (kind, d.get("To", ""), le), kind, (("To", d.get("To", "")),))
                else:
                    s = self._slot(member, (kind, le), kind, ())
            elif name == "grpc_server_handled_total":
                body = (("grpc_method", d.get("grpc_method", "")), ("grpc_service", d.get("grpc_service", "")))
                s2 = self._slot(member, ("grpc_all", body[0][1], body[1][1]), "grpc_all", body)
                s = self._slot(member, ("grpc_err", body[0][1], body[1][1]), "grpc_err", body) \
                    if d.get("grpc_code") in _GRPC_ERRORS else s2
            elif name == "etcd_network_peer_sent_failures_total":
                s = self._slot(member, ("peer_fail", d.get("To", "")), "peer_fail", (("To", d.get("To", "")),))
            elif name == "etcd_server_version":
                v = d.get("server_version", "")
                s = self._slot(member, ("version", v), "version", (("server_version", v),))
            slot.append(s)
            summ.append(s2)
        member.known = len(table)

    # -- clusters ----------------------------------------------------------------------------

    def clusters(self) -> list[Cluster]:
        groups: dict[Labels, list[Member]] = {}
        for m in self.members.values():
            if self.group_by:
                d = dict(m.labels)
                key = tuple((k, d[k]) for k in sorted(self.group_by) if k in d)
            else:
                key = tuple((k, v) for k, v in m.labels if k != "instance")
            groups.setdefault(key, []).append(m)
        return [Cluster(k, sorted(v, key=lambda m: m.instance)) for k, v in sorted(groups.items())]

    def forget_gone(self, now_ms: int) -> None:
        """Members whose ``up`` has been stale or missing beyond the lookback (a target that went
        away), and tables no batch came from for ten minutes."""
        for key, m in list(self.members.items()):
            if now_ms - m.up_ts > LOOKBACK + 60_000:
                del self.members[key]
        alive = set(map(id, self.members.values()))
        horizon = time.monotonic() - 600
        for tkey in list(self._table_refs):
            tm = self._tables.get(tkey)
            if (tm is not None and id(tm) not in alive) or self._seen.get(tkey, 0) < horizon:
                for d in (self._tables, self._table_refs, self._not_etcd, self._seen):
                    d.pop(tkey, None)

    # -- evaluation --------------------------------------------------------------------------

    def evaluate(self, now: float | None = None) -> None:
        t0 = time.perf_counter()
        now = time.time() if now is None else now
        at = int(now * 1000)
        for m in self.members.values():
            for ring in m.rings:
                ring.evict(at)
        self.forget_gone(at)
        results: dict[tuple[int, Labels], float] = {}
        self.not_evaluable = {}
        self._qcache = {}
        self._qnone = set()
        for cluster in self.clusters():
            kinds: set[str] = set().union(*(m.kinds for m in cluster.members))
            for i, rule in enumerate(self.rules):
                if not all(n in kinds for n in rule.needs):
                    self.not_evaluable.setdefault(cluster.key, []).append(f"{rule.alert} ({rule.severity})")
                    continue
                for labels, value in _EVALUATORS[rule.kind](self, cluster, rule, at):
                    results[(i, labels)] = value
        # alert states, as Prometheus' alerting rule Eval
        for key, value in results.items():
            alert = self.alerts.get(key)
            if alert is None:
                alert = self.alerts[key] = Alert(key[0], key[1], now, value)
            alert.value = value
            if alert.state == "pending" and now - alert.active_at >= self.rules[key[0]].for_s:
                alert.state = "firing"
                alert.fired_at = now
            self.resolved.pop(key, None)
        for key in [k for k in self.alerts if k not in results]:
            gone = self.alerts.pop(key)
            if gone.state == "firing":  # resolved: sent to Alertmanager as such for a while
                gone.state, gone.resolved_at = "inactive", now
                self.resolved[key] = gone
        for key in [k for k, a in self.resolved.items() if now - a.resolved_at > RESOLVED_RETENTION]:
            del self.resolved[key]
        self.last_eval = now
        self.eval_seconds += time.perf_counter() - t0

    # -- outputs -----------------------------------------------------------------------------

    def alert_labels(self, alert: Alert) -> dict[str, str]:
        """An alert's labels: its series', the rule's, ``alertname``."""
        rule = self.rules[alert.rule]
        labels = dict(alert.labels)
        labels.update(rule.labels)
        labels["alertname"] = rule.alert
        return labels

    def notifications(self, now: float, resend_delay: float = RESEND_DELAY) -> list[dict[str, Any]]:
        """The alerts to send to Alertmanager now (API v2 bodies), as Prometheus' rule manager picks
        them: firing alerts not sent for ``resend_delay`` (its ``--rules.alert.resend-delay``), and
        resolved ones (``endsAt`` their resolution) until 15 minutes after; ``endsAt`` of a firing
        alert is four times max(resend delay, evaluation interval) ahead. External labels are added
        where the alert lacks them."""
        out = []
        delta = max(resend_delay, self.interval)
        for alert in [*self.alerts.values(), *self.resolved.values()]:
            if alert.state == "pending":
                continue
            if not (alert.resolved_at > alert.last_sent or alert.last_sent + resend_delay < now):
                continue
            alert.last_sent = now
            alert.valid_until = now + 4 * delta
            labels = self.alert_labels(alert)
            for k, v in self.external_labels:
                labels.setdefault(k, v)
            rule = self.rules[alert.rule]
            out.append({
                "labels": dict(sorted(labels.items())),
                "annotations": {k: expand_template(v, self.alert_labels(alert), alert.value) for k, v in rule.annotations},
                "startsAt": _rfc3339(alert.fired_at),
                "endsAt": _rfc3339(alert.resolved_at or alert.valid_until),
            })
        return out

    def alert_series(self) -> Batch | None:
        """The last evaluation's ``ALERTS`` and ``ALERTS_FOR_STATE`` samples, as Prometheus' rule
        group writes them: for each pending or firing alert, ``ALERTS{alertname, alertstate, the
        alert's labels} 1`` and ``ALERTS_FOR_STATE{alertname, the alert's labels}`` = its activeAt
        in whole seconds; a staleness marker for each such series of the evaluation before that is
        gone now (a resolved alert, or a pending one now firing). External labels are added, as
        remote write adds them to scraped series. None: nothing to write."""
        if not self.last_eval:
            return None
        if self._alert_table is None or len(self._alert_table) > 4 * len(self._alert_prev) + 1000:
            self._alert_table = SeriesTable()  # (a new table now and then: old alerts' series go)
            self._alert_table.shard_key = 0
        table = self._alert_table
        ts = int(self.last_eval * 1000)
        out = Batch(table)
        now: set[tuple[str, Labels]] = set()
        for alert in self.alerts.values():
            rule = self.rules[alert.rule]
            labels = dict(alert.labels)
            labels.update(rule.labels)
            labels["alertname"] = rule.alert
            labels.update(self.external_labels)
            for_state = tuple(sorted(labels.items()))
            labels["alertstate"] = alert.state
            alerts = tuple(sorted(labels.items()))
            for name, series, value in (("ALERTS", alerts, 1.0),
                                        ("ALERTS_FOR_STATE", for_state, float(math.floor(alert.active_at)))):
                now.add((name, series))
                out.append(table.add(name, series), value, ts)
        for name, series in sorted(self._alert_prev - now):
            out.append(table.add(name, series), STALE_NAN, ts)
        self._alert_prev = now
        return out if len(out) else None

    def alerts_json(self) -> list[dict[str, Any]]:
        out = []
        for alert in sorted(self.alerts.values(), key=lambda a: (self.rules[a.rule].alert, a.labels)):
            rule = self.rules[alert.rule]
            labels = dict(alert.labels)
            labels.update(rule.labels)
            labels["alertname"] = rule.alert
            out.append({
                "labels": dict(sorted(labels.items())),
                "annotations": {k: expand_template(v, labels, alert.value) for k, v in rule.annotations},
                "state": alert.state,
                "activeAt": _rfc3339(alert.active_at),
                "value": _go_e(alert.value),
            })
        return out

    def firing(self, cluster: Cluster) -> list[str]:
        keys = set(cluster.key)
        names = []
        for a in self.alerts.values():
            if a.state == "firing" and keys <= set(a.labels):
                r = self.rules[a.rule]
                names.append(f"{r.alert} ({r.severity})")
        return sorted(set(names))


def _rfc3339(t: float) -> str:
    ms = round(t * 1000)
    base = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(ms // 1000))
    frac = f"{ms % 1000:03d}".rstrip("0")
    return f"{base}.{frac}Z" if frac else f"{base}Z"


def _go_e(v: float) -> str:
    """strconv.FormatFloat(v, 'e', -1, 64): the shortest exponent form, as Prometheus' API."""
    if math.isnan(v):
        return "NaN"
    if math.isinf(v):
        return "+Inf" if v > 0 else "-Inf"
    for p in range(17):
        s = f"{v:.{p}e}"
        if float(s) == v:
            return s
    return f"{v:.17e}"


# -- the rules' expressions, one small function each ------------------------------------------


def _rate(m: Member, key: tuple[str, ...], at: int, window_ms: int, *, is_rate: bool = True) -> float | None:
    got = m.slots.get(key)
    if got is None:
        return None
    slot, cls, col = got
    ring = m.rings[cls]
    if m.stable(slot, ring):  # rate of an unchanged counter: 0 if there are two samples
        return 0.0 if ring.count_in(at - window_ms, at) >= 2 else None
    lo, hi = ring.rows_in(at - window_ms, at)
    return cast("float | None", kernel_rate(ring.data, ring.width, col, ring.ts, lo, hi, at - window_ms, at, is_rate))


def _instant(m: Member, key: tuple[str, ...], at: int) -> float | None:
    got = m.slots.get(key)
    if got is None:
        return None
    slot, cls, col = got
    if m.last_ts <= at:  # the newest row is the member's latest: its value is prev
        if at - m.last_ts > LOOKBACK:
            return None
        v = m.prev[slot]
        return None if v != v else v
    return m.rings[cls].instant(col, at, LOOKBACK)


def _last_over(m: Member, key: tuple[str, ...], at: int, window_ms: int) -> float | None:
    got = m.slots.get(key)
    if got is None:
        return None
    _, cls, col = got
    return m.rings[cls].last_in(col, at - window_ms, at)


def _window(rule: Rule) -> int:
    return int((rule.window_s or 0) * 1000)


Result = list[tuple[Labels, float]]


def _with(labels: Labels, extra: Labels) -> Labels:
    return tuple(sorted(dict(labels + extra).items()))


def _members_down(eng: HealthEngine, c: Cluster, rule: Rule, at: int) -> Result:
    ups = [v for m in c.members if (v := _instant(m, ("up",), at)) is not None]
    if ups:
        down = float(sum(1 for v in ups if v == 0))
        return [(c.key, down)] if down > 0 else []
    w = _window(rule)
    per_to: dict[str, float] = {}
    for m in c.members:
        for key in _index(m).peer_fail:
            r = _rate(m, key, at, w)
            if r is not None:
                per_to[key[1]] = per_to.get(key[1], 0.0) + r
    n = float(sum(1 for v in per_to.values() if v > 0.01))
    return [(c.key, n)] if n > 0 else []


def _insufficient(eng: HealthEngine, c: Cluster, rule: Rule, at: int) -> Result:
    ups = [v for m in c.members if (v := _instant(m, ("up",), at)) is not None]
    if not ups:
        return []
    healthy = float(sum(1 for v in ups if v == 1))
    return [(c.key, healthy)] if healthy < (len(ups) + 1) / 2 else []


def _no_leader(eng: HealthEngine, c: Cluster, rule: Rule, at: int) -> Result:
    return [(m.labels, 0.0) for m in c.members if _instant(m, ("has_leader",), at) == 0]


def _leader_changes(eng: HealthEngine, c: Cluster, rule: Rule, at: int) -> Result:
    w = _window(rule)
    steps = promql.subquery_steps(at, w, max(1, w // 15))
    assert rule.threshold is not None
    if steps and _leader_changes_still(c, steps[0], at):  # max() the same at every step: increase 0
        return [(c.key, 0.0)] if len(steps) >= 2 and rule.threshold <= 0.0 else []
    ts: list[int] = []
    vs: list[float] = []
    for t in steps:
        got = [v for m in c.members if (v := _instant(m, ("leader_changes",), t)) is not None]
        if got:
            ts.append(t)
            vs.append(max(got))
    inc = promql.extrapolated_rate(ts, vs, at - w, at, is_rate=False)
    return [(c.key, inc)] if inc is not None and inc >= rule.threshold else []


def _leader_changes_still(c: Cluster, first_step: int, at: int) -> bool:
    """Every member that has the counter had one value, not NaN, from before the subquery's
    first step through its last row (within the lookback of ``at``), with no gap in its rows longer
    than the lookback since that value began: each step's instant value is that value, for every
    such member."""
    found = False
    for m in c.members:
        got = m.slots.get(("leader_changes",))
        if got is None:
            continue
        slot = got[0]
        v = m.prev[slot]
        if (v != v or m.since[slot] > first_step or m.last_ts > at or at - m.last_ts > LOOKBACK
                or m.gap_ts > m.since[slot]):
            return False
        found = True
    return found


def _failed_ratio(eng: HealthEngine, m: Member, key: tuple[str, ...], at: int, w: int) -> float | None:
    """``100 * rate(failed[w]) / rate(all[w])`` of one member's method (cached per evaluation)."""
    ck = (id(m), key, w)
    if ck in eng._qcache:
        got = eng._qcache[ck]
        return None if got != got and ck in eng._qnone else got
    value = None
    num = _rate(m, key, at, w)
    den = _rate(m, ("grpc_all", *key[1:]), at, w)
    if num is not None and den is not None:
        value = 100 * num / den if den else (math.nan if num == 0 else math.inf)
    eng._qcache[ck] = math.nan if value is None else value
    if value is None:
        eng._qnone.add(ck)
    return value


def _failed_grpc(eng: HealthEngine, c: Cluster, rule: Rule, at: int) -> Result:
    out: Result = []
    w = _window(rule)
    assert rule.threshold is not None
    for m in c.members:
        index = _index(m)
        if not index.grpc or _group_stable(m, index.grpc_get, m.rings[m.slots[index.grpc[0]][1]]):
            continue  # no failures in the ring: 0 % (or 0/0) for every method
        for key in index.grpc:
            got = m.slots[key]
            if m.stable(got[0], m.rings[got[1]]):  # no failures in the ring: 0 % (or 0/0)
                continue
            value = _failed_ratio(eng, m, key, at, w)
            if value is not None and value > rule.threshold:
                out.append((_with(m.labels, (("grpc_method", key[1]), ("grpc_service", key[2]))), value))
    return out


def _quantile(eng: HealthEngine, m: Member, kind: str, group: tuple[str, ...],
              buckets: list[tuple[float, tuple[str, ...]]], at: int, w: int) -> float:
    ck = (id(m), kind, group, w)
    got = eng._qcache.get(ck)
    if got is not None:
        return got
    q = math.nan
    ring = m.rings[m.slots[buckets[0][1]][1]]
    index = _index(m)
    if not _group_stable(m, index.hist_get[(kind, group)], ring):  # (every bucket unchanged: no observations)
        cols, les = index.hist_cols[(kind, group)]
        lo, hi = ring.rows_in(at - w, at)
        q = kernel_quantile(0.99, ring.data, ring.width, cols, les, ring.ts, lo, hi, at - w, at)
    eng._qcache[ck] = q
    return q


def _histogram_rule(kind: str, extra_names: tuple[str, ...]) -> Any:
    def evaluate(eng: HealthEngine, c: Cluster, rule: Rule, at: int) -> Result:
        out: Result = []
        w = _window(rule)
        assert rule.threshold is not None
        for m in c.members:
            for g, buckets in _index(m).hist.get(kind, {}).items():
                q = _quantile(eng, m, kind, g, buckets, at, w)
                if kind in ("fsync", "commit"):
                    m.stats[f"p99_{kind}"] = q
                if q > rule.threshold:
                    out.append((_with(m.labels, tuple(zip(extra_names, g, strict=True))), q))
        return out

    return evaluate


def _failed_proposals(eng: HealthEngine, c: Cluster, rule: Rule, at: int) -> Result:
    assert rule.threshold is not None
    out: Result = []
    for m in c.members:
        r = _rate(m, ("proposals_failed",), at, _window(rule))
        if r is not None and r > rule.threshold:
            out.append((m.labels, r))
    return out


def _quota(eng: HealthEngine, c: Cluster, rule: Rule, at: int) -> Result:
    assert rule.threshold is not None
    out: Result = []
    for m in c.members:
        db = _last_over(m, ("db_total",), at, _window(rule))
        quota = _last_over(m, ("quota",), at, _window(rule))
        if db is None or quota is None:
            continue
        value = db / quota * 100 if quota else math.nan
        m.stats["db_used_pct"] = value
        if value > rule.threshold:
            out.append((m.labels, value))
    return out


def _growth(eng: HealthEngine, c: Cluster, rule: Rule, at: int) -> Result:
    out: Result = []
    w = _window(rule)
    for m in c.members:
        got = m.slots.get(("db_total",))
        quota = _instant(m, ("quota",), at)
        if got is None or quota is None:
            continue
        ring = m.rings[got[1]]
        if m.stable(got[0], ring) and ring.count_in(at - w, at) >= 2:  # predict_linear of a constant
            p: float | None = m.prev[got[0]]
            if p is not None and math.isinf(p):
                p = math.nan
        else:
            if m.fit is None or m.fit.col != got[2]:
                m.fit = Fit(got[2], 0)
            lo, hi = ring.rows_in(at - w, at)
            m.fit.move(ring, lo, hi)
            if m.fit.odd:
                ts, vs = ring.select(got[2], at - w, at)
                p = promql.predict_linear(ts, vs, at, 4 * 60 * 60)
            else:
                p = m.fit.predict(at, 4 * 60 * 60)
        if p is not None and p > quota:
            out.append((m.labels, p))
    return out


def _fragmentation(eng: HealthEngine, c: Cluster, rule: Rule, at: int) -> Result:
    assert rule.threshold is not None
    out: Result = []
    for m in c.members:
        in_use = _last_over(m, ("db_in_use",), at, _window(rule))
        total = _last_over(m, ("db_total",), at, _window(rule))
        now_in_use = _instant(m, ("db_in_use",), at)
        if in_use is None or total is None or now_in_use is None:
            continue
        ratio = in_use / total if total else math.nan
        if ratio < rule.threshold and now_in_use > 104857600:
            out.append((m.labels, ratio))
    return out


def _multiple_leaders(eng: HealthEngine, c: Cluster, rule: Rule, at: int) -> Result:
    n = float(sum(1 for m in c.members if _instant(m, ("is_leader",), at) == 1))
    return [(c.key, n)] if n > 1 else []


def _mixed_versions(eng: HealthEngine, c: Cluster, rule: Rule, at: int) -> Result:
    versions = set()
    for m in c.members:
        for key in _index(m).versions:
            if _instant(m, key, at) is not None:
                versions.add(key[1])
    return [(c.key, float(len(versions)))] if len(versions) > 1 else []


_EVALUATORS: dict[str, Any] = {
    "members_down": _members_down,
    "insufficient_members": _insufficient,
    "no_leader": _no_leader,
    "leader_changes": _leader_changes,
    "failed_grpc": _failed_grpc,
    "grpc_slow": _histogram_rule("grpc_slow", ("grpc_method", "grpc_service")),
    "peer_slow": _histogram_rule("rtt", ("To",)),
    "failed_proposals": _failed_proposals,
    "fsync": _histogram_rule("fsync", ()),
    "commit": _histogram_rule("commit", ()),
    "quota": _quota,
    "growth": _growth,
    "fragmentation": _fragmentation,
    "multiple_leaders": _multiple_leaders,
    "mixed_versions": _mixed_versions,
}

__all__ += ["go_float"]
