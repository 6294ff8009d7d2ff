"""The fleet benchmark harness (benchmarks/bench_fleet.py): its bookkeeping, and a short real run.

The real run is the relay alone on a 3-member simulated fleet for a few seconds, into a real
VictoriaMetrics: it checks that the harness starts and stops everything, and that what it counts
agrees with what was scraped. It asserts nothing about speed.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from relay.devtools.localenv import VictoriaMetrics

from .conftest import available

BENCH = Path(__file__).resolve().parents[1] / "benchmarks"
sys.path.insert(0, str(BENCH))

import _harness  # noqa: E402
import bench_fleet  # noqa: E402

pytestmark = pytest.mark.timeout(120)


def test_durations_and_sizes() -> None:
    assert _harness.parse_duration("15s") == 15.0
    assert _harness.parse_duration("1m30s") == 90.0
    assert _harness.parse_duration("500ms") == 0.5
    assert _harness.parse_duration("2") == 2.0
    with pytest.raises(ValueError):
        _harness.parse_duration("15 seconds")
    assert _harness.format_duration(15) == "15s"
    assert _harness.format_duration(90) == "1m30s"
    assert _harness.format_duration(0.5) == "500ms"
    assert _harness.parse_int_list("100, 1000,10k") == [100, 1000, 10000]


def test_missed_slots_counts_holes_not_jitter() -> None:
    iv = 15_000
    t0, t1 = 1_000_000, 1_000_000 + 4 * iv
    phase = t0 + 7_000
    every = [phase + n * iv for n in range(-1, 5)]
    assert _harness.missed_slots(every, t0, t1, iv) == 0
    # a few ms of jitter, also across the window's edges, is no miss
    jittered = [t + (3 if n % 2 else -3) for n, t in enumerate(every)]
    assert _harness.missed_slots(jittered, t0, t1, iv) == 0
    edge = [t0 - 2 + n * iv for n in range(0, 5)]  # first scrape 2 ms before the window opens
    assert _harness.missed_slots(edge, t0, t1, iv) == 0
    # two holes inside the window
    holes = [t for n, t in enumerate(every) if n not in (2, 3)]
    assert _harness.missed_slots(holes, t0, t1, iv) == 2
    # a late scrape still fills its slot
    late = [*every[:2], every[2] + 4_000, *every[3:]]
    assert _harness.missed_slots(late, t0, t1, iv) == 0
    assert _harness.missed_slots([], t0, t1, iv) == 4
    # regular scrapes half an interval from an early irregular one (the modulo wraps there)
    start = t0 - 3 * iv
    irregular = [start, start + 9_468, *(start + 22_498 + n * iv for n in range(6))]
    assert _harness.missed_slots(irregular, t0, t1, iv) == 0


def test_up_summary_counts_targets_without_samples_and_failures() -> None:
    iv = 10.0
    t0, t1 = 1000.0, 1030.0
    ms = [1_001_000, 1_011_000, 1_021_000]
    series = [
        {"metric": {"instance": "a"}, "values": [1, 1, 1], "timestamps": ms},
        {"metric": {"instance": "b"}, "values": [1, 0], "timestamps": ms[:1] + ms[2:]},
    ]
    s = _harness.up_summary(series, targets=3, t0=t0, t1=t1, interval=iv)
    assert s == {"missed": 1 + 3, "failed": 1, "up_samples": 5, "expected_up_samples": 9, "up_series": 2}


def test_relay_counter_reads_one_job() -> None:
    text = (
        "# HELP relay_scrape_missed_intervals_total x\n"
        'relay_scrape_missed_intervals_total{job="bench-relay"} 3.0\n'
        'relay_scrape_missed_intervals_total{job="other"} 5.0\n'
        'relay_scrape_missed_intervals_created{job="bench-relay"} 1.7e9\n'
    )
    assert _harness.relay_counter(text, "relay_scrape_missed_intervals", "bench-relay") == 3.0
    assert _harness.relay_counter(text, "relay_scrape_missed_intervals") == 8.0


def test_configs_are_the_same_but_for_the_job(tmp_path: Path) -> None:
    relay = _harness.scrape_config_yaml("bench-relay", tmp_path / "t.json", 15, 10, "n3-i15s", "http://x/api/v1/write")
    prom = _harness.scrape_config_yaml("bench-prom", tmp_path / "t.json", 15, 10, "n3-i15s", "http://x/api/v1/write")
    assert relay.replace("bench-relay", "bench-prom") == prom
    assert "file_sd_configs" in relay and "remote_write" in relay
    assert "remote_write" not in _harness._vmagent_config(relay)  # vmagent takes it as a flag


def test_table_ratios_to_vmagent() -> None:
    def result(peer: str, samples: int, cpu: float) -> _harness.RunResult:
        return _harness.RunResult(peer=peer, members=3, interval=15, window_s=60, samples=samples, vm_rows=0,
                                  cpu_s=cpu, sim_cpu_s=0.1, peak_rss_mib=50, hwm_mib=50, missed=0, failed=0,
                                  up_samples=12, expected_up_samples=12)

    table = _harness.markdown_table([result("relay", 6000, 1.0), result("vmagent", 6000, 2.0)])
    rows = table.splitlines()
    assert rows[0].startswith("| peer | samples/s")
    assert "| relay | 100 | 1.00 | 1.00 | 0.017 | 6,000 | 2.00 |" in rows[2]
    failed = _harness.RunResult(peer="prometheus", members=3, interval=15, window_s=60, samples=0, vm_rows=0,
                                cpu_s=0, sim_cpu_s=0, peak_rss_mib=0, hwm_mib=0, missed=0, failed=0,
                                up_samples=0, expected_up_samples=0, error="RuntimeError: boom")
    assert "error: RuntimeError: boom" in _harness.markdown_table([failed])


def test_bad_peer_is_refused(tmp_path: Path) -> None:
    with pytest.raises(SystemExit, match="unknown peer"):
        bench_fleet.main(["--sizes", "3", "--peers", "relay,telegraf", "--json", "", "--plot", ""])


@pytest.mark.services
def test_a_short_real_run_of_the_relay(tmp_path: Path) -> None:
    available(lambda: VictoriaMetrics(base_dir=tmp_path / "probe"))
    out = tmp_path / "r.json"
    status = bench_fleet.main([
        "--sizes", "3", "--intervals", "1s", "--duration", "4", "--warmup", "1", "--min-warmup", "3",
        "--drain", "3", "--pause", "0", "--peers", "relay", "--workdir", str(tmp_path / "work"),
        "--json", str(out), "--plot", "",
    ])
    assert status == 0
    doc = json.loads(out.read_text())
    assert doc["machine"]["nproc"] >= 1
    [r] = doc["results"]
    assert r["error"] is None and r["peer"] == "relay" and r["members"] == 3
    assert r["expected_up_samples"] == 12
    assert r["missed"] <= 1  # a loaded CI box may delay one scrape; the point is that it is counted
    assert r["up_samples"] >= 11
    # every scrape of a 3.5.1 body delivers its ~1,400 samples, and the relay's CPU was read
    assert 1300 < r["samples_per_scrape"] < 1500
    assert r["cpu_s"] > 0 and r["peak_rss_mib"] > 10
    # nothing is left running: no process of ours lists the work folder on its command line
    ps = subprocess.run(["ps", "-eo", "args"], capture_output=True, text=True, check=True).stdout
    assert str(tmp_path / "work") not in ps


def test_relay_window_stats() -> None:
    before = _harness.relay_snapshot(
        'relay_scrapes_total{job="a"} 10\nrelay_scrapes_total{job="b"} 5\n'
        'relay_scrape_duration_seconds_sum{job="a"} 1.0\nrelay_scrape_duration_seconds_count{job="a"} 15\n'
        "relay_series_cache_series 100\n"
    )
    after = _harness.relay_snapshot(
        'relay_scrapes_total{job="a"} 20\nrelay_scrapes_total{job="b"} 15\n'
        'relay_scrape_duration_seconds_sum{job="a"} 1.2\nrelay_scrape_duration_seconds_count{job="a"} 35\n'
        "relay_series_cache_series 140\n# HELP x\n"
    )
    stats = _harness.relay_window_stats(before, after)
    assert stats["relay_scrapes_total"] == 20
    assert stats["relay_series_cache_series"] == 140
    assert stats["mean_scrape_duration_ms"] == pytest.approx(10.0)


def test_service_context_closes_after_a_failed_start_and_removes_its_folder() -> None:
    from relay.devtools.localenv import Service

    events: list[str] = []

    class Thing(Service):
        def __init__(self, fail: bool) -> None:
            self.fail = fail
            self.folder = self._own_folder(None, "relay-test-service-")

        def start(self) -> Thing:
            events.append("start")
            if self.fail:
                raise RuntimeError("did not come up")
            return self

        def stop(self) -> None:
            events.append("stop")

    with Thing(fail=False) as t:
        assert t.folder.is_dir() and events == ["start"]
    assert events == ["start", "stop"] and not t.folder.exists()
    events.clear()
    broken = Thing(fail=True)
    with pytest.raises(RuntimeError, match="did not come up"), broken:
        pass
    assert events == ["start", "stop"] and not broken.folder.exists()


def test_sim_fleet_that_exits_at_once_is_stopped_and_named(tmp_path: Path) -> None:
    fleet = _harness.SimFleet(2, tmp_path)
    fleet.argv = [sys.executable, "-c", "import sys; print('no fleet today'); sys.exit(3)"]
    with pytest.raises(RuntimeError, match="exited with status 3"), fleet:
        pass
    assert fleet.proc is not None and fleet.proc.returncode == 3
