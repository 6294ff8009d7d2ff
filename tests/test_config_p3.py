"""Config as Prometheus 3 reads it: its keys (implemented, warned about or refused), YAML scalars
as written, environment variables, tls_config, every error at once with file and line, and a
corpus of real-world configs checked against Debian's promtool."""

from __future__ import annotations

import os
import shutil
import subprocess
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import ClassVar

import pytest

from relay._exceptions import ConfigError, ConfigErrors, ScrapeError
from relay.config import TLSConfig, load_config, parse_config
from relay.devtools.localenv import make_tls_files
from relay.http.client import ClientPool, build_ssl_context
from relay.metrics import SelfMetrics
from relay.relabel import Relabeler
from relay.scrape import ACCEPT, ScrapeLoop, accept_header, body_content_type
from relay.target import build_target
from tests.conftest import missing_service

CORPUS = Path(__file__).parent / "data" / "configs"
CORPUS_ENV = {"ETCD_CLUSTER": "prod-a", "ETCD_HOST_1": "10.0.0.1", "ETCD_HOST_2": "10.0.0.2",
              "ETCD_HOST_3": "10.0.0.3", "VM_URL": "http://127.0.0.1:8428"}


def errors_of(text: str, **kw: object) -> list[str]:
    with pytest.raises(ConfigError) as info:
        parse_config(text, **kw)  # type: ignore[arg-type]
    return [str(e) for e in getattr(info.value, "errors", [info.value])]


# -- YAML scalars as written -----------------------------------------------------------------------

def test_yaml_scalars_are_taken_as_written_where_prometheus_takes_strings() -> None:
    c = parse_config(
        "global:\n  external_labels: {replica: 1, enabled: yes, ratio: 1.50, day: 2024-01-02}\n"
        "scrape_configs:\n  - job_name: 2024\n"
        "    static_configs: [{targets: ['a:1'], labels: {rack: 07, on: on}}]\n"
        "    relabel_configs:\n"
        "      - source_labels: [__meta_kubernetes_pod_annotation_prometheus_io_scrape]\n"
        "        action: keep\n        regex: true\n"
        "      - {target_label: shard, replacement: 1}\n"
        "      - {source_labels: [a], regex: Yes, target_label: b, replacement: 1.0}\n"
        "    params: {page: [1, true]}\n"
    )
    assert c.global_config.external_labels == (("day", "2024-01-02"), ("enabled", "yes"), ("ratio", "1.50"),
                                               ("replica", "1"))
    (sc,) = c.scrape_configs
    assert sc.job_name == "2024" and sc.params == (("page", ("1", "true")),)
    assert sc.static_configs[0].labels == (("on", "on"), ("rack", "07"))
    keep, shard, other = sc.relabel_configs
    assert keep.regex_source == "true" and shard.replacement == "1"
    assert other.regex_source == "Yes" and other.replacement == "1.0"
    relabel = Relabeler(sc.relabel_configs[:1])
    assert relabel({"__meta_kubernetes_pod_annotation_prometheus_io_scrape": "true", "__address__": "a:1"})
    assert relabel({"__meta_kubernetes_pod_annotation_prometheus_io_scrape": "True", "__address__": "a:1"}) is None


def test_yaml_11_booleans_and_duplicate_keys() -> None:
    sc = parse_config("scrape_configs:\n  - {job_name: a, honor_labels: y, honor_timestamps: N}\n").scrape_configs[0]
    assert sc.honor_labels is True and sc.honor_timestamps is False
    (msg,) = errors_of("scrape_configs:\n  - job_name: a\n    scrape_interval: 5s\n    scrape_interval: 10s\n")
    assert msg == "<config>:4: key 'scrape_interval' is given twice in one mapping (first at line 3)"


# -- every error at once, with file and line -----------------------------------------------------

def test_every_error_of_the_file_with_its_line(tmp_path: Path) -> None:
    p = tmp_path / "relay.yml"
    p.write_text(
        "global:\n  scrape_timeout: 2m\n"                                  # 2 (more than the interval)
        "scrape_configs:\n"
        "  - job_name: a\n    scrape_interval: soon\n    honor_labels: maybe\n"  # 5, 6
        "    static_configs: [{targets: ['http://a:1', 'b:x']}]\n"            # 7 (two errors)
        "  - job_name: a\n"                                                   # 8
        "  - job_name: c\n    relabel_configs:\n      - {action: nope}\n      - {action: hashmod, target_label: x}\n"
        "remote_write:\n  - url: ftp://x\n  - url: http://x/w\n    headers: {Host: x}\n"
    )
    with pytest.raises(ConfigErrors) as info:
        load_config(p)
    got = [str(e).removeprefix(f"{p}:") for e in info.value.errors]
    assert got == [
        "2: global.scrape_timeout: must be at most global.scrape_interval",
        "5: scrape_configs[0].scrape_interval: 'soon' is not a duration (like 15s, 1m, 500ms)",
        "6: scrape_configs[0].honor_labels: must be true or false, got 'maybe'",
        "7: scrape_configs[0].static_configs[0].targets[0]: 'http://a:1' must be host:port without scheme or path",
        "7: scrape_configs[0].static_configs[0].targets[1]: 'b:x' has an invalid port",
        "8: scrape_configs[1].job_name: 'a' is used by another scrape config",
        "11: scrape_configs[2].relabel_configs[0].action: unknown relabel action 'nope' (one of drop, dropequal, "
        "hashmod, keep, keepequal, labeldrop, labelkeep, labelmap, lowercase, replace, uppercase)",
        "12: scrape_configs[2].relabel_configs[1].modulus: relabel configuration for hashmod requires non-zero modulus",
        "14: remote_write[0].url: 'ftp://x' is not an http(s) URL",
        "16: remote_write[1].headers.Host: is a reserved header and cannot be set",
    ]
    assert str(info.value) == f"{p}:{got[0]} (and {len(got) - 1} more)"


def test_scrape_config_file_errors_are_placed_in_that_file(tmp_path: Path) -> None:
    (tmp_path / "jobs.yml").write_text("scrape_configs:\n  - job_name: x\n    scrape_timeout: 5x\n    bogus: 1\n")
    main = tmp_path / "relay.yml"
    main.write_text("scrape_config_files: [jobs.yml]\nbogus: 2\n")
    with pytest.raises(ConfigErrors) as info:
        load_config(main)
    assert [str(e) for e in info.value.errors] == [
        f"{main}:2: bogus: unknown key",
        f"{tmp_path / 'jobs.yml'}:3: scrape_configs[0].scrape_timeout: '5x' is not a duration (like 15s, 1m, 500ms)",
        f"{tmp_path / 'jobs.yml'}:4: scrape_configs[0].bogus: unknown key",
    ]


def test_unknown_key_names_the_likely_one() -> None:
    assert errors_of("scrape_configs:\n  - {job_name: a, scrape_intervall: 1s, nonsense: 1}\n") == [
        "scrape_configs[0].scrape_intervall: unknown key (did you mean scrape_interval?)",
        "scrape_configs[0].nonsense: unknown key",
    ]


# -- environment variables -----------------------------------------------------------------------

def test_percent_env_anywhere_and_dollar_env_in_external_labels(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RELAY_T_HOST", "10.0.0.7")
    monkeypatch.setenv("RELAY_T_INTERVAL", "7s")
    monkeypatch.setenv("RELAY_T_CLUSTER", "prod")
    monkeypatch.setenv("RELAY_T_EMPTY", "")
    c = parse_config(
        "# %{RELAY_T_UNSET} in a comment line is left alone\n"
        "global:\n  scrape_interval: %{RELAY_T_INTERVAL}\n"
        "  external_labels: {cluster: '${RELAY_T_CLUSTER}-$RELAY_T_CLUSTER', cost: '$$5', tag: 'a%{x y}',"
        " gone: '${RELAY_T_EMPTY}'}\n"
        "scrape_configs:\n  - job_name: j\n    static_configs: [{targets: ['%{RELAY_T_HOST}:2381']}]\n"
    )
    assert c.global_config.scrape_interval == 7.0
    assert dict(c.global_config.external_labels) == {"cluster": "prod-prod", "cost": "$5", "tag": "a%{x y}",
                                                     "gone": ""}
    assert c.scrape_configs[0].static_configs[0].targets == ("10.0.0.7:2381",)


def test_an_unset_variable_is_an_error_naming_it_and_where(tmp_path: Path) -> None:
    os.environ.pop("RELAY_T_NOPE", None)
    p = tmp_path / "c.yml"
    p.write_text("scrape_configs:\n  - job_name: j\n    static_configs: [{targets: ['%{RELAY_T_NOPE}:1']}]\n"
                 "remote_write: [{url: 'http://%{RELAY_T_NOPE}/w'}]\n")
    with pytest.raises(ConfigErrors) as info:
        load_config(p)
    assert [str(e) for e in info.value.errors] == [
        f"{p}:3: %{{RELAY_T_NOPE}}: environment variable RELAY_T_NOPE is not set",
        f"{p}:4: %{{RELAY_T_NOPE}}: environment variable RELAY_T_NOPE is not set",
    ]
    p.write_text("global:\n  external_labels:\n    dc: ${RELAY_T_NOPE}\n    x: 'a${}'\n")
    with pytest.raises(ConfigErrors) as info:
        load_config(p)
    assert [str(e) for e in info.value.errors] == [
        f"{p}:3: global.external_labels.dc: '${{RELAY_T_NOPE}}': environment variable RELAY_T_NOPE is not set "
        "(write $$ for a literal $)",
        f"{p}:4: global.external_labels.x: 'a${{}}': '${{' without a variable name and '}}' (write $$ for a literal $)",
    ]


# -- refused and no-effect keys ---------------------------------------------------------------------

def test_agent_mode_refusals_and_their_empty_forms() -> None:
    msgs = errors_of("rule_files: [a.yml]\nalerting: {alertmanagers: [{static_configs: [{targets: ['a:1']}]}]}\n"
                     "remote_read: [{url: 'http://x/r'}]\n")
    assert [m.split(":")[0] for m in msgs] == ["rule_files", "alerting", "remote_read"]
    assert all("agent mode refuses it" in m for m in msgs)
    assert '("field rule_files is not allowed in agent mode")' in msgs[0]
    assert "use etcd_health.alertmanagers" in msgs[1]
    # as agent mode: empty sections are accepted
    c = parse_config("rule_files: []\nalerting: {alertmanagers: []}\nremote_read: []\n")
    assert c.warnings == ()


def test_no_effect_keys_warn_with_file_and_line(tmp_path: Path) -> None:
    p = tmp_path / "c.yml"
    p.write_text(
        "global:\n  scrape_native_histograms: true\n  query_log_file: q.log\n  rule_query_offset: 1m\n"
        "storage: {tsdb: {out_of_order_time_window: 30m}}\ntracing: {endpoint: 'x:4317'}\n"
        "scrape_configs:\n  - job_name: j\n    enable_http2: true\n    native_histogram_bucket_limit: 160\n"
        "    scrape_native_histograms: false\n    convert_classic_histograms_to_nhcb: true\n"
        "    scrape_protocols: [PrometheusProto, PrometheusText0.0.4]\n"
        "remote_write:\n  - url: http://x/w\n    send_native_histograms: true\n    queue_config: {max_retries: 3}\n"
    )
    c = load_config(p)
    assert [w.removeprefix(f"{p}:") for w in c.warnings] == [
        "2: global.scrape_native_histograms: has no effect: the relay scrapes text formats only, which carry no "
        "native histograms",
        "3: global.query_log_file: has no effect: the relay answers no PromQL queries",
        "4: global.rule_query_offset: has no effect: the relay evaluates no rule groups",
        "5: storage: has no effect: the relay stores no samples (its remote-write queue: --queue-dir, "
        "--queue-max-bytes)",
        "6: tracing: has no effect: the relay exports no traces",
        "9: scrape_configs[0].enable_http2: has no effect: the relay speaks HTTP/1.1 only (etcd's client port "
        "takes HTTP/2 for gRPC)",
        "10: scrape_configs[0].native_histogram_bucket_limit: has no effect: the relay scrapes text formats only, "
        "which carry no native histograms",
        "12: scrape_configs[0].convert_classic_histograms_to_nhcb: has no effect: classic histograms are sent as "
        "their _bucket, _sum and _count series",
        "13: scrape_configs[0].scrape_protocols: PrometheusProto is skipped: the relay parses text formats only "
        "(the others are asked for in the order given)",
        "16: remote_write[0].send_native_histograms: has no effect: the relay scrapes text formats only, which "
        "carry no native histograms",
        "17: remote_write[0].queue_config.max_retries: has no effect: removed from Prometheus; a recoverable "
        "failure is retried with min_backoff..max_backoff until it succeeds or the queue drops it",
    ]


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("scrape_configs: [{job_name: j, consul_sd_configs: [{server: 'a:8500'}]}]",
         "scrape_configs[0].consul_sd_configs: is not supported by the relay: write the targets to files for "
         "file_sd_configs, or serve them for http_sd_configs"),
        ("scrape_configs: [{job_name: j, scrape_protocols: []}]", "scrape_configs[0].scrape_protocols: cannot be empty"),
        ("scrape_configs: [{job_name: j, scrape_protocols: [PrometheusProto]}]",
         "scrape_configs[0].scrape_protocols: needs a text format besides PrometheusProto"),
        ("global: {scrape_protocols: [PrometheusText0.0.4, PrometheusText0.0.4]}",
         "global.scrape_protocols[1]: PrometheusText0.0.4 is given twice"),
        ("global: {scrape_protocols: [Text]}", "global.scrape_protocols[0]: unknown scrape protocol 'Text'; one of "
         "OpenMetricsText0.0.1, OpenMetricsText1.0.0, PrometheusProto, PrometheusText0.0.4, PrometheusText1.0.0"),
        ("scrape_configs: [{job_name: j, fallback_scrape_protocol: PrometheusProto}]",
         "scrape_configs[0].fallback_scrape_protocol: PrometheusProto cannot be parsed by the relay (text formats "
         "only): use PrometheusText0.0.4 or OpenMetricsText1.0.0"),
        ("scrape_configs: [{job_name: j, metric_name_validation_scheme: legacy, metric_name_escaping_scheme: "
         "allow-utf-8}]", "scrape_configs[0].metric_name_escaping_scheme: allow-utf-8 asks targets for UTF-8 names"),
        ("global: {metric_name_validation_scheme: strict}",
         "global.metric_name_validation_scheme: 'strict' is not one of utf8, legacy"),
        ("remote_write: [{url: 'http://x/w', protobuf_message: io.prometheus.write.v2.Request}]",
         "remote_write[0].protobuf_message: 'io.prometheus.write.v2.Request': the relay sends Remote-Write 1.0 "
         "(prometheus.WriteRequest) only"),
        ("remote_write: [{url: 'http://x/w', azuread: {cloud: AzurePublic}}]",
         "remote_write[0].azuread: is not supported by the relay; Azure AD issues tokens by OAuth 2.0"),
        ("scrape_configs: [{job_name: j, target_limit: -1}]", "scrape_configs[0].target_limit: must be at least 0"),
        ("scrape_configs: [{job_name: j, enable_compression: maybe}]",
         "scrape_configs[0].enable_compression: must be true or false"),
    ],
)
def test_p3_keys_bad_values(text: str, message: str) -> None:
    msgs = errors_of(text)
    assert len(msgs) == 1 and msgs[0].startswith(message), msgs


def test_p3_keys_read_and_inherited() -> None:
    c = parse_config(
        "global:\n  scrape_protocols: [PrometheusText1.0.0, OpenMetricsText1.0.0]\n  target_limit: 5\n"
        "  metric_name_validation_scheme: legacy\n  always_scrape_classic_histograms: true\n"
        "scrape_configs:\n  - job_name: inherits\n"
        "  - job_name: own\n    scrape_protocols: [PrometheusText0.0.4]\n    fallback_scrape_protocol: "
        "OpenMetricsText1.0.0\n    enable_compression: false\n    target_limit: 2\n"
        "    track_timestamps_staleness: true\n    metric_name_validation_scheme: utf8\n"
        "  - job_name: dots\n    metric_name_escaping_scheme: dots\n"
    )
    a, b, d = c.scrape_configs
    assert a.scrape_protocols == ("PrometheusText1.0.0", "OpenMetricsText1.0.0") and a.target_limit == 5
    assert (a.metric_name_validation_scheme, a.metric_name_escaping_scheme) == ("legacy", "underscores")
    assert a.always_scrape_classic_histograms and a.enable_compression and not a.track_timestamps_staleness
    assert b.scrape_protocols == ("PrometheusText0.0.4",) and b.fallback_scrape_protocol == "OpenMetricsText1.0.0"
    assert not b.enable_compression and b.target_limit == 2 and b.track_timestamps_staleness
    assert (b.metric_name_validation_scheme, b.metric_name_escaping_scheme) == ("utf8", "allow-utf-8")
    assert (d.metric_name_validation_scheme, d.metric_name_escaping_scheme) == ("legacy", "dots")
    # the name scheme applies to static labels and relabeling, as Prometheus 3
    assert parse_config("scrape_configs: [{job_name: j, static_configs: [{targets: ['a:1'], labels: {a.b: x}}],"
                        " relabel_configs: [{target_label: k8s.pod, replacement: x}]}]").scrape_configs
    msgs = errors_of("global: {metric_name_validation_scheme: legacy}\nscrape_configs: [{job_name: j, "
                     "static_configs: [{targets: ['a:1'], labels: {a.b: x}}], relabel_configs: [{target_label: "
                     "k8s.pod, replacement: x}]}]")
    assert [m.split(":")[0] for m in msgs] == ["scrape_configs[0].relabel_configs[0].target_label",
                                              "scrape_configs[0].static_configs[0].labels.a.b"]


def test_accept_header_is_prometheus_3s() -> None:
    assert ACCEPT == ("application/openmetrics-text;version=1.0.0;escaping=allow-utf-8;q=0.6,"
                      "application/openmetrics-text;version=0.0.1;q=0.5,"
                      "text/plain;version=1.0.0;escaping=allow-utf-8;q=0.4,text/plain;version=0.0.4;q=0.3,*/*;q=0.2")
    assert accept_header(["PrometheusProto", "PrometheusText1.0.0", "PrometheusText0.0.4"], "underscores") == (
        "text/plain;version=1.0.0;escaping=underscores;q=0.5,text/plain;version=0.0.4;q=0.4,*/*;q=0.3")
    assert body_content_type(None, "") is None
    assert body_content_type("text/html", "OpenMetricsText1.0.0") == "application/openmetrics-text;version=1.0.0"
    assert body_content_type("", "PrometheusText0.0.4") == "text/plain;version=0.0.4"
    assert body_content_type("text/plain; version=0.0.4", "OpenMetricsText1.0.0") == "text/plain; version=0.0.4"


# -- scraping with the keys, against a real HTTP server on loopback --------------------------------

class _Target(BaseHTTPRequestHandler):
    answers: ClassVar[dict[str, tuple[str | None, bytes]]] = {}  # each test's server has its own (a subclass)
    seen: ClassVar[list[dict[str, str]]] = []

    def do_GET(self) -> None:
        type(self).seen.append({k.lower(): v for k, v in self.headers.items()})
        content_type, body = type(self).answers[self.path]
        self.send_response(200)
        if content_type is not None:
            self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def target_server() -> Iterator[tuple[str, type[_Target]]]:
    handler = type("Handler", (_Target,), {"answers": {}, "seen": []})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"127.0.0.1:{server.server_address[1]}", handler
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)


async def _scrape(address: str, job: str) -> tuple[ScrapeLoop, list[object]]:
    sc = parse_config("scrape_configs:\n  - job_name: j\n    scrape_interval: 1s\n" + job).scrape_configs[0]
    t = build_target(address, {}, sc)
    assert t is not None
    got: list[object] = []
    pool = ClientPool()
    loop = ScrapeLoop(t, pool, [got.append], SelfMetrics())
    try:
        await loop.scrape_once()
    finally:
        await pool.aclose()
    return loop, got


@pytest.mark.anyio
async def test_scrape_protocols_fallback_and_compression_on_the_wire(target_server: tuple[str, type[_Target]]) -> None:
    address, handler = target_server
    om = b"# TYPE a counter\na_total 1\n# EOF\n"
    handler.answers["/metrics"] = (None, om)  # no Content-Type: the fallback says OpenMetrics
    loop, got = await _scrape(address, "    scrape_protocols: [OpenMetricsText1.0.0, PrometheusText0.0.4]\n"
                                       "    fallback_scrape_protocol: OpenMetricsText1.0.0\n"
                                       "    enable_compression: false\n    metric_name_escaping_scheme: dots\n")
    assert loop.health.health == "up", loop.health.last_error
    (headers,) = handler.seen
    assert headers["accept"] == ("application/openmetrics-text;version=1.0.0;escaping=dots;q=0.6,"
                                 "text/plain;version=0.0.4;q=0.5,*/*;q=0.4")
    assert headers["accept-encoding"] == "identity"
    names = {name for name, *_ in got[0].samples()}  # type: ignore[attr-defined]
    assert "a_total" in names
    # without the fallback the body is read as text 0.0.4, where "# EOF" is a comment: the same sample
    handler.seen.clear()
    handler.answers["/metrics"] = ("text/html", b"a_total 1\nb 2\n")
    loop, _ = await _scrape(address, "")
    assert loop.health.health == "up" and handler.seen[0]["accept-encoding"] == "gzip"
    assert handler.seen[0]["accept"] == ACCEPT


@pytest.mark.anyio
async def test_legacy_name_validation_fails_utf8_names(target_server: tuple[str, type[_Target]]) -> None:
    address, handler = target_server
    handler.answers["/metrics"] = ("text/plain; version=1.0.0", b'{"my.metric"} 1\n')
    loop, _ = await _scrape(address, "")
    assert loop.health.health == "up", loop.health.last_error
    loop, _ = await _scrape(address, "    metric_name_validation_scheme: legacy\n")
    assert loop.health.health == "down" and loop.health.last_reason == "parse_error", loop.health.last_error
    assert "escaping=underscores" in handler.seen[-1]["accept"]


@pytest.mark.anyio
async def test_track_timestamps_staleness(target_server: tuple[str, type[_Target]]) -> None:
    address, handler = target_server
    for track in (False, True):
        handler.answers["/metrics"] = ("text/plain; version=0.0.4", b"with_ts 1 1700000000000\nplain 1\n")
        sc = parse_config("scrape_configs:\n  - job_name: j\n" +
                          ("    track_timestamps_staleness: true\n" if track else "")).scrape_configs[0]
        t = build_target(address, {}, sc)
        assert t is not None
        got: list[object] = []
        pool = ClientPool()
        loop = ScrapeLoop(t, pool, [got.append], SelfMetrics())
        try:
            await loop.scrape_once()
            handler.answers["/metrics"] = ("text/plain; version=0.0.4", b"")
            second = await loop.scrape_once()
        finally:
            await pool.aclose()
        stale = {name for name, _, value, _ in second.samples() if value != value and name in ("with_ts", "plain")}
        assert stale == ({"with_ts", "plain"} if track else {"plain"})


@pytest.mark.anyio
async def test_target_limit_fails_every_scrape_of_the_job() -> None:
    from relay.scrape import ScrapeManager

    config = parse_config("scrape_configs:\n  - job_name: j\n    target_limit: 1\n"
                          "    static_configs: [{targets: ['127.0.0.1:1', '127.0.0.1:2']}]\n"
                          "  - job_name: k\n    static_configs: [{targets: ['127.0.0.1:3']}]\n")
    import anyio

    pool = ClientPool()
    manager = ScrapeManager(pool, [], SelfMetrics())
    try:
        async with anyio.create_task_group() as tg:
            await tg.start(manager.run, config)
            assert len(manager.loops) == 3
            limited = [lp for lp in manager.loops.values() if lp.target.job == "j"]
            assert len(limited) == 2 and all(lp.forced_error == "target_limit exceeded (number of targets: 2, "
                                                               "limit: 1)" for lp in limited)
            await limited[0].scrape_once()
            assert limited[0].health.last_reason == "target_limit"
            other = [lp for lp in manager.loops.values() if lp.target.job == "k"]
            assert other[0].forced_error == ""
            manager.stop_all()
            tg.cancel_scope.cancel()
    finally:
        await pool.aclose()
    assert ScrapeError("target_limit", "x").reason == "target_limit"


# -- tls_config -------------------------------------------------------------------------------------

def test_tls_config_inline_and_files(tmp_path: Path) -> None:
    files = make_tls_files(tmp_path)
    ca, cert, key = (Path(f).read_text() for f in (files.ca_file, files.client_cert, files.client_key))
    def block(pem: str) -> str:
        return "|\n" + "".join(f"        {line}\n" for line in pem.splitlines())

    text = ("scrape_configs:\n  - job_name: j\n    tls_config:\n"
            f"      ca: {block(ca)}      cert: {block(cert)}      key: {block(key)}"
            "      server_name: etcd.local\n      min_version: TLS10\n      max_version: TLS12\n")
    tls = parse_config(text).scrape_configs[0].http.tls_config
    assert tls.ca == ca and tls.cert == cert and tls.key is not None and tls.key.reveal() == key
    assert "BEGIN" not in repr(tls)
    ctx = build_ssl_context(tls)
    import ssl

    assert ctx.minimum_version == ssl.TLSVersion.TLSv1 and ctx.maximum_version == ssl.TLSVersion.TLSv1_2
    assert ctx.verify_mode == ssl.CERT_REQUIRED
    build_ssl_context(TLSConfig(ca_file=files.ca_file, cert_file=files.client_cert, key_file=files.client_key))
    with pytest.raises(ConfigError) as info:
        build_ssl_context(TLSConfig(cert_file=files.client_cert, key_file=str(tmp_path / "nope.key")), "x.tls_config")
    assert str(info.value) == f"x.tls_config.key_file: cannot read {tmp_path / 'nope.key'}: No such file or directory"
    with pytest.raises(ConfigError, match=r"^x.tls_config: cert_file and key_file do not load as a PEM certificate"):
        build_ssl_context(TLSConfig(cert_file=files.client_cert, key_file=files.ca_file), "x.tls_config")


@pytest.mark.parametrize(
    ("tls", "message"),
    [
        ("{ca: x, ca_file: y}", "scrape_configs[0].tls_config.ca: at most one of ca and ca_file"),
        ("{cert_file: c.pem}", "scrape_configs[0].tls_config.key_file: is required: a client certificate"),
        ("{key: k}", "scrape_configs[0].tls_config.cert_file: is required: a client key"),
        ("{min_version: TLS9}", "scrape_configs[0].tls_config.min_version: 'TLS9' is not one of TLS10, TLS11, "
         "TLS12, TLS13"),
        ("{min_version: TLS13, max_version: TLS12}",
         "scrape_configs[0].tls_config.max_version: TLS12 is below min_version (TLS13)"),
        ("{ca_ref: x}", "scrape_configs[0].tls_config.ca_ref: unknown key"),
    ],
)
def test_tls_config_bad(tls: str, message: str) -> None:
    msgs = errors_of(f"scrape_configs: [{{job_name: j, tls_config: {tls}}}]")
    assert len(msgs) == 1 and msgs[0].startswith(message), msgs


# -- the corpus of real-world configs ---------------------------------------------------------------

# What the relay says of each corpus file: None (loads), or the start of each error after "FILE:LINE: ".
CORPUS_ERRORS: dict[str, list[str] | None] = {
    "prometheus-example.yml": ["alerting: is not allowed: the relay scrapes and remote-writes as Prometheus' agent "
                               "mode does, and agent mode refuses it"],
    "prometheus-docker.yml": ["scrape_configs[2].docker_sd_configs: is not supported by the relay"],
    "prometheus-hetzner.yml": ["scrape_configs[1].hetzner_sd_configs: is not supported by the relay"],
}
# Where Debian's promtool 2.42 (`promtool check config --agent --syntax-only`) and the relay differ,
# file -> why. Everything else: promtool accepts exactly what the relay accepts.
PROMTOOL_DIFFERS = {
    # Debian builds Prometheus without kubernetes_sd_configs ("field kubernetes_sd_configs not found")
    "aks-ama-metrics-custom.yml": "promtool refuses (kubernetes_sd_configs not built in)",
    "kubeadm-etcd-pods.yml": "promtool refuses (kubernetes_sd_configs not built in)",
    "prometheus-operator-kube-etcd-2018.yml": "promtool refuses (kubernetes_sd_configs not built in)",
    "prometheus-kubernetes.yml": "promtool refuses (keep_dropped_targets is 2.47+; kubernetes_sd_configs)",
    # keys newer than 2.42
    "kube-prometheus-stack-kube-etcd-https.yml": "promtool refuses (scrape_protocols, enable_compression, "
                                                 "track_timestamps_staleness are 2.49+)",
    "prometheus-3-agent-config-dump.yml": "promtool refuses (3.x keys)",
    "prometheus-otlp.yml": "promtool refuses (otlp is 2.47+)",
    # SD mechanisms the relay does not have
    "prometheus-docker.yml": "the relay refuses (docker_sd_configs)",
    "prometheus-hetzner.yml": "the relay refuses (hetzner_sd_configs)",
}


def corpus_files() -> list[Path]:
    return sorted(CORPUS.glob("*.yml"))


def test_corpus_is_big_enough_and_says_where_each_config_comes_from() -> None:
    files = corpus_files()
    assert len(files) >= 15
    for f in files:
        head = f.read_text().splitlines()[0]
        assert head.startswith("# Source: "), f.name
    assert set(CORPUS_ERRORS) | set(PROMTOOL_DIFFERS) <= {f.name for f in files}


@pytest.mark.parametrize("path", corpus_files(), ids=lambda p: p.name)
def test_corpus_config_loads_or_fails_as_intended(path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    for k, v in CORPUS_ENV.items():
        monkeypatch.setenv(k, v)
    expected = CORPUS_ERRORS.get(path.name)
    if expected is None:
        config = load_config(path)
        assert config.scrape_configs or path.name == "prometheus-otlp.yml"
        return
    with pytest.raises(ConfigError) as info:
        load_config(path)
    got = [str(e) for e in getattr(info.value, "errors", [info.value])]
    assert len(got) == len(expected), got
    for line, start in zip(got, expected, strict=True):
        assert line.startswith(f"{path}:") and line.split(": ", 1)[1].startswith(start), line


def test_corpus_details() -> None:
    os.environ.update(CORPUS_ENV)
    k8s = load_config(CORPUS / "prometheus-kubernetes.yml")
    pods = next(sc for sc in k8s.scrape_configs if sc.job_name == "kubernetes-pods")
    assert pods.relabel_configs[0].regex_source == "true"  # regex: true, as written
    vm = load_config(CORPUS / "vmagent-env-placeholders.yml")
    assert vm.global_config.external_labels == (("cluster", "prod-a"),)
    assert vm.scrape_configs[0].static_configs[0].targets == ("10.0.0.1:2381", "10.0.0.2:2381", "10.0.0.3:2381")
    assert vm.remote_write[0].url == "http://127.0.0.1:8428/api/v1/write"
    grafana = load_config(CORPUS / "grafana-cloud-remote-write.yml")
    assert grafana.remote_write[0].http.basic_auth is not None
    assert grafana.remote_write[0].http.basic_auth.username == "123456"
    kps = load_config(CORPUS / "kube-prometheus-stack-kube-etcd-https.yml")
    assert kps.scrape_configs[0].scrape_protocols == ("OpenMetricsText1.0.0", "OpenMetricsText0.0.1",
                                                      "PrometheusText0.0.4")
    assert kps.scrape_configs[0].http.tls_config.server_name == "localhost"


def _promtool_accepts(path: Path, tmp_path: Path) -> tuple[bool, str]:
    promtool = shutil.which("promtool")
    if promtool is None:
        missing_service("promtool (Debian package prometheus) is not installed")
    text = path.read_text()
    if "%{" in text:  # vmagent's placeholders are not Prometheus syntax: check what they expand to
        for k, v in CORPUS_ENV.items():
            text = text.replace(f"%{{{k}}}", v)
        path = tmp_path / path.name
        path.write_text(text)
    out = subprocess.run([promtool, "check", "config", "--agent", "--syntax-only", str(path)],
                         capture_output=True, text=True, timeout=60)
    return out.returncode == 0, out.stdout + out.stderr


@pytest.mark.parametrize("path", corpus_files(), ids=lambda p: p.name)
def test_corpus_against_promtool(path: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    for k, v in CORPUS_ENV.items():
        monkeypatch.setenv(k, v)
    promtool_ok, output = _promtool_accepts(path, tmp_path)
    try:
        load_config(path)
        relay_ok = True
    except ConfigError:
        relay_ok = False
    differs = PROMTOOL_DIFFERS.get(path.name)
    if differs is None:
        assert promtool_ok == relay_ok, output
    elif differs.startswith("promtool refuses"):
        assert relay_ok and not promtool_ok, output
    else:
        assert promtool_ok and not relay_ok, output


def test_run_logs_the_warnings_at_start(tmp_path: Path) -> None:
    import sys

    p = tmp_path / "c.yml"
    p.write_text("global:\n  query_log_file: q.log\nscrape_configs: []\n")
    out = subprocess.run([sys.executable, "-m", "relay.cli", "run", "--config", str(p), "--listen", "127.0.0.1:0",
                          "--queue.memory", "--duration", "0.5"], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert f"WARNING relay: {p}:2: global.query_log_file: has no effect: the relay answers no PromQL queries" \
        in out.stderr
