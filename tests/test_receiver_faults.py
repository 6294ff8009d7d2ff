"""A slow receiver and a receiver that closes connections: nothing accepted is lost, nothing is stored twice
unless remote write's at-least-once semantics make it unavoidable, and then every copy is counted.

Real parts: etcd 3.5.1 members as targets, the relay as a subprocess with a persistent queue,
VictoriaMetrics as the receiver, and between them a real TCP proxy on loopback that injects the
fault (tests/faultproxy.py). Counts are exact:

- ``distinct == accepted``: every sample the relay accepted reached VictoriaMetrics;
- ``stored == accepted + duplicates``: what VictoriaMetrics holds is that plus the copies the
  proxy saw it acknowledge twice (VictoriaMetrics keeps identical samples, it does not dedupe
  unless asked to);
- ``duplicates == 0`` unless the receiver stored a write whose answer the relay never got (an
  answer withheld by a reset, or later than the relay's ``remote_timeout``): the relay cannot tell
  that write from one that failed, so it must send it again; then ``duplicates`` equals exactly the
  samples of those unanswered writes.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import orjson
import pytest

from relay.devtools.localenv import EtcdCluster, VictoriaMetrics
from tests.faultproxy import ReceiverProxy, RelayProcess

pytestmark = [pytest.mark.services, pytest.mark.slow]

RSS_BOUND_MIB = 200  # the relay scraping 3 members peaks at about 45 MiB with any of these faults


def write_config(path: Path, job: str, targets: list[str], write_url: str, remote_timeout: str = "30s") -> None:
    path.write_text(
        "global: {scrape_interval: 1s, scrape_timeout: 1s}\n"
        f"scrape_configs:\n  - job_name: {job}\n    static_configs:\n      - targets: {orjson.dumps(targets).decode()}\n"
        f"remote_write:\n  - url: {write_url}\n    remote_timeout: {remote_timeout}\n"
        "    queue_config: {batch_send_deadline: 500ms, min_backoff: 50ms, max_backoff: 1s, min_shards: 2}\n"
    )


def run_with_fault(etcd: EtcdCluster, vm: VictoriaMetrics, tmp_path: Path, job: str, fault: str, window: float,
                   remote_timeout: str = "30s", **fault_args: Any) -> dict[str, Any]:
    """Relay -> proxy -> VictoriaMetrics: 3 s clean, `window` s with the fault, 5 s clean, stop."""
    cfg = tmp_path / "relay.yml"
    with ReceiverProxy(vm.port, seed=7) as proxy:
        write_config(cfg, job, [m.metrics_target for m in etcd.members], proxy.write_url, remote_timeout)
        with RelayProcess(cfg, tmp_path / "run") as relay:
            relay.wait_ready()
            time.sleep(3)
            proxy.set_fault(fault, **fault_args)
            deadline = time.monotonic() + window
            while time.monotonic() < deadline:
                time.sleep(1)
                relay.sample_rss()
            proxy.set_fault("pass")
            time.sleep(5)
            rw = relay.stop()
            rss = relay.peak_rss
    stored = vm.sample_count(f'{{job="{job}"}}')
    result = {"rw": rw, "stored": stored, "distinct": proxy.distinct_samples, "duplicates": proxy.duplicate_samples,
              "proxy": proxy.stats, "peak_rss_mib": rss}
    print(f"{fault}: accepted {rw['accepted']}, stored {stored}, duplicates {proxy.duplicate_samples}, "
          f"unanswered {proxy.stats.unanswered_stored_samples}, faults {dict(proxy.stats.faults)}, "
          f"requests {proxy.stats.requests}, peak RSS {rss:.0f} MiB")
    return result


def assert_exactly_once(r: dict[str, Any], *, duplicates_allowed: bool = False) -> None:
    rw = r["rw"]
    assert rw["dropped"] == {} and rw["pending"] == 0, rw
    assert rw["accepted"] > 20_000, rw  # scraping went on throughout
    assert r["proxy"].upstream_errors == 0
    assert r["stored"] == r["proxy"].stored_samples  # VictoriaMetrics holds what it acknowledged
    assert r["distinct"] == rw["accepted"]  # every accepted sample arrived
    assert r["stored"] == rw["accepted"] + r["duplicates"]
    if duplicates_allowed:
        assert r["duplicates"] == r["proxy"].unanswered_stored_samples
        assert rw["retried"] >= r["duplicates"]  # every copy was a resend the relay counted
    else:
        assert r["duplicates"] == 0
    assert r["peak_rss_mib"] < RSS_BOUND_MIB, f"peak RSS {r['peak_rss_mib']:.0f} MiB"


def test_slow_receiver_loses_nothing(etcd_cluster: EtcdCluster, victoria_metrics: VictoriaMetrics,
                                     tmp_path: Path) -> None:
    """Every answer 3 s late for 30 s (well within remote_timeout): the queue absorbs it, shards grow."""
    r = run_with_fault(etcd_cluster, victoria_metrics, tmp_path, "rf-slow", "slow", 30, delay=3.0)
    assert r["proxy"].faults["slow"] >= 10
    assert_exactly_once(r)
    assert r["rw"]["shards"] > 2  # adaptive sharding reacted to the long sends


def test_receiver_slower_than_remote_timeout_duplicates_only_the_unanswered(
    etcd_cluster: EtcdCluster, victoria_metrics: VictoriaMetrics, tmp_path: Path
) -> None:
    """Answers 2 s late with remote_timeout 1 s, for 12 s: the receiver stores each write, the relay
    times out and sends it again. Those copies are the only duplicates."""
    r = run_with_fault(etcd_cluster, victoria_metrics, tmp_path, "rf-timeout", "slow", 12, remote_timeout="1s",
                       delay=2.0)
    assert r["proxy"].unanswered_stored_samples > 0
    assert_exactly_once(r, duplicates_allowed=True)


def test_connections_reset_mid_request(etcd_cluster: EtcdCluster, victoria_metrics: VictoriaMetrics,
                                       tmp_path: Path) -> None:
    """Half the requests: head and half the body read, then a TCP RST. Nothing of them was stored."""
    r = run_with_fault(etcd_cluster, victoria_metrics, tmp_path, "rf-reset", "reset_mid_request", 15, share=0.5)
    assert r["proxy"].faults["reset_mid_request"] >= 10
    assert_exactly_once(r)


def test_keepalive_connections_closed_after_each_response(etcd_cluster: EtcdCluster,
                                                          victoria_metrics: VictoriaMetrics, tmp_path: Path) -> None:
    """Every response is followed by a close the relay learns of only from the FIN."""
    r = run_with_fault(etcd_cluster, victoria_metrics, tmp_path, "rf-close", "close_after_response", 15)
    assert r["proxy"].faults["close_after_response"] >= 8  # about one answer per second and shard
    assert_exactly_once(r)


def test_connections_accepted_and_closed_without_an_answer(etcd_cluster: EtcdCluster,
                                                           victoria_metrics: VictoriaMetrics, tmp_path: Path) -> None:
    r = run_with_fault(etcd_cluster, victoria_metrics, tmp_path, "rf-noanswer", "close_no_answer", 15, share=0.5)
    assert r["proxy"].faults["close_no_answer"] >= 10
    assert_exactly_once(r)


def test_reset_after_the_receiver_stored_the_write(etcd_cluster: EtcdCluster, victoria_metrics: VictoriaMetrics,
                                                   tmp_path: Path) -> None:
    """A third of the writes are stored, then the connection is reset before the answer: each is sent
    again (at-least-once), and the duplicates are exactly those writes' samples."""
    r = run_with_fault(etcd_cluster, victoria_metrics, tmp_path, "rf-lost-answer", "reset_after_forward", 15,
                       share=0.3)
    assert r["proxy"].faults["reset_after_forward"] >= 5
    assert r["duplicates"] > 0
    assert_exactly_once(r, duplicates_allowed=True)


def test_hostile_receiver_error_text_and_a_2_gib_answer(tmp_path: Path) -> None:
    """A receiver whose 400 body holds ANSI escapes, control characters, newlines that start a fake
    log line and 10 KB more: logged as one escaped line of at most ERROR_TEXT_LIMIT characters of it.
    Then one that answers 200 with a 2 GiB body: the relay reads at most RESPONSE_LIMIT of it,
    counts the write as sent, and its memory stays where it was."""
    from relay.remote.writer import ERROR_TEXT_LIMIT
    from tests.faultproxy import Stage
    from tests.test_faults import metric_value, wait_for

    hostile = b"\x1b[31mred\x1b[0m\x07\nFAKE 2026-12-01 ERROR relay: injected\r\n" + b"z" * 10_000
    with Stage() as stage:
        stage.answer("/metrics", body=b"# TYPE up_test gauge\nup_test 1\n", content_type="text/plain")
        stage.answer("/api/v1/write", status=400, body=hostile, content_type="text/plain")
        cfg = tmp_path / "relay.yml"
        cfg.write_text(
            "global: {scrape_interval: 1s, scrape_timeout: 800ms}\n"
            f"scrape_configs:\n  - job_name: t\n    static_configs: [{{targets: ['127.0.0.1:{stage.port}']}}]\n"
            f"remote_write:\n  - url: http://127.0.0.1:{stage.port}/api/v1/write\n"
            "    queue_config: {batch_send_deadline: 200ms, min_backoff: 50ms, max_backoff: 500ms}\n"
        )
        with RelayProcess(cfg, tmp_path / "run", queue=False) as relay:
            relay.wait_ready()
            wait_for(lambda: "HTTP 400, dropping" in relay.log_tail(100_000), 30, "the 400 logged")
            text = relay.log_path.read_text(errors="replace")
            (line,) = [x for x in text.splitlines() if "HTTP 400, dropping" in x]
            assert "\x1b" not in text and "\x07" not in text and "\r" not in text
            assert "\\x1b[31mred\\x1b[0m\\x07\\nFAKE 2026-12-01 ERROR relay: injected\\r\\nzzz" in line
            assert not any(x.startswith("FAKE") for x in text.splitlines())
            assert line.endswith("...") and line.count("z") <= ERROR_TEXT_LIMIT
            sent = metric_value(relay.metrics(), "relay_remote_write_samples_sent_total")
            before = relay.sample_rss()
            stage.answer("/api/v1/write", stream_bytes=2 << 30, length=2 << 30, content_type="text/plain")
            wait_for(lambda: metric_value(relay.metrics(), "relay_remote_write_samples_sent_total") > sent + 20, 60,
                     "writes answered with 2 GiB counted as sent")
            assert relay.proc.poll() is None
            after = relay.sample_rss()
            assert after < before + 100, f"peak RSS {before:.0f} -> {after:.0f} MiB"
            assert stage.requests["/api/v1/write"] >= 4
            relay.proc.terminate()
            assert relay.proc.wait(30) == 0
