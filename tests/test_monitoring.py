"""deploy/monitoring/: the relay's alert rules and Grafana dashboard, checked against real parts.

`promtool check rules` on the rules file; then a real Prometheus 2.42 scrapes a running relay (which
scrapes `relay sim` members, a closed port and a broken file_sd file, and remote-writes to a real
VictoriaMetrics and to a path it refuses) and every dashboard query and every alert's query (its
expression without the final comparison) must return data. Alerts whose condition the setup makes
true (dropped samples, failing scrapes, discovery errors, a failed reload, and the C-extension
alert in the pure-Python twin) must return data with the comparison too."""

from __future__ import annotations

import json
import re
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from relay import _ext
from relay.devtools.localenv import PrometheusReceiver, VictoriaMetrics, free_ports, wait_http
from tests.conftest import available, missing_service

ROOT = Path(__file__).resolve().parents[1]
RULES = ROOT / "deploy" / "monitoring" / "relay-alerts.yaml"
DASHBOARD = ROOT / "deploy" / "monitoring" / "relay-dashboard.json"

pytestmark = [pytest.mark.services, pytest.mark.slow]


def _alerts() -> list[dict[str, Any]]:
    doc = yaml.safe_load(RULES.read_text(encoding="utf-8"))
    return [r for g in doc["groups"] for r in g["rules"]]


def _dashboard_queries() -> list[tuple[str, str]]:
    dash = json.loads(DASHBOARD.read_text(encoding="utf-8"))
    out = []
    for panel in dash["panels"]:
        for target in panel.get("targets", []):
            out.append((panel["title"], target["expr"]))
    return out


_COMPARISON = re.compile(r"^(?P<query>.*\S)\s*(?P<op>==|!=|>=|<=|>|<)\s*(?P<threshold>[0-9.e+-]+)\s*$", re.DOTALL)


def _split(expr: str) -> tuple[str, str]:
    m = _COMPARISON.match(expr.strip())
    assert m is not None, f"not `<query> <comparison> <threshold>`: {expr}"
    return m["query"], m["op"] + " " + m["threshold"]


def test_promtool_checks_the_rules() -> None:
    import shutil

    promtool = shutil.which("promtool")
    if promtool is None:
        missing_service("promtool (Debian prometheus) is not installed")
    ran = subprocess.run([promtool, "check", "rules", str(RULES)], capture_output=True, text=True, timeout=60)
    assert ran.returncode == 0, ran.stdout + ran.stderr
    assert f"SUCCESS: {len(_alerts())} rules found" in ran.stdout


def test_every_alert_is_written_to_be_checked() -> None:
    names = [a["alert"] for a in _alerts()]
    # the list: down, scrapes failing, remote write behind, queue near its bound, samples
    # dropped, reload failed, C extension off
    for wanted in ("RelayDown", "RelayScrapesFailing", "RelayRemoteWriteBehind", "RelayRemoteWriteQueueNearBound",
                   "RelaySamplesDropped", "RelayConfigReloadFailed", "RelayCExtensionsOff"):
        assert wanted in names
    for a in _alerts():
        _split(a["expr"])
        assert a["labels"]["severity"] in ("warning", "critical")
        assert a["annotations"]["summary"] and a["annotations"]["description"]


@pytest.fixture(scope="module")
def running(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PrometheusReceiver]:
    """A relay with failures of every kind the alerts watch, and a Prometheus scraping it."""
    tmp = tmp_path_factory.mktemp("monitoring")
    vm = available(lambda: VictoriaMetrics(tmp / "vm"))
    prom = available(lambda: PrometheusReceiver(tmp / "prom"))
    targets = tmp / "targets.json"
    sim = subprocess.Popen([sys.executable, "-m", "relay.cli", "sim", "--members", "3", "--write-targets", str(targets),
                            "--duration", "300"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 30
    while not targets.exists() and time.monotonic() < deadline:
        time.sleep(0.1)
    (tmp / "broken.json").write_text("[{not json", encoding="utf-8")
    relay_port, closed = free_ports(2)
    config = tmp / "relay.yml"
    config.write_text(
        "global: {scrape_interval: 1s, scrape_timeout: 900ms}\n"
        "scrape_configs:\n"
        f"  - job_name: etcd\n    file_sd_configs: [{{files: ['{targets}']}}]\n"
        f"    static_configs: [{{targets: ['127.0.0.1:{closed}']}}]\n"
        f"  - job_name: broken\n    file_sd_configs: [{{files: ['{tmp / 'broken.json'}'], refresh_interval: 1s}}]\n"
        "remote_write:\n"
        f"  - url: {vm.write_url}\n    name: vm\n    queue_config: {{batch_send_deadline: 200ms}}\n"
        f"  - url: {vm.url}/no-such-path\n    name: refusing\n    queue_config: {{batch_send_deadline: 200ms}}\n",
        encoding="utf-8",
    )
    with vm, (tmp / "relay.log").open("wb") as log:
        relay = subprocess.Popen(
            [sys.executable, "-m", "relay.cli", "run", "--config", str(config), "--listen", f"127.0.0.1:{relay_port}",
             "--queue-dir", str(tmp / "queue"), "--web.enable-lifecycle"],
            stdout=subprocess.DEVNULL, stderr=log,
        )
        try:
            wait_http(f"http://127.0.0.1:{relay_port}/-/ready", 60)
            (prom.base_dir / "prometheus.yml").write_text(
                "global: {scrape_interval: 1s, scrape_timeout: 900ms}\n"
                f"scrape_configs:\n  - job_name: relay\n    static_configs: [{{targets: ['127.0.0.1:{relay_port}']}}]\n",
                encoding="utf-8",
            )
            with prom:
                time.sleep(8)  # a few scrapes of the relay, so that rate() and increase() have two points
                # a reload that fails: the old config stays, the metric says so
                config.write_text(config.read_text(encoding="utf-8") + "bogus_key: 1\n", encoding="utf-8")
                req = urllib.request.Request(f"http://127.0.0.1:{relay_port}/-/reload", method="POST")
                with pytest.raises(urllib.error.HTTPError):
                    urllib.request.urlopen(req, timeout=30)
                time.sleep(4)
                yield prom
        finally:
            relay.send_signal(signal.SIGTERM)
            relay.wait(60)
            sim.send_signal(signal.SIGTERM)
            sim.wait(30)


def _instant(prom: PrometheusReceiver, expr: str) -> list[dict[str, Any]]:
    expr = expr.replace("$__rate_interval", "5s").replace('instance=~"$instance"', 'instance=~".*"')
    return prom.query(expr)


def _has_data(prom: PrometheusReceiver, expr: str, seconds: float = 20) -> bool:
    deadline = time.monotonic() + seconds
    while True:
        if _instant(prom, expr):
            return True
        if time.monotonic() > deadline:
            return False
        time.sleep(1)


def test_every_dashboard_query_returns_data(running: PrometheusReceiver) -> None:
    empty = [f"{title}: {expr}" for title, expr in _dashboard_queries() if not _has_data(running, expr)]
    assert not empty, "dashboard queries without data:\n" + "\n".join(empty)


def test_every_alert_query_returns_data(running: PrometheusReceiver) -> None:
    empty = []
    for a in _alerts():
        query, _ = _split(a["expr"])
        if not _has_data(running, query):
            empty.append(f"{a['alert']}: {query}")
    assert not empty, "alert queries without data:\n" + "\n".join(empty)


@pytest.mark.parametrize("alert", ["RelayScrapesFailing", "RelaySamplesDropped", "RelayDiscoveryFailing",
                                   "RelayConfigReloadFailed", "RelayCExtensionsOff"])
def test_the_alerts_this_setup_provokes_fire(running: PrometheusReceiver, alert: str) -> None:
    (rule,) = [a for a in _alerts() if a["alert"] == alert]
    fires = _has_data(running, rule["expr"], seconds=20 if alert != "RelayCExtensionsOff" else 5)
    if alert == "RelayCExtensionsOff":
        assert fires == _ext.NO_EXTENSIONS  # it fires exactly in the pure-Python twin
        info = _instant(running, 'relay_build_info{job="relay"}')
        assert info and info[0]["metric"]["c_extensions"] == ("false" if _ext.NO_EXTENSIONS else "true")
        return
    assert fires, f"{alert}: {rule['expr']}"


def test_quiet_alerts_stay_quiet(running: PrometheusReceiver) -> None:
    """Nothing in the setup makes the relay down or its queue full, and the endpoint that takes
    everything is not behind. The one that refuses everything never had a sample accepted, so it is
    behind by all time (as in Prometheus, whose highest sent timestamp also moves only on a 2xx)."""
    for name in ("RelayDown", "RelayRemoteWriteQueueNearBound"):
        (rule,) = [a for a in _alerts() if a["alert"] == name]
        assert _instant(running, rule["expr"]) == [], name
    (behind,) = [a for a in _alerts() if a["alert"] == "RelayRemoteWriteBehind"]
    assert {r["metric"]["remote_name"] for r in _instant(running, behind["expr"])} == {"refusing"}
