"""Config readers for dns_sd_configs, http_sd_configs and scrape_config_files."""

from __future__ import annotations

from pathlib import Path

import pytest

from relay._exceptions import ConfigError
from relay.config import DNSSDConfig, HTTPSDConfig, load_config, parse_config
from relay.scrape import scrape_settings


def _one(sd: str) -> str:
    return f"scrape_configs:\n  - job_name: etcd\n{sd}"


def test_dns_sd_defaults_and_options() -> None:
    c = parse_config(_one("    dns_sd_configs:\n      - names: ['_etcd-client._tcp.example.com']\n"))
    assert c.scrape_configs[0].dns_sd_configs == (DNSSDConfig(names=("_etcd-client._tcp.example.com",)),)
    d = DNSSDConfig(names=("_etcd-client._tcp.example.com",))
    assert (d.type, d.port, d.refresh_interval, d.nameservers) == ("SRV", 0, 30.0, ())
    c = parse_config(
        _one(
            "    dns_sd_configs:\n      - names: [etcd.example.com]\n        type: a\n        port: 2381\n"
            "        refresh_interval: 5s\n        nameservers: ['127.0.0.1:5353', '10.0.0.2', '[::1]:53']\n"
        )
    )
    (d,) = c.scrape_configs[0].dns_sd_configs
    assert (d.type, d.port, d.refresh_interval) == ("A", 2381, 5.0)
    assert d.nameservers == (("127.0.0.1", 5353), ("10.0.0.2", 53), ("::1", 53))
    # Discovery is not part of what a running loop depends on.
    assert scrape_settings(c.scrape_configs[0]).dns_sd_configs == ()


@pytest.mark.parametrize(
    ("sd", "where", "problem"),
    [
        ("names: []", "dns_sd_configs[0].names", "needs at least one name"),
        ("names: ['a..b']", "dns_sd_configs[0].names[0]", "is not a DNS name"),
        (f"names: [{'x' * 64}.example.com]", "dns_sd_configs[0].names[0]", "is not a DNS name"),
        ("names: [a]\n        type: TXT", "dns_sd_configs[0].type", "'TXT' is not one of SRV, A, AAAA, MX, NS"),
        ("names: [a]\n        type: AAAA", "dns_sd_configs[0].port", "is required for type AAAA"),
        ("names: [a]\n        port: 70000\n        type: A", "dns_sd_configs[0].port", "70000 is not a port"),
        ("names: [a]\n        nameservers: [dns.example.com]", "dns_sd_configs[0].nameservers[0]", "not an IP address"),
        ("names: [a]\n        nameservers: ['127.0.0.1:0']", "dns_sd_configs[0].nameservers[0]", "not an IP address"),
        ("names: [a]\n        refresh_interval: 0", "dns_sd_configs[0].refresh_interval", "greater than 0"),
        ("names: [a]\n        server: x", "dns_sd_configs[0].server", "unknown key"),
    ],
)
def test_dns_sd_errors(sd: str, where: str, problem: str) -> None:
    with pytest.raises(ConfigError, match=problem) as exc:
        parse_config(_one(f"    dns_sd_configs:\n      - {sd}\n"))
    assert exc.value.where == f"scrape_configs[0].{where}"


def test_http_sd_reader(tmp_path: Path) -> None:
    c = parse_config(
        _one(
            "    http_sd_configs:\n      - url: https://sd.example.com/targets\n"
            "        basic_auth: {username: u, password_file: pw}\n        tls_config: {ca_file: ca.pem}\n"
        ),
        base=tmp_path,
    )
    (h,) = c.scrape_configs[0].http_sd_configs
    assert isinstance(h, HTTPSDConfig) and h.refresh_interval == 60.0
    assert h.http.basic_auth is not None and h.http.basic_auth.password_file == str(tmp_path / "pw")
    assert h.http.tls_config.ca_file == str(tmp_path / "ca.pem")
    for sd, where, problem in [
        ("url: ftp://x/", "url", r"not an http\(s\) URL"),
        ("url: http:///x", "url", r"not an http\(s\) URL"),
        ("refresh_interval: 1m", "url", "is required"),
        ("url: http://x/\n        oauth2: {}", "oauth2.client_id", "is required"),
        ("url: http://x/\n        oauth2: {client_id: a, token_url: 'http://t/', x: 1}", "oauth2.x", "unknown key"),
    ]:
        with pytest.raises(ConfigError, match=problem) as exc:
            parse_config(_one(f"    http_sd_configs:\n      - {sd}\n"))
        assert exc.value.where == f"scrape_configs[0].http_sd_configs[0].{where}"


def _scrape_file(path: Path, *jobs: str, extra: str = "") -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    body = "".join(
        f"  - job_name: {j}\n    static_configs: [{{targets: ['127.0.0.1:2381']}}]\n{extra}" for j in jobs
    )
    path.write_text(f"scrape_configs:\n{body}")


def test_scrape_config_files_globs_relative_to_config(tmp_path: Path) -> None:
    _scrape_file(tmp_path / "jobs" / "b.yml", "b1", "b2")
    _scrape_file(tmp_path / "jobs" / "a.yml", "a", extra="    tls_config: {ca_file: certs/ca.pem}\n")
    (tmp_path / "jobs" / "notes.txt").write_text("not yaml: [")
    _scrape_file(tmp_path / "more.yaml", "m")
    cfg = tmp_path / "relay.yml"
    cfg.write_text(
        "scrape_config_files: ['jobs/*.yml', more.yaml, 'nothing/*.yml']\n"
        "scrape_configs:\n  - job_name: main\n    static_configs: [{targets: ['127.0.0.1:1']}]\n"
    )
    c = load_config(cfg)
    assert [s.job_name for s in c.scrape_configs] == ["main", "a", "b1", "b2", "m"]
    assert c.scrape_config_files == tuple(str(tmp_path / p) for p in ("jobs/a.yml", "jobs/b.yml", "more.yaml"))
    # A relative path in a scrape config file is relative to that file.
    assert c.scrape_configs[1].http.tls_config.ca_file == str(tmp_path / "jobs" / "certs" / "ca.pem")


@pytest.mark.parametrize(
    ("content", "where", "problem"),
    [
        ("scrape_configs:\n  - job_name: x\n    scrape_timeout: 5x\n", "{f}: scrape_configs[0].scrape_timeout", "not a duration"),
        ("scrape_configs:\n  - job_name: main\n", "{f}: scrape_configs[0].job_name", "used by another scrape config"),
        ("scrape_configs: [\n", "{f}:2:1", "invalid YAML"),
        ("- job_name: x\n", "{f}", "not a bare list"),
        ("scrape_configs: []\nglobal: {}\n", "{f}: global", "unknown key"),
        ("scrape_configs: {job_name: x}\n", "{f}: scrape_configs", "must be a list"),
    ],
)
def test_scrape_config_file_errors_name_the_file(tmp_path: Path, content: str, where: str, problem: str) -> None:
    bad = tmp_path / "jobs" / "bad.yml"
    bad.parent.mkdir()
    bad.write_text(content)
    cfg = tmp_path / "relay.yml"
    cfg.write_text(
        "scrape_config_files: ['jobs/*.yml']\n"
        "scrape_configs:\n  - job_name: main\n    static_configs: [{targets: ['127.0.0.1:1']}]\n"
    )
    with pytest.raises(ConfigError, match=problem) as exc:
        load_config(cfg)
    assert exc.value.where == where.format(f=bad)


def test_scrape_config_files_pattern_rules(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="only the file name may hold a wildcard") as exc:
        parse_config("scrape_config_files: ['*/jobs.yml']\n", base=tmp_path)
    assert exc.value.where == "scrape_config_files[0]"
    with pytest.raises(ConfigError, match="must be a list"):
        parse_config("scrape_config_files: jobs.yml\n", base=tmp_path)
    # A named file that does not exist matches nothing, as a glob (Prometheus: the same).
    assert parse_config("scrape_config_files: [missing.yml]\n", base=tmp_path).scrape_configs == ()
