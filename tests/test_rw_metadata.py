"""Remote write: metadata_config, send_exemplars and queue_config.sample_age_limit.

Oracles: Prometheus 2.42 itself, scraping the same body and remote-writing to a loopback server of
ours (what Prometheus sends as metadata and exemplars), and Prometheus 2.42 as a receiver with
exemplar storage (``/api/v1/query_exemplars``). Prometheus 2.42's receiver drops the metadata of
remote write 1.0 (storage/remote/write_handler.go reads only samples and exemplars), and so does
VictoriaMetrics 1.79: there, what is checked is that they accept the requests.
"""

from __future__ import annotations

import subprocess
import sys
import time
from array import array
from pathlib import Path
from typing import Any

import anyio
import pytest

from relay.batch import Batch, Family, SeriesTable
from relay.config import ConfigError, MetadataConfig, QueueConfig, parse_config
from relay.devtools.localenv import PrometheusReceiver, VictoriaMetrics, free_ports
from relay.http.client import ClientPool
from relay.metrics import SelfMetrics
from relay.remote import encode
from relay.remote._wire import metadata_entry
from relay.remote.encode import compress, decompress, drop_older_than
from relay.remote.queue import Block, DiskQueue
from relay.remote.writer import RemoteWriter
from relay.textparse import _text_py
from tests.conftest import DATA, available
from tests.remote_write_pb import METRIC_TYPES, WriteRequest
from tests.rwcapture import CaptureServer

OM = "application/openmetrics-text; version=1.0.0"
ETCD_BODY = (DATA / "etcd-metrics" / "etcd-3.5.1-member-3381.prom").read_bytes()

OM_BODY = b"""# TYPE rpc_seconds histogram
# HELP rpc_seconds RPC latency.
# UNIT rpc_seconds seconds
rpc_seconds_bucket{le="0.1"} 3 # {trace_id="aaa"} 0.05 1700000000.5
rpc_seconds_bucket{le="1.0"} 5 # {trace_id="bbb",span_id="s1"} 0.5
rpc_seconds_bucket{le="+Inf"} 6
rpc_seconds_sum 2.5
rpc_seconds_count 6
# TYPE jobs counter
# HELP jobs Jobs done.
jobs_total{kind="a"} 7 # {trace_id="ccc"} 1.0
jobs_total{kind="b"} 8
# TYPE build info
build_info{version="1.2"} 1
# TYPE up_since gauge
up_since 12
# EOF
"""


def parsers() -> list[Any]:
    from relay.textparse import Parser

    out = [_text_py.Parser]
    if Parser is not _text_py.Parser:
        out.append(Parser)
    return out


def encoders() -> list[Any]:
    out: list[Any] = [encode.WriteRequestEncoderPy]
    if encode.WriteRequestEncoder is not encode.WriteRequestEncoderPy:
        out.append(encode.WriteRequestEncoder)
    return out


def rw(extra: str = "", url: str = "http://127.0.0.1:1/api/v1/write") -> Any:
    return parse_config(f"remote_write:\n  - url: {url}\n{extra}").remote_write[0]


def meta_of(requests: list[Any]) -> set[tuple[str, str, str, str]]:
    return {(METRIC_TYPES[m.type], m.metric_family_name, m.help, m.unit) for r in requests for m in r.metadata}


def family_set(families: dict[str, Family]) -> set[tuple[str, str, str, str]]:
    return {(f.type.upper(), f.name, f.help, f.unit) for f in families.values()}


def exemplars_of(requests: list[Any], drop: tuple[str, ...] = ()) -> list[tuple[Any, ...]]:
    out = []
    for r in requests:
        for ts in r.timeseries:
            labels = tuple((lb.name, lb.value) for lb in ts.labels if lb.name not in drop)
            for e in ts.exemplars:
                out.append((labels, tuple((lb.name, lb.value) for lb in e.labels), e.value, e.timestamp))
    return sorted(out)


# -- config ----------------------------------------------------------------------------------


def test_config_defaults_are_prometheus_defaults() -> None:
    c = rw()
    assert c.metadata_config == MetadataConfig(send=True, send_interval=60.0, max_samples_per_send=500)
    assert c.send_exemplars is False and c.queue_config.sample_age_limit == 0.0 == QueueConfig().sample_age_limit


def test_config_keys_are_read() -> None:
    c = rw("    send_exemplars: true\n    metadata_config: {send: false, send_interval: 30s, max_samples_per_send: 7}\n"
           "    queue_config: {sample_age_limit: 2h}\n")
    assert c.send_exemplars is True
    assert c.metadata_config == MetadataConfig(send=False, send_interval=30.0, max_samples_per_send=7)
    assert c.queue_config.sample_age_limit == 7200.0


@pytest.mark.parametrize(("extra", "where", "what"), [
    ("    metadata_config: {send_interval: 0s}\n", "remote_write[0].metadata_config.send_interval", "more than 0s"),
    ("    metadata_config: {max_samples_per_send: 0}\n", "metadata_config.max_samples_per_send", "at least 1"),
    ("    metadata_config: {send: 'yes'}\n", "metadata_config.send", "true or false"),
    ("    metadata_config: {sent: true}\n", "metadata_config.sent", "unknown key"),
    ("    send_exemplars: 1\n", "send_exemplars", "true or false"),
    ("    queue_config: {sample_age_limit: soon}\n", "queue_config.sample_age_limit", "not a duration"),
])
def test_config_errors_name_the_key(extra: str, where: str, what: str) -> None:
    with pytest.raises(ConfigError) as info:
        rw(extra)
    assert where in str(info.value) and what in str(info.value)


# -- encoding --------------------------------------------------------------------------------


@pytest.mark.parametrize("typ", [*METRIC_TYPES, "untyped-unknown-to-prometheus"])
def test_metadata_entry_decodes_as_prometheus_metric_metadata(typ: str) -> None:
    fam = Family("my_metric", typ.lower(), "Help with \\ and\nnewline ✓", "seconds" if typ != "GAUGE" else "")
    (m,) = WriteRequest.FromString(metadata_entry(fam)).metadata
    assert METRIC_TYPES[m.type] == (typ if typ in METRIC_TYPES else "UNKNOWN")
    assert (m.metric_family_name, m.help, m.unit) == (fam.name, fam.help, fam.unit)
    if typ in ("UNKNOWN", "untyped-unknown-to-prometheus"):
        assert metadata_entry(fam)[2] != 0x08  # proto3: the default type is not written


@pytest.mark.parametrize("parser", parsers(), ids=lambda p: p.__module__.rsplit(".", 1)[1])
def test_exemplars_encoded_alike_by_both_twins_with_their_series(parser: Any) -> None:
    batch = parser(keep_exemplars=True).parse(OM_BODY, OM, 1_700_000_001_000)
    assert len(batch.exemplars) == 3
    outs: dict[str, set[bytes]] = {}
    for enc_cls in encoders():
        for name, index in (("all", None), ("some", array("I", [1, 2, 5])), ("none", array("I", [3, 4]))):
            enc = enc_cls(exemplars=True)
            enc.add(batch, index)
            outs.setdefault(name, set()).add(enc.finish())
    assert all(len(v) == 1 for v in outs.values()), "the twins differ"
    got = exemplars_of([WriteRequest.FromString(next(iter(outs["all"])))])
    assert got == sorted([
        ((("__name__", "jobs_total"), ("kind", "a")), (("trace_id", "ccc"),), 1.0, 1_700_000_001_000),
        ((("__name__", "rpc_seconds_bucket"), ("le", "0.1")), (("trace_id", "aaa"),), 0.05, 1_700_000_000_500),
        ((("__name__", "rpc_seconds_bucket"), ("le", "1.0")), (("span_id", "s1"), ("trace_id", "bbb")), 0.5,
         1_700_000_001_000),  # no timestamp: the sample's, as Prometheus' scraper gives it
    ])
    some = WriteRequest.FromString(next(iter(outs["some"])))
    assert len(exemplars_of([some])) == 2 and sum(len(ts.samples) for ts in some.timeseries) == 3
    none = WriteRequest.FromString(next(iter(outs["none"])))
    assert exemplars_of([none]) == []
    # an exemplar TimeSeries has no samples; the samples' TimeSeries have no exemplars (as Prometheus sends)
    full = WriteRequest.FromString(next(iter(outs["all"])))
    assert all(not (ts.samples and ts.exemplars) for ts in full.timeseries)


def test_exemplars_off_encodes_none_and_the_parser_keeps_none() -> None:
    for parser in parsers():
        assert parser().parse(OM_BODY, OM, 1000).exemplars == []
        batch = parser(keep_exemplars=True).parse(OM_BODY, OM, 1000)
        for enc_cls in encoders():
            off, on_without = enc_cls(), enc_cls(exemplars=True)
            off.add(batch)
            on_without.add(parser().parse(OM_BODY, OM, 1000))
            data = off.finish()
            assert exemplars_of([WriteRequest.FromString(data)]) == []
            assert len(data) == len(on_without.finish())


def test_timestamp_range_of_both_twins() -> None:
    table = SeriesTable()
    a = table.add("a", ())
    b1, b2 = Batch(table), Batch(table)
    for sid, ts in ((a, 500), (a, 100), (a, 900)):
        b1.append(sid, 1.0, ts)
    b2.append(a, 2.0, 50)
    for enc_cls in encoders():
        enc = enc_cls()
        assert enc.timestamp_range() is None
        enc.add(b1)
        assert enc.timestamp_range() == (100, 900)
        enc.add(b2, array("I", [0]))
        assert enc.timestamp_range() == (50, 900)
        enc.finish()
        assert enc.timestamp_range() is None


def test_drop_older_than_keeps_newer_samples_and_exemplars() -> None:
    batch = _text_py.Parser(keep_exemplars=True).parse(OM_BODY, OM, 1_700_000_001_000)
    stamps = batch.timestamps
    stamps[0] = 1_600_000_000_000  # an old sample (it carries the "aaa" exemplar, which is newer)
    enc = encode.WriteRequestEncoderPy(exemplars=True)
    enc.add(batch)
    data = enc.finish()
    out, kept, dropped, ex_dropped = drop_older_than(data, 1_700_000_000_000)
    assert (kept, dropped, ex_dropped) == (len(batch) - 1, 1, 0)
    req = WriteRequest.FromString(out)
    assert all(s.timestamp >= 1_700_000_000_000 for ts in req.timeseries for s in ts.samples)
    assert len(exemplars_of([req])) == 3
    _, kept2, dropped2, ex2 = drop_older_than(data, 1_700_000_000_600)
    assert (kept2, dropped2, ex2) == (len(batch) - 1, 1, 1)
    assert drop_older_than(data, 0) == (data, len(batch), 0, 0)
    with pytest.raises(ValueError):
        drop_older_than(b"\x0a\x05ab", 0)


# -- the writer ------------------------------------------------------------------------------


def _batch(t_ms: int, n: int = 5, name: str = "age_test") -> Batch:
    table = SeriesTable()
    b = Batch(table)
    for i in range(n):
        b.append(table.add(name, (("i", str(i)),)), float(i), t_ms)
    return b


async def _run_until_idle(writer: RemoteWriter, timeout: float = 30) -> bool:
    async with anyio.create_task_group() as tg:
        await tg.start(writer.run)
        ok = await writer.drain(timeout)
        tg.cancel_scope.cancel()
    return ok


@pytest.mark.anyio
async def test_sample_age_limit_drops_replayed_old_samples_and_counts_them(tmp_path: Path) -> None:
    now = int(time.time() * 1000)
    with CaptureServer() as srv:
        cfg = rw("    queue_config: {sample_age_limit: 1h}\n", srv.url + "/api/v1/write")
        # a first run that could not send: three blocks on disk
        first = RemoteWriter(cfg, ClientPool(), SelfMetrics(), queue_dir=tmp_path)
        first.push(_batch(now - 3 * 3600_000))  # old: dropped without decoding
        mixed = _batch(now - 2 * 3600_000)
        mixed.timestamps[3] = mixed.timestamps[4] = now - 60_000  # straddles the limit: decoded
        first.push(mixed)
        first.push(_batch(now - 120_000))  # recent: sent as it is
        first.close()
        metrics = SelfMetrics()
        pool = ClientPool()
        second = RemoteWriter(cfg, pool, metrics, queue_dir=tmp_path)
        try:
            assert second.pending_samples == 15
            assert await _run_until_idle(second)
        finally:
            await pool.aclose()
    stamps = [s.timestamp for r in srv.requests for ts in r.timeseries for s in ts.samples]
    assert len(stamps) == 7 and min(stamps) >= now - 3600_000
    assert second.dropped == {"too_old": 8} and second.sent_samples == 7 and second.pending_samples == 0
    assert metrics.registry.get_sample_value("relay_remote_write_samples_dropped_total",
                                             {"remote_name": second.remote_name, "url": second.url,
                                              "reason": "too_old"}) == 8


def test_disk_queue_keeps_block_timestamps_and_reads_the_older_format(tmp_path: Path) -> None:
    q = DiskQueue(tmp_path / "q")
    q.put(Block(b"new", 2, lowest=-5, highest=1_700_000_000_000))
    q.put(Block(b"old", 3))  # no range known: written as an RLQ1 record
    q.close()
    again = DiskQueue(tmp_path / "q", memory_bytes=0)
    first = again.peek()
    assert first is not None and (first.data, first.lowest, first.highest) == (b"new", -5, 1_700_000_000_000)
    again.ack()
    second = again.peek()
    assert second is not None and (second.data, second.samples, second.lowest, second.highest) == (b"old", 3, None, None)
    again.ack()
    assert again.peek() is None
    again.close()


@pytest.mark.anyio
async def test_age_filter_decodes_a_block_of_unknown_range() -> None:
    writer = RemoteWriter(rw("    queue_config: {sample_age_limit: 10m}\n"), ClientPool(), SelfMetrics())
    now = int(time.time() * 1000)
    enc = encode.WriteRequestEncoder()
    enc.add(_batch(now - 3600_000, 4))
    enc.add(_batch(now, 2, "fresh"))
    data, n, lowest = writer._age_filter(enc.finish_compressed(), 6, None, None)
    req = WriteRequest.FromString(decompress(data))
    assert n == 2 and [ts.labels[0].value for ts in req.timeseries] == ["fresh", "fresh"]
    assert lowest is not None and lowest <= now and writer.dropped == {"too_old": 4}
    assert writer._age_filter(compress(b""), 0, None, None)[1] == 0


@pytest.mark.anyio
async def test_write_relabel_keeps_the_exemplars_of_the_samples_it_keeps() -> None:
    batch = _text_py.Parser(keep_exemplars=True).parse(OM_BODY, OM, 1_700_000_001_000)
    with CaptureServer() as srv:
        cfg = rw("    send_exemplars: true\n    metadata_config: {send: false}\n"
                 "    write_relabel_configs: [{source_labels: [le], regex: '0\\.1', action: drop}]\n",
                 srv.url + "/api/v1/write")
        pool = ClientPool()
        writer = RemoteWriter(cfg, pool, SelfMetrics())
        try:
            async with anyio.create_task_group() as tg:
                await tg.start(writer.run)
                writer.push(batch)
                assert await writer.drain(30)
                tg.cancel_scope.cancel()
        finally:
            await pool.aclose()
    got = exemplars_of(srv.requests)
    assert [e[1] for e in got] == [(("trace_id", "ccc"),), (("span_id", "s1"), ("trace_id", "bbb"))]
    assert got[1][0] == (("__name__", "rpc_seconds_bucket"), ("le", "1.0"))


@pytest.mark.anyio
async def test_metadata_of_every_target_once_in_requests_of_max_samples_per_send() -> None:
    families = []
    for parser in parsers():
        families.append(parser().parse(ETCD_BODY, None, 1000).families)
        families.append(parser().parse(OM_BODY, OM, 1000).families)
    families.append({"solo": Family("solo", "gauge", "only here")})
    expected = set().union(*(family_set(f) for f in families))
    with CaptureServer() as srv:
        cfg = rw("    metadata_config: {max_samples_per_send: 7}\n", srv.url + "/api/v1/write")
        pool = ClientPool()
        metrics = SelfMetrics()
        writer = RemoteWriter(cfg, pool, metrics)
        writer.metadata_source = lambda: iter(families)
        try:
            sent = await writer.send_metadata()
            again = await writer.send_metadata()  # from the entry cache: the same bytes
        finally:
            await pool.aclose()
    assert sent == again == len(expected) > 100
    reqs = srv.requests
    assert all(len(r.metadata) <= 7 and not r.timeseries for r in reqs)
    assert meta_of(reqs) == expected
    assert sum(len(r.metadata) for r in reqs) == 2 * len(expected)  # no duplicates within a round
    assert metrics.registry.get_sample_value("relay_remote_write_metadata_sent_total",
                                             {"remote_name": writer.remote_name, "url": writer.url}) == 2 * sent
    etcd = family_set(families[0])
    assert ("GAUGE", "etcd_server_has_leader", "Whether or not a leader exists. 1 is existence, 0 is not.", "") in etcd


@pytest.mark.anyio
async def test_metadata_is_retried_on_5xx_then_sent() -> None:
    with CaptureServer() as srv:
        srv.status = 503
        cfg = rw("    queue_config: {min_backoff: 10ms, max_backoff: 50ms}\n", srv.url + "/api/v1/write")
        pool = ClientPool()
        writer = RemoteWriter(cfg, pool, SelfMetrics())
        writer.metadata_source = lambda: iter([{"a": Family("a", "counter", "x")}])
        try:
            async with anyio.create_task_group() as tg:
                tg.start_soon(writer.send_metadata)
                await anyio.sleep(0.3)
                assert writer.sent_metadata == 0
                srv.status = 204
                with anyio.fail_after(10):
                    while writer.sent_metadata == 0:
                        await anyio.sleep(0.05)
        finally:
            await pool.aclose()
    assert meta_of(srv.requests) == {("COUNTER", "a", "x", "")}


# -- real Prometheus and VictoriaMetrics -----------------------------------------------------


def _prometheus_sender(tmp_path: Path, srv: CaptureServer, *, exemplars: bool) -> PrometheusReceiver:
    config = (
        "global:\n  scrape_interval: 1s\n  scrape_timeout: 1s\n"
        f"scrape_configs:\n  - job_name: oracle\n    static_configs: [{{targets: ['{srv.address}']}}]\n"
        f"remote_write:\n  - url: {srv.url}/api/v1/write\n"
        f"    send_exemplars: {'true' if exemplars else 'false'}\n"
        "    metadata_config: {send: true, send_interval: 1s}\n"
        "    queue_config: {batch_send_deadline: 1s}\n"
    )
    args = ("--enable-feature=exemplar-storage",) if exemplars else ()
    return available(lambda: PrometheusReceiver(base_dir=tmp_path / "prom-sender", config=config, args=args))


@pytest.mark.services
@pytest.mark.parametrize(("body", "ctype"), [(ETCD_BODY, "text/plain; version=0.0.4"), (OM_BODY, OM)],
                         ids=["etcd-text", "openmetrics"])
@pytest.mark.anyio
async def test_metadata_as_prometheus_sends_it(tmp_path: Path, body: bytes, ctype: str) -> None:
    """Prometheus 2.42 scrapes the body and remote-writes its metadata to us: ours must be the same
    entries, from both parser twins."""
    with CaptureServer(body, ctype) as srv, _prometheus_sender(tmp_path, srv, exemplars=False):
        reqs = srv.wait_for(lambda rs: any(r.metadata for r in rs), timeout=60)
        theirs = meta_of(reqs)
    assert len(theirs) == (4 if body is OM_BODY else 126)
    for parser in parsers():
        families = parser().parse(body, ctype, 1000).families
        with CaptureServer() as ours:
            pool = ClientPool()
            writer = RemoteWriter(rw("", ours.url + "/api/v1/write"), pool, SelfMetrics())
            writer.metadata_source = lambda f=families: iter([f])
            try:
                await writer.send_metadata()
            finally:
                await pool.aclose()
        assert meta_of(ours.requests) == theirs, parser


@pytest.mark.services
@pytest.mark.anyio
async def test_exemplars_as_prometheus_sends_them(tmp_path: Path) -> None:
    with CaptureServer(OM_BODY, OM) as srv, _prometheus_sender(tmp_path, srv, exemplars=True):
        reqs = srv.wait_for(lambda rs: len(exemplars_of(rs)) >= 3, timeout=60)
        theirs = exemplars_of(reqs, drop=("job", "instance"))
    # Prometheus sends each exemplar once per scrape, with the scrape's time when it has none
    distinct = {(s, e, v) for s, e, v, _ in theirs}
    assert len(distinct) == 3
    stamps = {e: ts for _, e, _, ts in theirs if e == (("trace_id", "aaa"),)}
    for parser in parsers():
        batch = parser(keep_exemplars=True).parse(OM_BODY, OM, 1_700_000_001_000)
        enc = encode.WriteRequestEncoder(exemplars=True)
        enc.add(batch)
        ours = exemplars_of([WriteRequest.FromString(enc.finish())])
        assert {(s, e, v) for s, e, v, _ in ours} == distinct
        assert [ts for _, e, _, ts in ours if e == (("trace_id", "aaa"),)] == list(stamps.values())


@pytest.mark.services
@pytest.mark.anyio
async def test_prometheus_stores_our_exemplars_and_takes_our_metadata(tmp_path: Path) -> None:
    recv = available(lambda: PrometheusReceiver(base_dir=tmp_path / "prom",
                                                args=("--enable-feature=exemplar-storage",)))
    now_s = int(time.time())
    with recv:
        batch = _text_py.Parser(keep_exemplars=True).parse(
            OM_BODY.replace(b"1700000000.5", str(now_s - 30).encode()), OM, (now_s - 20) * 1000)
        pool = ClientPool()
        writer = RemoteWriter(rw("    send_exemplars: true\n", recv.write_url), pool, SelfMetrics())
        writer.metadata_source = lambda: iter([batch.families])
        try:
            async with anyio.create_task_group() as tg:
                await tg.start(writer.run)
                writer.push(batch)
                assert await writer.drain(30)
                assert await writer.send_metadata() == len(batch.families)  # 2xx: taken (and dropped)
                tg.cancel_scope.cancel()
        finally:
            await pool.aclose()
        data = recv.get_json("/api/v1/query_exemplars", {
            "query": '{__name__=~"rpc_seconds_bucket|jobs_total"}', "start": str(now_s - 600), "end": str(now_s + 60)})
        assert data["status"] == "success"
        got = sorted(
            (s["seriesLabels"]["__name__"], s["seriesLabels"].get("le", s["seriesLabels"].get("kind")),
             tuple(sorted(e["labels"].items())), float(e["value"]), round(float(e["timestamp"]) * 1000))
            for s in data["data"] for e in s["exemplars"]
        )
    assert got == [
        ("jobs_total", "a", (("trace_id", "ccc"),), 1.0, (now_s - 20) * 1000),
        ("rpc_seconds_bucket", "0.1", (("trace_id", "aaa"),), 0.05, (now_s - 30) * 1000),
        ("rpc_seconds_bucket", "1.0", (("span_id", "s1"), ("trace_id", "bbb")), 0.5, (now_s - 20) * 1000),
    ]
    assert writer.sent_samples == len(batch)


@pytest.mark.services
@pytest.mark.anyio
async def test_victoria_metrics_accepts_metadata_and_exemplar_requests(victoria_metrics: VictoriaMetrics) -> None:
    now = int(time.time() * 1000)
    batch = _text_py.Parser(keep_exemplars=True).parse(OM_BODY.replace(b"rpc_seconds", b"vm_meta_rpc_seconds"),
                                                      OM, now - 5000)
    pool = ClientPool()
    writer = RemoteWriter(rw("    send_exemplars: true\n", victoria_metrics.write_url), pool, SelfMetrics())
    writer.metadata_source = lambda: iter([batch.families])
    try:
        async with anyio.create_task_group() as tg:
            await tg.start(writer.run)
            writer.push(batch)
            assert await writer.drain(30)
            assert await writer.send_metadata() == len(batch.families)
            tg.cancel_scope.cancel()
    finally:
        await pool.aclose()
    assert writer.dropped == {} and writer.sent_samples == len(batch)
    assert victoria_metrics.sample_count('{__name__=~"vm_meta_rpc_seconds_.*"}') == 5


@pytest.mark.services
def test_relay_run_sends_metadata_and_exemplars_of_its_targets(tmp_path: Path) -> None:
    """`relay run` end to end: an OpenMetrics target with exemplars, one remote_write with
    send_exemplars and a 1s metadata interval, another with the defaults (no exemplars)."""
    with CaptureServer(OM_BODY, OM) as target, CaptureServer() as with_ex, CaptureServer() as plain:
        config = tmp_path / "relay.yml"
        config.write_text(
            "global:\n  scrape_interval: 1s\n  scrape_timeout: 1s\n"
            f"scrape_configs:\n  - job_name: ex\n    static_configs: [{{targets: ['{target.address}']}}]\n"
            "remote_write:\n"
            f"  - url: {with_ex.url}/api/v1/write\n    send_exemplars: true\n"
            "    metadata_config: {send_interval: 1s}\n    queue_config: {batch_send_deadline: 1s}\n"
            f"  - url: {plain.url}/api/v1/write\n    queue_config: {{batch_send_deadline: 1s}}\n"
        )
        proc = subprocess.run(
            [sys.executable, "-m", "relay.cli", "run", "--config", str(config), "--listen",
             f"127.0.0.1:{free_ports(1)[0]}", "--duration", "4", "--queue.memory"],
            capture_output=True, text=True, timeout=90)
        assert proc.returncode == 0, proc.stderr
        meta = meta_of(with_ex.requests)
        assert ("HISTOGRAM", "rpc_seconds", "RPC latency.", "seconds") in meta and ("INFO", "build", "", "") in meta
        ex = exemplars_of(with_ex.requests, drop=("job", "instance"))
        assert {e[1] for e in ex} == {(("trace_id", "aaa"),), (("span_id", "s1"), ("trace_id", "bbb")),
                                      (("trace_id", "ccc"),)}
        assert exemplars_of(plain.requests) == [] and any(r.timeseries for r in plain.requests)
        assert meta_of(plain.requests) == set()  # the default interval (1m) is longer than the run


def test_exemplars_are_kept_only_while_a_remote_write_sends_them() -> None:
    from relay.scrape import ScrapeManager

    manager = ScrapeManager(ClientPool(), [], SelfMetrics())
    assert manager.keep_exemplars is False  # no config yet
    manager.config = parse_config("remote_write:\n  - url: http://127.0.0.1:1/w\n  - url: http://127.0.0.1:2/w\n")
    assert manager.keep_exemplars is False
    manager.config = parse_config("remote_write:\n  - url: http://127.0.0.1:1/w\n"
                                  "  - url: http://127.0.0.1:2/w\n    send_exemplars: true\n")
    assert manager.keep_exemplars is True
    for parser_cls in parsers():  # a reload switches a running target's parser
        parser = parser_cls()
        assert parser.parse(OM_BODY, OM, 1000).exemplars == []
        parser.keep_exemplars = True
        assert len(parser.parse(OM_BODY, OM, 1000).exemplars) == 3
        parser.keep_exemplars = False
        assert parser.parse(OM_BODY, OM, 1000).exemplars == []
