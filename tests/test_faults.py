"""Hostile and broken targets, with real processes: `relay sim` members with faults, a hostile server,
the relay as a subprocess, VictoriaMetrics as receiver. Each bad target is up=0 with its reason,
none of them affects the healthy ones, and the relay's memory stays bounded."""

from __future__ import annotations

import asyncio
import base64
import json
import signal
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest

from relay.devtools.localenv import VictoriaMetrics, free_ports, wait_http
from tests.faultproxy import RelayProcess, Stage, peak_rss_mib

pytestmark = [pytest.mark.services, pytest.mark.slow]

FAULTS = {1: "slow", 2: "500", 3: "garbage", 4: "truncated", 5: "reset", 6: "huge", 7: "down"}
EXPECTED_REASON = {
    "slow": "timeout",
    "500": "http_status",
    "garbage": "parse_error",
    "truncated": "http",
    "reset": "http",
    "huge": "body_size_limit",
    "down": "connect",
}
HOSTILE = {
    "/endless": "body_size_limit",
    "/many-series": "sample_limit",
    "/huge-label": "label_value_length_limit",
    "/bad-utf8": "parse_error",
}


async def _hostile(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        head = await reader.readuntil(b"\r\n\r\n")
        path = head.split(b" ", 2)[1].decode()
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Type: text/plain; version=0.0.4\r\nConnection: close\r\n\r\n")
        deadline = time.monotonic() + 20
        if path == "/endless":
            chunk = b"# just a comment line that goes on and on\n" * 1000
            while time.monotonic() < deadline:  # endless, but bounded in time for the test
                writer.write(chunk)
                await writer.drain()
        elif path == "/many-series":
            for start in range(0, 500_000, 10_000):  # about 7 MB: under the body limit
                writer.write(b"".join(b"s{i=\"%d\"} 1\n" % i for i in range(start, start + 10_000)))
                await writer.drain()
                if time.monotonic() > deadline:
                    break
        elif path == "/huge-label":
            writer.write(b'm{v="' + b"x" * (4 << 20) + b'"} 1\n')
        elif path == "/bad-utf8":
            writer.write(b'm{v="\xff\xfe"} 1\n')
        await writer.drain()
    except (ConnectionError, asyncio.IncompleteReadError):
        pass
    finally:
        writer.close()


@pytest.fixture
def hostile_server() -> Iterator[int]:
    port = free_ports(1)[0]
    loop = asyncio.new_event_loop()
    started = threading.Event()
    stop = asyncio.Event()

    async def main() -> None:
        server = await asyncio.start_server(_hostile, "127.0.0.1", port)
        started.set()
        async with server:
            await stop.wait()

    t = threading.Thread(target=lambda: loop.run_until_complete(main()), daemon=True)
    t.start()
    started.wait(10)
    yield port
    loop.call_soon_threadsafe(stop.set)
    t.join(30)


@pytest.mark.parametrize("transport", ["fast", "httpx"])
def test_bad_targets_fail_alone_with_reasons(
    victoria_metrics: VictoriaMetrics, hostile_server: int, tmp_path: Path, transport: str
) -> None:
    """The same reasons with either transport under the HTTP client (--http-transport)."""
    targets_file = tmp_path / "targets.json"
    spec = ",".join(f"{kind}@{i}" for i, kind in FAULTS.items())
    sim = subprocess.Popen(
        [sys.executable, "-m", "relay.cli", "sim", "--members", "10", "--fault", spec, "--huge-mb", "400",
         "--slow-delay", "30", "--write-targets", str(targets_file), "--duration", "120"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    relay = None
    try:
        deadline = time.monotonic() + 20
        while not targets_file.exists() and time.monotonic() < deadline:
            time.sleep(0.1)
        assert len(json.loads(targets_file.read_text())) == 10
        hostile_jobs = "".join(
            f"  - job_name: hostile{path.replace('/', '-')}\n    metrics_path: {path}\n"
            f"    static_configs: [{{targets: ['127.0.0.1:{hostile_server}']}}]\n"
            for path in HOSTILE
        )
        config = tmp_path / "relay.yml"
        config.write_text(
            f"global:\n  external_labels: {{transport: {transport}}}\n"  # one VictoriaMetrics for both runs
            "  scrape_interval: 2s\n  scrape_timeout: 1500ms\n  body_size_limit: 10MB\n"
            "  sample_limit: 100000\n  label_value_length_limit: 65536\n"
            f"scrape_configs:\n  - job_name: fleet\n    file_sd_configs: [{{files: ['{targets_file}']}}]\n"
            + hostile_jobs
            + f"remote_write:\n  - url: {victoria_metrics.write_url}\n    queue_config: {{batch_send_deadline: 500ms}}\n"
        )
        port = free_ports(1)[0]
        with (tmp_path / "relay.log").open("wb") as log:  # not a pipe nobody reads: it blocks the relay at 64 KiB
            relay = subprocess.Popen(
                [sys.executable, "-m", "relay.cli", "run", "--config", str(config), "--listen", f"127.0.0.1:{port}",
                 "--http-transport", transport,
                 "--queue-dir", str(tmp_path / "queue")],
                stdout=subprocess.DEVNULL, stderr=log,
            )
        wait_http(f"http://127.0.0.1:{port}/-/ready", 20)
        time.sleep(9)
        # then until every target has finished a scrape (on a loaded machine the first may come late)
        deadline = time.monotonic() + 30
        while True:
            data = orjson.loads(urllib.request.urlopen(f"http://127.0.0.1:{port}/targets").read())
            targets = data["data"]["activeTargets"]
            if all(t["health"] != "unknown" for t in targets) or time.monotonic() > deadline:
                break
            time.sleep(0.5)
        rss = peak_rss_mib(relay.pid)
        by_instance = {t["labels"]["instance"]: t for t in targets}
        fleet = [t for t in targets if t["scrapePool"] == "fleet"]
        assert len(fleet) == 10 and len(targets) == 10 + len(HOSTILE)
        reasons: dict[str, str] = {}
        for t in fleet:
            kind = t["labels"].get("sim_fault", "")
            reasons[kind or t["labels"]["instance"]] = t["lastErrorReason"]
            if not kind:
                assert t["health"] == "up", t
            else:
                assert t["health"] == "down" and t["lastError"], (kind, {k: v for k, v in t.items() if k != "labels"})
                assert "\n" not in t["lastError"]
        for kind, reason in EXPECTED_REASON.items():
            assert reasons.get(kind) == reason, (kind, reasons)
        for path, reason in HOSTILE.items():
            (t,) = [t for t in targets if t["scrapePool"] == f"hostile{path.replace('/', '-')}"]
            assert t["health"] == "down" and t["lastErrorReason"] == reason, (path, t)
        assert rss < 400, f"peak RSS {rss:.0f} MiB: a hostile target made memory grow"
        assert by_instance  # every target listed by instance
    finally:
        if relay is not None:
            relay.send_signal(signal.SIGTERM)
            relay.wait(60)
        sim.send_signal(signal.SIGTERM)
        sim.wait(30)
    # The healthy members' data arrived; the faulty ones have up=0 samples.
    ups = victoria_metrics.query(f'max_over_time(up{{job="fleet",transport="{transport}"}}[1m])')
    healthy = [r for r in ups if r["value"][1] == "1"]
    assert len(healthy) == 3, ups
    leaders = victoria_metrics.query(f'count(etcd_server_has_leader{{job="fleet",transport="{transport}"}})')
    assert leaders and leaders[0]["value"][1] == "3"


def test_failed_scrapes_do_not_keep_their_bodies(hostile_server: int, tmp_path: Path) -> None:
    """A target whose 4 MiB body fails the label value limit every second, for 20 s: the relay's
    memory must not grow with the number of failed scrapes (it stays near 60 MiB when each body is
    freed with its scrape; it climbs by about 16 MiB per scrape while they are kept)."""
    config = tmp_path / "relay.yml"
    config.write_text(
        "global: {scrape_interval: 1s, scrape_timeout: 800ms, body_size_limit: 10MB, label_value_length_limit: 65536}\n"
        f"scrape_configs:\n  - job_name: huge-label\n    metrics_path: /huge-label\n"
        f"    static_configs: [{{targets: ['127.0.0.1:{hostile_server}']}}]\n"
    )
    port = free_ports(1)[0]
    relay = subprocess.Popen(
        [sys.executable, "-m", "relay.cli", "run", "--config", str(config), "--listen", f"127.0.0.1:{port}",
                 "--queue-dir", str(tmp_path / "queue")],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    try:
        wait_http(f"http://127.0.0.1:{port}/-/ready", 20)
        time.sleep(20)
        data = orjson.loads(urllib.request.urlopen(f"http://127.0.0.1:{port}/targets").read())
        (target,) = data["data"]["activeTargets"]
        assert target["lastErrorReason"] == "label_value_length_limit"
        rss = peak_rss_mib(relay.pid)
    finally:
        relay.send_signal(signal.SIGTERM)
        relay.wait(60)
    assert rss < 120, f"peak RSS {rss:.0f} MiB after 20 failed scrapes of a 4 MiB body"


# -- hostile input other than scrape bodies, under a running relay --------------------------------
#
# Each test runs the relay as a subprocess and changes what it reads while it runs: discovery files,
# an etcd member list from a hostile server, the config file on reload, secret and certificate
# files. The relay must stay up, answer /-/healthy, keep what it knew last (the healthy target is
# still scraped), count each failure and log it once per change.

TARGET_BODY = b"# TYPE up_test gauge\nup_test 1\n"


def metric_value(text: str, name: str, **labels: str) -> float:
    """The sum of ``name``'s samples in a /metrics text whose labels include ``labels``."""
    total = 0.0
    for line in text.splitlines():
        if not line.startswith(name) or line[len(name):len(name) + 1] not in ("{", " "):
            continue
        head, value = line.rsplit(" ", 1)
        if all(f'{k}="{v}"' in head for k, v in labels.items()):
            total += float(value)
    return total


def wait_for(check: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"not within {timeout:g} s: {what}")
        time.sleep(0.2)


@pytest.fixture
def stage() -> Iterator[Stage]:
    with Stage() as s:
        s.answer("/metrics", body=TARGET_BODY, content_type="text/plain; version=0.0.4")
        yield s


class Running:
    """``relay run`` as a subprocess (RelayProcess) with helpers for these tests."""

    def __init__(self, config: Path, folder: Path, *extra: str) -> None:
        self.p = RelayProcess(config, folder, *extra, queue=False)
        self.p.wait_ready()

    def metrics(self) -> str:
        return self.p.metrics()

    def value(self, name: str, **labels: str) -> float:
        return metric_value(self.metrics(), name, **labels)

    def targets(self) -> list[dict[str, Any]]:
        with urllib.request.urlopen(self.p.url + "/targets", timeout=10) as resp:
            return list(orjson.loads(resp.read())["data"]["activeTargets"])

    def healthy(self) -> bool:
        with urllib.request.urlopen(self.p.url + "/-/healthy", timeout=10) as resp:
            return bool(resp.status == 200)

    def alive(self) -> None:
        assert self.p.proc.poll() is None, self.p.log_tail()
        assert self.healthy()

    def scraping(self, job: str) -> None:
        """The job's targets are scraped on (its scrape count grows by two)."""
        before = self.value("relay_scrapes_total", job=job)
        wait_for(lambda: self.value("relay_scrapes_total", job=job) >= before + 2, 30, f"job {job} scraped on")

    def log(self) -> str:
        return self.p.log_path.read_text(errors="replace")

    def wait_log(self, text: str, timeout: float = 30.0) -> None:
        wait_for(lambda: text in self.log(), timeout, f"{text!r} logged")

    def wait_value(self, name: str, at_least: float, timeout: float = 60.0, **labels: str) -> None:
        wait_for(lambda: self.value(name, **labels) >= at_least, timeout, f"{name}{labels} >= {at_least}")

    def stop(self) -> int:
        self.p.proc.send_signal(signal.SIGTERM)
        try:
            return self.p.proc.wait(60)
        finally:
            self.p.kill()


BILLION_LAUGHS = (
    "- targets: ['{target}']\n  labels:\n    a: &a [lol, lol, lol, lol, lol, lol, lol, lol, lol]\n"
    + "".join(f"    {chr(98 + i)}: &{chr(98 + i)} [{', '.join([f'*{chr(97 + i)}'] * 9)}]\n" for i in range(8))
    + "    v: *i\n"
)


def test_hostile_file_sd_files_under_a_running_relay(stage: Stage, tmp_path: Path) -> None:
    """file_sd files rewritten under a running relay with one latin-1 byte, JSON nested 100,000
    deep, YAML nested as deep, a billion-laughs alias bomb as a label value, a file of 65 MiB: each
    is one discovery error naming the file and the problem, logged once; the target the file named
    before stays scraped; the relay stays up and answers."""
    target = f"127.0.0.1:{stage.port}"
    sd_json, sd_yaml = tmp_path / "t.json", tmp_path / "t.yml"
    good_json = json.dumps([{"targets": [target], "labels": {"f": "json"}}])
    good_yaml = f"- targets: ['{target}']\n  labels: {{f: yaml}}\n"
    sd_json.write_text(good_json)
    sd_yaml.write_text(good_yaml)
    cfg = tmp_path / "relay.yml"
    cfg.write_text("global: {scrape_interval: 1s, scrape_timeout: 800ms}\nscrape_configs:\n"
                   f"  - job_name: sd\n    file_sd_configs: [{{files: ['{sd_json}', '{sd_yaml}']}}]\n")
    relay = Running(cfg, tmp_path / "run")
    try:
        wait_for(lambda: len(relay.targets()) == 2, 30, "both file_sd targets active")
        cases: list[tuple[Path, bytes, str]] = [
            (sd_json, good_json.replace("json", "caf\xe9").encode("latin-1"), f"{sd_json}: not UTF-8 (byte 0xe9"),
            (sd_json, b"[" * 100_000 + b"]" * 100_000, f"{sd_json}: nested too deeply"),
            (sd_yaml, b"[" * 100_000 + b"]" * 100_000, f"{sd_yaml}: nested too deeply"),
            (sd_yaml, BILLION_LAUGHS.format(target=target).encode(), f"{sd_yaml}[0].labels.a: must be a string, got list"),
        ]
        for path, body, problem in cases:
            errors = relay.value("relay_discovery_errors_total", job="sd", mechanism="file")
            path.write_bytes(body)
            relay.wait_log(problem)
            assert relay.value("relay_discovery_errors_total", job="sd", mechanism="file") > errors
            relay.alive()
            assert {t["labels"]["f"] for t in relay.targets()} == {"json", "yaml"}  # the last good groups
            relay.scraping("sd")
            (path.write_text(good_json if path == sd_json else good_yaml))
        with open(sd_json, "r+b") as f:  # 65 MiB (sparse: no disk to speak of)
            f.truncate(65 << 20)
        wait_for(lambda: "larger than 64 MiB; not read" in relay.log(), 30, "the huge file refused")
        relay.alive()
        assert len(relay.targets()) == 2
        relay.scraping("sd")
        time.sleep(3)  # the files polled again meanwhile: still the same errors, not logged again
        text = relay.log()
        for _, _, problem in cases:
            assert text.count(problem) == 1, (problem, text[-3000:])
        assert text.count("larger than 64 MiB") == 1
        assert "Traceback" not in text
        rss = relay.p.sample_rss()
    finally:
        assert relay.stop() == 0
    assert rss < 300, f"peak RSS {rss:.0f} MiB"


def _member(name: str, url: str) -> dict[str, Any]:
    return {"ID": str(abs(hash(name)) % (1 << 60)), "name": name, "clientURLs": [url], "peerURLs": [url]}


def test_odd_etcd_member_lists_under_a_running_relay(stage: Stage, tmp_path: Path) -> None:
    """A hostile etcd endpoint: members whose client URL is not http/https are dropped and counted;
    then `[]`, members that are not objects, JSON nested 100,000 deep, a body of the wrong type, a
    member list past the size bound: each a discovery error, the last good members kept."""
    good = {"header": {"cluster_id": "1"}, "members": [
        _member("m0", f"http://127.0.0.1:{stage.port}"),
        _member("sock", "unix://localhost:2379"),
        _member("file", "file:///etc/passwd"),
        _member("nohost", "http://"),
    ]}
    stage.answer("/v3/cluster/member/list", body=json.dumps(good).encode())
    cfg = tmp_path / "relay.yml"
    cfg.write_text("global: {scrape_interval: 1s, scrape_timeout: 800ms}\nscrape_configs:\n"
                   "  - job_name: etcd\n    etcd_sd_configs:\n"
                   f"      - {{endpoints: ['http://127.0.0.1:{stage.port}'], refresh_interval: 1s}}\n")
    relay = Running(cfg, tmp_path / "run")
    try:
        wait_for(lambda: len(relay.targets()) == 1, 30, "the one http member active")
        dropped = relay.value("relay_discovery_dropped_total", job="etcd", mechanism="etcd", reason="client_url_scheme")
        assert dropped >= 3 and dropped % 3 == 0  # three dropped on every refresh
        assert "3 members dropped, their client URL is not http or https" in relay.log()
        bad: list[tuple[bytes, str]] = [
            (b"[]", "unexpected member list: AttributeError: 'list' object"),
            (b'{"members": ["x"]}', "unexpected member list: AttributeError: 'str' object"),
            (b'{"members": 5}', "unexpected member list: TypeError: 'int' object"),
            (b'{"members": [{"clientURLs": [7]}]}', "clientURLs must be a list of strings, got int"),
            (b"[" * 100_000 + b"]" * 100_000, "unexpected member list: JSONDecodeError: depth limit"),
            (b"x" * (17 << 20), "body_size_limit: body exceeds"),
        ]
        for body, problem in bad:
            errors = relay.value("relay_discovery_errors_total", job="etcd", mechanism="etcd")
            stage.answer("/v3/cluster/member/list", body=body)
            relay.wait_log(problem)
            relay.wait_value("relay_discovery_errors_total", errors + 2, job="etcd", mechanism="etcd")
            relay.alive()
            assert [t["labels"]["__meta_etcd_member_name"] if "__meta_etcd_member_name" in t["labels"]
                    else t["discoveredLabels"]["__meta_etcd_member_name"] for t in relay.targets()] == ["m0"]
            relay.scraping("etcd")
        text = relay.log()
        for _, problem in bad:  # every refresh fails, each problem is logged once
            assert text.count(problem) == 1, (problem, text[-3000:])
        assert text.count("members dropped") == 1
        assert "Traceback" not in text
    finally:
        assert relay.stop() == 0


def test_bad_configs_on_reload_keep_the_running_one(stage: Stage, tmp_path: Path) -> None:
    """SIGHUP with the config file nested 100,000 deep, an alias bomb, a latin-1 byte, a certificate
    that is not there: each reload fails with its reason, relay_config_last_reload_successful is 0,
    the running config goes on scraping; a good config reloads and sets it back to 1."""
    cfg = tmp_path / "relay.yml"
    good = ("global: {scrape_interval: 1s, scrape_timeout: 800ms}\nscrape_configs:\n"
            f"  - job_name: a\n    static_configs: [{{targets: ['127.0.0.1:{stage.port}']}}]\n")
    cfg.write_text(good)
    relay = Running(cfg, tmp_path / "run")
    bomb = ("global:\n  external_labels:\n    a: &a [lol, lol, lol, lol, lol, lol, lol, lol, lol]\n"
            + "".join(f"    {chr(98 + i)}: &{chr(98 + i)} [{', '.join([f'*{chr(97 + i)}'] * 9)}]\n" for i in range(8)))
    cases: list[tuple[bytes, str]] = [
        (b"[" * 100_000 + b"]" * 100_000, "relay.yml: invalid YAML: nested too deeply"),
        (bomb.encode(), "global.external_labels.a: must be a string"),
        (good.replace("job_name: a", "job_name: caf\xe9").encode("latin-1"), "relay.yml: config file is not UTF-8 text"),
        ((good + f"    tls_config: {{cert_file: {tmp_path}/gone.crt, key_file: {tmp_path}/gone.key}}\n").encode(),
         "gone.crt: No such file"),
    ]
    try:
        wait_for(lambda: relay.value("relay_scrapes_total", job="a") >= 1, 30, "job a scraped")
        assert relay.value("relay_config_last_reload_successful") == 1
        for body, problem in cases:
            failures = relay.value("relay_config_reloads_total", result="failure")
            cfg.write_bytes(body)
            relay.p.proc.send_signal(signal.SIGHUP)
            relay.wait_value("relay_config_reloads_total", failures + 1, result="failure")
            relay.alive()
            assert relay.value("relay_config_last_reload_successful") == 0
            assert problem in relay.log().rsplit("\n", 2)[-2]  # the last line: this reload's
            assert [t["scrapePool"] for t in relay.targets()] == ["a"]
            relay.scraping("a")
        cfg.write_text(good.replace("job_name: a", "job_name: b"))
        relay.p.proc.send_signal(signal.SIGHUP)
        wait_for(lambda: relay.value("relay_config_last_reload_successful") == 1, 60, "the good reload")
        relay.scraping("b")
        text = relay.log()
        assert text.count("config reload failed") == len(cases) and "Traceback" not in text
        assert all(len(line) < 1200 for line in text.splitlines())  # one line each, not the file
    finally:
        assert relay.stop() == 0


def test_secret_and_certificate_files_deleted_during_rotation(stage: Stage, tmp_path: Path,
                                                             victoria_metrics: VictoriaMetrics) -> None:
    """A scrape's password_file, a remote write's bearer_token_file and a client certificate
    deleted under a running relay: the scrape fails with reason auth naming the file, the send is
    retried naming it, the certificate's client is kept; back in place, all goes on, and
    VictoriaMetrics gets the samples of the outage."""
    from relay.devtools.localenv import make_tls_files

    tls = make_tls_files(tmp_path / "tls")
    password, token = tmp_path / "password", tmp_path / "token"
    password.write_text("s3cret\n")
    token.write_text("tok\n")
    stage.require_auth = "Basic " + base64.b64encode(b"relay:s3cret").decode()
    cfg = tmp_path / "relay.yml"
    cfg.write_text(
        "global: {scrape_interval: 1s, scrape_timeout: 800ms, external_labels: {case: rotation}}\nscrape_configs:\n"
        f"  - job_name: auth\n    basic_auth: {{username: relay, password_file: {password}}}\n"
        f"    tls_config: {{cert_file: {tls.client_cert}, key_file: {tls.client_key}}}\n"
        f"    static_configs: [{{targets: ['127.0.0.1:{stage.port}']}}]\n"
        f"remote_write:\n  - url: {victoria_metrics.write_url}\n    bearer_token_file: {token}\n"
        "    queue_config: {batch_send_deadline: 200ms, min_backoff: 50ms, max_backoff: 500ms}\n"
    )
    relay = Running(cfg, tmp_path / "run")
    try:
        wait_for(lambda: relay.targets()[0]["health"] == "up", 30, "the auth target up")
        password.unlink()
        token.unlink()
        Path(tls.client_cert).rename(tmp_path / "cert.moved")
        wait_for(lambda: relay.targets()[0]["lastErrorReason"] == "auth", 30, "the scrape failing with auth")
        (t,) = relay.targets()
        assert str(password) in t["lastError"] and t["health"] == "down"
        wait_for(lambda: "cannot read authorization.credentials_file" in relay.log(), 30, "the send failing")
        failed = relay.value("relay_remote_write_samples_failed_total")
        assert failed > 0
        time.sleep(7)  # past the client pool's certificate check (5 s): the old client is kept
        relay.alive()
        password.write_text("s3cret\n")
        token.write_text("tok\n")
        (tmp_path / "cert.moved").rename(tls.client_cert)
        wait_for(lambda: relay.targets()[0]["health"] == "up", 30, "the auth target up again")
        wait_for(lambda: relay.value("relay_remote_write_pending_samples") == 0, 30, "the queue sent")
        text = relay.log()
        assert text.count("cannot read authorization.credentials_file") == 1 and "Traceback" not in text
    finally:
        assert relay.stop() == 0
    # samples scraped before, during (up=0) and after the outage are all in VictoriaMetrics
    ups = victoria_metrics.query('count_over_time(up{job="auth",case="rotation"}[5m])')
    assert ups and float(ups[0]["value"][1]) >= 5
    downs = victoria_metrics.query('count_over_time((up{job="auth",case="rotation"} == 0)[5m:1s])')
    assert downs, "the up=0 samples of the outage reached the receiver"
