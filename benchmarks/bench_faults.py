"""Fault table: what the relay does under each fault of its targets, its receiver and itself, measured.

    python benchmarks/bench_faults.py                        # every fault, about 7 minutes
    python benchmarks/bench_faults.py --only 500,slow --window 20
    python benchmarks/bench_faults.py --list

Each row is its own run of ``relay run`` as a subprocess on loopback (persistent queue, scrape
every 1 s) with two healthy simulated etcd 3.5.1 members (``relay sim``) and, for a target fault,
one faulty target. It remote-writes through a TCP proxy (tests/faultproxy.py) to a real
VictoriaMetrics; the proxy injects the receiver faults and counts every sample VictoriaMetrics
acknowledged, by (series, timestamp).

Columns, all measured:

- observed: the faulty target's ``up`` and reason (from the relay's ``/targets``) and failed
  scrapes (``relay_scrape_failures_total``); for receiver and relay faults the relay's remote-write
  counters (failed/retried samples, most samples pending, drops by reason);
- samples lost: accepted by the relay (its ``--stats-file``; before a SIGKILL, its
  ``--sink-jsonl`` lines) minus the distinct samples VictoriaMetrics stored, with the relay's own
  drop counters beside it; duplicates (stored more than once) are shown too;
- peak RSS: VmHWM of the relay process(es) of the row, in MiB.

It asserts nothing about time, and nothing at all: a row that could not be measured says why.
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import json
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

import relay  # noqa: E402
from relay.devtools.localenv import LOOPBACK, VictoriaMetrics, free_ports  # noqa: E402
from tests.faultproxy import LoopbackServer, ReceiverProxy, RelayProcess, _reset  # noqa: E402
from tests.test_faults import _hostile  # noqa: E402

SIM_FAULTS = {"slow": 2, "reset": 3, "500": 4, "garbage": 5, "huge": 6}  # member index of each
HEALTHY = (0, 1)


@dataclass
class Row:
    fault: str
    observed: str = ""
    lost: str = ""
    rss_mib: float = 0.0


@dataclass
class Counts:
    """What one row's relay processes accepted and said, and what the receiver stored."""

    accepted: int = 0
    dropped: dict[str, int] = field(default_factory=dict)
    pending: int = 0
    rss: float = 0.0
    metrics: dict[str, float] = field(default_factory=dict)
    max_pending: float = 0.0


def relay_metrics(process: RelayProcess) -> dict[str, float]:
    """The relay's own /metrics, summed per metric name and reason (parsed with the relay's parser)."""
    out: dict[str, float] = {}
    batch = relay.parse(process.metrics().encode(), timestamp_ms=0)
    for name, labels, value, _ in batch.samples():
        reason = dict(labels).get("reason")
        key = f"{name}{{{reason}}}" if reason else name
        out[key] = out.get(key, 0.0) + value
    return out


class Bench:
    def __init__(self, work: Path, duration: float, window: float) -> None:
        self.work = work
        self.duration = duration
        self.window = window
        self.vm = VictoriaMetrics(base_dir=work / "vm")
        self.sim: subprocess.Popen[bytes] | None = None
        self.groups: list[dict[str, Any]] = []
        self.hostile = LoopbackServer(_hostile)
        self.refusing = LoopbackServer(self._refuse)
        self.down_port = free_ports(1)[0]  # nothing listens there
        self.n = 0

    @staticmethod
    async def _refuse(reader: Any, writer: Any) -> None:
        _reset(writer)  # accepts the connection, then resets it at once

    def __enter__(self) -> Bench:
        self.vm.start()
        self.hostile.start()
        self.refusing.start()
        targets = self.work / "sim-targets.json"
        spec = ",".join(f"{kind}@{i}" for kind, i in SIM_FAULTS.items())
        self.sim = subprocess.Popen(
            [sys.executable, "-m", "relay.cli", "sim", "--members", "7", "--fault", spec, "--slow-delay", "10",
             "--huge-mb", "200", "--write-targets", str(targets), "--duration", "3600"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, cwd=REPO,
        )
        deadline = time.monotonic() + 30
        while not targets.exists():
            if time.monotonic() > deadline or self.sim.poll() is not None:
                raise RuntimeError("relay sim did not write its targets")
            time.sleep(0.1)
        self.groups = json.loads(targets.read_text())
        return self

    def __exit__(self, *exc: object) -> None:
        if self.sim is not None and self.sim.poll() is None:
            self.sim.terminate()
            self.sim.wait(30)
        self.hostile.stop()
        self.refusing.stop()
        self.vm.close()

    # -- one run -----------------------------------------------------------------------------

    def group(self, host_port: str, path: str = "/metrics", **labels: str) -> dict[str, Any]:
        return {"targets": [host_port], "labels": {"__metrics_path__": path, **labels}}

    def config(self, row: str, faulty: dict[str, Any] | None, write_url: str) -> Path:
        folder = self.work / row
        folder.mkdir(parents=True, exist_ok=True)
        groups = [self.groups[i] for i in HEALTHY] + ([faulty] if faulty else [])
        (folder / "targets.json").write_text(json.dumps(groups))
        cfg = folder / "relay.yml"
        cfg.write_text(
            "global:\n  scrape_interval: 1s\n  scrape_timeout: 800ms\n  body_size_limit: 10MB\n"
            "  sample_limit: 100000\n  label_value_length_limit: 65536\n"
            f"  external_labels: {{bench_row: '{row}'}}\n"
            f"scrape_configs:\n  - job_name: faults\n    file_sd_configs: [{{files: ['{folder / 'targets.json'}']}}]\n"
            f"remote_write:\n  - url: {write_url}\n"
            "    queue_config: {batch_send_deadline: 500ms, min_backoff: 50ms, max_backoff: 1s, min_shards: 2}\n"
        )
        return cfg

    def relay(self, cfg: Path, run: str, *extra: str) -> RelayProcess:
        self.n += 1
        relay = RelayProcess(cfg, cfg.parent / f"{run}-{self.n}", *extra)
        relay.wait_ready()
        return relay

    def watch(self, relay: RelayProcess, seconds: float, counts: Counts) -> None:
        """Let it run, sampling RSS and the pending samples every second."""
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            time.sleep(min(1.0, max(0.0, deadline - time.monotonic())))
            relay.sample_rss()
            with contextlib.suppress(OSError):
                counts.max_pending = max(counts.max_pending,
                                         relay_metrics(relay).get("relay_remote_write_pending_samples", 0.0))

    def finish(self, relay: RelayProcess, counts: Counts) -> None:
        """SIGTERM one relay and add its summary to the row's counts."""
        counts.metrics = relay_metrics(relay)
        rw = relay.stop()
        counts.accepted += rw["accepted"]
        counts.pending = rw["pending"]
        for reason, n in rw["dropped"].items():
            counts.dropped[reason] = counts.dropped.get(reason, 0) + n
        counts.rss = max(counts.rss, relay.peak_rss)

    def lost(self, row: str, counts: Counts, proxy: ReceiverProxy) -> str:
        stored = self.vm.sample_count(f'{{bench_row="{row}"}}')
        distinct, dups = proxy.distinct_samples, proxy.duplicate_samples
        text = f"{counts.accepted - distinct} of {counts.accepted}"
        if counts.dropped:
            text += " (relay dropped: " + ", ".join(f"{k} {v}" for k, v in sorted(counts.dropped.items())) + ")"
        if counts.pending:
            text += f" ({counts.pending} still queued on disk)"
        if dups:
            text += (f"; {dups} stored twice ({proxy.stats.unanswered_stored_samples} in writes stored whose "
                     "answer the relay never got)")
        if stored != distinct + dups:
            text += f"; VictoriaMetrics holds {stored}, the proxy saw {distinct + dups} acknowledged"
        return text

    # -- rows --------------------------------------------------------------------------------

    def target_row(self, name: str, faulty: dict[str, Any]) -> Row:
        row = f"target-{name}"
        counts = Counts()
        with ReceiverProxy(self.vm.port) as proxy:
            cfg = self.config(row, faulty, proxy.write_url)
            with self.relay(cfg, "run") as relay:
                self.watch(relay, self.duration, counts)
                with urllib.request.urlopen(relay.url + "/targets", timeout=10) as resp:
                    targets = json.loads(resp.read())["data"]["activeTargets"]
                self.finish(relay, counts)
            lost = self.lost(row, counts, proxy)
        bad = [t for t in targets if t["scrapeUrl"].split("//", 1)[1].startswith(faulty["targets"][0])
               and t["scrapeUrl"].endswith(faulty["labels"]["__metrics_path__"])]
        others = [t for t in targets if t not in bad]
        failed = {k[len("relay_scrape_failures_total{"):-1]: v for k, v in counts.metrics.items()
                  if k.startswith("relay_scrape_failures_total{")}
        scrapes = counts.metrics.get("relay_scrapes_total", 0)
        if bad:
            t = bad[0]
            observed = (f"up={1 if t['health'] == 'up' else 0}, reason {t['lastErrorReason'] or '-'}; "
                        + (", ".join(f"{k} {v:.0f}" for k, v in failed.items()) or "no") + f" failed of {scrapes:.0f} scrapes; "
                        + f"healthy members up={int(all(o['health'] == 'up' for o in others))}")
        else:
            observed = "the faulty target is not in /targets"
        return Row(name, observed, lost, counts.rss)

    def receiver_row(self, name: str, fault: str, **args: Any) -> Row:
        row = f"receiver-{name}"
        counts = Counts()
        with ReceiverProxy(self.vm.port, seed=3) as proxy:
            cfg = self.config(row, None, proxy.write_url)
            with self.relay(cfg, "run") as relay:
                self.watch(relay, 2, counts)
                proxy.set_fault(fault, **args)
                self.watch(relay, self.window, counts)
                proxy.set_fault("pass")
                self.watch(relay, 5, counts)
                self.finish(relay, counts)
            lost = self.lost(row, counts, proxy)
            m = counts.metrics
            hit = (f"connections refused for {self.window:g} s" if fault == "down"
                   else f"{sum(proxy.stats.faults.values())} of {proxy.stats.requests} requests hit")
            observed = (f"{hit}; "
                        f"samples failed {m.get('relay_remote_write_samples_failed_total', 0):.0f}, "
                        f"retried {m.get('relay_remote_write_samples_retried_total', 0):.0f}, "
                        f"most pending {counts.max_pending:.0f}, shards at the end "
                        f"{m.get('relay_remote_write_shards', 0):.0f}")
        return Row(name, observed, lost, counts.rss)

    def relay_sigterm(self) -> Row:
        row = "relay-sigterm"
        counts = Counts()
        with ReceiverProxy(self.vm.port) as proxy:
            cfg = self.config(row, None, proxy.write_url)
            with self.relay(cfg, "run") as relay:
                self.watch(relay, self.duration, counts)
                self.finish(relay, counts)
            lost = self.lost(row, counts, proxy)
        return Row("relay: SIGTERM (receiver up)", f"exit 0, drained: {counts.pending} pending at exit", lost,
                   counts.rss)

    def relay_sigterm_down_restart(self, corrupt: bool = False) -> Row:
        row = "relay-corrupt" if corrupt else "relay-restart"
        counts = Counts()
        with ReceiverProxy(self.vm.port) as proxy:
            cfg = self.config(row, None, proxy.write_url)
            proxy.set_fault("down")
            with self.relay(cfg, "first", "--drain-timeout", "0.5") as relay:
                self.watch(relay, self.duration, counts)
                self.finish(relay, counts)
            on_disk = counts.pending
            queue = cfg.parent / "queue"
            note = ""
            if corrupt:
                segments = sorted(p for p in queue.rglob("*.seg") if p.stat().st_size > 64)
                if segments:
                    raw = bytearray(segments[0].read_bytes())
                    raw[40] ^= 0xFF  # inside the first record: its checksum fails
                    segments[0].write_bytes(bytes(raw))
                    note = f", one byte of {segments[0].name} flipped"
                else:
                    note = ", no segment to corrupt"
            proxy.set_fault("pass")
            with self.relay(cfg, "second") as relay:
                self.watch(relay, 5, counts)
                self.finish(relay, counts)
            lost = self.lost(row, counts, proxy)
        name = ("relay: corrupt queue segment" if corrupt
                else "relay: SIGTERM while the receiver is down, restart")
        return Row(name, f"{on_disk} samples left on disk at the first exit{note}; restarted, "
                         f"{counts.pending} pending at the second exit", lost, counts.rss)

    def relay_sigkill_restart(self) -> Row:
        row = "relay-sigkill"
        counts = Counts()
        with ReceiverProxy(self.vm.port) as proxy:
            cfg = self.config(row, None, proxy.write_url)
            sink = cfg.parent / "accepted.jsonl"
            with self.relay(cfg, "first", "--sink-jsonl", str(sink)) as relay:
                self.watch(relay, self.duration, counts)
                relay.kill()
                counts.rss = relay.peak_rss
            before = sum(1 for line in sink.open("rb") if line.endswith(b"\n"))
            counts.accepted += before
            with self.relay(cfg, "second") as relay:
                self.watch(relay, 5, counts)
                self.finish(relay, counts)
            lost = self.lost(row, counts, proxy)
        return Row("relay: SIGKILL, restart", f"{before} samples accepted before the kill; restarted from the "
                                               f"queue, {counts.pending} pending at exit", lost, counts.rss)

    def rows(self) -> dict[str, Callable[[], Row]]:
        sim = {kind: self.groups[i] for kind, i in SIM_FAULTS.items()}
        hostile = f"{LOOPBACK}:{self.hostile.port}"
        g = self.group
        targets: dict[str, tuple[str, dict[str, Any]]] = {
            "down": ("target down (nothing listens)", g(f"{LOOPBACK}:{self.down_port}")),
            "refusing": ("target refusing (accepts, resets at once)", g(f"{LOOPBACK}:{self.refusing.port}")),
            "slow": ("target slow (answers after 10 s)", sim["slow"]),
            "reset": ("target resets mid-body", sim["reset"]),
            "500": ("target answers 500", sim["500"]),
            "garbage": ("target sends garbage", sim["garbage"]),
            "huge": ("target huge body (200 MiB)", sim["huge"]),
            "endless": ("target endless body", g(hostile, "/endless")),
            "many-series": ("target too many series (500,000)", g(hostile, "/many-series")),
            "huge-label": ("target huge label (4 MiB value)", g(hostile, "/huge-label")),
            "bad-utf8": ("target invalid UTF-8", g(hostile, "/bad-utf8")),
        }
        out: dict[str, Callable[[], Row]] = {}
        for key, (label, faulty) in targets.items():
            out[key] = functools.partial(self.target_row, label, faulty)
        w = f"{self.window:g} s"
        receivers: dict[str, tuple[str, str, dict[str, Any]]] = {
            "rx-down": (f"receiver down ({w})", "down", {}),
            "rx-slow": (f"receiver slow (3 s per answer, {w})", "slow", {"delay": 3.0}),
            "rx-500": (f"receiver 500 ({w})", "status", {"status": 500}),
            "rx-429": (f"receiver 429 ({w})", "status", {"status": 429}),
            "rx-400": (f"receiver 400 ({w})", "status", {"status": 400}),
            "rx-reset": (f"receiver resets half the requests mid-request ({w})", "reset_mid_request", {"share": 0.5}),
            "rx-close": (f"receiver closes keep-alive after each answer ({w})", "close_after_response", {}),
            "rx-noanswer": (f"receiver closes half without answering ({w})", "close_no_answer", {"share": 0.5}),
            "rx-lost-answer": (f"receiver stores, then resets before answering (30%, {w})", "reset_after_forward",
                               {"share": 0.3}),
        }
        for key, (label, fault, args) in receivers.items():
            out[key] = functools.partial(self.receiver_row, label, fault, **args)
        out["sigterm"] = self.relay_sigterm
        out["restart"] = self.relay_sigterm_down_restart
        out["sigkill"] = self.relay_sigkill_restart
        out["corrupt"] = functools.partial(self.relay_sigterm_down_restart, corrupt=True)
        return out


ROW_KEYS = ["down", "refusing", "slow", "reset", "500", "garbage", "huge", "endless", "many-series", "huge-label",
            "bad-utf8", "rx-down", "rx-slow", "rx-500", "rx-429", "rx-400", "rx-reset", "rx-close", "rx-noanswer",
            "rx-lost-answer", "sigterm", "restart", "sigkill", "corrupt"]


def table(rows: list[Row]) -> str:
    lines = ["| fault | what was observed | samples lost | peak RSS (MiB) |", "| --- | --- | --- | --- |"]
    for r in rows:
        lines.append(f"| {r.fault} | {r.observed} | {r.lost} | {r.rss_mib:.0f} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0] if __doc__ else None)
    ap.add_argument("--only", default="", help=f"comma-separated rows (default all: {','.join(ROW_KEYS)})")
    ap.add_argument("--list", action="store_true", help="list the rows and exit")
    ap.add_argument("--duration", type=float, default=8.0, help="seconds each target/relay fault runs (default 8)")
    ap.add_argument("--window", type=float, default=15.0, help="seconds each receiver fault lasts (default 15)")
    ap.add_argument("--keep", type=Path, default=None, help="keep configs, logs and queues in this folder")
    args = ap.parse_args(argv)
    if args.list:
        print("\n".join(ROW_KEYS))
        return 0
    keys = [k for k in args.only.split(",") if k] or ROW_KEYS
    unknown = [k for k in keys if k not in ROW_KEYS]
    if unknown:
        ap.error(f"unknown rows: {', '.join(unknown)} (see --list)")
    socket.setdefaulttimeout(30)
    tmp = None if args.keep else tempfile.TemporaryDirectory(prefix="bench-faults-")
    work = args.keep or Path(tmp.name)  # type: ignore[union-attr]
    work.mkdir(parents=True, exist_ok=True)
    rows: list[Row] = []
    started = time.monotonic()
    try:
        with Bench(work, args.duration, args.window) as bench:
            runners = bench.rows()
            for key in keys:
                t0 = time.monotonic()
                try:
                    row = runners[key]()
                except Exception as exc:  # one broken row must not hide the others
                    row = Row(key, f"not measured: {type(exc).__name__}: {exc}", "?")
                rows.append(row)
                print(f"[{time.monotonic() - t0:5.1f}s] {row.fault}: {row.observed} | lost {row.lost} | "
                      f"{row.rss_mib:.0f} MiB", file=sys.stderr, flush=True)
    finally:
        if tmp is not None:
            tmp.cleanup()
    print(f"\nFault table ({len(rows)} rows, {time.monotonic() - started:.0f} s; scrape every 1 s, two healthy "
          f"simulated etcd 3.5.1 members per run, persistent queue, remote write through a TCP proxy "
          f"to VictoriaMetrics)\n")
    print(table(rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
