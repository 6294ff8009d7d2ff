"""Scale-out: several relay replicas share a fleet by a stable hash of each target's labels.

Real parts: `relay sim` serving a few hundred members, three relays as separate processes, one
VictoriaMetrics. Each member is scraped exactly once with R=1 and exactly R times with R=2, and the
replicas together scrape what a single relay does."""

from __future__ import annotations

import collections
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import orjson
import pytest

from relay.devtools.localenv import VictoriaMetrics, free_ports, wait_http

pytestmark = [pytest.mark.services, pytest.mark.slow]

MEMBERS = 240


@pytest.fixture(scope="module")
def fleet(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    folder = tmp_path_factory.mktemp("fleet")
    targets = folder / "targets.json"
    sim = subprocess.Popen(
        [sys.executable, "-m", "relay.cli", "sim", "--members", str(MEMBERS), "--write-targets", str(targets),
         "--duration", "300"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 30
    while not targets.exists() and time.monotonic() < deadline:
        time.sleep(0.1)
    try:
        yield targets
    finally:
        sim.send_signal(signal.SIGTERM)
        sim.wait(30)


def run_replicas(job: str, targets: Path, vm: VictoriaMetrics, tmp: Path, count: int, rf: int) -> list[list[dict]]:
    config = tmp / f"{job}.yml"
    config.write_text(
        "global: {scrape_interval: 2s, scrape_timeout: 1500ms}\n"
        f"scrape_configs:\n  - job_name: {job}\n    file_sd_configs: [{{files: ['{targets}']}}]\n"
        f"remote_write:\n  - url: {vm.write_url}\n    queue_config: {{batch_send_deadline: 500ms}}\n"
    )
    ports = free_ports(count)
    procs = []
    for i, port in enumerate(ports):
        cluster = ["--cluster.members-count", str(count), "--cluster.member-num", str(i),
                   "--cluster.replication-factor", str(rf)] if count > 1 else []
        with (tmp / f"{job}-{i}.log").open("wb") as log:  # not a pipe nobody reads: it blocks the relay at 64 KiB
            procs.append(subprocess.Popen(
                [sys.executable, "-m", "relay.cli", "run", "--config", str(config), "--listen", f"127.0.0.1:{port}",
                 "--queue.memory", *cluster],
                stdout=subprocess.DEVNULL, stderr=log,
            ))
    try:
        for port in ports:
            # 60 s: three pure-Python replicas first parsing 240 cold bodies share two cores
            wait_http(f"http://127.0.0.1:{port}/-/ready", 60)
        deadline = time.monotonic() + 60
        while True:  # until every target of every replica has been scraped at least twice
            out = []
            for port in ports:
                data = orjson.loads(urllib.request.urlopen(f"http://127.0.0.1:{port}/targets").read())
                out.append(data["data"]["activeTargets"])
            seen = [t for r in out for t in r]
            if (seen and all(t["health"] == "up" and t["lastScrapeTs"] for t in seen)) or time.monotonic() > deadline:
                break
            time.sleep(0.5)
        time.sleep(4)  # a second scrape round
        return out
    finally:
        for p in procs:
            p.send_signal(signal.SIGTERM)
        for p in procs:
            p.wait(60)
            assert p.returncode == 0


def test_replicas_share_the_fleet(fleet: Path, victoria_metrics: VictoriaMetrics, tmp_path: Path) -> None:
    (single,) = run_replicas("cl-single", fleet, victoria_metrics, tmp_path, 1, 1)
    all_instances = sorted(t["labels"]["instance"] for t in single)
    assert len(all_instances) == MEMBERS

    for rf in (1, 2):
        job = f"cl-rf{rf}"
        per_replica = run_replicas(job, fleet, victoria_metrics, tmp_path, 3, rf)
        counts = collections.Counter(t["labels"]["instance"] for r in per_replica for t in r)
        assert sorted(counts) == all_instances
        assert set(counts.values()) == {rf}, f"R={rf}: some member scraped {set(counts.values())} times"
        assert all(0.2 * MEMBERS * rf / 3 < len(r) < 2 * MEMBERS * rf / 3 for r in per_replica)  # roughly even
        # What arrived: one up series per member and replica; the replica label tells copies apart.
        # (what the replicas sent while stopping can take VictoriaMetrics a moment to show: bounded wait)
        deadline = time.monotonic() + 30
        while True:
            rows = victoria_metrics.query(f'count by (instance) (last_over_time(up{{job="{job}"}}[10m]))')
            if (len(rows) == MEMBERS and {r["value"][1] for r in rows} == {str(rf)}) or time.monotonic() > deadline:
                break
            time.sleep(1)
        assert len(rows) == MEMBERS and {r["value"][1] for r in rows} == {str(rf)}
        replicas = victoria_metrics.query(f'count by (relay_replica) (last_over_time(up{{job="{job}"}}[10m]))')
        assert len(replicas) == (3 if rf > 1 else 1)
