"""Scale of one relay: N simulated etcd members at an interval, with no missed intervals?

    python benchmarks/bench_scale.py --members 10000 --interval 30 --rounds 3
    python benchmarks/bench_scale.py --members 20000 --interval 30 --workers 2 --sims 2 --single-port

Starts `relay sim` (N members, one port each, on loopback), VictoriaMetrics as the receiver (or
none with --no-receiver: remote write to a closed port is then skipped entirely), and `relay run`
scraping them through file_sd. After a warm-up of one interval plus the start spread, it measures
for --rounds intervals: scrapes done against expected, missed intervals, failures, the relay's
CPU (utime+stime from /proc) per scrape and per target, its RSS (current and peak) per target,
samples per second and per CPU-second, and the simulator's CPU for comparison. Prints a table.
Every process is stopped at the end, also on error.

``--workers N`` runs `relay run --workers N` (CPU and RSS are then the sum over the supervisor and
its workers; peak RSS the sum of each process's VmHWM). ``--sims K`` splits the fleet over K
simulator processes (a process here may open at most 20,000 files: one simulator cannot hold
20,000 members' connections).
"""

from __future__ import annotations

import argparse
import contextlib
import os
import re
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from relay.devtools.localenv import VictoriaMetrics, free_ports, wait_http  # noqa: E402

TICK = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICK


def rss_kib(pid: int, key: str = "VmRSS") -> int:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith(key + ":"):
                return int(line.split()[1])
    except OSError:  # the process is gone
        pass
    return 0


def tree(pid: int) -> list[int]:
    """``pid`` and its children (a relay supervisor's workers)."""
    try:
        kids = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
    except OSError:
        return [pid]
    return [pid, *(int(k) for k in kids)]


def tree_cpu_seconds(pid: int) -> float:
    total = 0.0
    for p in tree(pid):
        with contextlib.suppress(OSError):  # a worker that just exited
            total += cpu_seconds(p)
    return total


def tree_rss_kib(pid: int, key: str = "VmRSS") -> int:
    return sum(rss_kib(p, key) for p in tree(pid))


def metric_sum(text: str, name: str) -> float:
    total = 0.0
    for line in text.splitlines():
        if line.startswith(name) and (line[len(name)] in " {"):
            total += float(line.rsplit(" ", 1)[1])
    return total


def scrape_metrics(port: int) -> str:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=300) as resp:
        return str(resp.read().decode())


def run(members: int, interval: float, rounds: int, receiver: bool, workdir: Path, single_port: bool = False,
        workers: int = 1, n_sims: int = 1) -> dict[str, float]:
    procs: list[subprocess.Popen[bytes]] = []
    vm: VictoriaMetrics | None = None
    try:
        sims: list[subprocess.Popen[bytes]] = []
        files: list[Path] = []
        for k in range(n_sims):
            share = members // n_sims + (1 if k < members % n_sims else 0)
            files.append(workdir / f"targets-{k}.json")
            sims.append(subprocess.Popen(
                [sys.executable, "-m", "relay.cli", "sim", "--members", str(share), "--write-targets", str(files[-1]),
                 "--seed", str(k), *(["--single-port"] if single_port else [])],
                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, cwd=ROOT,
            ))
        procs += sims
        deadline = time.monotonic() + 120
        while not all(f.exists() for f in files) and time.monotonic() < deadline:
            time.sleep(0.2)
        if receiver:
            vm = VictoriaMetrics(base_dir=workdir / "vm")
            vm.start()
        rw = f"remote_write:\n  - url: {vm.write_url}\n" if vm else ""
        config = workdir / "relay.yml"
        config.write_text(
            f"global: {{scrape_interval: {interval:g}s, scrape_timeout: {min(interval, 10):g}s}}\n"
            f"scrape_configs:\n  - job_name: scale\n    file_sd_configs: [{{files: {[str(f) for f in files]}}}]\n{rw}"
        )
        port = free_ports(1)[0]
        relay = subprocess.Popen(
            [sys.executable, "-m", "relay.cli", "run", "--config", str(config), "--listen", f"127.0.0.1:{port}",
             "--queue.memory", "--workers", str(workers)],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, cwd=ROOT,
        )
        procs.append(relay)
        wait_http(f"http://127.0.0.1:{port}/-/ready", 120)
        # Warm-up: until every target has been scraped twice (its first scrape makes all its series
        # new: the cold round is far costlier than the steady state), bounded in time.
        t_start = time.monotonic()
        deadline = t_start + max(20 * interval, 600)
        while time.monotonic() < deadline:
            if metric_sum(scrape_metrics(port), "relay_scrapes_total") >= 2 * members:
                break
            time.sleep(2)
        warmup = time.monotonic() - t_start
        m0 = scrape_metrics(port)
        def sim_cpu() -> float:
            return sum(cpu_seconds(s.pid) for s in sims)

        c0, s0, t0 = tree_cpu_seconds(relay.pid), sim_cpu(), time.monotonic()
        peak = 0
        end = t0 + rounds * interval
        while time.monotonic() < end:
            peak = max(peak, tree_rss_kib(relay.pid))
            time.sleep(0.5)
        m1 = scrape_metrics(port)
        c1, s1, t1 = tree_cpu_seconds(relay.pid), sim_cpu(), time.monotonic()
        elapsed = t1 - t0
        scrapes = metric_sum(m1, "relay_scrapes_total") - metric_sum(m0, "relay_scrapes_total")
        samples = metric_sum(m1, "relay_scraped_samples_total") - metric_sum(m0, "relay_scraped_samples_total")
        missed_total = metric_sum(m1, "relay_scrape_missed_intervals_total")
        missed = missed_total - metric_sum(m0, "relay_scrape_missed_intervals_total")
        failures = metric_sum(m1, "relay_scrape_failures_total") - metric_sum(m0, "relay_scrape_failures_total")
        cpu = c1 - c0
        return {
            "members": members,
            "interval": interval,
            "seconds": elapsed,
            "scrapes": scrapes,
            "expected": members * elapsed / interval,
            "missed": missed,
            "missed_warmup": missed_total - missed,
            "failures": failures,
            "cpu_s": cpu,
            "cpu_pct": 100 * cpu / elapsed,
            "cpu_ms_per_scrape": 1000 * cpu / max(scrapes, 1),
            "rss_mib": tree_rss_kib(relay.pid) / 1024,
            "peak_rss_mib": max(peak, tree_rss_kib(relay.pid)) / 1024,
            "hwm_mib": tree_rss_kib(relay.pid, "VmHWM") / 1024,
            "rss_kib_per_target": tree_rss_kib(relay.pid) / members,
            "samples_per_s": samples / elapsed,
            "samples_per_cpu_s": samples / max(cpu, 1e-9),
            "sim_cpu_pct": 100 * (s1 - s0) / elapsed,
            "receiver": 1.0 if receiver else 0.0,
            "warmup_s": warmup,
            "workers": workers,
            "restarts": metric_sum(m1, "relay_worker_restarts_total"),
        }
    finally:
        for p in reversed(procs):
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
        for p in procs:
            try:
                p.wait(60)
            except subprocess.TimeoutExpired:
                p.kill()
        if vm is not None:
            vm.close()


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--members", default="10000", help="comma-separated fleet sizes")
    ap.add_argument("--interval", type=float, default=30.0)
    ap.add_argument("--rounds", type=int, default=3, help="intervals measured after the warm-up")
    ap.add_argument("--no-receiver", action="store_true")
    ap.add_argument("--single-port", action="store_true",
                    help="the simulator serves every member on one port (a port each needs 2 fds per member)")
    ap.add_argument("--workers", type=int, default=1, help="relay run --workers N (default 1)")
    ap.add_argument("--sims", type=int, default=1, help="simulator processes sharing the fleet (default 1)")
    args = ap.parse_args()
    rows = []
    for n in (int(x) for x in args.members.split(",")):
        with tempfile.TemporaryDirectory(prefix="relay-scale-") as tmp:
            rows.append(run(n, args.interval, args.rounds, not args.no_receiver, Path(tmp), args.single_port,
                            args.workers, args.sims))
    cpu_model = re.search(r"model name\s*:\s*(.*)", Path("/proc/cpuinfo").read_text())
    print(f"# relay scale: {os.cpu_count()} CPUs ({cpu_model.group(1) if cpu_model else '?'}), "
          f"{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}")
    print("| members | workers (restarts) | interval | warm-up s | scrapes/expected | missed (warm-up) | failures | relay CPU % | CPU ms/scrape | "
          "RSS MiB (peak) | RSS KiB/target | samples/s | samples/CPU-s | sim CPU % |")
    print("|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for r in rows:
        print(f"| {r['members']:,.0f} | {r['workers']:.0f} ({r['restarts']:.0f}) | {r['interval']:g}s | {r['warmup_s']:.0f} | {r['scrapes']:,.0f}/{r['expected']:,.0f} | "
              f"{r['missed']:.0f} ({r['missed_warmup']:.0f}) | {r['failures']:.0f} | {r['cpu_pct']:.1f} | {r['cpu_ms_per_scrape']:.2f} | "
              f"{r['rss_mib']:.0f} ({r['hwm_mib']:.0f}) | {r['rss_kib_per_target']:.0f} | {r['samples_per_s']:,.0f} | "
              f"{r['samples_per_cpu_s']:,.0f} | {r['sim_cpu_pct']:.1f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
