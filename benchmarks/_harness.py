"""Pieces of the fleet benchmark (bench_fleet.py): processes, /proc readings, peers, VM counts.

Everything here is loopback only and bounded in time: every wait has a deadline, every process
started is stopped in a ``finally`` (SIGTERM, then SIGKILL), and the children are also asked to
die with the harness (``PR_SET_PDEATHSIG``) so that a killed harness leaves nothing behind.
"""

from __future__ import annotations

import contextlib
import ctypes
import json
import math
import os
import re
import signal
import subprocess
import sys
import threading
import time
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Self

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from relay.devtools.localenv import Service, VictoriaMetrics, free_ports, stop_process, wait_http  # noqa: E402

CLK_TCK = os.sysconf("SC_CLK_TCK")
PEERS = ("relay", "vmagent", "prometheus")
JOB_PREFIX = "bench-"
# not in the default run: the relay with an etcd_health section (the mixin's rules on every scrape)
EXTRA_PEERS = ("relay-health",)
JOB_NAMES = {"relay": "bench-relay", "vmagent": "bench-vmagent", "prometheus": "bench-prom",
             "relay-health": "bench-relay-health"}


# --------------------------------------------------------------------------------------------
# Small parsers


def parse_duration(text: str) -> float:
    """``15s``, ``1m``, ``500ms``, ``1m30s`` or a bare number of seconds -> seconds."""
    text = text.strip()
    with contextlib.suppress(ValueError):
        return float(text)
    units = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0}
    parts = re.findall(r"(\d+(?:\.\d+)?)(ms|s|m|h)", text)
    if not parts or "".join(n + u for n, u in parts) != text:
        raise ValueError(f"not a duration: {text!r} (e.g. 15s, 1m, 500ms)")
    return sum(float(n) * units[u] for n, u in parts)


def format_duration(seconds: float) -> str:
    """Seconds as Prometheus writes a duration (``15s``, ``1m30s``, ``500ms``)."""
    ms = round(seconds * 1000)
    if ms % 1000:
        return f"{ms}ms"
    s = ms // 1000
    m, s = divmod(s, 60)
    return (f"{m}m" if m else "") + (f"{s}s" if s or not m else "")


def parse_int_list(text: str) -> list[int]:
    """``100,1000,10k`` -> [100, 1000, 10000]."""
    out = []
    for item in text.split(","):
        item = item.strip().lower().replace("_", "")
        if not item:
            continue
        mult = 1000 if item.endswith("k") else 1
        out.append(int(float(item.rstrip("k")) * mult))
    return out


# --------------------------------------------------------------------------------------------
# /proc readings


def _children_map() -> dict[int, list[int]]:
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat", "rb") as fh:
                stat = fh.read()
        except OSError:
            continue
        ppid = int(stat[stat.rindex(b")") + 2 :].split()[1])
        children.setdefault(ppid, []).append(int(entry))
    return children


def process_tree(pid: int) -> list[int]:
    """``pid`` and all its descendants (the scraper under test may fork helpers)."""
    children = _children_map()
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        out.append(p)
        todo.extend(children.get(p, []))
    return out


def proc_cpu_seconds(pid: int) -> float:
    """utime + stime of one process (all its threads), from /proc/PID/stat; 0 if it is gone."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as fh:
            stat = fh.read()
    except OSError:
        return 0.0
    fields = stat[stat.rindex(b")") + 2 :].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def tree_cpu_seconds(pid: int) -> float:
    return sum(proc_cpu_seconds(p) for p in process_tree(pid))


def proc_status_kib(pid: int, key: str) -> int:
    """A ``kB`` field of /proc/PID/status (VmRSS, VmHWM); 0 if it is gone."""
    try:
        with open(f"/proc/{pid}/status", encoding="ascii", errors="replace") as fh:
            for line in fh:
                if line.startswith(key + ":"):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0


class RssPoller:
    """Polls the RSS of a process tree every ``period`` seconds in a thread; keeps the peak."""

    def __init__(self, pid: int, period: float = 0.5) -> None:
        self.pid = pid
        self.period = period
        self.peak_kib = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"rss-{pid}", daemon=True)

    def _run(self) -> None:
        tree = process_tree(self.pid)
        rounds = 0
        while not self._stop.is_set():
            if rounds % 20 == 0:  # new children are rare: refresh the tree every 10 s
                tree = process_tree(self.pid)
            rounds += 1
            self.peak_kib = max(self.peak_kib, sum(proc_status_kib(p, "VmRSS") for p in tree))
            self._stop.wait(self.period)

    def __enter__(self) -> RssPoller:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(5)


# --------------------------------------------------------------------------------------------
# Processes


def _die_with_parent() -> None:  # pragma: no cover - runs in the child between fork and exec
    with contextlib.suppress(Exception):
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    with contextlib.suppress(Exception):  # a 10,000-member fleet needs more than 10,000 fds
        import resource

        _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


def start_process(argv: Sequence[str], log_path: Path, env: dict[str, str] | None = None) -> subprocess.Popen[bytes]:
    log = open(log_path, "ab")  # noqa: SIM115 - owned by the child
    try:
        return subprocess.Popen(
            list(argv), stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
            preexec_fn=_die_with_parent, env=env,
        )
    finally:
        log.close()


def tail(path: Path, lines: int = 15) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return ""


def http_get(url: str, timeout: float = 30.0) -> bytes:
    with urllib.request.urlopen(url, timeout=timeout) as resp:
        data: bytes = resp.read()
        return data


class SimFleet(Service):
    """``relay sim`` in a subprocess, writing a file_sd targets file; stopped on exit."""

    def __init__(self, members: int, workdir: Path, *, etcd_version: str = "3.5", max_seconds: float = 0,
                 single_port: bool = False) -> None:
        self.members = members
        self.workdir = workdir
        self.targets_file = workdir / f"targets-{members}.json"
        self.log_path = workdir / f"sim-{members}.log"
        self.argv = [
            sys.executable, "-m", "relay.cli", "sim", "--members", str(members),
            "--etcd-version", etcd_version, "--write-targets", str(self.targets_file),
            "--duration", str(max_seconds),  # a bound: the fleet stops itself even if we die
            *(["--single-port"] if single_port else []),  # a port per member takes 2 descriptors per member
        ]
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def start(self, timeout: float = 300.0) -> Self:
        with contextlib.suppress(FileNotFoundError):
            self.targets_file.unlink()
        self.proc = start_process(self.argv, self.log_path, env={**os.environ, "PYTHONPATH": str(REPO)})
        deadline = time.monotonic() + timeout
        while not self.targets_file.exists():
            if self.proc.poll() is not None:
                raise RuntimeError(f"relay sim exited with status {self.proc.returncode}:\n{tail(self.log_path)}")
            if time.monotonic() > deadline:
                raise TimeoutError(f"relay sim did not write {self.targets_file} within {timeout:g}s")
            time.sleep(0.1)
        groups = json.loads(self.targets_file.read_text())
        if len(groups) != self.members:
            raise RuntimeError(f"{self.targets_file} lists {len(groups)} targets, expected {self.members}")
        return self

    def stop(self) -> None:
        stop_process(self.proc, timeout=20)


class BenchVictoriaMetrics(VictoriaMetrics):
    """VictoriaMetrics with the query limits raised: a 1,000-member fleet is 1.4M series per peer.

    With ``keep_names`` (a regex of metric names) it stores only those series (ingestion-time
    relabeling, ``-relabelConfig``): it still reads, decodes and counts every row it is sent
    (``vm_rows_inserted_total``), but does not create the other series, which on a 2-core box it
    cannot do fast enough for 10,000 members (14 M new series per peer)."""

    def __init__(self, base_dir: str | Path | None = None, port: int = 0, keep_names: str | None = None) -> None:
        super().__init__(base_dir, port)
        self.keep_names = keep_names

    def command(self) -> list[str]:
        extra = []
        if self.keep_names:
            rules = self.base_dir / "keep.yml"
            rules.write_text(f"- action: keep\n  source_labels: [__name__]\n  regex: {json.dumps(self.keep_names)}\n")
            extra.append(f"-relabelConfig={rules}")
        return [
            *super().command(),
            "-search.maxUniqueTimeseries=100000000",
            "-search.maxSamplesPerQuery=10000000000",
            "-search.maxQueryDuration=600s",
            "-search.maxExportSeries=100000000",
            *extra,
        ]

    def rows_inserted(self) -> float:
        """VM's own count of remote-write rows ingested (``vm_rows_inserted_total``)."""
        text = http_get(self.url + "/metrics").decode()
        return sum(
            float(line.rsplit(" ", 1)[1])
            for line in text.splitlines()
            if line.startswith('vm_rows_inserted_total{type="promremotewrite"}')
        )

    def wire_bytes(self) -> float:
        """Bytes VictoriaMetrics' HTTP listener has read (``vm_tcplistener_read_bytes_total``):
        remote-write bodies as sent (compressed) plus their HTTP headers, and our few queries."""
        text = http_get(self.url + "/metrics").decode()
        return sum(
            float(line.rsplit(" ", 1)[1])
            for line in text.splitlines()
            if line.startswith('vm_tcplistener_read_bytes_total{name="http"')
        )

    def count_samples(self, selector: str, t0: float, t1: float) -> int:
        """Samples of ``selector`` with timestamps in (t0, t1] (``count_over_time``, evaluated at t1)."""
        window = f"{round((t1 - t0) * 1000)}ms"
        params = {"query": f"sum(count_over_time({selector}[{window}]))", "time": f"{t1:.3f}"}
        # a 1,000-member fleet is 1.4M series: tens of seconds on a busy 2-core box
        data = json.loads(http_get(self.url + "/api/v1/query?" + urllib.parse.urlencode(params), 600))
        if data.get("status") != "success":
            raise RuntimeError(f"count query failed: {data}")
        result = data["data"]["result"]
        return int(float(result[0]["value"][1])) if result else 0

    def targets_current(self, up_selector: str, interval: float, lag: float = 2.0) -> int:
        """Targets with an ``up`` sample in the last interval ending ``lag`` seconds ago: when that is
        every target, the peer's remote write has caught up (its queues are FIFO)."""
        self.flush()
        params = {"query": f"count(count_over_time({up_selector}[{round(interval * 1000)}ms]))",
                  "time": f"{time.time() - lag:.3f}"}
        data = json.loads(http_get(self.url + "/api/v1/query?" + urllib.parse.urlencode(params), 60))
        result = data.get("data", {}).get("result", [])
        return int(float(result[0]["value"][1])) if result else 0

    def export_range(self, selector: str, t0: float, t1: float) -> list[dict[str, Any]]:
        """Raw samples of ``selector`` with timestamps in [t0, t1] (explicit start/end: see module doc)."""
        params = {"match[]": selector, "start": f"{t0:.3f}", "end": f"{t1:.3f}"}
        url = self.url + "/api/v1/export?" + urllib.parse.urlencode(params)
        return [json.loads(line) for line in http_get(url, 120).splitlines() if line.strip()]


# --------------------------------------------------------------------------------------------
# Missed intervals from delivered `up` samples


def missed_slots(timestamps_ms: Sequence[int], t0_ms: int, t1_ms: int, interval_ms: int) -> int:
    """Scrape slots in [t0, t1) of one target that have no sample.

    A target is scraped at phase + n * interval; the phase is taken from its samples (the median
    of their offsets modulo the interval from its middle sample, so that neither a late scrape nor
    the wrap-around of the modulo moves it). Every slot in the
    window is looked for within half an interval: jitter at the window's edges does not count as a
    miss, and a target with no sample at all misses every slot.
    """
    expected = max(0, round((t1_ms - t0_ms) / interval_ms))
    if not timestamps_ms:
        return expected
    ts = sorted(timestamps_ms)
    ref = ts[len(ts) // 2]
    offsets = sorted(((t - ref + interval_ms // 2) % interval_ms) - interval_ms // 2 for t in ts)
    phase = ref + offsets[len(offsets) // 2]
    present = {round((t - phase) / interval_ms) for t in ts}
    first = math.ceil((t0_ms - phase) / interval_ms)
    slots = [n for n in range(first, first + expected + 1) if t0_ms <= phase + n * interval_ms < t1_ms]
    return sum(1 for n in slots if n not in present)


def up_summary(series: list[dict[str, Any]], targets: int, t0: float, t1: float, interval: float) -> dict[str, int]:
    """From exported ``up`` series: missed scrape slots, failed scrapes (up == 0), delivered ``up`` samples."""
    t0_ms, t1_ms, iv_ms = round(t0 * 1000), round(t1 * 1000), round(interval * 1000)
    expected_per_target = round((t1_ms - t0_ms) / iv_ms)
    missed = failed = delivered = 0
    for s in series:
        ts = s.get("timestamps", [])
        values = s.get("values", [])
        missed += missed_slots(ts, t0_ms, t1_ms, iv_ms)
        for t, v in zip(ts, values, strict=False):
            if t0_ms <= t < t1_ms:
                delivered += 1
                if v == 0:
                    failed += 1
    missed += max(0, targets - len(series)) * expected_per_target  # targets with no `up` at all
    return {"missed": missed, "failed": failed, "up_samples": delivered,
            "expected_up_samples": targets * expected_per_target, "up_series": len(series)}


# --------------------------------------------------------------------------------------------
# Peers


@dataclass
class PeerRun:
    """A running peer: its process and where to ask it things."""

    name: str
    job: str
    proc: subprocess.Popen[bytes]
    url: str
    log_path: Path
    stats_file: Path | None = None


def scrape_config_yaml(job: str, targets_file: Path, interval: float, timeout: float, run_label: str,
                       write_url: str) -> str:
    """The same Prometheus-style config for every peer, but for the job name."""
    iv, to = format_duration(interval), format_duration(timeout)
    return (
        "global:\n"
        f"  scrape_interval: {iv}\n"
        f"  scrape_timeout: {to}\n"
        f"  external_labels: {{bench_run: {json.dumps(run_label)}}}\n"
        "scrape_configs:\n"
        f"  - job_name: {job}\n"
        f"    scrape_interval: {iv}\n"
        f"    scrape_timeout: {to}\n"
        "    file_sd_configs:\n"
        f"      - files: [{json.dumps(str(targets_file))}]\n"
        "remote_write:\n"
        f"  - url: {write_url}\n"
    )


def _vmagent_config(text: str) -> str:
    """vmagent's -promscrape.config takes no remote_write section (it is a flag)."""
    return text.split("remote_write:\n", 1)[0]


def start_peer(name: str, *, workdir: Path, targets_file: Path, interval: float, timeout: float,
               run_label: str, write_url: str, max_seconds: float,
               extra_args: Sequence[str] = ()) -> PeerRun:
    """Start one scraper on the fleet and wait until it answers (bounded)."""
    job = JOB_NAMES[name]
    port = free_ports(1)[0]
    listen = f"127.0.0.1:{port}"
    rundir = workdir / f"{name}-{run_label}"
    rundir.mkdir(parents=True, exist_ok=True)
    config = scrape_config_yaml(job, targets_file, interval, timeout, run_label, write_url)
    log_path = rundir / f"{name}.log"
    stats_file: Path | None = None
    if name in ("relay", "relay-health"):
        if name == "relay-health":
            config += "etcd_health: {}\n"
        (rundir / "relay.yml").write_text(config)
        stats_file = rundir / "stats.json"
        argv = [sys.executable, "-m", "relay.cli", "--log-level", "warning", "run",
                "--config", str(rundir / "relay.yml"), "--listen", listen,
                "--stats-file", str(stats_file), "--duration", str(max_seconds), "--drain-timeout", "10",
                *extra_args]
        if not any(a.startswith("--queue") for a in extra_args):  # as the figures so far: in memory
            argv.append("--queue.memory")
        ready = f"http://{listen}/-/ready"
    elif name == "vmagent":
        (rundir / "vmagent.yml").write_text(_vmagent_config(config))
        argv = ["vmagent", f"-promscrape.config={rundir / 'vmagent.yml'}", f"-remoteWrite.url={write_url}",
                f"-remoteWrite.tmpDataPath={rundir / 'tmp'}", f"-httpListenAddr={listen}",
                "-loggerLevel=ERROR", *extra_args]
        ready = f"http://{listen}/health"
    elif name == "prometheus":
        (rundir / "prometheus.yml").write_text(config)
        argv = ["prometheus", "--enable-feature=agent", f"--config.file={rundir / 'prometheus.yml'}",
                f"--storage.agent.path={rundir / 'agent'}", f"--web.listen-address={listen}",
                "--log.level=error", *extra_args]
        ready = f"http://{listen}/-/ready"
    else:
        raise ValueError(f"unknown peer {name!r}; choose from {', '.join(PEERS)}")
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    proc = start_process(argv, log_path, env=env)
    try:
        wait_http(ready, 60, proc)
    except BaseException:
        stop_process(proc, timeout=20)
        raise RuntimeError(f"{name} did not start:\n{tail(log_path)}") from None
    return PeerRun(name=name, job=job, proc=proc, url=f"http://{listen}", log_path=log_path, stats_file=stats_file)


def relay_counter(metrics_text: str, name: str, job: str | None = None) -> float:
    """Sum of a counter (``name`` or ``name_total``) in the relay's /metrics text, for one job."""
    total = 0.0
    for line in metrics_text.splitlines():
        if not line.startswith(name) or line.startswith("#"):
            continue
        head, _, value = line.rpartition(" ")
        series = head.split("{", 1)[0]
        if series not in (name, name + "_total"):
            continue
        if job is not None and f'job="{job}"' not in head:
            continue
        total += float(value)
    return total


_RELAY_COUNTERS = (
    "relay_scrapes_total", "relay_scrape_failures_total", "relay_scrape_duration_seconds_sum",
    "relay_scrape_duration_seconds_count", "relay_remote_write_samples_sent_total",
    "relay_remote_write_samples_failed_total", "relay_remote_write_samples_retried_total",
    "relay_remote_write_samples_dropped_total",
)
_RELAY_GAUGES = (
    "relay_series_cache_series", "relay_remote_write_pending_samples", "relay_remote_write_queue_bytes",
    "relay_remote_write_shards",
)


def relay_snapshot(metrics_text: str) -> dict[str, float]:
    """The relay's own counters and gauges of interest, summed over their labels."""
    out: dict[str, float] = {}
    for line in metrics_text.splitlines():
        if line.startswith("#") or " " not in line:
            continue
        head, _, value = line.rpartition(" ")
        name = head.split("{", 1)[0]
        if name in _RELAY_COUNTERS or name in _RELAY_GAUGES:
            with contextlib.suppress(ValueError):
                out[name] = out.get(name, 0.0) + float(value)
    return out


def relay_window_stats(before: dict[str, float], after: dict[str, float]) -> dict[str, float]:
    """Counters as increases over the window, gauges as at its end, and the mean scrape duration."""
    stats = {k: after.get(k, 0.0) - before.get(k, 0.0) for k in _RELAY_COUNTERS}
    stats.update({k: after.get(k, 0.0) for k in _RELAY_GAUGES})
    count = stats["relay_scrape_duration_seconds_count"]
    stats["mean_scrape_duration_ms"] = 1000 * stats["relay_scrape_duration_seconds_sum"] / count if count else 0.0
    return stats


# --------------------------------------------------------------------------------------------
# Results


def _per(amount: float, per: float) -> float:
    """``amount / per``, or 0 where there is nothing to divide by (a run that failed early)."""
    return amount / per if per else 0.0


@dataclass
class RunResult:
    peer: str
    members: int
    interval: float
    window_s: float
    samples: int  # delivered, timestamps in the window (counted in VM)
    vm_rows: float  # rows VM ingested while the window lasted (any job)
    cpu_s: float  # scraper process tree
    sim_cpu_s: float
    peak_rss_mib: float  # polled RSS of the tree, every 0.5 s, from start to the end of the window
    hwm_mib: float  # VmHWM of the main process
    missed: int  # slots without an `up` sample
    failed: int  # `up` == 0
    up_samples: int
    expected_up_samples: int
    relay_missed: float | None = None  # relay_scrape_missed_intervals_total over the window
    relay_failures: float | None = None
    relay_stats: dict[str, float] = field(default_factory=dict)  # the relay's own /metrics over the window
    vm_bytes: float = 0.0  # bytes VM's HTTP listener read while the window lasted (bodies + headers)
    warmup_s: float = 0.0  # from ready to the window: at least --warmup intervals, then until caught up
    t0: float = 0.0  # the window, Unix seconds
    t1: float = 0.0
    error: str | None = None
    notes: list[str] = field(default_factory=list)

    @property
    def samples_per_s(self) -> float:
        return _per(self.samples, self.window_s)

    @property
    def samples_per_cpu_s(self) -> float:
        return _per(self.samples, self.cpu_s)

    @property
    def cpu_cores(self) -> float:
        return _per(self.cpu_s, self.window_s)

    @property
    def sim_cores(self) -> float:
        return _per(self.sim_cpu_s, self.window_s)

    @property
    def wire_bytes_per_sample(self) -> float:
        """Bytes on the wire (compressed bodies and HTTP headers) per row ingested, in the window."""
        return _per(self.vm_bytes, self.vm_rows)

    @property
    def samples_per_scrape(self) -> float:
        return _per(self.samples, self.up_samples)

    def to_json(self) -> dict[str, Any]:
        d = asdict(self)
        d.update(samples_per_s=self.samples_per_s, samples_per_cpu_s=self.samples_per_cpu_s,
                 cpu_cores=self.cpu_cores, sim_cores=self.sim_cores, samples_per_scrape=self.samples_per_scrape,
                 wire_bytes_per_sample=self.wire_bytes_per_sample)
        return d


def _ratio(value: float, base: float | None) -> str:
    if not base:
        return "-"
    return f"{value / base:.2f}"


def markdown_table(results: Sequence[RunResult], baseline: str = "vmagent") -> str:
    """One table for one fleet size and interval; ratios are to ``baseline``'s figures."""
    base = next((r for r in results if r.peer == baseline and r.error is None), None)
    head = ("| peer | samples/s | x vm | CPU s | cores | samples/CPU-s | x vm | peak RSS MiB | x vm "
            "| missed / expected scrapes | failed | samples/scrape | wire B/sample | x vm | sim cores |")
    lines = [head, "|" + "---|" * head.count(" | ") + "---|"]
    for r in results:
        if r.error is not None:
            lines.append(f"| {r.peer} | error: {r.error.splitlines()[0][:80]} |" + " |" * (head.count(" | ") - 1))
            continue
        missed = f"{r.missed} / {r.expected_up_samples}"
        if r.relay_missed is not None:
            missed += f" (relay counter: {r.relay_missed:g})"
        b_rate, b_eff, b_rss, b_wire = ((base.samples_per_s, base.samples_per_cpu_s, base.peak_rss_mib,
                                         base.wire_bytes_per_sample) if base else (None,) * 4)
        lines.append(
            f"| {r.peer} | {r.samples_per_s:,.0f} | {_ratio(r.samples_per_s, b_rate)} "
            f"| {r.cpu_s:.2f} | {r.cpu_cores:.3f} "
            f"| {r.samples_per_cpu_s:,.0f} | {_ratio(r.samples_per_cpu_s, b_eff)} "
            f"| {r.peak_rss_mib:,.0f} | {_ratio(r.peak_rss_mib, b_rss)} "
            f"| {missed} | {r.failed} | {r.samples_per_scrape:,.0f} "
            f"| {r.wire_bytes_per_sample:.2f} | {_ratio(r.wire_bytes_per_sample, b_wire)} | {r.sim_cores:.3f} |"
        )
    return "\n".join(lines)


def plot(results: Sequence[RunResult], path: Path) -> str:
    """Bars of samples per CPU-second, CPU cores and peak RSS per peer and case; returns a note."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return "matplotlib is not installed (pip install '.[plot]'): plot skipped"
    ok = [r for r in results if r.error is None]
    if not ok:
        return "no successful run: plot skipped"
    cases = sorted({(r.members, r.interval) for r in ok})
    peers = [p for p in (*PEERS, *EXTRA_PEERS) if any(r.peer == p for r in ok)]
    metrics: list[tuple[str, Callable[[RunResult], float]]] = [
        ("samples per CPU-second", lambda r: r.samples_per_cpu_s),
        ("CPU cores used", lambda r: r.cpu_cores),
        ("peak RSS (MiB)", lambda r: r.peak_rss_mib),
        ("missed scrapes (%)", lambda r: 100.0 * r.missed / r.expected_up_samples if r.expected_up_samples else 0),
    ]
    fig, axes = plt.subplots(1, len(metrics), figsize=(5 * len(metrics), 4.2))
    width = 0.8 / max(1, len(peers))
    for ax, (title, fn) in zip(axes, metrics, strict=True):
        for k, peer in enumerate(peers):
            values = [next((fn(r) for r in ok if r.peer == peer and (r.members, r.interval) == c), 0.0)
                      for c in cases]
            ax.bar([i + k * width for i in range(len(cases))], values, width, label=peer)
        ax.set_xticks([i + width * (len(peers) - 1) / 2 for i in range(len(cases))])
        ax.set_xticklabels([f"{m:,} @ {format_duration(iv)}" for m, iv in cases])
        ax.set_title(title)
        ax.set_ylim(bottom=0, top=max(ax.get_ylim()[1], 1.0))
        ax.set_xlabel("members @ interval")
    axes[0].legend()
    fig.suptitle("etcd fleet scrape + remote write (simulated etcd 3.5 fleet, VictoriaMetrics receiver)")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return f"plot written to {path}"


@contextlib.contextmanager
def sigterm_as_exit() -> Iterator[None]:
    """SIGTERM raises SystemExit in the main thread, so every ``finally`` runs."""

    def handler(signum: int, frame: object) -> None:
        raise SystemExit(128 + signum)

    old = signal.signal(signal.SIGTERM, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, old)
