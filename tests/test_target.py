"""Targets from discovered addresses: Prometheus' label rules, URL, offsets, replica sharding."""

from __future__ import annotations

import pytest

from relay.config import ClusterConfig, parse_config
from relay.scrape import merge_target_labels, select_for_member
from relay.target import Target, TargetError, build_target, format_duration


def job(extra: str = "") -> object:
    return parse_config(
        "global: {scrape_interval: 30s, scrape_timeout: 10s}\n"
        "scrape_configs:\n  - job_name: etcd\n" + extra
    ).scrape_configs[0]


def test_defaults_instance_and_url() -> None:
    t = build_target("10.0.0.1:2381", {"role": "cp"}, job())  # type: ignore[arg-type]
    assert t is not None
    assert t.url == "http://10.0.0.1:2381/metrics"
    assert t.labels == (("instance", "10.0.0.1:2381"), ("job", "etcd"), ("role", "cp"))
    assert t.scrape_interval == 30 and t.scrape_timeout == 10


def test_relabel_rewrites_port_drops_meta_and_sets_params() -> None:
    sc = job(
        "    scheme: https\n    metrics_path: /m\n    params: {format: [x, y]}\n"
        "    relabel_configs:\n"
        "      - {source_labels: [__address__], regex: '(.*):2379', target_label: __address__, replacement: '$1:2381'}\n"
        "      - {source_labels: [__meta_etcd_member_name], target_label: member}\n"
        "      - {target_label: __scheme__, replacement: http}\n"
        "      - {target_label: __param_format, replacement: z}\n"
    )
    t = build_target("10.0.0.1:2379", {"__meta_etcd_member_name": "m0"}, sc)  # type: ignore[arg-type]
    assert t is not None
    assert t.url == "http://10.0.0.1:2381/m?format=z&format=y"
    assert dict(t.labels) == {"instance": "10.0.0.1:2381", "job": "etcd", "member": "m0"}
    assert ("__meta_etcd_member_name", "m0") in t.discovered_labels


def test_relabel_drop_and_interval_override() -> None:
    sc = job(
        "    relabel_configs:\n"
        "      - {source_labels: [__address__], regex: 'skip.*', action: drop}\n"
        "      - {target_label: __scrape_interval__, replacement: 1m}\n"
        "      - {target_label: instance, replacement: custom}\n"
    )
    assert build_target("skip:1", {}, sc) is None  # type: ignore[arg-type]
    t = build_target("a:1", {}, sc)  # type: ignore[arg-type]
    assert t is not None and t.scrape_interval == 60 and t.instance == "custom"


def test_bad_address_after_relabel() -> None:
    sc = job("    relabel_configs:\n      - {target_label: __address__, replacement: ''}\n")
    with pytest.raises(TargetError, match="no __address__"):
        build_target("a:1", {}, sc)  # type: ignore[arg-type]


def test_offset_is_stable_and_spread() -> None:
    sc = job()
    targets = [build_target(f"10.0.0.{i}:2381", {}, sc) for i in range(200)]  # type: ignore[arg-type]
    offsets = [t.offset() for t in targets if t is not None]
    assert offsets == [t.offset() for t in targets if t is not None]
    assert all(0 <= o < 30 for o in offsets)
    # spread: every third of the interval gets some targets
    assert all(any(lo <= o < lo + 10 for o in offsets) for lo in (0, 10, 20))


def test_format_duration() -> None:
    assert [format_duration(s) for s in (15, 90, 0.5, 3600, 0)] == ["15s", "1m30s", "500ms", "1h", "0s"]


def _targets(n: int) -> list[Target]:
    sc = job()
    out = [build_target(f"h{i}:2381", {}, sc) for i in range(n)]  # type: ignore[arg-type]
    return [t for t in out if t is not None]


@pytest.mark.parametrize("rf", [1, 2])
def test_replica_sharding_covers_every_target_rf_times(rf: int) -> None:
    targets = _targets(300)
    counts = {t.key: 0 for t in targets}
    for member in range(3):
        cluster = ClusterConfig(members_count=3, member_num=member, replication_factor=rf)
        for t in targets:
            if select_for_member(t, cluster):
                counts[t.key] += 1
    assert set(counts.values()) == {rf}


def test_merge_target_labels_conflicts() -> None:
    target = (("instance", "a:1"), ("job", "etcd"))
    out = merge_target_labels("m", (("job", "inner"), ("x", "1")), target, honor_labels=False)
    assert out == {"__name__": "m", "job": "etcd", "exported_job": "inner", "instance": "a:1", "x": "1"}
    out = merge_target_labels("m", (("job", "inner"),), target, honor_labels=True)
    assert out == {"__name__": "m", "job": "inner", "instance": "a:1"}
    out = merge_target_labels("m", (("job", "a"), ("exported_job", "b")), target, honor_labels=False)
    # as Prometheus: the exposed value moves to the first free exported_ name
    assert out["exported_exported_job"] == "a" and out["exported_job"] == "b" and out["job"] == "etcd"


def test_empty_metrics_path_label_falls_back_to_the_default_path() -> None:
    t = build_target("a:1", {"__metrics_path__": ""}, job("    metrics_path: /m\n"))  # type: ignore[arg-type]
    assert t is not None and t.url == "http://a:1/metrics"
    t = build_target("a:1", {"__metrics_path__": "/x"}, job("    metrics_path: /m\n"))  # type: ignore[arg-type]
    assert t is not None and t.url == "http://a:1/x"
