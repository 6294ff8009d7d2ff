"""End to end with real parts: etcd 3.5.1 members -> `relay run` (a subprocess) -> VictoriaMetrics."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import orjson
import pytest

from relay.devtools.localenv import EtcdCluster, PrometheusReceiver, VictoriaMetrics, free_ports

pytestmark = [pytest.mark.services, pytest.mark.slow]


def run_relay(config: Path, tmp_path: Path, duration: float, *extra: str) -> dict:
    stats = tmp_path / "stats.json"
    proc = subprocess.run(
        [sys.executable, "-m", "relay.cli", "run", "--config", str(config), "--listen", f"127.0.0.1:{free_ports(1)[0]}",
         "--duration", str(duration), "--stats-file", str(stats), "--queue-dir", str(tmp_path / "queue"), *extra],
        capture_output=True,
        text=True,
        timeout=duration + 60,
    )
    assert proc.returncode == 0, proc.stderr
    result: dict = orjson.loads(stats.read_bytes())
    return result


def test_etcd_members_reach_victoria_metrics_and_prometheus(
    etcd_cluster: EtcdCluster, victoria_metrics: VictoriaMetrics, prometheus_receiver: PrometheusReceiver,
    tmp_path: Path
) -> None:
    targets = [m.metrics_target for m in etcd_cluster.members]
    config = tmp_path / "relay.yml"
    config.write_text(
        "global:\n  scrape_interval: 1s\n  scrape_timeout: 1s\n"
        "scrape_configs:\n  - job_name: e2e-etcd\n    static_configs:\n"
        f"      - targets: {orjson.dumps(targets).decode()}\n"
        f"remote_write:\n  - url: {victoria_metrics.write_url}\n"
        "    queue_config: {batch_send_deadline: 500ms}\n"
        f"  - url: {prometheus_receiver.write_url}\n"
        "    queue_config: {batch_send_deadline: 500ms}\n"
    )
    stats = run_relay(config, tmp_path, 5)
    rw, rw_prom = stats["remote_write"]
    assert rw_prom["sent"] == rw["sent"] and rw_prom["dropped"] == {}
    prom_leaders = prometheus_receiver.query('etcd_server_has_leader{job="e2e-etcd"}')
    assert sorted(r["metric"]["instance"] for r in prom_leaders) == sorted(targets)
    assert rw["dropped"] == {} and rw["pending"] == 0
    assert stats["targets"] == 3 and stats["scrapes"] >= 9

    leaders = victoria_metrics.query('etcd_server_has_leader{job="e2e-etcd"}')
    assert sorted(r["metric"]["instance"] for r in leaders) == sorted(targets)
    assert all(r["value"][1] == "1" for r in leaders)
    ups = victoria_metrics.query('up{job="e2e-etcd"}')
    assert len(ups) == 3 and all(r["value"][1] == "1" for r in ups)
    # Every sample the relay says it sent is stored, and nothing more.
    assert rw["sent"] > 3 * 1000
    assert victoria_metrics.sample_count('{job="e2e-etcd"}') == rw["sent"]
