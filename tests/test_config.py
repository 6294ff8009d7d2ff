"""Config loading: Prometheus-compatible YAML, and one-line errors that name the key."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from relay import config as config_module
from relay._exceptions import ConfigError
from relay.config import Secret, load_config, parse_config, parse_duration, parse_size

PROMETHEUS_ETCD = """
global:
  scrape_interval: 15s
  evaluation_interval: 15s
  external_labels:
    cluster: prod-a
scrape_configs:
  - job_name: etcd
    scheme: https
    tls_config:
      insecure_skip_verify: false
      server_name: etcd.example
    static_configs:
      - targets: ['10.0.0.1:2379', '10.0.0.2:2379']
        labels: {role: control-plane}
    relabel_configs:
      - source_labels: [__address__]
        regex: '(.*):2379'
        target_label: __address__
        replacement: '$1:2381'
    metric_relabel_configs:
      - source_labels: [__name__]
        regex: 'go_.*'
        action: drop
remote_write:
  - url: http://127.0.0.1:8428/api/v1/write
    headers: {X-Scope-OrgID: tenant1}
    queue_config:
      max_samples_per_send: 5000
      batch_send_deadline: 2s
"""


def test_prometheus_config_loads_unchanged() -> None:
    c = parse_config(PROMETHEUS_ETCD)
    assert c.global_config.scrape_interval == 15.0
    assert c.global_config.external_labels == (("cluster", "prod-a"),)
    (sc,) = c.scrape_configs
    assert sc.job_name == "etcd" and sc.scheme == "https" and sc.scrape_timeout == 10.0
    assert sc.static_configs[0].targets == ("10.0.0.1:2379", "10.0.0.2:2379")
    assert sc.http.tls_config.server_name == "etcd.example"
    assert len(sc.relabel_configs) == 1 and len(sc.metric_relabel_configs) == 1
    (rw,) = c.remote_write
    assert rw.queue_config.max_samples_per_send == 5000 and rw.queue_config.batch_send_deadline == 2.0
    assert rw.headers == (("X-Scope-OrgID", "tenant1"),)


@pytest.mark.parametrize(
    ("text", "where"),
    [
        ("scrape_configs:\n  - job_name: a\n    scrape_intervall: 1s\n", "scrape_configs[0].scrape_intervall: unknown key"),
        ("scrape_configs:\n  - job_name: a\n    scrape_interval: 5x\n", "scrape_configs[0].scrape_interval:"),
        ("scrape_configs:\n  - job_name: a\n    scrape_interval: 5s\n    scrape_timeout: 10s\n",
         "scrape_configs[0].scrape_timeout:"),
        ("scrape_configs:\n  - static_configs: []\n", "scrape_configs[0].job_name: is required"),
        ("scrape_configs:\n  - job_name: a\n  - job_name: a\n", "scrape_configs[1].job_name:"),
        ("scrape_configs:\n  - job_name: a\n    static_configs:\n      - targets: ['http://x:1']\n",
         "scrape_configs[0].static_configs[0].targets[0]:"),
        ("scrape_configs:\n  - job_name: a\n    scheme: ftp\n", "scrape_configs[0].scheme:"),
        ("remote_write:\n  - url: nope\n", "remote_write[0].url:"),
        ("remote_write:\n  - url: http://x/w\n    headers: {Content-Type: x}\n", "remote_write[0].headers.Content-Type:"),
        ("remote_write:\n  - url: http://x/w\n    queue_config: {max_shards: 0}\n",
         "remote_write[0].queue_config.max_shards:"),
        ("bogus: 1\n", "bogus: unknown key"),
        ("global: [1]\n", "global: must be a mapping"),
        ("scrape_configs: {a: 1}\n", "scrape_configs: must be a list"),
        ("scrape_configs:\n  - job_name: a\n    etcd_sd_configs:\n      - endpoints: []\n",
         "scrape_configs[0].etcd_sd_configs[0].endpoints:"),
        ("scrape_configs:\n  - job_name: a\n    body_size_limit: lots\n", "scrape_configs[0].body_size_limit:"),
        ("cluster: {members_count: 2, member_num: 2}\n", "cluster.member_num:"),
        ("global:\n  metric_name_validation_scheme: legacy\n  external_labels: {'bad-name': x}\n",
         "global.external_labels.bad-name:"),
        ("global:\n  external_labels: {'': x}\n", "global.external_labels.:"),
    ],
)
def test_bad_config_names_the_key(text: str, where: str) -> None:
    with pytest.raises(ConfigError) as info:
        parse_config(text)
    message = str(info.value)
    assert message.startswith(where), message
    assert "\n" not in message


def test_invalid_yaml_names_file_and_line(tmp_path: Path) -> None:
    p = tmp_path / "c.yml"
    p.write_text("global:\n  scrape_interval: [\n")
    with pytest.raises(ConfigError) as info:
        load_config(p)
    assert str(info.value).startswith(f"{p}:"), str(info.value)


def test_missing_file() -> None:
    with pytest.raises(ConfigError, match="cannot read config file"):
        load_config("/nonexistent/relay.yml")


def test_relative_paths_resolve_against_config_dir(tmp_path: Path) -> None:
    p = tmp_path / "c.yml"
    p.write_text(
        "scrape_configs:\n  - job_name: a\n    tls_config: {ca_file: ca.pem}\n"
        "    file_sd_configs: [{files: [targets/*.json]}]\n"
    )
    sc = load_config(p).scrape_configs[0]
    assert sc.http.tls_config.ca_file == str(tmp_path / "ca.pem")
    assert sc.file_sd_configs[0].files == (str(tmp_path / "targets/*.json"),)


def test_secrets_do_not_show_in_repr() -> None:
    c = parse_config(
        "scrape_configs:\n  - job_name: a\n    basic_auth: {username: u, password: hunter2}\n"
        "remote_write:\n  - url: http://x/w\n    authorization: {credentials: s3cret-token}\n"
    )
    text = repr(c)
    assert "hunter2" not in text and "s3cret-token" not in text
    assert isinstance(c.scrape_configs[0].http.basic_auth.password, Secret)  # type: ignore[union-attr]


@pytest.mark.parametrize(
    ("text", "seconds"), [("15s", 15), ("1m30s", 90), ("500ms", 0.5), ("1h", 3600), ("2d", 172800), ("0", 0)]
)
def test_durations(text: str, seconds: float) -> None:
    assert parse_duration(text, "x") == seconds


@pytest.mark.parametrize(("text", "size"), [("10MB", 10 * 1024**2), ("512KiB", 512 * 1024), ("0", 0), (1000, 1000)])
def test_sizes(text: object, size: int) -> None:
    assert parse_size(text, "x") == size


# Every section, each with only its required keys (basic_auth and authorization present but empty,
# so their readers run): what the reader fills in for an absent key must be the dataclass default.
MINIMAL_EVERY_SECTION = """
scrape_configs:
  - job_name: j
    basic_auth: {}
    static_configs: [{targets: ["127.0.0.1:1"]}]
    file_sd_configs: [{files: [targets.json]}]
    etcd_sd_configs: [{endpoints: ["http://127.0.0.1:2379"]}]
    dns_sd_configs: [{names: [_etcd-client._tcp.example.org]}]
    http_sd_configs: [{url: "http://127.0.0.1:8080/sd", oauth2: {client_id: c, token_url: "http://127.0.0.1:1/t"}}]
    kubernetes_sd_configs: [{role: pod}]
remote_write:
  - url: http://127.0.0.1:8428/api/v1/write
    authorization: {}
  - url: http://127.0.0.1:8428/api/v1/write
    sigv4: {}
etcd_health:
  alertmanagers: [{static_configs: [{targets: ["127.0.0.1:9093"]}]}]
"""
# Fields whose reader default differs from the dataclass's on purpose: a written etcd_health
# section means on (the dataclass default, off, is for a config without the section).
ON_PURPOSE = {"config.etcd_health.enabled"}


def _compare_with_defaults(obj: object, where: str, seen: set[str]) -> list[str]:
    """Each field of dataclass ``obj`` that has a default, compared with that default (recursively)."""
    out: list[str] = []
    for f in dataclasses.fields(obj):  # type: ignore[arg-type]
        value = getattr(obj, f.name)
        at = f"{where}.{f.name}"
        seen.add(f"{type(obj).__name__}.{f.name}")
        if dataclasses.is_dataclass(value):
            out += _compare_with_defaults(value, at, seen)
            continue
        if isinstance(value, tuple) and value and all(dataclasses.is_dataclass(v) for v in value):
            for i, v in enumerate(value):
                out += _compare_with_defaults(v, f"{at}[{i}]", seen)
            continue
        if f.default is dataclasses.MISSING:
            continue  # required: the minimal config gives it
        if value != f.default and at not in ON_PURPOSE:
            out.append(f"{at}: reader gave {value!r}, dataclass default is {f.default!r}")
    return out


def test_reader_defaults_are_the_dataclass_defaults(tmp_path: Path) -> None:
    cfg = parse_config(MINIMAL_EVERY_SECTION, source="", base=tmp_path)
    seen: set[str] = set()
    assert _compare_with_defaults(cfg, "config", seen) == []
    # every defaulted field of every config dataclass was compared at least once
    classes = [c for name in config_module.__all__ if isinstance(c := getattr(config_module, name), type)]
    every = {
        f"{c.__name__}.{f.name}"
        for c in classes
        if dataclasses.is_dataclass(c)
        for f in dataclasses.fields(c)
        if f.default is not dataclasses.MISSING
    }
    assert every - seen == set()
    assert "ScrapeConfig.honor_timestamps" in seen and "QueueConfig.capacity" in seen


def test_global_scrape_timeout_default_is_capped_by_the_interval() -> None:
    assert parse_config("global: {scrape_interval: 4s}").global_config.scrape_timeout == 4.0
    assert parse_config("global: {scrape_interval: 4s, scrape_timeout: 0}").global_config.scrape_timeout == 4.0
    assert parse_config("{}").global_config.scrape_timeout == config_module.GlobalConfig().scrape_timeout


def test_field_default_names_a_missing_default() -> None:
    assert config_module.field_default(config_module.ScrapeConfig, "scheme") == "http"
    with pytest.raises(TypeError, match=r"ScrapeConfig\.job_name has no default"):
        config_module.field_default(config_module.ScrapeConfig, "job_name")
    with pytest.raises(TypeError, match="no field 'nope'"):
        config_module.field_default(config_module.ScrapeConfig, "nope")
