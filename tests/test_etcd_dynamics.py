"""The relay follows a living etcd cluster (etcd_sd_configs): a member killed and restarted, a leader
change, a member added and removed, with staleness markers for the removed member's series.
Real parts: an etcd 3.5.1 cluster of its own, Prometheus as the receiver (it honours staleness
markers, so a removed member's series vanish at once instead of after 5 minutes)."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

import orjson
import pytest

from relay.devtools.localenv import EtcdCluster, PrometheusReceiver, free_ports, wait_http
from tests.conftest import available

pytestmark = [pytest.mark.services, pytest.mark.slow]


def wait_for(what: str, check: Callable[[], Any], timeout: float = 30.0) -> Any:
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        last = check()
        if last:
            return last
        time.sleep(0.25)
    raise AssertionError(f"timed out waiting for {what}; last: {last!r}")


def test_relay_follows_the_cluster(prometheus_receiver: PrometheusReceiver, tmp_path: Path) -> None:
    with available(lambda: EtcdCluster(3, base_dir=tmp_path / "etcd")) as cluster:
        endpoints = orjson.dumps([m.client_url for m in cluster.members]).decode()
        config = tmp_path / "relay.yml"
        config.write_text(
            "global: {scrape_interval: 1s, scrape_timeout: 900ms}\n"
            "scrape_configs:\n  - job_name: dyn\n"
            f"    etcd_sd_configs: [{{endpoints: {endpoints}, refresh_interval: 1s}}]\n"
            "    relabel_configs:\n      - {source_labels: [__meta_etcd_member_name], target_label: member}\n"
            f"remote_write:\n  - url: {prometheus_receiver.write_url}\n    queue_config: {{batch_send_deadline: 200ms}}\n"
        )
        port = free_ports(1)[0]
        with (tmp_path / "relay.log").open("wb") as log:  # not a pipe nobody reads: it blocks the relay at 64 KiB
            relay = subprocess.Popen(
                [sys.executable, "-m", "relay.cli", "run", "--config", str(config), "--listen", f"127.0.0.1:{port}",
                 "--queue-dir", str(tmp_path / "queue")],
                stdout=subprocess.DEVNULL, stderr=log,
            )
        try:
            wait_http(f"http://127.0.0.1:{port}/-/ready", 20)

            def targets() -> dict[str, dict[str, Any]]:
                data = orjson.loads(urllib.request.urlopen(f"http://127.0.0.1:{port}/targets").read())
                return {t["labels"].get("member", ""): t for t in data["data"]["activeTargets"]}

            def healths() -> dict[str, str]:
                return {k: v["health"] for k, v in targets().items()}

            wait_for("3 members up", lambda: healths() == {"m0": "up", "m1": "up", "m2": "up"})

            # A member killed: its target stays (it is still in the member list) and goes down.
            m1 = cluster.members[1]
            cluster.stop_member(m1, kill=True)
            wait_for("m1 down", lambda: healths().get("m1") == "down")
            assert targets()["m1"]["lastErrorReason"] == "connect"
            cluster.start_member(m1)
            wait_for("m1 up again", lambda: healths().get("m1") == "up", 60)

            # A leader change: kill the leader; another member reports is_leader=1.
            def leaders() -> set[str]:
                rows = prometheus_receiver.query('etcd_server_is_leader{job="dyn"} == 1')
                return {r["metric"]["member"] for r in rows}

            (old_leader,) = wait_for("one leader", lambda: leaders() if len(leaders()) == 1 else None)
            leader = next(m for m in cluster.members if m.name == old_leader)
            cluster.stop_member(leader, kill=True)
            new = wait_for("a new leader", lambda: (leaders() - {old_leader}) or None, 60)
            assert len(new) == 1
            cluster.start_member(leader)
            wait_for("all up", lambda: set(healths().values()) == {"up"}, 60)

            # A member added: discovered at the refresh interval.
            m3 = cluster.add_member()
            wait_for("m3 scraped", lambda: healths().get("m3") == "up", 60)
            wait_for("m3 data", lambda: prometheus_receiver.query('etcd_server_has_leader{member="m3"}'))

            # A member removed: its target goes, and its series get staleness markers, so they
            # vanish from Prometheus at once (without markers they would linger 5 minutes).
            cluster.remove_member(m3)
            wait_for("m3 gone", lambda: "m3" not in healths(), 30)
            wait_for("m3 series stale", lambda: prometheus_receiver.query('etcd_server_has_leader{member="m3"}') == [], 15)
            assert len(prometheus_receiver.query('etcd_server_has_leader{job="dyn"}')) == 3
        finally:
            relay.send_signal(signal.SIGTERM)
            relay.wait(60)
