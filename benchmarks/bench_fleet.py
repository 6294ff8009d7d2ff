"""Fleet benchmark: the relay, vmagent and Prometheus (agent mode) scraping the same simulated etcd fleet.

    python benchmarks/bench_fleet.py --sizes 100,1000 --intervals 15s --duration 60
    python benchmarks/bench_fleet.py --sizes 100,1000,10000 --intervals 5s,15s,30s --duration 120
    python benchmarks/bench_fleet.py --micro          # parser and encoder micro-benchmarks, one table

For each fleet size: one ``relay sim`` subprocess (etcd 3.5 bodies, loopback, a file_sd targets
file); one VictoriaMetrics receives everything. For each scrape interval, each peer in turn
scrapes the same fleet with the same Prometheus-style config (file_sd_configs on the targets
file, remote_write to VictoriaMetrics) under its own job name (bench-relay, bench-vmagent,
bench-prom) and an external label ``bench_run``:

1. start the peer, wait until it answers, let it warm up ``--warmup`` intervals (default 3) and
   then until its remote write has caught up (every target has an ``up`` sample of its last
   interval in VictoriaMetrics; at most ``--max-warmup`` intervals): a new peer's first samples
   are all new series, which VictoriaMetrics ingests slowly, so the peer queues at first;
2. measure a window of ``--duration`` seconds (rounded to whole intervals): CPU of the peer's
   process tree and of the simulator (/proc/PID/stat utime+stime at both ends), peak RSS (VmRSS
   polled every 0.5 s from the start, and VmHWM), the relay's own missed-interval counter;
3. keep the peer running ``--drain`` seconds so that what it scraped in the window is sent, then
   force VictoriaMetrics to flush and count what arrived with timestamps in the window
   (``count_over_time``), and the ``up`` samples of each target (``/api/v1/export`` with explicit
   start/end): a scrape slot of a target without an ``up`` sample is a missed interval;
4. stop the peer (SIGTERM, then SIGKILL).

Prints a markdown table per size and interval with ratios to vmagent, writes the results as JSON
(``--json``) and a PNG (``--plot``, if matplotlib is installed). Asserts nothing about time.
All loops are bounded; every process is stopped at the end, also on error or Ctrl-C.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.util
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
import traceback
from collections.abc import Callable, Sequence
from pathlib import Path
from types import ModuleType
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _harness import (
    EXTRA_PEERS,
    PEERS,
    REPO,
    BenchVictoriaMetrics,
    PeerRun,
    RssPoller,
    RunResult,
    SimFleet,
    format_duration,
    http_get,
    markdown_table,
    parse_duration,
    parse_int_list,
    plot,
    proc_status_kib,
    relay_counter,
    relay_snapshot,
    relay_window_stats,
    sigterm_as_exit,
    start_peer,
    stop_process,
    tail,
    tree_cpu_seconds,
    up_summary,
)

BENCH_DIR = Path(__file__).resolve().parent


def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


# --------------------------------------------------------------------------------------------
# One peer on one fleet


def _sleep_while_alive(seconds: float, procs: Sequence[tuple[str, subprocess.Popen[bytes]]]) -> None:
    """Sleep, checking every 0.5 s that the peer and the fleet still run (raise if one died)."""
    deadline = time.monotonic() + seconds
    while True:
        for what, proc in procs:
            if proc.poll() is not None:
                raise RuntimeError(f"{what} exited with status {proc.returncode} during the run")
        left = deadline - time.monotonic()
        if left <= 0:
            return
        time.sleep(min(0.5, left))


def _current_or_zero(vm: BenchVictoriaMetrics, selector: str, interval: float) -> int:
    """Targets current in the receiver; 0 while it is too busy to answer (not caught up yet)."""
    try:
        return vm.targets_current(selector, interval)
    except (OSError, TimeoutError) as exc:  # urllib's URLError is an OSError
        log(f"receiver busy ({type(exc).__name__}: {exc}); not caught up yet")
        return 0


def run_peer(
    name: str,
    *,
    fleet: SimFleet,
    vm: BenchVictoriaMetrics,
    interval: float,
    timeout: float,
    window_intervals: int,
    warmup_intervals: float,
    drain: float,
    min_warmup: float = 10.0,
    max_warmup_intervals: float = 10.0,
    workdir: Path,
    extra_args: Sequence[str] = (),
) -> RunResult:
    """Run one peer on the fleet and measure it; a failure is a result with ``error`` set."""
    run_label = f"n{fleet.members}-i{format_duration(interval)}"
    window = window_intervals * interval
    # Prometheus sends discovered targets to its scrape manager every 5 s: short intervals need a floor
    warmup = max(warmup_intervals * interval, min_warmup)
    result = RunResult(peer=name, members=fleet.members, interval=interval, window_s=window, samples=0,
                       vm_rows=0.0, cpu_s=0.0, sim_cpu_s=0.0, peak_rss_mib=0.0, hwm_mib=0.0, missed=0,
                       failed=0, up_samples=0, expected_up_samples=0)
    peer: PeerRun | None = None
    budget = 60 + max(warmup, max_warmup_intervals * interval) + window + drain + 120  # the relay's own --duration bound
    try:
        peer = start_peer(name, workdir=workdir, targets_file=fleet.targets_file, interval=interval,
                          timeout=timeout, run_label=run_label, write_url=vm.write_url, max_seconds=budget,
                          extra_args=extra_args)
        assert fleet.proc is not None
        alive = [(name, peer.proc), ("relay sim", fleet.proc)]
        pid = peer.proc.pid
        log(f"{name}: started (pid {pid}), warming up {warmup:g}s")
        selector = f'{{job="{peer.job}",bench_run="{run_label}"}}'
        with RssPoller(pid) as rss:
            ready_at = time.monotonic()
            _sleep_while_alive(warmup, alive)
            # A new peer's first intervals are all new series for VictoriaMetrics, which ingests them
            # slowly: the peer queues. Measure only once it has caught up, or the window would
            # include sending that backlog.
            deadline = ready_at + max(warmup, max_warmup_intervals * interval)
            while (current := _current_or_zero(vm, f"up{selector}", interval)) < fleet.members:
                if time.monotonic() > deadline:
                    result.notes.append(f"not caught up after {time.monotonic() - ready_at:.0f}s of warm-up "
                                        f"({current}/{fleet.members} targets current); measured anyway")
                    break
                _sleep_while_alive(max(2.0, interval / 3), alive)
            result.warmup_s = time.monotonic() - ready_at
            relay_missed0 = relay_failures0 = 0.0
            snapshot0: dict[str, float] = {}
            if name.startswith("relay"):
                text = http_get(peer.url + "/metrics").decode()
                relay_missed0 = relay_counter(text, "relay_scrape_missed_intervals", peer.job)
                relay_failures0 = relay_counter(text, "relay_scrape_failures", peer.job)
                snapshot0 = relay_snapshot(text)
            rows0, bytes0 = vm.rows_inserted(), vm.wire_bytes()
            t0 = time.time()
            cpu0, sim0 = tree_cpu_seconds(pid), tree_cpu_seconds(fleet.pid)
            log(f"{name}: measuring {window:g}s (after {result.warmup_s:.0f}s of warm-up)")
            _sleep_while_alive(t0 + window - time.time(), alive)
            t1 = time.time()
            cpu1, sim1 = tree_cpu_seconds(pid), tree_cpu_seconds(fleet.pid)
            rows1, bytes1 = vm.rows_inserted(), vm.wire_bytes()
            result.hwm_mib = proc_status_kib(pid, "VmHWM") / 1024
            if name.startswith("relay"):
                text = http_get(peer.url + "/metrics").decode()
                result.relay_missed = relay_counter(text, "relay_scrape_missed_intervals", peer.job) - relay_missed0
                result.relay_failures = relay_counter(text, "relay_scrape_failures", peer.job) - relay_failures0
                result.relay_stats = relay_window_stats(snapshot0, relay_snapshot(text))
            result.peak_rss_mib = rss.peak_kib / 1024
        result.window_s, result.t0, result.t1 = t1 - t0, t0, t1
        result.cpu_s, result.sim_cpu_s, result.vm_rows = cpu1 - cpu0, sim1 - sim0, rows1 - rows0
        result.vm_bytes = bytes1 - bytes0
        log(f"{name}: window done (CPU {result.cpu_s:.1f}s, sim CPU {result.sim_cpu_s:.1f}s); draining {drain:g}s")
        _sleep_while_alive(drain, alive)
        vm.flush()
        # the count is over the nominal window (whole intervals) that ends at t1
        if vm.keep_names:  # only some series are stored: count the rows received in the window
            result.samples = int(result.vm_rows)
            result.notes.append(f"receiver kept only {vm.keep_names!r}: samples = rows received in the window")
        else:
            result.samples = vm.count_samples(selector, t1 - window, t1)
        up = up_summary(vm.export_range(f'up{selector}', t1 - window - interval, t1 + interval),
                        fleet.members, t1 - window, t1, interval)
        result.missed, result.failed = up["missed"], up["failed"]
        result.up_samples, result.expected_up_samples = up["up_samples"], up["expected_up_samples"]
        if up["up_series"] != fleet.members:
            result.notes.append(f"{up['up_series']} up series for {fleet.members} targets")
        log(f"{name}: {result.samples:,} samples delivered ({result.samples_per_s:,.0f}/s), "
            f"{result.samples_per_cpu_s:,.0f} per CPU-s, missed {result.missed}/{result.expected_up_samples}")
    except Exception as exc:  # one peer failing must not stop the others
        result.error = f"{type(exc).__name__}: {exc}"
        log(f"{name}: FAILED: {result.error}")
        traceback.print_exc(file=sys.stderr)
    finally:
        if peer is not None:
            status = stop_process(peer.proc, timeout=30)
            if status not in (0, None) and result.error is None and not peer.name.startswith("relay"):
                result.notes.append(f"exit status {status} at SIGTERM")
            if peer.stats_file is not None and peer.stats_file.exists():
                with contextlib.suppress(ValueError):
                    stats = json.loads(peer.stats_file.read_text())
                    result.notes.append("relay stats at exit: " + json.dumps(stats.get("remote_write")))
            if result.error is not None:
                result.notes.append("log tail: " + tail(peer.log_path, 8))
    return result


# --------------------------------------------------------------------------------------------
# The whole run


def machine_info() -> dict[str, Any]:
    def first_line(argv: list[str]) -> str:
        try:
            out = subprocess.run(argv, capture_output=True, text=True, timeout=20)
            return (out.stdout or out.stderr).strip().splitlines()[0]
        except (OSError, IndexError, subprocess.TimeoutExpired):
            return "unavailable"

    cpu_model = "unknown"
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu_model = line.split(":", 1)[1].strip()
                break
    mem_gib = proc_meminfo_gib()
    return {
        "date_utc": time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime()),
        "nproc": os.cpu_count(),
        "cpu_model": cpu_model,
        "mem_total_gib": mem_gib,
        "loadavg_at_start": os.getloadavg(),
        "python": platform.python_version(),
        "vmagent": first_line(["dpkg-query", "-W", "-f=vmagent ${Version}", "victoria-metrics"]),
        "prometheus": first_line(["prometheus", "--version"]),
        "victoria_metrics": first_line(["dpkg-query", "-W", "-f=${Version}", "victoria-metrics"]),
        "relay_git": first_line(["git", "-C", str(REPO), "rev-parse", "--short", "HEAD"]),
    }


def proc_meminfo_gib() -> float:
    with contextlib.suppress(OSError):
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                return round(int(line.split()[1]) / 1024 / 1024, 1)
    return 0.0


def run_fleet(args: argparse.Namespace) -> list[RunResult]:
    sizes, intervals = parse_int_list(args.sizes), [parse_duration(i) for i in args.intervals.split(",")]
    peers = [p.strip() for p in args.peers.split(",") if p.strip()]
    for p in peers:
        if p not in PEERS and p not in EXTRA_PEERS:
            raise SystemExit(f"bench_fleet: --peers: unknown peer {p!r} "
                             f"(choose from {', '.join((*PEERS, *EXTRA_PEERS))})")
    missing = [b for b, p in (("vmagent", "vmagent"), ("prometheus", "prometheus")) if p in peers and not shutil.which(b)]
    if missing:
        raise SystemExit(f"bench_fleet: {', '.join(missing)} not installed (Debian: victoria-metrics, prometheus)")
    results: list[RunResult] = []
    workdir = Path(args.workdir) if args.workdir else Path(tempfile.mkdtemp(prefix="relay-bench-fleet-"))
    workdir.mkdir(parents=True, exist_ok=True)
    log(f"work folder {workdir}")
    vm = BenchVictoriaMetrics(base_dir=workdir / "vm", keep_names=args.receiver_keep)
    try:
        vm.start()
        log(f"VictoriaMetrics on {vm.url} (pid {vm.proc.pid if vm.proc else '?'})")
        runs = 0
        for members in sizes:
            per_size_budget = sum(
                (60 + max(args.warmup * iv, args.min_warmup, args.max_warmup * iv) + max(1, round(args.duration / iv)) * iv + args.drain + 180) * len(peers)
                for iv in intervals
            )
            fleet = SimFleet(members, workdir, max_seconds=per_size_budget + 300, single_port=args.single_port)
            with fleet:
                log(f"relay sim: {members} members (pid {fleet.pid}), targets in {fleet.targets_file}")
                for interval in intervals:
                    window_intervals = max(1, round(args.duration / interval))
                    timeout = min(parse_duration(args.scrape_timeout), interval) if args.scrape_timeout else min(10.0, interval)
                    case: list[RunResult] = []
                    for name in peers:
                        if args.fresh_receiver and runs:  # a new, empty VictoriaMetrics for each peer
                            vm.stop()
                            shutil.rmtree(vm.base_dir, ignore_errors=True)
                            vm = BenchVictoriaMetrics(base_dir=workdir / f"vm{runs}", keep_names=args.receiver_keep)
                            vm.start()
                            log(f"VictoriaMetrics (fresh) on {vm.url}")
                        runs += 1
                        extra = args.relay_args.split() if name.startswith("relay") and args.relay_args else []
                        r = run_peer(name, fleet=fleet, vm=vm, interval=interval, timeout=timeout,
                                     window_intervals=window_intervals, warmup_intervals=args.warmup,
                                     drain=args.drain, min_warmup=args.min_warmup,
                                     max_warmup_intervals=args.max_warmup, workdir=workdir,
                                     extra_args=extra)
                        case.append(r)
                        results.append(r)
                        time.sleep(args.pause)
                    print(f"\n### {members:,} members, {format_duration(interval)} interval, "
                          f"{window_intervals * interval:g}s window\n", flush=True)
                    print(markdown_table(case), flush=True)
                    print(flush=True)
    finally:
        vm.stop()
        if not args.keep and not args.workdir:
            shutil.rmtree(workdir, ignore_errors=True)
        elif args.keep:
            log(f"kept {workdir}")
    return results


# --------------------------------------------------------------------------------------------
# Micro-benchmarks (parser, encoder) in one table


def _load(name: str) -> ModuleType | None:
    path = BENCH_DIR / f"{name}.py"
    if not path.exists():
        return None
    spec = importlib.util.spec_from_file_location(f"_bench_{name}", path)
    if spec is None or spec.loader is None:
        return None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _parse_rows(mod: ModuleType, seconds: float, repeats: int) -> list[tuple[str, str, float]]:
    from relay.textparse import _text_py

    rows: list[tuple[str, Callable[[bytes], int]]] = [
        ("prometheus-client", mod.prometheus_client_parse()),
        ("relay pure Python, warm", mod.warm(_text_py.Parser)),
    ]
    try:
        c_parser = importlib.import_module("relay.textparse._text_c").Parser
        rows += [("relay Cython, cold", mod.cold(c_parser)), ("relay Cython, warm", mod.warm(c_parser))]
    except ImportError:
        pass
    return [("parse", name, mod.measure(run, seconds, repeats)[0]) for name, run in rows]


def _encode_rows(mod: ModuleType, repeats: int) -> list[tuple[str, str, float]]:
    from relay.remote import encode as rwencode

    table, stream = mod.scrape_stream(15)
    total = sum(len(ids) for ids, _ in stream)
    batches = mod.blocks(table, stream, 2_000)
    impls: list[tuple[str, Any, int]] = [("relay pure Python", rwencode.WriteRequestEncoderPy, 1)]
    if rwencode.USING_EXTENSION:
        impls.append(("relay Cython", importlib.import_module("relay.remote._encode_c").WriteRequestEncoder, repeats))
    rows = []
    messages = [mod.protobuf_message(b) for b in batches]
    rows.append(("encode+snappy, 2,000-sample blocks", "protobuf (python upb)",
                 mod.median_rate(mod.serialize_all(messages, True), total, repeats)))
    for name, cls, reps in impls:
        rows.append(("encode+snappy, 2,000-sample blocks", name, mod.median_rate(mod.encode_all(cls, batches, True), total, reps)))
    return rows


def run_micro(args: argparse.Namespace) -> str:
    """One markdown table of the colleagues' micro-benchmarks (imported), or their own output."""
    lines: list[str] = []
    rows: list[tuple[str, str, float]] = []
    fallbacks: list[str] = []
    for name, build in (
        ("bench_parse", lambda m: _parse_rows(m, args.micro_seconds, args.micro_repeats)),
        ("bench_encode", lambda m: _encode_rows(m, args.micro_repeats)),
    ):
        try:
            mod = _load(name)
        except Exception as exc:
            log(f"{name}: cannot import ({exc}); running it as a subprocess")
            mod = None
            fallbacks.append(name)
            continue
        if mod is None:
            lines.append(f"({name}.py not present: left out)")
            continue
        try:
            log(f"micro: {name}")
            rows += build(mod)
        except Exception as exc:  # its functions changed: show its own output instead
            log(f"{name}: its functions did not work here ({type(exc).__name__}: {exc}); running it as a subprocess")
            fallbacks.append(name)
    if rows:
        lines += ["| benchmark | implementation | samples/s (one core) | x first row |", "|---|---|---:|---:|"]
        base: dict[str, float] = {}
        for bench, impl, rate in rows:
            base.setdefault(bench, rate)
            lines.append(f"| {bench} | {impl} | {rate:,.0f} | {rate / base[bench]:.1f} |")
    for name in fallbacks:
        argv = [sys.executable, str(BENCH_DIR / f"{name}.py")]
        try:
            out = subprocess.run(argv, capture_output=True, text=True, timeout=600, cwd=REPO)
            text = out.stdout + (f"\n(stderr)\n{out.stderr}" if out.returncode else "")
        except subprocess.TimeoutExpired:
            text = "(timed out after 600 s)"
        lines += ["", f"`python benchmarks/{name}.py`:", "", "```", text.rstrip(), "```"]
    return "\n".join(lines)


# --------------------------------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--sizes", default="100,1000,10000", help="fleet sizes, comma-separated (default 100,1000,10000)")
    p.add_argument("--intervals", default="15s", help="scrape intervals, comma-separated, e.g. 5s,15s,30s (default 15s)")
    p.add_argument("--duration", type=float, default=60.0,
                   help="measured window per peer in seconds, rounded to whole intervals (default 60)")
    p.add_argument("--warmup", type=float, default=3.0,
                   help="intervals of warm-up before the window (default 3: at 1,000 members the relay's "
                   "first two intervals are irregular)")
    p.add_argument("--max-warmup", type=float, default=10.0,
                   help="intervals of warm-up at most, waiting for the peer's remote write to catch up (default 10)")
    p.add_argument("--min-warmup", type=float, default=10.0, help="seconds of warm-up at least (default 10)")
    p.add_argument("--drain", type=float, default=10.0,
                   help="seconds the peer keeps running after the window so it can send (default 10)")
    p.add_argument("--pause", type=float, default=3.0, help="seconds between peers (default 3)")
    p.add_argument("--peers", default=",".join(PEERS),
                   help=f"peers in run order (default {','.join(PEERS)}; also relay-health: the relay with an "
                        "etcd_health section)")
    p.add_argument("--scrape-timeout", default=None, help="scrape_timeout (default min(10s, interval))")
    p.add_argument("--relay-args", default="", help="extra flags for `relay run`, e.g. '--http-transport httpx'")
    p.add_argument("--json", default="bench_fleet.json", help="write the results here (default bench_fleet.json)")
    p.add_argument("--plot", default="bench_fleet.png", help="PNG plot, if matplotlib is installed ('' for none)")
    p.add_argument("--workdir", default=None, help="configs, logs and VM data here (default: a temporary folder)")
    p.add_argument("--keep", action="store_true", help="keep the temporary work folder")
    p.add_argument("--single-port", action="store_true",
                   help="the simulator serves every member on one port (a port each needs 2 descriptors per member)")
    p.add_argument("--receiver-keep", default=None, metavar="REGEX",
                   help="VictoriaMetrics stores only series whose name matches (e.g. 'up|scrape_.*'); samples are "
                   "then the rows it received in the window (for 10,000 members on a small box)")
    p.add_argument("--fresh-receiver", action="store_true",
                   help="a new, empty VictoriaMetrics for each peer (at 10,000 members each peer makes 14 M series)")
    p.add_argument("--micro", action="store_true", help="run the parser and encoder micro-benchmarks only")
    p.add_argument("--micro-seconds", type=float, default=0.3)
    p.add_argument("--micro-repeats", type=int, default=5)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    info = machine_info()
    print(f"machine: {info['nproc']} CPUs ({info['cpu_model']}), {info['mem_total_gib']} GiB, "
          f"load {info['loadavg_at_start'][0]:.2f} at start; {info['date_utc']}", flush=True)
    if args.micro:
        print(run_micro(args), flush=True)
        return 0
    print(f"peers: vmagent {info['vmagent']}; prometheus {info['prometheus']}; "
          f"receiver victoria-metrics {info['victoria_metrics']}", flush=True)
    results: list[RunResult] = []
    with sigterm_as_exit():
        try:
            results = run_fleet(args)
        except KeyboardInterrupt:
            log("interrupted: processes stopped")
            return 130
    doc = {"command": " ".join([Path(sys.argv[0]).name, *(sys.argv[1:] if argv is None else argv)]),
           "machine": info, "results": [r.to_json() for r in results]}
    if args.json:
        Path(args.json).write_text(json.dumps(doc, indent=1) + "\n")
        log(f"results written to {args.json}")
    if args.plot:
        log(plot(results, Path(args.plot)))
    for r in results:
        sim_share = r.sim_cpu_s / r.cpu_s if r.cpu_s else 0.0
        if r.error is None and sim_share > 0.5:
            print(f"warning: {r.peer} at {r.members} members: the simulator used {sim_share:.0%} of the "
                  "scraper's CPU; the fleet is not cheap enough for this comparison", flush=True)
        if r.relay_stats:
            st = r.relay_stats
            print(f"note: relay {r.members} members @ {format_duration(r.interval)}: over the window "
                  f"{st['relay_scrapes_total']:g} scrapes, {st['relay_scrape_failures_total']:g} failed, mean scrape "
                  f"{st['mean_scrape_duration_ms']:.1f} ms; sent {st['relay_remote_write_samples_sent_total']:g}, "
                  f"failed {st['relay_remote_write_samples_failed_total']:g}, dropped "
                  f"{st['relay_remote_write_samples_dropped_total']:g}; at its end {st['relay_series_cache_series']:g} "
                  f"series cached, {st['relay_remote_write_pending_samples']:g} samples pending, "
                  f"{st['relay_remote_write_shards']:g} shards", flush=True)
        for note in r.notes:
            print(f"note: {r.peer} {r.members} members @ {format_duration(r.interval)}: {note}", flush=True)
    return 1 if any(r.error for r in results) else 0


if __name__ == "__main__":
    sys.exit(main())

