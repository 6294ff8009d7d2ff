"""The status endpoints and self-metrics of a running relay (a subprocess), as Prometheus serves
and reads them: a real Prometheus 2.42 is both the relay's target and its remote-write receiver,
and scrapes the relay, so that the metric names parse and the PrometheusRemoteWriteBehind pair
is queryable."""

from __future__ import annotations

import logging
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson
import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families

from relay import __version__
from relay._ext import NO_EXTENSIONS
from relay.app import Relay, RelayOptions
from relay.batch import Family
from relay.buildinfo import revision
from relay.config import parse_config
from relay.devtools.localenv import PrometheusReceiver, free_ports, stop_process, wait_http
from relay.http.server import listens_everywhere, parse_listen
from relay.http.status import parse_selector, redact_config, targets_metadata

from .conftest import available

C_ON = not NO_EXTENSIONS  # setup builds the extensions; RELAY_NO_EXTENSIONS=1 runs the pure-Python twins


@dataclass
class Running:
    base: str
    prom: PrometheusReceiver
    proc: subprocess.Popen[bytes]
    log: Path
    cfg: Path
    cwd: Path


def get(url: str) -> tuple[int, bytes, str]:
    try:
        with urllib.request.urlopen(url, timeout=10) as resp:
            return resp.status, resp.read(), resp.headers.get("Content-Type", "")
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read(), exc.headers.get("Content-Type", "")


def api(url: str) -> Any:
    status, body, ctype = get(url)
    assert status == 200 and ctype == "application/json", (status, body[:300])
    doc = orjson.loads(body)
    assert doc["status"] == "success"
    return doc["data"]


def metric_values(text: str) -> dict[str, list[tuple[dict[str, str], float]]]:
    out: dict[str, list[tuple[dict[str, str], float]]] = {}
    for fam in text_string_to_metric_families(text):
        for s in fam.samples:
            out.setdefault(s.name, []).append((s.labels, s.value))
    return out


@pytest.fixture(scope="module")
def running(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Running]:
    tmp = tmp_path_factory.mktemp("status")
    relay_port = free_ports(1)[0]
    prom = available(lambda: PrometheusReceiver(base_dir=tmp / "prom"))
    (prom.base_dir / "prometheus.yml").write_text(
        "global: {scrape_interval: 1s, evaluation_interval: 1s}\n"
        f"scrape_configs:\n  - job_name: relay\n    static_configs: [{{targets: ['127.0.0.1:{relay_port}']}}]\n")
    cfg = tmp / "relay.yml"
    cfg.write_text(
        "global: {scrape_interval: 1s}\n"
        "scrape_configs:\n"
        "  - job_name: prom\n"
        "    basic_auth: {username: u, password: hunter2-scrape}\n"
        f"    static_configs: [{{targets: ['127.0.0.1:{prom.port}']}}]\n"
        "remote_write:\n"
        f"  - url: http://scott:tiger-rw@127.0.0.1:{prom.port}/api/v1/write\n"
        "    queue_config: {batch_send_deadline: 200ms}\n")
    log = tmp / "relay.log"
    with prom, log.open("wb") as err:
        # the log flags before the subcommand, the rest after (both are accepted)
        proc = subprocess.Popen(
            [sys.executable, "-m", "relay", "--log.format", "json", "--log.level", "info", "run",
             "--config.file", str(cfg), "--web.listen-address", f"127.0.0.1:{relay_port}", "--queue.memory",
             "--web.enable-lifecycle"], cwd=tmp, stdout=subprocess.DEVNULL, stderr=err)
        try:
            wait_http(f"http://127.0.0.1:{relay_port}/-/ready", 30, proc)
            yield Running(f"http://127.0.0.1:{relay_port}", prom, proc, log, cfg, tmp)
        finally:
            assert stop_process(proc, 30) == 0
    # to the last line, the shutdown summary included, every line of the log is a JSON record
    lines = [orjson.loads(line) for line in log.read_text().splitlines() if line.strip()]
    assert any(d["msg"].startswith("remote_write http://<secret>@") and " sent " in d["msg"] for d in lines)


def test_buildinfo_and_runtimeinfo(running: Running) -> None:
    info = api(running.base + "/api/v1/status/buildinfo")
    assert {"version", "revision", "branch", "buildUser", "buildDate", "goVersion"} <= set(info)
    assert info["version"] == __version__ and info["revision"] == revision()
    assert info["cExtensions"] == ("true" if C_ON else "false")
    rt = api(running.base + "/api/v1/status/runtimeinfo")
    prometheus_keys = {"startTime", "CWD", "hostname", "serverTime", "reloadConfigSuccess", "lastConfigTime",
                       "corruptionCount", "goroutineCount", "GOMAXPROCS", "GOMEMLIMIT", "GOGC", "GODEBUG",
                       "storageRetention"}
    assert prometheus_keys <= set(rt)
    assert rt["CWD"] == str(running.cwd) and rt["reloadConfigSuccess"] is True
    assert rt["startTime"].endswith("Z") and rt["startTime"] <= rt["serverTime"]
    assert isinstance(rt["goroutineCount"], int) and rt["goroutineCount"] > 0


def test_flags_as_prometheus_names_them(running: Running) -> None:
    flags = api(running.base + "/api/v1/status/flags")
    assert all(isinstance(v, str) for v in flags.values())
    assert flags["config.file"] == str(running.cfg)
    assert flags["web.listen-address"] == running.base.removeprefix("http://")
    assert flags["log.format"] == "json" and flags["log.level"] == "info"  # given before the subcommand
    assert flags["web.enable-lifecycle"] == "true" and flags["queue.memory"] == "true"
    assert flags["config.auto-reload-interval"] == "0s"


def test_config_yaml_with_secrets_hidden(running: Running) -> None:
    status, body, ctype = get(running.base + "/config")
    assert status == 200 and ctype.startswith("text/plain")
    shown = yaml.safe_load(body)
    assert shown["scrape_configs"][0]["basic_auth"] == {"username": "u", "password": "<secret>"}
    assert shown["remote_write"][0]["url"].startswith("http://<secret>@127.0.0.1:")
    data = api(running.base + "/api/v1/status/config")
    assert yaml.safe_load(data["yaml"]) == shown
    for path in ("/config", "/api/v1/status/config", "/api/v1/status/flags", "/metrics", "/api/v1/targets"):
        body = get(running.base + path)[1]
        assert b"hunter2" not in body and b"tiger" not in body and b"scott" not in body, path


def test_targets_state_and_scrape_pool(running: Running) -> None:
    data = api(running.base + "/api/v1/targets")
    assert [t["scrapePool"] for t in data["activeTargets"]] == ["prom"]
    assert api(running.base + "/api/v1/targets?scrapePool=nope")["activeTargets"] == []
    assert len(api(running.base + "/api/v1/targets?scrapePool=prom")["activeTargets"]) == 1
    assert api(running.base + "/api/v1/targets?state=dropped")["activeTargets"] == []
    active = api(running.base + "/api/v1/targets?state=active")
    assert len(active["activeTargets"]) == 1 and active["droppedTargets"] == []
    status, body, _ = get(running.base + "/api/v1/targets?state=bogus")
    assert status == 400 and orjson.loads(body)["error"].startswith("parameter state:")


def test_targets_metadata_endpoint(running: Running) -> None:
    data = api(running.base + '/api/v1/targets/metadata?match_target={job="prom"}')
    assert isinstance(data, list)  # empty until the scrape loop keeps HELP/TYPE (branch p3-meta)
    for entry in data:
        assert entry["target"]["job"] == "prom" and {"metric", "type", "help", "unit"} <= set(entry)
    assert api(running.base + '/api/v1/targets/metadata?match_target={job="other"}') == []
    for bad, name in (("limit=x", "limit"), ("match_target={job", "match_target"),
                      ('match_target={job=~"("}', "match_target")):
        status, body, _ = get(running.base + "/api/v1/targets/metadata?" + bad)
        doc = orjson.loads(body)
        assert status == 400 and doc["errorType"] == "bad_data" and doc["error"].startswith(f"parameter {name}:")


def wait_for(what: str, check: Any, timeout: float = 60) -> Any:
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        last = check()
        if last:
            return last
        time.sleep(0.5)
    pytest.fail(f"{what}: not within {timeout}s (last: {last!r})")


def test_self_metrics_parse_and_name_every_endpoint(running: Running) -> None:
    def sent() -> dict[str, list[tuple[dict[str, str], float]]] | None:
        m = metric_values(get(running.base + "/metrics")[1].decode())
        got = m.get("relay_remote_write_queue_highest_sent_timestamp_seconds", [])
        return m if got and got[0][1] > 0 else None

    m = wait_for("a remote-write send accepted by Prometheus", sent)
    (labels, value), = m["relay_build_info"]
    assert value == 1 and labels == {"version": __version__, "revision": revision(), "python_version": labels[
        "python_version"], "c_extensions": "true" if C_ON else "false"}
    assert m["relay_config_last_reload_successful"] == [({}, 1.0)]
    assert m["relay_config_last_reload_success_timestamp_seconds"][0][1] > 1.7e9
    assert m["process_cpu_seconds_total"][0][1] > 0 and m["process_resident_memory_bytes"][0][1] > 0
    assert "python_info" in m
    highest = m["relay_remote_write_highest_timestamp_seconds"][0][1]
    (rw, sent_ts), = m["relay_remote_write_queue_highest_sent_timestamp_seconds"]
    assert abs(time.time() - highest) < 120 and 0 < sent_ts <= highest
    url = f"http://<secret>@127.0.0.1:{running.prom.port}/api/v1/write"
    assert rw["url"] == url and len(rw["remote_name"]) == 6
    for name, series in m.items():  # every remote-write series names its endpoint
        if name.startswith("relay_remote_write_") and name != "relay_remote_write_highest_timestamp_seconds":
            assert all(s["url"] == url and s["remote_name"] == rw["remote_name"] for s, _ in series), name


def test_prometheus_scrapes_the_relay_and_computes_the_lag(running: Running) -> None:
    prom = running.prom

    def up() -> list[dict[str, Any]]:
        return [r for r in prom.query('up{job="relay"}') if r["value"][1] == "1"]

    wait_for("Prometheus scraping the relay", up)
    targets = prom.get_json("/api/v1/targets")["data"]["activeTargets"]
    (t,) = [t for t in targets if t["labels"]["job"] == "relay"]
    assert t["health"] == "up" and t["lastError"] == ""  # every name and line of /metrics parsed
    # PrometheusRemoteWriteBehind's expression, with the relay's names
    behind = ("(max_over_time(relay_remote_write_highest_timestamp_seconds[5m])"
              " - ignoring(remote_name, url) group_right"
              " max_over_time(relay_remote_write_queue_highest_sent_timestamp_seconds[5m]))")

    def lag() -> list[dict[str, Any]]:
        return [r for r in prom.query(behind) if float(r["value"][1]) < 60]

    (r,) = wait_for("the remote-write lag in Prometheus", lag)
    assert r["metric"]["url"].startswith("http://<secret>@") and float(r["value"][1]) >= 0
    (b,) = prom.query('relay_build_info{job="relay"}')
    assert b["metric"]["c_extensions"] == ("true" if C_ON else "false")
    assert prom.query('relay_config_last_reload_successful{job="relay"} == 1')
    assert prom.query('process_resident_memory_bytes{job="relay"} > 0')


def test_log_lines_are_json_with_the_startup_line(running: Running) -> None:
    lines = [orjson.loads(line) for line in running.log.read_text().splitlines() if line.strip()]
    assert lines and all({"ts", "level", "logger", "msg"} <= set(d) for d in lines)
    (start,) = [d for d in lines if " running: C extensions " in d["msg"]]
    assert f"relay {__version__} (revision {revision()[:12]})" in start["msg"]
    assert f"config {running.cfg}" in start["msg"] and "listening on 127.0.0.1:" in start["msg"]
    assert "1 jobs, 1 targets, 1 remote_write endpoints" in start["msg"]
    assert "data directory (none: queue in memory)" in start["msg"]
    assert (start["level"], "C extensions on" in start["msg"]) == (("info", True) if C_ON else ("warn", False))


# -- in process ------------------------------------------------------------------------------

def test_listen_on_every_interface_is_said_loudly(caplog: pytest.LogCaptureFixture, tmp_path: Path) -> None:
    assert parse_listen(":9091", "--web.listen-address") == ("", 9091)
    assert listens_everywhere("") and listens_everywhere("0.0.0.0") and not listens_everywhere("127.0.0.1")
    cfg = tmp_path / "c.yml"
    cfg.write_text("scrape_configs: []\n")
    relay = Relay(RelayOptions(config_file=str(cfg), listen=("", 9091), queue_dir=str(tmp_path / "q")),
                  parse_config("scrape_configs: []\n"))
    with caplog.at_level(logging.INFO, logger="relay"):
        relay._startup_line(9091)
    msgs = [r.getMessage() for r in caplog.records]
    assert any("listening on :9091 (all interfaces)" in m and f"data directory {tmp_path / 'q'}" in m for m in msgs)
    (loud,) = [r for r in caplog.records if "every interface" in r.getMessage()]
    assert loud.levelno == logging.WARNING and "no basic auth" in loud.getMessage()


def test_targets_metadata_filters() -> None:
    fams = {"up": Family("up", "gauge", "Up.", ""), "x_total": Family("x_total", "counter", "X.", "")}
    targets = [({"job": "etcd", "instance": "a:1"}, fams), ({"job": "etcd", "instance": "b:1"}, fams),
               ({"job": "other", "instance": "c:1"}, {})]

    def call(**q: str) -> Any:
        resp = targets_metadata(targets, {k: [v] for k, v in q.items()})
        return resp.status, orjson.loads(resp.body)

    status, doc = call(match_target='{job="etcd",instance=~"a.*"}')
    assert status == 200 and [(d["target"]["instance"], d["metric"]) for d in doc["data"]] == [
        ("a:1", "up"), ("a:1", "x_total")]
    _, doc = call(metric="x_total")
    assert doc["data"] == [{"target": {"job": "etcd", "instance": i}, "type": "counter", "help": "X.", "unit": ""}
                           for i in ("a:1", "b:1")]
    _, doc = call(match_target='{job!="etcd"}')
    assert doc["data"] == []
    _, doc = call(limit="1")
    assert {d["target"]["instance"] for d in doc["data"]} == {"a:1"}  # as Prometheus: whole targets up to the limit
    assert [m.name for m in parse_selector('up{job="a"}')] == ["__name__", "job"]
    for bad in ("", "{}", "{job}", '{job="a"', "up{job=a}"):
        with pytest.raises(ValueError):
            parse_selector(bad)


def test_redact_config_hides_every_secret() -> None:
    text = ("scrape_configs:\n  - job_name: a\n    basic_auth: {username: u, password: p1}\n"
            "    authorization: {type: Bearer, credentials: p2}\n    bearer_token: p3\n"
            "    oauth2: {client_id: c, client_secret: p4, token_url: 'https://x:p5@h/t'}\n"
            "    proxy_connect_header: {Proxy-Authorization: [p6]}\n"
            "    http_headers: {X-Token: {secrets: [p9]}, X-Plain: {values: [v1]}}\n"
            "remote_write:\n  - url: http://user:p7@h/w\n    sigv4: {access_key: AK, secret_key: p8}\n"
            "    headers: {Authorization: Bearer p10, X-Scope-OrgID: tenant1}\n")
    shown = redact_config(text)
    assert not any(f"p{i}" in shown for i in range(1, 11)), shown
    assert "tenant1" in shown and "v1" in shown
    data = yaml.safe_load(shown)
    assert data["scrape_configs"][0]["basic_auth"]["username"] == "u"
    assert data["remote_write"][0]["sigv4"]["access_key"] == "AK"


@pytest.mark.anyio
async def test_reload_removing_an_endpoint_drops_its_series(tmp_path: Path) -> None:
    import anyio
    from prometheus_client import generate_latest

    cfg = tmp_path / "c.yml"
    cfg.write_text("remote_write: [{url: 'http://127.0.0.1:1/gone'}]\n")
    relay = Relay(RelayOptions(config_file=str(cfg), listen=None, drain_timeout=0.2),
                  parse_config(cfg.read_text()))
    async with anyio.create_task_group() as tg:
        await tg.start(relay.run)
        assert b'url="http://127.0.0.1:1/gone"' in generate_latest(relay.metrics.registry)
        cfg.write_text("scrape_configs: []\n")
        assert await relay.reload() is None
        with anyio.fail_after(10):
            while b"/gone" in generate_latest(relay.metrics.registry):
                await anyio.sleep(0.05)
        assert relay.metrics.config_last_reload_successful._value.get() == 1
        relay._stop.set()
