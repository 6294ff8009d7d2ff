"""The scrape loop and manager: real etcd members, and MockTransport for fault shapes."""

from __future__ import annotations

import math
import struct
from collections.abc import Callable
from typing import Any

import anyio
import httpx
import pytest

from relay.batch import STALE_NAN_BITS, Batch
from relay.config import parse_config
from relay.devtools.localenv import EtcdCluster
from relay.http.client import ClientPool
from relay.metrics import SelfMetrics
from relay.scrape import ScrapeLoop, ScrapeManager
from relay.target import Target, build_target
from tests.mockpool import MockPool

pytestmark = pytest.mark.anyio


def make_target(address: str = "127.0.0.1:2381", extra: str = "") -> Target:
    sc = parse_config(
        "scrape_configs:\n  - job_name: etcd\n    scrape_interval: 1s\n    scrape_timeout: 500ms\n" + extra
    ).scrape_configs[0]
    t = build_target(address, {}, sc)
    assert t is not None
    return t


def bits(v: float) -> int:
    return int(struct.unpack("<Q", struct.pack("<d", v))[0])


def by_name(batch: Batch) -> dict[str, list[tuple[dict[str, str], float]]]:
    out: dict[str, list[tuple[dict[str, str], float]]] = {}
    for name, labels, value, _ in batch.samples():
        out.setdefault(name, []).append((dict(labels), value))
    return out


def synthetic(batch: Batch) -> dict[str, float]:
    names = ("up", "scrape_duration_seconds", "scrape_samples_scraped", "scrape_series_added")
    return {n: v[0][1] for n, v in by_name(batch).items() if n in names}


def loop_for(handler: Callable[[httpx.Request], Any], target: Target | None = None) -> tuple[ScrapeLoop, list[Batch]]:
    got: list[Batch] = []
    return ScrapeLoop(target or make_target(), MockPool(handler), [got.append], SelfMetrics()), got


@pytest.mark.services
async def test_scrape_real_etcd_member(etcd_cluster: EtcdCluster) -> None:
    m = etcd_cluster.members[0]
    got: list[Batch] = []
    pool = ClientPool()
    loop = ScrapeLoop(make_target(m.metrics_target), pool, [got.append], SelfMetrics())
    try:
        first = await loop.scrape_once()
        second = await loop.scrape_once()
    finally:
        await pool.aclose()
    assert got == [first, second]
    series = by_name(first)
    (labels, value), = series["etcd_server_has_leader"]
    assert labels["job"] == "etcd" and labels["instance"] == m.metrics_target and value == 1
    s1, s2 = synthetic(first), synthetic(second)
    assert s1["up"] == 1 and s1["scrape_samples_scraped"] > 1000
    assert s1["scrape_series_added"] == s1["scrape_samples_scraped"] and s2["scrape_series_added"] == 0
    assert loop.health.health == "up" and loop.health.last_samples == s1["scrape_samples_scraped"]


async def test_vanished_series_get_stale_markers() -> None:
    bodies = iter([b"a 1\nb 2\n", b"a 3\n"])
    loop, _ = loop_for(lambda r: httpx.Response(200, content=next(bodies)))
    await loop.scrape_once()
    second = by_name(await loop.scrape_once())
    assert second["a"][0][1] == 3
    (_, stale), = second["b"]
    assert bits(stale) == STALE_NAN_BITS


@pytest.mark.parametrize(
    ("handler", "reason"),
    [
        (lambda r: httpx.Response(500, content=b"oops"), "http_status"),
        (lambda r: httpx.Response(200, content=b"a{b=\n"), "parse_error"),
        (lambda r: (_ for _ in ()).throw(httpx.ConnectError("refused")), "connect"),
        (lambda r: (_ for _ in ()).throw(httpx.ReadError("reset")), "http"),
    ],
)
async def test_failed_scrape_is_up_zero_with_reason_and_stales_everything(
    handler: Callable[[httpx.Request], Any], reason: str
) -> None:
    calls = 0

    def h(request: httpx.Request) -> Any:
        nonlocal calls
        calls += 1
        return httpx.Response(200, content=b"a 1\nb 2\n") if calls == 1 else handler(request)

    loop, _ = loop_for(h)
    await loop.scrape_once()
    failed = by_name(await loop.scrape_once())
    assert failed["up"][0][1] == 0
    assert bits(failed["a"][0][1]) == STALE_NAN_BITS and bits(failed["b"][0][1]) == STALE_NAN_BITS
    assert loop.health.health == "down" and loop.health.last_reason == reason and loop.health.last_error
    assert "\n" not in loop.health.last_error
    m = loop.metrics.scrape_failures.labels("etcd", reason)._value.get()
    assert m == 1


async def test_timeout_cancels_the_scrape() -> None:
    async def slow(request: httpx.Request) -> httpx.Response:
        await anyio.sleep(5)
        return httpx.Response(200, content=b"a 1\n")

    loop, _ = loop_for(slow)
    with anyio.fail_after(3):
        batch = await loop.scrape_once()
    assert synthetic(batch)["up"] == 0 and loop.health.last_reason == "timeout"
    assert synthetic(batch)["scrape_duration_seconds"] < 1.0


@pytest.mark.parametrize(
    ("extra", "body", "reason"),
    [
        ("    body_size_limit: 100B\n", b"a 1\n" * 100, "body_size_limit"),
        ("    sample_limit: 2\n", b"a 1\nb 1\nc 1\n", "sample_limit"),
        ("    label_limit: 1\n", b'a{x="1",y="2"} 1\n', "label_limit"),
    ],
)
async def test_limits_fail_the_scrape(extra: str, body: bytes, reason: str) -> None:
    loop, _ = loop_for(lambda r: httpx.Response(200, content=body), make_target(extra=extra))
    batch = await loop.scrape_once()
    assert synthetic(batch)["up"] == 0 and loop.health.last_reason == reason


async def test_metric_relabel_and_honor_labels() -> None:
    extra = (
        "    honor_labels: true\n    metric_relabel_configs:\n"
        "      - {source_labels: [__name__], regex: 'go_.*', action: drop}\n"
    )
    body = b'go_goroutines 10\netcd_x{job="inner"} 1\netcd_y 2\n'
    loop, _ = loop_for(lambda r: httpx.Response(200, content=body), make_target(extra=extra))
    batch = by_name(await loop.scrape_once())
    assert "go_goroutines" not in batch
    assert batch["etcd_x"][0][0]["job"] == "inner" and batch["etcd_y"][0][0]["job"] == "etcd"


async def test_request_headers_like_prometheus() -> None:
    seen: list[httpx.Request] = []

    def h(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(200, content=b"a 1\n")

    loop, _ = loop_for(h)
    await loop.scrape_once()
    (req,) = seen
    assert req.headers["accept"].startswith("application/openmetrics-text;version=1.0.0")
    assert "text/plain;version=0.0.4" in req.headers["accept"]
    assert req.headers["x-prometheus-scrape-timeout-seconds"] == "0.5"
    assert "gzip" in req.headers["accept-encoding"]


async def test_openmetrics_content_type_is_honoured() -> None:
    body = b"# TYPE a counter\na_total 1 1700000000.5\n# EOF\n"
    ct = "application/openmetrics-text; version=1.0.0; charset=utf-8"
    loop, _ = loop_for(lambda r: httpx.Response(200, content=body, headers={"content-type": ct}))
    batch = await loop.scrape_once()
    (_, _, value, ts), = [s for s in batch.samples() if s[0] == "a_total"]
    assert value == 1 and ts == 1700000000500


async def test_manager_reload_keeps_unchanged_loops_and_stales_removed_targets() -> None:
    base = "scrape_configs:\n  - job_name: j\n    scrape_interval: 1s\n    static_configs:\n      - targets: {}\n"
    got: list[Batch] = []
    pool = MockPool(lambda r: httpx.Response(200, content=b"m 1\n"))
    mgr = ScrapeManager(pool, [got.append], SelfMetrics())
    async with anyio.create_task_group() as tg:
        await tg.start(mgr.run, parse_config(base.format("['a:1', 'b:1']")))
        assert len(mgr.loops) == 2
        loop_a = next(lp for lp in mgr.loops.values() if lp.target.instance == "a:1")
        loop_b = next(lp for lp in mgr.loops.values() if lp.target.instance == "b:1")
        with anyio.fail_after(5):
            while loop_b.health.scrapes == 0 or loop_a.health.scrapes == 0:
                await anyio.sleep(0.05)
        mgr.apply(parse_config(base.format("['a:1']")))
        assert list(mgr.loops.values()) == [loop_a]
        await anyio.sleep(0.1)
        stale = [s for b in got for s in b.samples() if s[0] == "m" and dict(s[1])["instance"] == "b:1"]
        assert math.isnan(stale[-1][2]) and bits(stale[-1][2]) == STALE_NAN_BITS
        mgr.stop_all()
        tg.cancel_scope.cancel()


@pytest.mark.services
async def test_scrape_real_etcd_34_member(tmp_path: Any) -> None:
    from tests.conftest import available

    with available(lambda: EtcdCluster(1, version="3.4", base_dir=tmp_path)) as cluster:
        m = cluster.members[0]
        pool = ClientPool()
        loop = ScrapeLoop(make_target(m.metrics_target), pool, [], SelfMetrics())
        try:
            batch = await loop.scrape_once()
        finally:
            await pool.aclose()
    series = by_name(batch)
    assert loop.health.health == "up", loop.health.last_error
    assert series["etcd_server_has_leader"][0][1] == 1
    assert any(labels.get("server_version", "").startswith("3.4") for labels, _ in series["etcd_server_version"])


async def test_scrape_samples_scraped_counts_before_metric_relabeling() -> None:
    extra = "    metric_relabel_configs:\n      - {source_labels: [__name__], regex: 'go_.*', action: drop}\n"
    body = b"go_a 1\ngo_b 2\netcd_x 1\n"
    loop, _ = loop_for(lambda r: httpx.Response(200, content=body), make_target(extra=extra))
    for _ in range(2):
        s = by_name(await loop.scrape_once())
        assert s["scrape_samples_scraped"][0][1] == 3 and s["scrape_samples_post_metric_relabeling"][0][1] == 1
