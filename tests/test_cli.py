"""The `relay` command: flags, exit statuses, one-line errors; the web endpoints of a running relay."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable
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
        assert "<table id='targets'>" in page and "127.0.0.1:1" in page
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


# -- Prometheus' flag names, --version, typos (issue 19) ----------------------------------------

def test_version_says_revision_python_and_c_extensions() -> None:
    from relay._ext import NO_EXTENSIONS
    from relay.buildinfo import revision

    for cmd in (RELAY, [sys.executable, "-m", "relay"]):  # python -m relay works too
        out = subprocess.run([*cmd, "--version"], capture_output=True, text=True, timeout=60)
        assert out.returncode == 0, out.stderr
        first, *rest = out.stdout.splitlines()
        assert first == f"relay, version {__version__} (revision: {revision()})"
        assert revision() != "unknown"  # the tests run from a git checkout
        assert any(line.split() == ["python", "version:", sys.version.split()[0], "(CPython)"] for line in rest)
        (ext,) = [line for line in rest if "c extensions:" in line]
        assert ("c extensions:   off" in ext) == NO_EXTENSIONS and ("c extensions:   on " in ext) != NO_EXTENSIONS


def test_revision_unknown_outside_git_and_without_embedded(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    from relay import buildinfo

    monkeypatch.setattr(buildinfo, "_PACKAGE", tmp_path / "relay")
    buildinfo.revision.cache_clear()
    try:
        assert buildinfo.revision() == "unknown"
        (tmp_path / "relay").mkdir()
        (tmp_path / "relay" / "_revision").write_text("0123456789abcdef\n")
        buildinfo.revision.cache_clear()
        assert buildinfo.revision() == "0123456789abcdef"
    finally:
        buildinfo.revision.cache_clear()


@pytest.mark.parametrize(
    "argv",
    [
        ["run", "--config.file", "c.yml", "--web.listen-address", ":9191", "--log.level", "debug",
         "--log.format", "json", "--web.enable-lifecycle", "--web.config.file", "w.yml",
         "--config.auto-reload-interval", "5s"],
        ["--config.file", "c.yml", "--web.listen-address", ":9191", "--log.level", "debug", "--log.format", "json",
         "--web.enable-lifecycle", "--web.config.file", "w.yml", "--config.auto-reload-interval", "5s", "run"],
        ["--log.level=debug", "--log.format=json", "run", "--config=c.yml", "--listen=:9191", "--web.enable-lifecycle",
         "--web.config.file=w.yml", "--config.auto-reload-interval=5s"],
        ["--log-level", "debug", "--web.enable-lifecycle", "run", "--config", "c.yml", "--listen", ":9191",
         "--log.format", "json", "--web.config.file", "w.yml", "--config.auto-reload-interval", "5s"],
    ],
)
def test_prometheus_flag_names_before_or_after_the_subcommand(argv: list[str]) -> None:
    from relay.cli import build_parser, flags_map, parse_args

    parser = build_parser()
    args = parse_args(parser, argv)
    got = (args.command, args.config, args.listen, args.log_level, args.log_format, args.enable_lifecycle,
           args.web_config_file, args.auto_reload_interval)
    assert got == ("run", "c.yml", ":9191", "debug", "json", True, "w.yml", "5s")
    flags = flags_map(parser, args)
    assert flags["config.file"] == "c.yml" and flags["web.listen-address"] == ":9191"
    assert flags["web.enable-lifecycle"] == "true" and "listen" not in flags and "log-level" not in flags


def test_config_file_alone_runs_as_prometheus_starts(tmp_path: Path) -> None:
    cfg = tmp_path / "c.yml"
    cfg.write_text("scrape_configs: []\n")
    port = free_ports(1)[0]
    proc = subprocess.Popen([*RELAY, f"--config.file={cfg}", f"--web.listen-address=127.0.0.1:{port}", "--queue.memory"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_http(f"http://127.0.0.1:{port}/-/ready", 20)
        flags = orjson.loads(urllib.request.urlopen(f"http://127.0.0.1:{port}/api/v1/status/flags").read())["data"]
        assert flags["config.file"] == str(cfg) and flags["queue.memory"] == "true"  # run's own flags too
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(30)
    assert proc.returncode == 0


def test_defaults_when_no_flag_is_given() -> None:
    from relay.cli import DEFAULT_LISTEN, build_parser, parse_args

    args = parse_args(build_parser(), ["run", "--config", "c.yml"])
    assert (args.listen, args.log_level, args.log_format, args.enable_lifecycle, args.web_config_file,
            args.auto_reload_interval) == (DEFAULT_LISTEN, "info", "text", False, None, "0s")


@pytest.mark.parametrize(
    ("args", "expect"),
    [
        (["run", "--config.fil", "c.yml"], "relay: unknown flag --config.fil for run; did you mean --config.file?"),
        (["run", "--config", "c.yml", "--web.listen-adress=:9091"],
         "relay: unknown flag --web.listen-adress for run; did you mean --web.listen-address?"),
        (["--log.levl", "debug", "run"], "relay: unknown flag --log.levl for run; did you mean --log.level?"),
        (["check-config", "--config", "c.yml", "--web.enable-lifecycl"],
         "relay: unknown flag --web.enable-lifecycl for check-config; did you mean --web.enable-lifecycle?"),
        (["run", "--config", "c.yml", "--zzzz"], "relay: unknown flag --zzzz for run; see relay --help"),
        (["rnu"], "did you mean 'run'?"),
        (["run", "--config", "c.yml", "--log.format", "jsn"],
         "argument --log.format: invalid choice: 'jsn' (choose from 'text', 'logfmt', 'json'); did you mean 'json'?"),
        (["run", "--config", "{cfg}", "--config.auto-reload-interval", "500ms"],
         "relay: --config.auto-reload-interval: must be at least 1s (or 0s: off)"),
        (["run", "--config", "{cfg}", "--config.auto-reload-interval", "often"],
         "relay: --config.auto-reload-interval: 'often' is not a duration"),
        (["run", "--config", "{cfg}", "--web.listen-address", "nope"],
         "relay: --web.listen-address: 'nope' is not HOST:PORT"),
        (["check-config"], "the following arguments are required: --config.file"),
        (["--listen", "nope", "run", "--config", "{cfg}", "--log.level", "info"], "relay: --listen: 'nope' is not HOST:PORT"),
    ],
)
def test_mistyped_flag_named_with_the_closest_exit_2(tmp_path: Path, args: list[str], expect: str) -> None:
    cfg = tmp_path / "c.yml"
    cfg.write_text("scrape_configs: []\n")
    out = relay(*[a.format(cfg=cfg) for a in args])
    assert out.returncode == 2
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1 and expect in lines[0], out.stderr


def test_log_formats() -> None:
    import logging

    from relay.cli import JsonFormatter, LogfmtFormatter

    rec = logging.LogRecord("relay.x", logging.WARNING, __file__, 1, 'say "hi"\nthere', None, None)
    line = LogfmtFormatter().format(rec)
    assert line.startswith("ts=") and line.endswith(' level=warn logger=relay.x msg="say \\"hi\\"\\nthere"')
    doc = orjson.loads(JsonFormatter().format(rec))
    assert doc["level"] == "warn" and doc["logger"] == "relay.x" and doc["msg"] == 'say "hi"\nthere'
    assert doc["ts"].endswith("Z")


def test_config_auto_reload_interval_reloads_on_change(tmp_path: Path) -> None:
    cfg = tmp_path / "c.yml"
    cfg.write_text("scrape_configs:\n  - job_name: j1\n    static_configs: [{targets: ['127.0.0.1:1']}]\n")
    port = free_ports(1)[0]
    base = f"http://127.0.0.1:{port}"
    log = tmp_path / "relay.log"
    with log.open("wb") as err:
        proc = subprocess.Popen([*RELAY, "run", "--config.file", str(cfg), "--web.listen-address", f"127.0.0.1:{port}",
                                 "--config.auto-reload-interval", "1s"], stdout=subprocess.DEVNULL, stderr=err)
    try:
        wait_http(base + "/-/ready", 20, proc)

        def jobs() -> list[str]:
            data = orjson.loads(urllib.request.urlopen(base + "/api/v1/targets", timeout=10).read())
            return [t["labels"]["job"] for t in data["data"]["activeTargets"]]

        def metric(name: str) -> float:
            text = urllib.request.urlopen(base + "/metrics", timeout=10).read().decode()
            (line,) = [ln for ln in text.splitlines() if ln.startswith(name + " ")]
            return float(line.split()[1])

        def until(cond: Callable[[], bool]) -> bool:
            deadline = time.monotonic() + 30
            while time.monotonic() < deadline:
                if cond():
                    return True
                time.sleep(0.2)
            return False

        assert jobs() == ["j1"] and metric("relay_config_last_reload_successful") == 1
        first = metric("relay_config_last_reload_success_timestamp_seconds")
        cfg.write_text("scrape_configs:\n  - job_name: j2\n    static_configs: [{targets: ['127.0.0.1:2']}]\n")
        assert until(lambda: jobs() == ["j2"])
        assert metric("relay_config_last_reload_success_timestamp_seconds") > first
        cfg.write_text("scrape_configs:\n  - job_name: j3\n    bogus: 1\n")  # broken: kept j2, said so
        assert until(lambda: metric("relay_config_last_reload_successful") == 0)
        assert jobs() == ["j2"]
        info = orjson.loads(urllib.request.urlopen(base + "/api/v1/status/runtimeinfo", timeout=10).read())
        assert info["data"]["reloadConfigSuccess"] is False
        time.sleep(2.5)  # two more intervals: the same broken content is not tried again
        cfg.write_text("scrape_configs:\n  - job_name: j4\n    static_configs: [{targets: ['127.0.0.1:4']}]\n")
        assert until(lambda: jobs() == ["j4"])
        assert metric("relay_config_last_reload_successful") == 1
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(30)
    text = log.read_text()
    assert text.count("scrape_configs[0].bogus: unknown key") == 1, text
    assert text.count("changed, reloading") == 3
