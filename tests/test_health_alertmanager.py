"""relay.health.notify: the engine's alerts sent to a real Alertmanager (Debian's
prometheus-alertmanager on loopback), whose API then shows them with the labels and annotations
Prometheus would send; an Alertmanager that is down is counted, not raised."""

from __future__ import annotations

import json
import shutil
import subprocess
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from relay.config import parse_config
from relay.devtools.localenv import free_ports, wait_http
from relay.health import HealthEngine, default_rules
from relay.health.notify import AlertmanagerSender
from relay.http.client import ClientPool
from tests.conftest import missing_service
from tests.healthkit import FakeMember, etcd_body

pytestmark = [pytest.mark.anyio, pytest.mark.services]

AM_CONFIG = "route: {receiver: none, group_wait: 1h}\nreceivers: [{name: none}]\n"


@pytest.fixture(scope="module")
def alertmanager(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    binary = shutil.which("prometheus-alertmanager") or shutil.which("alertmanager")
    if binary is None:
        missing_service("prometheus-alertmanager is not installed (apt-get install prometheus-alertmanager)")
    base = tmp_path_factory.mktemp("am")
    (base / "am.yml").write_text(AM_CONFIG)
    port = free_ports(1)[0]
    log = (base / "am.log").open("wb")
    proc = subprocess.Popen([binary, f"--config.file={base / 'am.yml'}", f"--storage.path={base / 'data'}",
                             f"--web.listen-address=127.0.0.1:{port}", "--cluster.listen-address=",
                             "--log.level=warn"], stdout=log, stderr=subprocess.STDOUT)
    try:
        wait_http(f"http://127.0.0.1:{port}/-/ready", 30, proc)
        yield f"127.0.0.1:{port}"
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)
        log.close()


def _am_alerts(addr: str) -> list[dict[str, Any]]:
    with urllib.request.urlopen(f"http://{addr}/api/v2/alerts", timeout=10) as resp:
        return list(json.loads(resp.read()))


def _sender(targets: list[str]) -> tuple[AlertmanagerSender, ClientPool]:
    quoted = ", ".join(f"'{t}'" for t in targets)
    cfg = parse_config(f"etcd_health:\n  alertmanagers:\n    - static_configs: [{{targets: [{quoted}]}}]\n"
                       "      timeout: 3s\n").etcd_health
    pool = ClientPool()
    return AlertmanagerSender(cfg.alertmanagers, pool), pool


async def test_firing_then_resolved_alert_reaches_alertmanager(alertmanager: str, tmp_path: Path) -> None:
    eng = HealthEngine(default_rules())
    eng.external_labels = (("region", "eu"),)
    ms = [FakeMember(f"am{i}:2379", job="am-etcd") for i in range(3)]
    ok, bad = etcd_body(), etcd_body(has_leader=0)
    now_ms = int(time.time() * 1000)
    t = now_ms - 6 * 15_000
    sent: list[list[dict[str, Any]]] = []
    for bodies in [[ok, ok, bad]] * 6 + [[ok, ok, ok]]:
        for m, body in zip(ms, bodies, strict=True):
            eng.ingest(m.scrape(t, body))
        eng.evaluate(t / 1000)
        sent.append(eng.notifications(t / 1000))
        t += 15_000
    assert [len(s) for s in sent] == [0, 0, 0, 0, 1, 0, 1]  # pending (not sent), firing once, resolved
    firing, resolved = sent[4][0], sent[6][0]
    labels = {"alertname": "etcdNoLeader", "instance": "am2:2379", "job": "am-etcd",
              "region": "eu", "severity": "critical"}
    assert firing["labels"] == labels == resolved["labels"]
    assert firing["annotations"] == {
        "description": 'etcd cluster "am-etcd": member am2:2379 has no leader.',
        "summary": "etcd cluster has no leader."}
    assert resolved["endsAt"] < firing["endsAt"]

    sender, pool = _sender([alertmanager, "127.0.0.1:1"])  # the second is down
    try:
        await sender.send_all(sent[4])
        got: list[dict[str, Any]] = []
        deadline = time.monotonic() + 15
        while not got and time.monotonic() < deadline:
            got = [a for a in _am_alerts(alertmanager) if a["labels"].get("job") == "am-etcd"]
            if not got:
                time.sleep(0.2)
        assert len(got) == 1
        assert got[0]["labels"] == labels
        assert got[0]["annotations"] == firing["annotations"]
        assert got[0]["status"]["state"] == "active"
        assert sender.sent[f"http://{alertmanager}/api/v2/alerts"] == 1
        assert sender.errors["http://127.0.0.1:1/api/v2/alerts"] == 1  # counted, nothing raised
        await sender.send_all(sent[6])  # resolved: Alertmanager lists it no more
        deadline = time.monotonic() + 15
        while got and time.monotonic() < deadline:
            got = [a for a in _am_alerts(alertmanager) if a["labels"].get("job") == "am-etcd"]
            if got:
                time.sleep(0.2)
        assert got == []
    finally:
        await pool.aclose()
