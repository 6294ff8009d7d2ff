"""The `relay` command: flags, exit statuses, one-line errors; the web endpoints of a running relay."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import orjson
import pytest

from relay import __version__
from relay.devtools.localenv import free_ports, wait_http

RELAY = [sys.executable, "-m", "relay.cli"]


def relay(*args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*RELAY, *args], capture_output=True, text=True, timeout=timeout)


def test_version_and_help() -> None:
    out = relay("--version")
    assert out.returncode == 0 and __version__ in out.stdout
    out = relay("--help")
    assert out.returncode == 0 and "run" in out.stdout and "check-config" in out.stdout
    assert relay().returncode == 2


def test_check_config_ok_and_bad(tmp_path: Path) -> None:
    good = tmp_path / "good.yml"
    good.write_text("scrape_configs:\n  - job_name: etcd\n    static_configs: [{targets: ['a:2381']}]\n")
    out = relay("check-config", "--config", str(good))
    assert out.returncode == 0 and "OK" in out.stdout
    bad = tmp_path / "bad.yml"
    bad.write_text("scrape_configs:\n  - job_name: etcd\n    scrape_timeout: 1x\n")
    out = relay("check-config", "--config", str(bad))
    assert out.returncode == 2
    assert out.stderr.strip().splitlines() == [
        f"relay: {bad}:3: scrape_configs[0].scrape_timeout: '1x' is not a duration (like 15s, 1m, 500ms)"
    ]


def test_check_config_reports_every_error_and_warning(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yml"
    bad.write_text(
        "global:\n"
        "  scrape_interval: 15x\n"                                  # 2
        "  query_log_file: /var/log/q.log\n"                        # 3: warning
        "scrape_configs:\n"
        "  - job_name: a\n"
        "    scrape_protocols: [PrometheusText0.0.4, openmetricstext1.0.0]\n"  # 6
        "    tls_config: {ca_file: missing-ca.pem}\n"               # 7 (read by check_config: not reached)
        "    bogus: 1\n"                                            # 8
        "  - job_name: b\n"
        "    consul_sd_configs: [{server: 'localhost:8500'}]\n"     # 10
        "rule_files: [rules.yml]\n"                                 # 11
        "remote_write:\n"
        "  - url: http://127.0.0.1:1/w\n"
        "    queue_config: {max_shards: zero}\n"                    # 14
    )
    out = relay("check-config", "--config", str(bad))
    assert out.returncode == 2, out
    lines = out.stderr.strip().splitlines()
    assert lines[0] == f"relay: warning: {bad}:3: global.query_log_file: has no effect: the relay answers no PromQL queries"
    lines = lines[1:]
    assert [line.split(": ", 2)[1] for line in lines] == [
        f"{bad}:2", f"{bad}:6", f"{bad}:8", f"{bad}:10", f"{bad}:11", f"{bad}:14"], lines
    assert lines[0].endswith("global.scrape_interval: '15x' is not a duration (like 15s, 1m, 500ms)")
    assert "scrape_configs[0].scrape_protocols[1]: unknown scrape protocol 'openmetricstext1.0.0' " \
        "(names are case sensitive: OpenMetricsText1.0.0)" in lines[1]
    assert lines[2].endswith("scrape_configs[0].bogus: unknown key")
    assert "scrape_configs[1].consul_sd_configs: is not supported by the relay: write the targets to files" in lines[3]
    assert "rule_files: is not allowed: " in lines[4] and "agent mode" in lines[4]
    assert lines[5].endswith("remote_write[0].queue_config.max_shards: must be an integer, got 'zero'")
    # the same file fixed but for the certificate: the warning, then the file that cannot be read
    bad.write_text(bad.read_text().replace("15x", "15s").replace(", openmetricstext1.0.0", "")
                   .replace("    bogus: 1\n", "").replace("  - job_name: b\n    consul_sd_configs: [{server: 'localhost:8500'}]\n", "")
                   .replace("rule_files: [rules.yml]\n", "").replace("zero", "2"))
    out = relay("check-config", "--config", str(bad))
    assert out.returncode == 2
    assert out.stderr.strip().splitlines() == [
        f"relay: warning: {bad}:3: global.query_log_file: has no effect: the relay answers no PromQL queries",
        f"relay: {bad}:7: scrape_configs[0].tls_config.ca_file: cannot read {tmp_path / 'missing-ca.pem'}: "
        "No such file or directory",
    ]
    bad.write_text(bad.read_text().replace("    tls_config: {ca_file: missing-ca.pem}\n", ""))
    out = relay("check-config", "--config", str(bad))
    assert out.returncode == 0 and "OK" in out.stdout
    assert out.stderr.strip().splitlines() == [
        f"relay: warning: {bad}:3: global.query_log_file: has no effect: the relay answers no PromQL queries"]


@pytest.mark.parametrize(
    ("args", "expect"),
    [
        (["run", "--config", "/nonexistent.yml"], "/nonexistent.yml: cannot read config file"),
        (["run", "--config", "{cfg}", "--listen", "nope"], "--listen: 'nope' is not HOST:PORT"),
        (["run", "--config", "{cfg}", "--cluster.members-count", "2", "--cluster.member-num", "5"],
         "--cluster.member_num: must be below members_count (2)"),
        (["run"], "the following arguments are required: --config"),
        (["check-config", "--config", "{certs}"],
         "certs.yml:3: scrape_configs[0].tls_config.ca_file: cannot read /nonexistent/ca.pem: No such file or directory"),
        (["run", "--config", "{rw}", "--queue-dir", "/proc/relay-queue"],
         "--queue-dir: /proc/relay-queue: cannot write there"),
        (["run", "--config", "{rw}", "--queue-dir", "{file}/q"], "--queue-dir: {file}/q: cannot write there"),
        (["run", "--config", "{cfg}", "--web.max-connections", "0"], "--web.max-connections: must be at least 1"),
        (["run", "--config", "{cfg}", "--web.read-timeout", "soon"], "--web.read-timeout: 'soon' is not a duration"),
        (["run", "--config", "{cfg}", "--web.config.file", "/nonexistent.yml"],
         "/nonexistent.yml: cannot read web config file"),
        (["run", "--config", "{cfg}", "--web.disable-reload", "--web.enable-lifecycle"],
         "--web.disable-reload: cannot be used with --web.enable-lifecycle"),
    ],
)
def test_bad_flags_one_line_exit_2(tmp_path: Path, args: list[str], expect: str) -> None:
    cfg = tmp_path / "c.yml"
    cfg.write_text("scrape_configs: []\n")
    certs = tmp_path / "certs.yml"
    certs.write_text("scrape_configs:\n  - job_name: a\n    tls_config: {ca_file: /nonexistent/ca.pem}\n")
    rw = tmp_path / "rw.yml"
    rw.write_text("remote_write: [{url: 'http://127.0.0.1:1/api/v1/write'}]\n")
    file = tmp_path / "a-file"
    file.write_text("")
    out = relay(*[a.format(cfg=cfg, certs=certs, rw=rw, file=file) for a in args])
    expect = expect.format(file=file)
    assert out.returncode == 2
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1 and expect in lines[0], out.stderr


def test_web_endpoints_reload_and_sighup(tmp_path: Path) -> None:
    cfg = tmp_path / "c.yml"
    cfg.write_text("global: {scrape_interval: 1s}\nscrape_configs:\n  - job_name: j1\n    static_configs: [{targets: ['127.0.0.1:1']}]\n")
    port = free_ports(1)[0]
    base = f"http://127.0.0.1:{port}"
    proc = subprocess.Popen([*RELAY, "run", "--config", str(cfg), "--listen", f"127.0.0.1:{port}",
                             "--web.enable-lifecycle"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        wait_http(base + "/-/ready", 20, proc)  # type: ignore[arg-type]
        assert urllib.request.urlopen(base + "/-/healthy").status == 200
        metrics = urllib.request.urlopen(base + "/metrics").read().decode()
        assert "relay_scrapes_total" in metrics and 'relay_targets{job="j1"} 1.0' in metrics
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline:  # the target refuses: it must show as down with a reason
            data = orjson.loads(urllib.request.urlopen(base + "/targets").read())
            (t,) = data["data"]["activeTargets"]
            if t["health"] == "down":
                break
            time.sleep(0.2)
        assert t["health"] == "down" and t["lastErrorReason"] == "connect" and t["labels"]["job"] == "j1"
        page = urllib.request.urlopen(base + "/targets?format=html").read().decode()
        assert "<table>" in page and "127.0.0.1:1" in page
        # invalid config on reload: 400 with the reason, old config kept
        cfg.write_text("scrape_configs:\n  - job_name: j1\n    bogus: 1\n")
        req = urllib.request.Request(base + "/-/reload", method="POST")
        with pytest.raises(urllib.error.HTTPError) as info:
            urllib.request.urlopen(req)
        assert info.value.code == 400 and b"scrape_configs[0].bogus: unknown key" in info.value.read()
        data = orjson.loads(urllib.request.urlopen(base + "/targets").read())
        assert [t["labels"]["job"] for t in data["data"]["activeTargets"]] == ["j1"]
        # valid config via SIGHUP
        cfg.write_text("scrape_configs:\n  - job_name: j2\n    static_configs: [{targets: ['127.0.0.1:2']}]\n")
        proc.send_signal(signal.SIGHUP)
        deadline = time.monotonic() + 20
        jobs: list[str] = []
        while time.monotonic() < deadline:
            data = orjson.loads(urllib.request.urlopen(base + "/targets").read())
            jobs = [t["labels"]["job"] for t in data["data"]["activeTargets"]]
            if jobs == ["j2"]:
                break
            time.sleep(0.1)
        assert jobs == ["j2"]
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(30)
    assert proc.returncode == 0


def test_reload_is_off_by_default(tmp_path: Path) -> None:
    cfg = tmp_path / "c.yml"
    cfg.write_text("scrape_configs: []\n")
    port = free_ports(1)[0]
    proc = subprocess.Popen([*RELAY, "run", "--config", str(cfg), "--listen", f"127.0.0.1:{port}"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_http(f"http://127.0.0.1:{port}/-/ready", 20)
        req = urllib.request.Request(f"http://127.0.0.1:{port}/-/reload", method="POST")
        with pytest.raises(urllib.error.HTTPError) as info:
            urllib.request.urlopen(req)
        assert info.value.code == 403
    finally:
        os.kill(proc.pid, signal.SIGTERM)
        proc.wait(30)


def test_cluster_flags_not_given_take_the_config_defaults() -> None:
    from relay.cli import _cluster_from_flags, build_parser
    from relay.config import ClusterConfig

    def flags(*args: str) -> ClusterConfig | None:
        return _cluster_from_flags(build_parser().parse_args(["run", "--config", "x.yml", *args]))

    assert flags() is None
    assert flags("--cluster.members-count", "3") == ClusterConfig(members_count=3)
    assert flags("--cluster.members-count", "3", "--cluster.member-num", "2", "--cluster.replica-label", "r") == (
        ClusterConfig(members_count=3, member_num=2, replica_label="r")
    )
    assert flags("--cluster.replica-label", "") == ClusterConfig()
