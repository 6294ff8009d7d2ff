"""Remote write: real receivers (Prometheus, VictoriaMetrics), and MockTransport for fault shapes."""

from __future__ import annotations

import logging
import struct
import time
from typing import Any

import anyio
import httpx
import pytest

from relay.batch import STALE_NAN, STALE_NAN_BITS, Batch, SeriesTable
from relay.config import parse_config
from relay.devtools.localenv import PrometheusReceiver, VictoriaMetrics
from relay.http.client import ClientPool
from relay.metrics import SelfMetrics
from relay.remote.encode import decompress
from relay.remote.writer import RemoteWriter, classify_status, retry_after_seconds
from tests.mockpool import MockPool
from tests.remote_write_pb import WriteRequest

pytestmark = pytest.mark.anyio


def rw_config(url: str, extra: str = "") -> Any:
    return parse_config(f"remote_write:\n  - url: {url}\n{extra}").remote_write[0]


def make_batches(n_series: int, n_scrapes: int, job: str, t0_ms: int) -> list[Batch]:
    table = SeriesTable()
    ids = [table.add("rw_test_metric", (("job", job), ("series", str(i)))) for i in range(n_series)]
    out = []
    for s in range(n_scrapes):
        b = Batch(table)
        for i, sid in enumerate(ids):
            b.append(sid, float(s * 1000 + i), t0_ms + s * 1000)
        out.append(b)
    return out


async def run_writer(writer: RemoteWriter, batches: list[Batch], timeout: float = 30) -> bool:
    async with anyio.create_task_group() as tg:
        await tg.start(writer.run)
        for b in batches:
            writer.push(b)
        ok = await writer.drain(timeout)
        tg.cancel_scope.cancel()
    return ok


def decode(body: bytes) -> list[tuple[dict[str, str], list[tuple[float, int]]]]:
    req = WriteRequest.FromString(decompress(body))
    return [
        ({lb.name: lb.value for lb in ts.labels}, [(s.value, s.timestamp) for s in ts.samples])
        for ts in req.timeseries
    ]


def test_classify_status() -> None:
    assert [classify_status(s, True) for s in (200, 204, 400, 404, 429, 500, 503)] == [
        "ok", "ok", "drop", "drop", "retry", "retry", "retry"]
    assert [classify_status(s, True) for s in (401, 403, 407, 413)] == ["retry", "retry", "retry", "drop"]
    assert classify_status(429, False) == "drop"


def test_retry_after() -> None:
    assert retry_after_seconds("3") == 3.0
    assert retry_after_seconds(None) is None and retry_after_seconds("soon") is None
    http_date = time.strftime("%a, %d %b %Y %H:%M:%S GMT", time.gmtime(time.time() + 10))
    assert 8 <= (retry_after_seconds(http_date) or 0) <= 11


async def test_request_shape_headers_and_order_across_shards() -> None:
    bodies: list[tuple[httpx.Headers, bytes]] = []

    def handler(request: httpx.Request) -> httpx.Response:
        bodies.append((request.headers, request.content))
        return httpx.Response(204)

    cfg = rw_config(
        "http://127.0.0.1:1/api/v1/write",
        "    headers: {X-Scope-OrgID: t1}\n    queue_config: {min_shards: 4, max_samples_per_send: 50}\n",
    )
    writer = RemoteWriter(cfg, MockPool(handler), SelfMetrics())
    batches = make_batches(40, 10, "order", 1_700_000_000_000)
    stale = Batch(batches[0].series)
    stale.append(0, STALE_NAN, 1_700_000_100_000)
    assert await run_writer(writer, [*batches, stale])
    headers = bodies[0][0]
    assert headers["content-encoding"] == "snappy"
    assert headers["content-type"] == "application/x-protobuf"
    assert headers["x-prometheus-remote-write-version"] == "0.1.0"
    assert headers["user-agent"].startswith("etcd-metrics-relay/")
    assert headers["x-scope-orgid"] == "t1"
    per_series: dict[str, list[int]] = {}
    last_value: dict[str, float] = {}
    for _, body in bodies:
        for labels, samples in decode(body):
            assert list(labels) == sorted(labels) and labels["__name__"] == "rw_test_metric"
            for value, ts in samples:
                per_series.setdefault(labels["series"], []).append(ts)
                last_value[labels["series"]] = value
    assert len(per_series) == 40
    assert all(ts == sorted(ts) and len(ts) == 11 - (s != "0") for s, ts in per_series.items())
    assert struct.pack("<d", last_value["0"]) == struct.pack("<Q", STALE_NAN_BITS)
    assert writer.sent_samples == 401 and writer.pending_samples == 0


async def test_500_then_200_is_retried_and_delivered_once() -> None:
    calls: list[int] = []

    def handler(request: httpx.Request) -> httpx.Response:
        calls.append(1)
        return httpx.Response(500 if len(calls) <= 2 else 200, content=b"try later")

    cfg = rw_config("http://127.0.0.1:1/w", "    queue_config: {min_backoff: 10ms, max_backoff: 50ms}\n")
    metrics = SelfMetrics()
    writer = RemoteWriter(cfg, MockPool(handler), metrics)
    assert await run_writer(writer, make_batches(10, 1, "r", 1_700_000_000_000))
    assert len(calls) == 3 and writer.sent_samples == 10 and writer.dropped == {}
    assert metrics.rw_samples_retried.labels(*writer.metric_labels)._value.get() == 20
    assert metrics.rw_samples_failed.labels(*writer.metric_labels)._value.get() == 20


async def test_429_honours_retry_after() -> None:
    times: list[float] = []

    def handler(request: httpx.Request) -> httpx.Response:
        times.append(time.monotonic())
        if len(times) == 1:
            return httpx.Response(429, headers={"Retry-After": "1"})
        return httpx.Response(200)

    cfg = rw_config("http://127.0.0.1:1/w", "    queue_config: {min_backoff: 10ms, max_backoff: 20ms}\n")
    writer = RemoteWriter(cfg, MockPool(handler), SelfMetrics())
    assert await run_writer(writer, make_batches(5, 1, "r", 1_700_000_000_000))
    assert len(times) == 2 and times[1] - times[0] >= 0.95 and writer.sent_samples == 5


async def test_429_dropped_when_retry_disabled_and_400_dropped_and_logged_once(
    caplog: pytest.LogCaptureFixture,
) -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(400, content=b"out of order sample")

    cfg = rw_config("http://127.0.0.1:1/w", "    queue_config: {max_samples_per_send: 5}\n")
    writer = RemoteWriter(cfg, MockPool(handler), SelfMetrics())
    with caplog.at_level(logging.WARNING, logger="relay.remote.writer"):
        assert await run_writer(writer, make_batches(5, 4, "r", 1_700_000_000_000))
    assert writer.dropped == {"http_4xx": 20} and writer.sent_samples == 0
    msgs = [r.getMessage() for r in caplog.records if "out of order sample" in r.getMessage()]
    assert len(msgs) == 1

    cfg = rw_config("http://127.0.0.1:1/w", "    queue_config: {retry_on_http_429: false}\n")
    writer = RemoteWriter(cfg, MockPool(lambda r: httpx.Response(429)), SelfMetrics())
    assert await run_writer(writer, make_batches(3, 1, "r", 1_700_000_000_000))
    assert writer.dropped == {"http_4xx": 3}


async def test_network_errors_are_retried() -> None:
    calls: list[int] = []

    def handler(request: httpx.Request) -> httpx.Response:
        calls.append(1)
        if len(calls) < 3:
            raise httpx.ConnectError("connection refused")
        return httpx.Response(200)

    cfg = rw_config("http://127.0.0.1:1/w", "    queue_config: {min_backoff: 10ms, max_backoff: 20ms}\n")
    writer = RemoteWriter(cfg, MockPool(handler), SelfMetrics())
    assert await run_writer(writer, make_batches(3, 1, "r", 1_700_000_000_000))
    assert writer.sent_samples == 3 and len(calls) == 3


async def test_write_relabel_configs_drop_and_rewrite() -> None:
    got: list[bytes] = []

    def handler(request: httpx.Request) -> httpx.Response:
        got.append(request.content)
        return httpx.Response(200)

    extra = (
        "    write_relabel_configs:\n"
        "      - {source_labels: [series], regex: '[0-4]', action: drop}\n"
        "      - {target_label: env, replacement: prod}\n"
    )
    writer = RemoteWriter(rw_config("http://127.0.0.1:1/w", extra), MockPool(handler), SelfMetrics())
    assert await run_writer(writer, make_batches(10, 2, "r", 1_700_000_000_000))
    series = [labels for body in got for labels, _ in decode(body)]
    assert len(series) == 10 and all(s["env"] == "prod" and int(s["series"]) >= 5 for s in series)
    assert writer.dropped == {"write_relabel": 10}


@pytest.mark.services
async def test_victoria_metrics_receives_every_sample(victoria_metrics: VictoriaMetrics) -> None:
    pool = ClientPool()
    t0 = (int(time.time()) - 600) * 1000
    writer = RemoteWriter(rw_config(victoria_metrics.write_url, "    queue_config: {min_shards: 3}\n"), pool,
                          SelfMetrics())
    try:
        assert await run_writer(writer, make_batches(100, 5, "rw-vm", t0))
    finally:
        await pool.aclose()
    assert victoria_metrics.sample_count('{job="rw-vm"}') == 500 == writer.sent_samples
    (r,) = victoria_metrics.query('rw_test_metric{job="rw-vm", series="7"}', time_s=t0 / 1000 + 4)
    assert r["value"][1] == "4007"


@pytest.mark.services
async def test_prometheus_receives_every_sample(prometheus_receiver: PrometheusReceiver) -> None:
    pool = ClientPool()
    t0 = (int(time.time()) - 300) * 1000
    writer = RemoteWriter(rw_config(prometheus_receiver.write_url), pool, SelfMetrics())
    try:
        assert await run_writer(writer, make_batches(50, 4, "rw-prom", t0))
    finally:
        await pool.aclose()
    at = t0 / 1000 + 3
    result = prometheus_receiver.query('count_over_time(rw_test_metric{job="rw-prom"}[10m])', time_s=at)
    assert len(result) == 50 and all(r["value"][1] == "4" for r in result)
    (r,) = prometheus_receiver.query('rw_test_metric{job="rw-prom", series="3"}', time_s=at)
    assert r["value"][1] == "3003"




async def test_reshard_keeps_per_series_order_and_loses_nothing() -> None:
    seen: list[bytes] = []

    async def handler(request: httpx.Request) -> httpx.Response:
        await anyio.sleep(0.002)
        seen.append(request.content)
        return httpx.Response(200)

    cfg = rw_config("http://127.0.0.1:1/w", "    queue_config: {min_shards: 1, max_shards: 8, max_samples_per_send: 30}\n")
    writer = RemoteWriter(cfg, MockPool(handler), SelfMetrics())
    batches = make_batches(50, 40, "reshard", 1_700_000_000_000)
    async with anyio.create_task_group() as tg:
        await tg.start(writer.run)
        for i, b in enumerate(batches):
            writer.push(b)
            if i == 10:
                writer.reshard(5)
            if i == 25:
                await anyio.sleep(0.05)
            await anyio.sleep(0)
        assert await writer.drain(30)
        tg.cancel_scope.cancel()
    assert writer.n_shards == 5 and len(writer.shards) == 5
    per_series: dict[str, list[int]] = {}
    for body in seen:
        for labels, samples in decode(body):
            per_series.setdefault(labels["series"], []).extend(ts for _, ts in samples)
    assert len(per_series) == 50
    assert all(ts == sorted(ts) and len(ts) == 40 for ts in per_series.values())
    assert writer.sent_samples == 2000


async def test_a_targets_batches_stay_whole_in_its_shard_and_in_order() -> None:
    """Tables with a shard_key (a scrape target's): each batch goes whole to shard key % n; the
    targets spread over the shards; per-series order holds across a reshard."""
    seen: list[bytes] = []

    async def handler(request: httpx.Request) -> httpx.Response:
        await anyio.sleep(0.001)
        seen.append(request.content)
        return httpx.Response(200)

    cfg = rw_config("http://127.0.0.1:1/w", "    queue_config: {min_shards: 4, max_shards: 8, max_samples_per_send: 35}\n")
    writer = RemoteWriter(cfg, MockPool(handler), SelfMetrics())
    targets = [make_batches(10, 30, f"target{t}", 1_700_000_000_000) for t in range(12)]
    for t, batches in enumerate(targets):
        batches[0].series.shard_key = 1000 + t
    where: dict[int, set[int]] = {}
    async with anyio.create_task_group() as tg:
        await tg.start(writer.run)
        for scrape in range(30):
            for t, batches in enumerate(targets):
                writer.push(batches[scrape])
                if scrape < 10:
                    where.setdefault(t, set()).update(
                        i for i, shard in enumerate(writer.shards) if any(b is batches[scrape] for b, _ in shard.pending))
            if scrape == 10:
                writer.reshard(7)
            await anyio.sleep(0)
        assert await writer.drain(30)
        tg.cancel_scope.cancel()
    assert all(len(shards) == 1 for shards in where.values())  # never split
    assert {(1000 + t) % 4 for t in range(12)} == set().union(*where.values()) and len(set().union(*where.values())) == 4
    per_series: dict[tuple[str, str], list[int]] = {}
    for body in seen:
        for labels, samples in decode(body):
            per_series.setdefault((labels["job"], labels["series"]), []).extend(ts for _, ts in samples)
    assert len(per_series) == 120
    assert all(ts == sorted(ts) and len(ts) == 30 for ts in per_series.values())
    assert writer.sent_samples == 12 * 10 * 30


async def test_queue_bound_holds_across_shard_generations_and_shutdown_loss_is_counted() -> None:
    """A receiver that is down: the queues' byte bound holds over the draining generation and the
    new one together (the oldest dropped, as queue_full); what is left at shutdown without a queue
    folder is counted as shutdown; every accepted sample is sent, dropped or counted."""
    def down(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("down")

    cfg = rw_config("http://127.0.0.1:1/w", "    queue_config: {min_shards: 2, max_samples_per_send: 100, "
                    "min_backoff: 1s, max_backoff: 1s}\n")
    batches = make_batches(100, 60, "bound", 1_700_000_000_000)
    writer = RemoteWriter(cfg, MockPool(down), SelfMetrics(), max_queue_bytes=8 * 1024)
    highest = 0
    async with anyio.create_task_group() as tg:
        await tg.start(writer.run)
        for i, b in enumerate(batches):
            writer.push(b)
            if i == 20:
                assert writer.reshard(5)  # the 2 old shards keep their blocks: a draining generation
            await anyio.sleep(0)
            highest = max(highest, writer.queue_bytes)
        tg.cancel_scope.cancel()
    biggest = max(len(blk.data) for s in [*writer.draining, *writer.shards] for blk in getattr(s.queue, "_blocks", []))
    assert writer.draining  # the old generation was still there, holding blocks
    assert highest <= 8 * 1024 + 7 * biggest  # at most the bound plus a sending or newest block per shard
    assert writer.dropped.get("queue_full", 0) > 0
    writer.close()
    assert writer.dropped.get("shutdown", 0) > 0 and writer.pending_samples == 0
    assert writer.sent_samples + sum(writer.dropped.values()) == writer.accepted_samples == 6000


async def test_shards_grow_with_a_slow_receiver() -> None:
    async def slow(request: httpx.Request) -> httpx.Response:
        await anyio.sleep(0.05)
        return httpx.Response(200)

    cfg = rw_config("http://127.0.0.1:1/w", "    queue_config: {max_shards: 10, max_samples_per_send: 100}\n")
    writer = RemoteWriter(cfg, MockPool(slow), SelfMetrics())
    writer.reshard_interval = 0.5
    async with anyio.create_task_group() as tg:
        await tg.start(writer.run)
        with anyio.move_on_after(3):
            while writer.n_shards == 1:
                for b in make_batches(100, 2, "grow", 1_700_000_000_000):  # 200 samples per 50 ms: 4x one shard
                    writer.push(b)
                await anyio.sleep(0.05)
        assert writer.n_shards > 1
        assert await writer.drain(30)
        tg.cancel_scope.cancel()
    assert writer.dropped == {} and writer.sent_samples == writer.accepted_samples


async def test_restart_with_fewer_shards_sends_what_the_old_ones_left_first(tmp_path: Any) -> None:
    seen: list[bytes] = []
    up = False

    def handler(request: httpx.Request) -> httpx.Response:
        if not up:
            raise httpx.ConnectError("down")
        seen.append(request.content)
        return httpx.Response(200)

    queue_cfg = "    queue_config: {{min_shards: {}, max_samples_per_send: 20, min_backoff: 10ms, max_backoff: 20ms}}\n"
    first = RemoteWriter(rw_config("http://127.0.0.1:1/w", queue_cfg.format(3)), MockPool(handler), SelfMetrics(),
                         queue_dir=tmp_path)
    batches = make_batches(30, 6, "restart", 1_700_000_000_000)
    async with anyio.create_task_group() as tg:
        await tg.start(first.run)
        for b in batches[:3]:
            first.push(b)
        assert not await first.drain(0.3)
        tg.cancel_scope.cancel()
    first.close()
    up = True
    second = RemoteWriter(rw_config("http://127.0.0.1:1/w", queue_cfg.format(1)), MockPool(handler), SelfMetrics(),
                          queue_dir=tmp_path)
    assert len(second.draining) == 3 and second.pending_samples == 90
    assert await run_writer(second, batches[3:])
    per_series: dict[str, list[int]] = {}
    for body in seen:
        for labels, samples in decode(body):
            per_series.setdefault(labels["series"], []).extend(ts for _, ts in samples)
    assert len(per_series) == 30 and all(ts == sorted(ts) and len(ts) == 6 for ts in per_series.values())
    assert [p.name for p in tmp_path.rglob("gen*")] == ["gen000002-shard000"]


async def test_on_disk_each_push_is_a_block_in_the_queue_file_before_it_returns(tmp_path: Any) -> None:
    """With a queue folder nothing waits in memory for max_samples_per_send or the deadline: a
    SIGKILL right after push() returns loses none of it. In memory the batching stays as it was."""
    cfg = rw_config("http://127.0.0.1:1/w", "    queue_config: {min_shards: 2, max_samples_per_send: 2000}\n")
    on_disk = RemoteWriter(cfg, MockPool(lambda r: httpx.Response(204)), SelfMetrics(), queue_dir=tmp_path)
    in_memory = RemoteWriter(cfg, MockPool(lambda r: httpx.Response(204)), SelfMetrics())
    table = SeriesTable()
    table.shard_key = 1
    sid = table.add("m", (("job", "j"),))
    for w in (on_disk, in_memory):
        b = Batch(table)
        for i in range(10):
            b.append(sid, float(i), 1_700_000_000_000 + i)
        w.push(b)
    assert all(not s.pending for s in on_disk.shards) and sum(len(s.queue) for s in on_disk.shards) == 1
    assert sum(p.stat().st_size for p in tmp_path.rglob("*.seg")) > 10  # written through, not buffered
    assert sum(s.pending_count for s in in_memory.shards) == 10 and all(not len(s.queue) for s in in_memory.shards)
    on_disk.close()


async def test_url_credentials_are_sent_as_basic_auth_and_shown_as_secret(tmp_path: Any) -> None:
    import base64

    from relay.remote.writer import _folder_name

    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(204)

    cfg = rw_config("http://al%3Aice:pa%40ss@127.0.0.1:1/api/v1/write")
    writer = RemoteWriter(cfg, MockPool(handler), SelfMetrics(), queue_dir=tmp_path)
    assert writer.label == "http://<secret>@127.0.0.1:1/api/v1/write"
    assert "pa" not in _folder_name(cfg) and "ice" not in _folder_name(cfg)
    assert await run_writer(writer, make_batches(3, 2, "cred", 1_700_000_000_000))
    writer.close()
    assert seen and all(r.headers["authorization"] == "Basic " + base64.b64encode(b"al:ice:pa@ss").decode()
                        for r in seen)
    assert all(r.url.userinfo == b"" and str(r.url) == "http://127.0.0.1:1/api/v1/write" for r in seen)
    assert not any("pa" in p.name or "ice" in p.name for p in tmp_path.rglob("*"))
    metrics = writer.metrics.registry
    from prometheus_client import generate_latest

    text = generate_latest(metrics).decode()
    assert 'url="http://<secret>@127.0.0.1:1/api/v1/write"' in text and "pa%40ss" not in text and "ice" not in text


def test_url_credentials_with_basic_auth_is_a_config_error() -> None:
    from relay._exceptions import ConfigError

    with pytest.raises(ConfigError, match=r"remote_write\[0\]\.url: has credentials"):
        rw_config("http://u:p@127.0.0.1:1/w", "    basic_auth: {username: u, password: p}\n")
    with pytest.raises(ConfigError) as info:
        rw_config("ftp://u:hunter2@127.0.0.1:1/w")
    assert "hunter2" not in str(info.value) and "<secret>@" in str(info.value)


@pytest.mark.parametrize("queue", ["memory", "disk"])
async def test_highest_timestamps_appended_and_sent(queue: str, tmp_path: Any) -> None:
    """The PrometheusRemoteWriteBehind pair: the newest timestamp handed over, and per endpoint the
    newest one a 2xx accepted (a 4xx drop does not count as sent)."""
    verdicts: list[int] = [200]

    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(verdicts[0])

    metrics = SelfMetrics()
    cfg = rw_config("http://u:p@127.0.0.1:1/w", "    name: primary\n    queue_config: {batch_send_deadline: 50ms}\n")
    writer = RemoteWriter(cfg, MockPool(handler), metrics, queue_dir=tmp_path if queue == "disk" else None)
    assert writer.metric_labels == ("primary", "http://<secret>@127.0.0.1:1/w")
    sent = metrics.rw_highest_sent_timestamp.labels(*writer.metric_labels)
    assert sent._value.get() == 0
    assert await run_writer(writer, make_batches(5, 3, "r", 1_700_000_000_000))
    assert metrics.rw_highest_timestamp._value.get() == 1_700_000_002.0
    assert sent._value.get() == 1_700_000_002.0
    verdicts[0] = 400
    assert await run_writer(writer, make_batches(5, 1, "r", 1_700_000_010_000))
    assert writer.dropped == {"http_4xx": 5}
    assert metrics.rw_highest_timestamp._value.get() == 1_700_000_010.0 and sent._value.get() == 1_700_000_002.0


async def test_forget_metrics_removes_an_endpoints_series() -> None:
    from prometheus_client import generate_latest

    metrics = SelfMetrics()
    keep = RemoteWriter(rw_config("http://127.0.0.1:1/keep"), MockPool(lambda r: httpx.Response(200)), metrics)
    gone = RemoteWriter(rw_config("http://127.0.0.1:1/gone"), MockPool(lambda r: httpx.Response(400)), metrics)
    for w in (keep, gone):
        assert await run_writer(w, make_batches(3, 1, "r", 1_700_000_000_000))
    assert b"/gone" in generate_latest(metrics.registry) and gone.dropped == {"http_4xx": 3}
    gone.forget_metrics()
    text = generate_latest(metrics.registry).decode()
    assert "/gone" not in text
    assert f'relay_remote_write_samples_sent_total{{remote_name="{keep.remote_name}",url="http://127.0.0.1:1/keep"}} 3.0' in text
    gone.forget_metrics()  # twice is harmless
