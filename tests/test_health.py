"""relay.health: the PromQL functions against hand-computed Prometheus results, the rule table,
the engine on members fed through the real parser, the config section and the outputs."""

from __future__ import annotations

import math
import time

import anyio
import orjson
import pytest

from relay._exceptions import ConfigError
from relay.batch import Batch
from relay.config import parse_config
from relay.devtools.localenv import VictoriaMetrics
from relay.health import HealthEngine, Override, apply_overrides, default_rules
from relay.health import promql as pq
from relay.health.fleet import alerts_response, fleet_response, fleet_rows
from relay.health.rules import expand_template
from relay.http.client import ClientPool
from relay.metrics import SelfMetrics
from relay.remote.writer import RemoteWriter
from tests.healthkit import FakeMember, etcd_body, fast, slow

S = 1000  # ms per second
T0 = 1_800_000_000_000  # a round epoch in ms (a multiple of every subquery step used here)


# -- promql ---------------------------------------------------------------------------------


def test_rate_extrapolates_to_the_boundaries() -> None:
    # samples every 15 s, 1/s; range [10 s, 70 s]: 5 s to the start and 10 s to the end are both
    # under 1.1 x 15 s, so the 45 s sampled are stretched to the full 60 s
    ts = [15 * S, 30 * S, 45 * S, 60 * S]
    vs = [100.0, 115.0, 130.0, 145.0]
    assert pq.extrapolated_rate(ts, vs, 10 * S, 70 * S, is_rate=False) == pytest.approx(60.0)
    assert pq.extrapolated_rate(ts, vs, 10 * S, 70 * S) == pytest.approx(1.0)


def test_rate_counts_resets() -> None:
    # 10, 20, 5 (reset: +20), 15 -> 5 + 20 = 25 over exactly the range
    ts = [0, 10 * S, 20 * S, 30 * S]
    assert pq.extrapolated_rate(ts, [10.0, 20.0, 5.0, 15.0], 0, 30 * S, is_rate=False) == pytest.approx(25.0)
    assert pq.extrapolated_rate(ts, [10.0, 20.0, 5.0, 15.0], 0, 30 * S) == pytest.approx(25.0 / 30)


def test_rate_start_gap_half_interval_and_zero_point() -> None:
    ts = [20 * S, 30 * S, 40 * S]
    # 20 s to the start is over 1.1 x 10 s: extrapolate half an interval (5 s): 20 * 25 / 20
    assert pq.extrapolated_rate(ts, [100.0, 110.0, 120.0], 0, 40 * S, is_rate=False) == pytest.approx(25.0)
    # counter would reach zero 1 s before its first sample: extrapolate only that far: 20 * 21 / 20
    assert pq.extrapolated_rate(ts, [1.0, 11.0, 21.0], 0, 40 * S, is_rate=False) == pytest.approx(21.0)
    assert pq.extrapolated_rate(ts[:1], [1.0], 0, 40 * S) is None


def test_histogram_quantile_interpolates() -> None:
    b = [(0.1, 10.0), (0.5, 60.0), (1.0, 90.0), (math.inf, 100.0)]
    assert pq.histogram_quantile(0.99, b) == 1.0  # rank in +Inf: the highest finite bound
    assert pq.histogram_quantile(0.5, b) == pytest.approx(0.1 + 0.4 * 40 / 50)
    assert pq.histogram_quantile(0.05, list(reversed(b))) == pytest.approx(0.05)  # order does not matter
    # non-monotonic counts are forced up: 0.5 -> 10, rank 10 is reached in the first bucket
    assert pq.histogram_quantile(0.5, [(0.1, 10.0), (0.5, 8.0), (math.inf, 20.0)]) == pytest.approx(0.1)
    assert math.isnan(pq.histogram_quantile(0.5, [(0.1, 1.0), (0.5, 2.0)]))  # no +Inf
    assert math.isnan(pq.histogram_quantile(0.5, [(0.1, 0.0), (math.inf, 0.0)]))  # no observations
    # same bounds are merged: (0.1: 2), (+Inf: 2); rank 1 of 2 in the first bucket
    assert pq.histogram_quantile(0.5, [(0.1, 1.0), (0.1, 1.0), (math.inf, 2.0)]) == pytest.approx(0.05)


def test_predict_linear_least_squares() -> None:
    at = 100 * S
    ts = [70 * S, 80 * S, 90 * S, 100 * S]
    assert pq.predict_linear(ts, [10.0, 20.0, 30.0, 40.0], at, 100) == pytest.approx(140.0)
    # x = -30..0, y = 0, 10, 10, 30: slope 450 / 500 = 0.9, intercept 12.5 + 0.9 * 15 = 26
    assert pq.predict_linear(ts, [0.0, 10.0, 10.0, 30.0], at, 10) == pytest.approx(35.0)
    assert pq.predict_linear(ts, [5.0] * 4, at, 10) == 5.0
    assert pq.predict_linear(ts[:1], [5.0], at, 10) is None


def test_subquery_steps_are_absolute_multiples() -> None:
    assert pq.subquery_steps(125 * S, 60 * S, 20 * S) == [80 * S, 100 * S, 120 * S]
    assert pq.subquery_steps(120 * S, 60 * S, 20 * S) == [60 * S, 80 * S, 100 * S, 120 * S]


def test_instant_lookback_and_staleness() -> None:
    ts = [0, 10 * S, 20 * S]
    assert pq.instant(ts, [1.0, 2.0, 3.0], [False, False, False], 25 * S) == 3.0
    assert pq.instant(ts, [1.0, 2.0, 3.0], [False, False, True], 25 * S) is None
    assert pq.instant(ts, [1.0, 2.0, 3.0], [False] * 3, 20 * S + pq.LOOKBACK_MS + 1) is None
    assert pq.select_range(ts, [1.0, math.nan, 3.0], 0, 20 * S) == ([0, 20 * S], [1.0, 3.0])


# -- rules -----------------------------------------------------------------------------------


def test_rule_table_follows_the_mixin_file() -> None:
    rules = default_rules()
    assert len(rules) == 17
    names = {(r.alert, r.severity) for r in rules}
    assert ("etcdHighFsyncDurations", "critical") in names and ("etcdMixedVersions", "warning") in names
    fsync = {r.severity: r for r in rules if r.alert == "etcdHighFsyncDurations"}
    assert (fsync["warning"].threshold, fsync["critical"].threshold, fsync["critical"].for_s) == (0.5, 1.0, 600.0)
    down = next(r for r in rules if r.alert == "etcdMembersDown")
    assert (down.severity, down.for_s, down.window_s) == ("warning", 1200.0, 120.0)
    out = apply_overrides(rules, [Override("etcdHighFsyncDurations", "critical", 300.0, 120.0, 0.8)])
    fs = {r.severity: r for r in out if r.alert == "etcdHighFsyncDurations"}
    assert (fs["critical"].for_s, fs["critical"].window_s, fs["critical"].threshold) == (300.0, 120.0, 0.8)
    assert fs["warning"] == fsync["warning"]
    both = apply_overrides(rules, [Override("etcdHighFsyncDurations", for_s=1.0)])
    assert {r.for_s for r in both if r.alert == "etcdHighFsyncDurations"} == {1.0}
    with pytest.raises(ValueError, match="no alert 'etcdNope'"):
        apply_overrides(rules, [Override("etcdNope")])
    with pytest.raises(ValueError, match="no numeric threshold"):
        apply_overrides(rules, [Override("etcdNoLeader", threshold=1.0)])
    with pytest.raises(ValueError, match="no range"):
        apply_overrides(rules, [Override("etcdNoLeader", window_s=10.0)])


def test_annotation_templates() -> None:
    labels = {"job": "etcd", "instance": "a:1"}
    assert expand_template('cluster "{{ $labels.job }}": {{ $value }}s on {{ $labels.instance }}', labels, 1.5) == \
        'cluster "etcd": 1.5s on a:1'
    assert expand_template("{{ $value | humanizePercentage }}", labels, 0.123456) == "12.35%"
    assert expand_template("{{ $value }}", labels, 2147483648.0) == "2.147483648e+09"


# -- engine ----------------------------------------------------------------------------------


def _engine(**for_s: float) -> HealthEngine:
    overrides = [Override(alert, for_s=v) for alert, v in for_s.items()]
    return HealthEngine(apply_overrides(default_rules(), overrides))


def _feed(engine: HealthEngine, members: list[FakeMember], bodies: list[bytes | None], start: int, n: int,
          step: int = 15 * S, evaluate: bool = True) -> int:
    t = start
    for _ in range(n):
        for m, body in zip(members, bodies, strict=True):
            engine.ingest(m.scrape(t, body))
        if evaluate:
            engine.evaluate((t + 1) / 1000)
        t += step
    return t


def _active(engine: HealthEngine) -> dict[tuple[str, str, str], str]:
    return {(a["labels"]["alertname"], a["labels"]["severity"], a["labels"].get("instance", "")): a["state"]
            for a in engine.alerts_json()}


def test_no_leader_pending_then_firing_then_gone() -> None:
    eng = _engine()
    ms = [FakeMember(f"m{i}:2379") for i in range(3)]
    ok = etcd_body()
    t = _feed(eng, ms, [ok, ok, etcd_body(has_leader=0)], T0, 2)
    assert _active(eng) == {("etcdNoLeader", "critical", "m2:2379"): "pending"}
    t = _feed(eng, ms, [ok, ok, etcd_body(has_leader=0)], t, 4)  # 60 s after activeAt: for 1m is met
    assert _active(eng) == {("etcdNoLeader", "critical", "m2:2379"): "firing"}
    alert = eng.alerts_json()[0]
    assert alert["labels"] == {"alertname": "etcdNoLeader", "instance": "m2:2379", "job": "etcd", "severity": "critical"}
    assert alert["annotations"]["description"] == 'etcd cluster "etcd": member m2:2379 has no leader.'
    assert alert["value"] == "0e+00"
    _feed(eng, ms, [ok, ok, ok], t, 1)
    assert _active(eng) == {}


def test_members_down_and_insufficient_members() -> None:
    eng = _engine(etcdMembersDown=0, etcdInsufficientMembers=0)
    ms = [FakeMember(f"m{i}:2379") for i in range(3)]
    ok = etcd_body()
    t = _feed(eng, ms, [ok, ok, ok], T0, 2)
    assert _active(eng) == {}
    t = _feed(eng, ms, [ok, ok, None], t, 1)
    assert _active(eng) == {("etcdMembersDown", "warning", ""): "firing"}
    assert eng.alerts_json()[0]["value"] == "1e+00"
    t = _feed(eng, ms, [ok, None, None], t, 1)
    assert _active(eng) == {("etcdMembersDown", "warning", ""): "firing",
                            ("etcdInsufficientMembers", "critical", ""): "firing"}
    assert {a["labels"]["alertname"]: a["value"] for a in eng.alerts_json()} == {
        "etcdMembersDown": "2e+00", "etcdInsufficientMembers": "1e+00"}
    # a target that goes away (staleness markers, up included) is not a member that is down
    for m in ms[1:]:
        eng.ingest(m.gone(t))
    eng.ingest(ms[0].scrape(t, ok))
    eng.evaluate((t + 1) / 1000)
    assert _active(eng) == {}
    assert fleet_rows(eng, (t + 1) / 1000)[0]["members_up"] == 1


def test_fsync_quantile_thresholds_and_fleet_row() -> None:
    eng = _engine(etcdHighFsyncDurations=0)
    ms = [FakeMember(f"m{i}:2379") for i in range(3)]
    t = T0
    for k in range(25):  # 6 minutes: member 1 gets slow fsyncs (2-4 s) from the start
        bodies = [etcd_body(fsync=fast(100 + 10 * k), is_leader=1), etcd_body(fsync=slow(100 + 10 * k, 0.5)),
                  etcd_body(fsync=fast(100 + 10 * k))]
        t = _feed(eng, ms, list(bodies), t, 1)
    act = _active(eng)
    assert act == {("etcdHighFsyncDurations", "warning", "m1:2379"): "firing",
                   ("etcdHighFsyncDurations", "critical", "m1:2379"): "firing"}
    # all new observations are slow: p99 is inside 2.048..4.096, interpolated
    value = float(eng.alerts_json()[0]["value"])
    assert 2.048 < value < 4.096
    row = fleet_rows(eng, (t - 15 * S + 1) / 1000)[0]
    assert row["members_up"] == 3 and row["leader"] == "m0:2379"
    assert row["p99_fsync"] == pytest.approx(value)
    assert "etcdGRPCRequestsSlow (critical)" in list(row["not_evaluable"])  # type: ignore[call-overload]


def test_failed_grpc_leader_changes_multiple_leaders_mixed_versions() -> None:
    eng = _engine(etcdHighNumberOfFailedGRPCRequests=0, etcdHighNumberOfLeaderChanges=0, etcdMultipleLeaders=0,
                  etcdMixedVersions=0)
    ms = [FakeMember(f"m{i}:2379") for i in range(3)]
    t = T0
    for k in range(30):
        grpc = {("Range", "OK"): 100.0 * k, ("Range", "Unavailable"): 10.0 * k, ("Put", "OK"): 5.0 * k}
        bodies = [etcd_body(grpc=grpc, is_leader=1, leader_changes=1 + k // 3),
                  etcd_body(is_leader=1, version="3.4.23"), etcd_body()]
        t = _feed(eng, ms, bodies, t, 1)  # type: ignore[arg-type]
    act = _active(eng)
    assert act[("etcdHighNumberOfFailedGRPCRequests", "critical", "m0:2379")] == "firing"
    assert act[("etcdHighNumberOfFailedGRPCRequests", "warning", "m0:2379")] == "firing"
    assert act[("etcdHighNumberOfLeaderChanges", "warning", "")] == "firing"
    assert act[("etcdMultipleLeaders", "critical", "")] == "firing"
    assert act[("etcdMixedVersions", "warning", "")] == "firing"
    failed = next(a for a in eng.alerts_json() if a["labels"]["alertname"] == "etcdHighNumberOfFailedGRPCRequests")
    assert failed["labels"]["grpc_method"] == "Range" and failed["labels"]["grpc_service"] == "etcdserverpb.KV"
    assert float(failed["value"]) == pytest.approx(100 * 10 / 110)  # 10 failed of 110 per step
    assert len([a for a in eng.alerts_json() if a["labels"].get("grpc_method") == "Put"]) == 0


def test_quota_and_fragmentation_and_growth() -> None:
    eng = _engine(etcdDatabaseQuotaLowSpace=0, etcdDatabaseHighFragmentationRatio=0, etcdExcessiveDatabaseGrowth=0)
    ms = [FakeMember("m0:2379")]
    t = T0
    for k in range(10):
        t = _feed(eng, ms, [etcd_body(db=970e6 + k * 1e6, in_use=200e6, quota=1e9)], t, 1)
    act = _active(eng)
    assert act == {("etcdDatabaseQuotaLowSpace", "critical", "m0:2379"): "firing",
                   ("etcdDatabaseHighFragmentationRatio", "warning", "m0:2379"): "firing",
                   ("etcdExcessiveDatabaseGrowth", "warning", "m0:2379"): "firing"}


def test_odd_bodies_do_not_crash_or_alert() -> None:
    eng = _engine()
    ms = [FakeMember("m0:2379"), FakeMember("m1:2379")]
    nan_body = etcd_body().replace(b"etcd_server_has_leader 1", b"etcd_server_has_leader NaN")
    partial = b"# TYPE etcd_server_has_leader gauge\netcd_server_has_leader 1\n"
    t = T0
    for k in range(10):  # counters going backwards every other scrape
        t = _feed(eng, ms, [nan_body, partial + b"etcd_server_leader_changes_seen_total %d\n" % (k % 2)], t, 1)
    assert _active(eng) == {}
    ne = eng.not_evaluable[(("job", "etcd"),)]
    assert "etcdGRPCRequestsSlow (critical)" in ne


def test_non_etcd_targets_are_ignored() -> None:
    eng = _engine()
    m = FakeMember("node:9100", job="node")
    eng.ingest(m.scrape(T0, b"node_load1 3\n"))
    eng.evaluate(T0 / 1000 + 1)
    assert eng.members == {} and eng.alerts_json() == []


def test_member_state_is_bounded() -> None:
    eng = _engine()
    m = FakeMember("m0:2379")
    t = T0
    for k in range(200):  # 50 minutes at 15 s
        eng.ingest(m.scrape(t, etcd_body(fsync=fast(100 + k), db=1e6 + k)))
        t += 15 * S
    eng.evaluate(t / 1000)
    member = next(iter(eng.members.values()))
    short, mid, long = member.rings
    assert len(short.ts) <= (eng.retention[0] // (15 * S)) + 2
    assert len(mid.ts) <= (eng.retention[1] // (15 * S)) + 2
    assert len(long.ts) == 200  # under the 4 h of the growth prediction
    assert member.nbytes() < 64_000


def test_outputs_escape_and_parse() -> None:
    eng = _engine(etcdNoLeader=0)
    ms = [FakeMember("<b>x</b>:1", job="etcd<script>")]
    _feed(eng, ms, [etcd_body(has_leader=0)], T0, 1)
    page = fleet_response(eng).body.decode()
    assert "<script>" not in page and "&lt;script&gt;" in page
    data = orjson.loads(alerts_response(eng).body)
    assert data["status"] == "success" and data["data"]["alerts"][0]["state"] == "firing"
    assert data["data"]["alerts"][0]["activeAt"].endswith("Z")
    assert orjson.loads(alerts_response(None).body)["data"]["alerts"] == []


# -- config ----------------------------------------------------------------------------------


def test_config_section() -> None:
    cfg = parse_config("""
global: {evaluation_interval: 30s}
etcd_health:
  group_by: [job, cluster]
  overrides:
    - {alert: etcdHighFsyncDurations, severity: critical, for: 5m, window: 2m, threshold: 0.8}
  alertmanagers:
    - static_configs: [{targets: ['127.0.0.1:9093']}]
      timeout: 5s
""")
    h = cfg.etcd_health
    assert h.enabled and h.group_by == ("job", "cluster") and h.evaluation_interval == 30.0
    assert h.overrides == (Override("etcdHighFsyncDurations", "critical", 300.0, 120.0, 0.8),)
    assert h.alertmanagers[0].targets == ("127.0.0.1:9093",) and h.alertmanagers[0].timeout == 5.0
    assert parse_config("").etcd_health.evaluation_interval == 15.0


@pytest.mark.parametrize(("text", "message"), [
    ("etcd_health: {overrides: [{alert: etcdNope}]}", "etcd_health.overrides: no alert 'etcdNope'"),
    ("etcd_health: {overrides: [{alert: etcdNoLeader, threshold: 2}]}", "no numeric threshold"),
    ("etcd_health: {overrides: [{alert: etcdNoLeader, severity: warning}]}", "has no severity 'warning'"),
    ("etcd_health: {overrides: [{alert: etcdHighFsyncDurations, window: 0s}]}", "window: must be greater than 0"),
    ("etcd_health: {overrides: [{alert: etcdHighFsyncDurations, threshold: x}]}", "threshold: must be a number"),
    ("etcd_health: {group_by: [1x]}", "etcd_health.group_by[0]"),
    ("etcd_health: {bogus: 1}", "etcd_health.bogus: unknown key"),
    ("etcd_health: {alertmanagers: [{static_configs: []}]}", "needs at least one target"),
    ("etcd_health: {alertmanagers: [{api_version: v1, static_configs: [{targets: ['a:1']}]}]}", "only v2"),
])
def test_config_errors(text: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message.replace("[", r"\[").replace("]", r"\]")):
        parse_config(text)


def test_off_without_the_section_on_with_it() -> None:
    assert not parse_config("scrape_configs: []").etcd_health.enabled
    assert parse_config("etcd_health: {}").etcd_health.enabled
    assert not parse_config("etcd_health: {enabled: false}").etcd_health.enabled


# -- ALERTS and ALERTS_FOR_STATE ----------------------------------------------------------


def _alert_samples(eng: HealthEngine) -> list[tuple[str, dict[str, str], float, int]]:
    batch = eng.alert_series()
    assert batch is not None
    return sorted(((name, dict(labels), value, ts) for name, labels, value, ts in batch.samples()),
                  key=lambda s: (s[0], sorted(s[1].items())))


def _run_no_leader(eng: HealthEngine, t0: int) -> list[list[tuple[str, dict[str, str], float, int]]]:
    """Pending (2 rounds), firing (4 more), resolved (1): the alert series after each phase."""
    ms = [FakeMember(f"m{i}:2379") for i in range(3)]
    ok, bad = etcd_body(), etcd_body(has_leader=0)
    out = []
    t = t0
    phases: list[tuple[list[bytes | None], int]] = [([ok, ok, bad], 2), ([ok, ok, bad], 4), ([ok, ok, ok], 1)]
    for bodies, n in phases:
        t = _feed(eng, ms, bodies, t, n)
        out.append(_alert_samples(eng))
    return out


def test_alert_series_as_prometheus_writes_them() -> None:
    eng = _engine()
    eng.external_labels = (("region", "eu"),)
    pending, firing, resolved = _run_no_leader(eng, T0)
    base = {"alertname": "etcdNoLeader", "instance": "m2:2379", "job": "etcd", "region": "eu", "severity": "critical"}
    active_at = float((T0 + 1) // 1000)  # activeAt of the first evaluation that found it, in whole seconds
    t_pending, t_firing, t_resolved = T0 + 15 * S + 1, T0 + 5 * 15 * S + 1, T0 + 6 * 15 * S + 1
    assert pending == [("ALERTS", {**base, "alertstate": "pending"}, 1.0, t_pending),
                       ("ALERTS_FOR_STATE", base, active_at, t_pending)]
    assert firing[0] == ("ALERTS", {**base, "alertstate": "firing"}, 1.0, t_firing)
    assert firing[1][:2] == ("ALERTS", {**base, "alertstate": "pending"}) and math.isnan(firing[1][2])  # stale
    assert firing[2] == ("ALERTS_FOR_STATE", base, active_at, t_firing)
    assert [(n, lb) for n, lb, _, _ in resolved] == [("ALERTS", {**base, "alertstate": "firing"}),
                                                     ("ALERTS_FOR_STATE", base)]
    assert all(math.isnan(v) and ts == t_resolved for _, _, v, ts in resolved)
    assert eng.alert_series() is None  # nothing active, nothing gone: nothing to write


@pytest.mark.services
@pytest.mark.anyio
async def test_alert_series_reach_victoria_metrics(victoria_metrics: VictoriaMetrics) -> None:
    eng = _engine()
    t0 = (int(time.time()) // 60 - 10) * 60_000  # ten minutes ago, on a minute
    batches: list[Batch] = []
    ms = [FakeMember(f"m{i}:2379", job="alerts-vm") for i in range(3)]
    ok, bad = etcd_body(), etcd_body(has_leader=0)
    t = t0
    phases: list[tuple[list[bytes | None], int]] = [([ok, ok, bad], 6), ([ok, ok, ok], 1)]
    for bodies, n in phases:
        for _ in range(n):
            t = _feed(eng, ms, bodies, t, 1)
            if (b := eng.alert_series()) is not None:
                batches.append(b)
    pool = ClientPool()
    writer = RemoteWriter(parse_config(f"remote_write:\n  - url: {victoria_metrics.write_url}\n").remote_write[0],
                          pool, SelfMetrics())
    try:
        async with anyio.create_task_group() as tg:
            await tg.start(writer.run)
            for b in batches:
                writer.push(b)
            assert await writer.drain(30)
            tg.cancel_scope.cancel()
    finally:
        await pool.aclose()
    victoria_metrics.flush()
    firing_at = (t0 + 5 * 15 * S + 1) / 1000
    rows = victoria_metrics.query('ALERTS{job="alerts-vm"}', time_s=firing_at)
    assert [r["metric"] for r in rows] == [{"__name__": "ALERTS", "alertname": "etcdNoLeader", "alertstate": "firing",
                                           "instance": "m2:2379", "job": "alerts-vm", "severity": "critical"}]
    (state,) = victoria_metrics.query('ALERTS_FOR_STATE{job="alerts-vm"}', time_s=firing_at)
    assert state["value"][1] == str((t0 + 1) // 1000)
    pending = victoria_metrics.query('ALERTS{job="alerts-vm", alertstate="pending"}', time_s=(t0 + 15 * S + 1) / 1000)
    assert len(pending) == 1
    # the staleness markers end the series: nothing at the resolving evaluation
    assert victoria_metrics.query('ALERTS{job="alerts-vm"}', time_s=(t0 + 6 * 15 * S + 1) / 1000) == []


# -- the kernel's twins ------------------------------------------------------------------------


def test_kernel_twins_agree_with_promql() -> None:
    """The C kernel (when built) and the Python twin give promql's results, bit for bit, on rings
    with gaps (NaN rows) and counter resets; gather sums and tracks change times alike."""
    import random
    from array import array

    from relay import _ext
    from relay.health import _kernel_py

    twins = [_kernel_py] + ([c] if (c := _ext.load("relay.health._kernel_c")) is not None else [])
    rnd = random.Random(17)
    width, rows = 5, 30
    ts = array("q", [T0 + i * 15 * S + rnd.randrange(-500, 500) for i in range(rows)])
    data = array("d")
    level = [0.0] * width
    for _ in range(rows):
        for k in range(width):
            level[k] = 0.0 if rnd.random() < 0.05 else level[k] + rnd.choice((0, 0, 1, 3, 7.5))
            data.append(math.nan if rnd.random() < 0.1 else level[k])
    for lo, hi in ((0, rows), (3, 24), (10, 12), (5, 6)):
        start, end = ts[lo] - 7 * S, ts[hi - 1] + 4 * S
        for k in range(width):
            sel = [(ts[i], data[i * width + k]) for i in range(lo, hi) if data[i * width + k] == data[i * width + k]]
            want = pq.extrapolated_rate([t for t, _ in sel], [v for _, v in sel], start, end)
            assert {tw.rate(data, width, k, ts, lo, hi, start, end, True) for tw in twins} == {want}
        cols, les = array("i", [0, 1, 2, 3, 4]), array("d", [0.1, 0.5, 0.5, 2.0, math.inf])
        got = [tw.quantile(0.99, data, width, cols, les, ts, lo, hi, start, end) for tw in twins]
        pairs = [(le, r) for c, le in zip(cols, les, strict=True)
                 if (r := _kernel_py.rate(data, width, c, ts, lo, hi, start, end, True)) is not None]
        want_q = pq.histogram_quantile(0.99, pairs)
        assert all(g == want_q or (math.isnan(g) and math.isnan(want_q)) for g in got)
    values = array("d", [1.0, 2.0, math.nan, 4.0, 8.0])
    src, dst, first = array("i", [0, 1, 3, 4, 2]), array("i", [0, 1, 1, 2, 3]), array("b", [1, 1, 0, 1, 1])
    rows_out = []
    for tw in twins:
        prev, since = array("d", [1.0, math.nan, 9.0, math.nan]), array("q", [5, 5, 5, 5])
        row = tw.gather(values, src, dst, first, 4, prev, since, 99)
        rows_out.append((row.tolist()[:3], math.isnan(row[3]), since.tolist(), prev.tolist()[:3]))
    assert rows_out[0] == ([1.0, 6.0, 8.0], True, [5, 99, 99, 5], [1.0, 6.0, 8.0])
    assert all(r == rows_out[0] for r in rows_out)


def test_running_fit_matches_predict_linear() -> None:
    from relay.health.engine import Fit
    from relay.health.store import RingClass

    ring = RingClass(3_600_000)
    ring.add_column()
    fit = Fit(0, 0)
    for i in range(200):
        t = T0 + i * 15 * S
        ring.append(t, (float(1_000_000 + 4096 * (i // 3) + (i % 7) * 512),))
        if i % 10 == 9:  # an evaluation: the window slides
            ring.evict(t)
            lo, hi = ring.rows_in(t - 1_800_000, t)
            fit.move(ring, lo, hi)
            ts, vs = ring.select(0, t - 1_800_000, t)
            want = pq.predict_linear(ts, vs, t, 14_400)
            assert want is not None
            assert fit.predict(t, 14_400) == pytest.approx(want, rel=1e-12)
    assert fit.odd == 0
