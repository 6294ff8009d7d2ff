"""``relay run --workers N``: one command, N processes, one front door.

Real parts: `relay sim` serving 40 members, a relay supervisor with two worker processes, one
VictoriaMetrics. Every member is scraped by exactly one worker; the front door merges the workers'
targets and metrics; SIGKILL of a worker brings it back with its targets; SIGHUP and /-/reload reach
both; SIGTERM stops everything and the stats of both workers are summed."""

from __future__ import annotations

import collections
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path

import orjson
import pytest

from relay._exceptions import ConfigError
from relay.config import ClusterConfig
from relay.devtools.localenv import VictoriaMetrics, free_ports, wait_http
from relay.workers import (
    WorkerIdentity,
    add_worker_label,
    merge_metrics,
    merge_stats,
    parse_workers,
    worker_cluster,
    worker_identity,
)
from tests.conftest import available

MEMBERS = 40


# -- the pieces ------------------------------------------------------------------------------------


def test_worker_label_goes_first_in_every_sample_shape() -> None:
    assert add_worker_label(b'a_total{job="x"} 1.0', b"1") == b'a_total{worker="1",job="x"} 1.0'
    assert add_worker_label(b"a_total 1.0", b"0") == b'a_total{worker="0"} 1.0'
    assert add_worker_label(b"a{} 2", b"3") == b'a{worker="3"} 2'
    assert add_worker_label(b'h_bucket{le="+Inf"} 4.0 1700000000000', b"0") == (
        b'h_bucket{worker="0",le="+Inf"} 4.0 1700000000000')


def test_merged_metrics_have_each_family_once() -> None:
    w0 = (b"# HELP relay_scrapes_total Scrapes.\n# TYPE relay_scrapes_total counter\n"
          b'relay_scrapes_total{job="a"} 3.0\n# HELP up_ish Up.\n# TYPE up_ish gauge\nup_ish 1.0\n')
    w1 = (b"# HELP relay_scrapes_total Scrapes.\n# TYPE relay_scrapes_total counter\n"
          b'relay_scrapes_total{job="a"} 5.0\n')
    merged = merge_metrics([("0", w0), ("1", w1)]).decode()
    assert merged.count("# TYPE relay_scrapes_total counter") == 1
    assert merged.count("# HELP relay_scrapes_total") == 1
    lines = merged.splitlines()
    i = lines.index("# TYPE relay_scrapes_total counter")
    assert lines[i + 1 : i + 3] == ['relay_scrapes_total{worker="0",job="a"} 3.0',
                                    'relay_scrapes_total{worker="1",job="a"} 5.0']
    assert 'up_ish{worker="0"} 1.0' in lines
    # what prometheus-client's own parser makes of it: the families, labelled
    from prometheus_client.parser import text_string_to_metric_families

    families = {f.name: f for f in text_string_to_metric_families(merged)}
    assert sorted(s.labels["worker"] for s in families["relay_scrapes"].samples) == ["0", "1"]


def test_merged_stats_sum_by_url() -> None:
    a = {"targets": 3, "scrapes": 10, "jsonl_samples": 0,
         "remote_write": [{"url": "u", "sent": 5, "pending": 1, "dropped": {"too_old": 2}, "shards": 1}]}
    b = {"targets": 4, "scrapes": 11, "jsonl_samples": 0,
         "remote_write": [{"url": "u", "sent": 7, "pending": 0, "dropped": {"too_old": 1, "x": 1}, "shards": 2}]}
    m = merge_stats([a, b])
    assert (m["targets"], m["scrapes"], m["workers"]) == (7, 21, 2)
    assert m["remote_write"] == [{"url": "u", "sent": 12, "pending": 1, "dropped": {"too_old": 3, "x": 1}, "shards": 3}]


def test_workers_flag_and_identity() -> None:
    assert parse_workers("3") == 3
    assert parse_workers("auto") == len(os.sched_getaffinity(0))
    for bad in ("0", "-1", "two", ""):
        with pytest.raises(ConfigError, match="--workers"):
            parse_workers(bad)
    assert worker_identity({}) is None
    assert worker_identity({"RELAY_WORKER": "1/2/9000"}) == WorkerIdentity(1, 2, 9000)
    with pytest.raises(ConfigError, match="RELAY_WORKER"):
        worker_identity({"RELAY_WORKER": "2/2/9000"})
    # worker i of replica k of M: member k*N + i of M*N; replication kept
    c = worker_cluster(ClusterConfig(members_count=3, member_num=2, replication_factor=2), WorkerIdentity(1, 2, 1))
    assert (c.members_count, c.member_num, c.replication_factor) == (6, 5, 2)
    assert (worker_cluster(None, WorkerIdentity(0, 4, 1)).members_count, worker_cluster(None, WorkerIdentity(3, 4, 1)).member_num) == (4, 3)


@pytest.mark.parametrize(
    ("extra", "config", "message"),
    [
        (["--workers", "0"], "scrape_configs: []\n", "relay: --workers: '0' is not a positive integer or 'auto'"),
        (["--workers", "2", "--sink-jsonl", "-"], "scrape_configs: []\n", "relay: --sink-jsonl: cannot be used with --workers above 1"),
        (["--workers", "2"], "etcd_health: {}\nscrape_configs: []\n", "relay: etcd_health: is not supported with --workers above 1"),
    ],
    ids=["zero", "jsonl", "etcd_health"],
)
def test_refused_with_one_line(tmp_path: Path, extra: list[str], config: str, message: str) -> None:
    path = tmp_path / "c.yml"
    path.write_text(config, encoding="utf-8")
    ran = subprocess.run([sys.executable, "-m", "relay.cli", "run", "--config", str(path), "--queue.memory", *extra],
                         capture_output=True, text=True, timeout=60)
    assert ran.returncode == 2
    assert ran.stderr.startswith(message) and ran.stderr.count("\n") == 1, ran.stderr


# -- a real supervisor ------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def fleet(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    folder = tmp_path_factory.mktemp("fleet")
    targets = folder / "targets.json"
    sim = subprocess.Popen(
        [sys.executable, "-m", "relay.cli", "sim", "--members", str(MEMBERS), "--write-targets", str(targets),
         "--duration", "400"],
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


def _get(url: str) -> bytes:
    with urllib.request.urlopen(url, timeout=20) as resp:
        return bytes(resp.read())


def _active(base: str) -> list[dict]:
    return list(orjson.loads(_get(base + "/api/v1/targets"))["data"]["activeTargets"])


def _until(what: str, ok: Callable[[], bool], seconds: float) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        try:
            if ok():
                return
        except (OSError, urllib.error.URLError):
            pass
        time.sleep(0.5)
    raise AssertionError(f"not within {seconds:.0f}s: {what}")


def _children(pid: int) -> list[int]:
    out = subprocess.run(["pgrep", "-P", str(pid)], capture_output=True, text=True).stdout
    return sorted(int(p) for p in out.split())


@pytest.mark.services
@pytest.mark.slow
def test_two_workers_share_the_fleet(fleet: Path, tmp_path: Path) -> None:
    vm = available(lambda: VictoriaMetrics(tmp_path / "vm"))
    with vm:
        config = tmp_path / "relay.yml"
        config.write_text(
            "global: {scrape_interval: 2s, scrape_timeout: 1500ms}\n"
            f"scrape_configs:\n  - job_name: w\n    file_sd_configs: [{{files: ['{fleet}']}}]\n"
            f"remote_write:\n  - url: {vm.write_url}\n    queue_config: {{batch_send_deadline: 500ms}}\n",
            encoding="utf-8",
        )
        (port,) = free_ports(1)
        base = f"http://127.0.0.1:{port}"
        stats = tmp_path / "stats.json"
        queue = tmp_path / "queue"
        log_path = tmp_path / "relay.log"
        with log_path.open("wb") as log:
            sup = subprocess.Popen(
                [sys.executable, "-m", "relay.cli", "run", "--config", str(config), "--listen", f"127.0.0.1:{port}",
                 "--workers", "2", "--queue-dir", str(queue), "--stats-file", str(stats), "--web.enable-lifecycle",
                 "--drain-timeout", "10"],
                stdout=subprocess.DEVNULL, stderr=log,
            )
        try:
            wait_http(base + "/-/ready", 90)
            _until("every member up", lambda: (len(t := _active(base)) == MEMBERS
                                               and all(x["health"] == "up" for x in t)), 90)
            # each member once, and both workers have a share
            instances = collections.Counter(t["labels"]["instance"] for t in _active(base))
            assert len(instances) == MEMBERS and set(instances.values()) == {1}
            metrics = _get(base + "/metrics").decode()
            from prometheus_client.parser import text_string_to_metric_families

            fams = {f.name: f for f in text_string_to_metric_families(metrics)}
            per_worker = {s.labels["worker"]: s.value for s in fams["relay_targets"].samples}
            assert set(per_worker) == {"0", "1"} and sum(per_worker.values()) == MEMBERS
            assert min(per_worker.values()) > 0
            assert {s.labels["worker"]: s.value for s in fams["relay_worker_up"].samples} == {"0": 1.0, "1": 1.0}
            assert sorted(p.name for p in queue.iterdir()) == ["worker-0", "worker-1"]
            # what arrived: every member, from one worker each
            def arrived() -> bool:
                vm.flush()
                return len(vm.query('up{job="w"}')) == MEMBERS

            _until("every member in VictoriaMetrics", arrived, 60)
            # the HTML page lists them all; an unknown path goes to a worker
            page = _get(base + "/targets?format=html").decode()
            assert f"{MEMBERS} targets; page 1 of 1" in page
            with pytest.raises(urllib.error.HTTPError) as info:
                _get(base + "/no-such-page")
            assert info.value.code == 404

            # SIGKILL one worker: it comes back, and its targets are scraped again
            workers = _children(sup.pid)
            assert len(workers) == 2
            os.kill(workers[0], signal.SIGKILL)
            _until("worker restarted", lambda: 'relay_worker_restarts_total{worker="0"} 1.0' in _get(base + "/metrics").decode()
                   or 'relay_worker_restarts_total{worker="1"} 1.0' in _get(base + "/metrics").decode(), 30)
            killed_at = time.time()
            _until("all targets scraped after the restart", lambda: (
                len(t := _active(base)) == MEMBERS and all(x["health"] == "up" and x["lastScrapeTs"] > killed_at for x in t)), 90)
            assert len(_children(sup.pid)) == 2

            # reload: the lifecycle endpoint and SIGHUP reach both workers
            req = urllib.request.Request(base + "/-/reload", method="POST")
            with urllib.request.urlopen(req, timeout=30) as resp:
                assert resp.status == 200
            sup.send_signal(signal.SIGHUP)
            _until("both workers reloaded twice", lambda: all(
                log_path.read_text().count(f"[worker {i}]: config reloaded") >= 2 for i in (0, 1)), 30)
        finally:
            sup.send_signal(signal.SIGTERM)
            rc = sup.wait(60)
        assert rc == 0
        assert _children(sup.pid) == []
        summary = orjson.loads(stats.read_bytes())
        assert summary["workers"] == 2 and summary["targets"] == MEMBERS
        (writer,) = summary["remote_write"]
        assert writer["sent"] > 0 and writer["pending"] == 0
        assert sum(summary["restarts"].values()) == 1
