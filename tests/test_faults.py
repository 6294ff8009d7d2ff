"""Hostile and broken targets, with real processes: `relay sim` members with faults, a hostile server,
the relay as a subprocess, VictoriaMetrics as receiver. Each bad target is up=0 with its reason,
none of them affects the healthy ones, and the relay's memory stays bounded."""

from __future__ import annotations

import asyncio
import json
import signal
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import orjson
import pytest

from relay.devtools.localenv import VictoriaMetrics, free_ports, wait_http

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


def peak_rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return 0.0


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
