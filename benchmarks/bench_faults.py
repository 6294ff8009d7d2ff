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
import asyncio
import contextlib
import functools
import json
import re
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
import zlib
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

import relay  # noqa: E402
from relay.devtools.localenv import LOOPBACK, VictoriaMetrics, free_ports  # noqa: E402
from tests.faultproxy import LoopbackServer, ReceiverProxy, RelayProcess, Stage, _reset  # noqa: E402
from tests.test_faults import _hostile  # noqa: E402

SIM_FAULTS = {"slow": 2, "reset": 3, "500": 4, "garbage": 5, "huge": 6}  # member index of each
HEALTHY = (0, 1)


@dataclass
class Row:
    fault: str
    observed: str = ""
    lost: str = ""
    rss_mib: float = 0.0
    stall_ms: float = 0.0
    survived: str = "yes"


class StallProbe:
    """The relay's event loop seen from outside: GET /-/healthy every 50 ms, the longest answer kept
    (a loop that is held answers late). Independent of the relay's own metrics."""

    def __init__(self, url: str) -> None:
        self.url = url + "/-/healthy"
        self.longest = 0.0
        self.failures = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            t0 = time.monotonic()
            try:
                with urllib.request.urlopen(self.url, timeout=30) as resp:
                    resp.read()
            except OSError:
                self.failures += 1
            if not self._stop.is_set():
                self.longest = max(self.longest, time.monotonic() - t0)
            self._stop.wait(0.05)

    def stop(self) -> float:
        """Stop probing; the longest answer in ms."""
        self._stop.set()
        self._thread.join(35)
        return self.longest * 1000


_Z = 1 << 24  # 16 MiB of zeros, deflated with a full flush: the same ~16 KB every time
_DEFLATE = zlib.compressobj(9, zlib.DEFLATED, 31)
GZIP_HEAD = _DEFLATE.compress(b"\0" * _Z) + _DEFLATE.flush(zlib.Z_FULL_FLUSH)
GZIP_BLOCK = _DEFLATE.compress(b"\0" * _Z) + _DEFLATE.flush(zlib.Z_FULL_FLUSH)
LONG = "a" * 60


async def _hostile_more(reader: Any, writer: Any) -> None:
    """More hostile targets: a 10 GiB gzip bomb (10 MB sent), a chunk of size ffffffffffffffff that
    never ends, a churning target (10,000 new series every scrape), long metric names for a
    backtracking-prone relabel regex (2,000 new ones every scrape). Each bounded to 20 s."""
    try:
        head = await reader.readuntil(b"\r\n\r\n")
        path = head.split(b" ", 2)[1].decode()
        deadline = time.monotonic() + 20
        ok = b"HTTP/1.1 200 OK\r\nContent-Type: text/plain; version=0.0.4\r\nConnection: close\r\n"
        if path == "/gzip-bomb":
            writer.write(ok + b"Content-Encoding: gzip\r\n\r\n" + GZIP_HEAD)
            for _ in range(639):  # 10 GiB inflated
                writer.write(GZIP_BLOCK)
                await writer.drain()
                if time.monotonic() > deadline:
                    break
        elif path == "/endless-chunk":
            writer.write(ok + b"Transfer-Encoding: chunked\r\n\r\nffffffffffffffff\r\n")
            line = b"# an endless chunk\n" * 4096
            while time.monotonic() < deadline:
                writer.write(line)
                await writer.drain()
        elif path == "/churn":
            n = _hostile_more.scrapes = getattr(_hostile_more, "scrapes", 0) + 1  # type: ignore[attr-defined]
            body = b"".join(b'churn{scrape="%d",i="%d"} 1\n' % (n, i) for i in range(10_000))
            writer.write(ok + b"Content-Length: %d\r\n\r\n" % len(body) + body)
        elif path == "/long-names":
            n = _hostile_more.named = getattr(_hostile_more, "named", 0) + 1  # type: ignore[attr-defined]
            body = b"".join(f"{LONG}_{n}_{i}_{LONG}_{LONG}_x_total 1\n".encode() for i in range(2000))
            writer.write(ok + b"Content-Length: %d\r\n\r\n" % len(body) + body)
        else:
            writer.write(b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
        await writer.drain()
    except (ConnectionError, asyncio.IncompleteReadError):
        pass
    finally:
        writer.close()


BILLION_LAUGHS = (
    "- targets: ['{target}']\n  labels:\n    a: &a [lol, lol, lol, lol, lol, lol, lol, lol, lol]\n"
    + "".join(f"    {chr(98 + i)}: &{chr(98 + i)} [{', '.join([f'*{chr(97 + i)}'] * 9)}]\n" for i in range(8))
    + "    v: *i\n"
)
REGEX_JOB = ("  - job_name: regex\n    metrics_path: /long-names\n    static_configs: [{{targets: ['{target}']}}]\n"
             "    metric_relabel_configs:\n      - {{source_labels: [__name__], regex: '(.*)_(.*)_(.*)_total',"
             " target_label: parts, replacement: '$1/$2/$3'}}\n")


@dataclass
class Counts:
    """What one row's relay processes accepted and said, and what the receiver stored."""

    accepted: int = 0
    dropped: dict[str, int] = field(default_factory=dict)
    pending: int = 0
    rss: float = 0.0
    metrics: dict[str, float] = field(default_factory=dict)
    max_pending: float = 0.0
    stall_ms: float = 0.0
    survived: bool = True
    metrics_by_job: dict[tuple[str, str], float] = field(default_factory=dict)


def relay_parse(process: RelayProcess) -> Any:
    return relay.parse(process.metrics().encode(), timestamp_ms=0)


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
        self.more = LoopbackServer(_hostile_more)
        self.stage = Stage()  # an etcd endpoint with odd member lists
        self.probes: dict[int, StallProbe] = {}
        self.down_port = free_ports(1)[0]  # nothing listens there
        self.n = 0

    @staticmethod
    async def _refuse(reader: Any, writer: Any) -> None:
        _reset(writer)  # accepts the connection, then resets it at once

    def __enter__(self) -> Bench:
        self.vm.start()
        self.hostile.start()
        self.refusing.start()
        self.more.start()
        self.stage.start()
        targets = self.work / "sim-targets.json"
        targets.unlink(missing_ok=True)  # (a kept folder's is of an earlier run)
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
        self.more.stop()
        self.stage.stop()
        self.vm.close()

    # -- one run -----------------------------------------------------------------------------

    def group(self, host_port: str, path: str = "/metrics", **labels: str) -> dict[str, Any]:
        return {"targets": [host_port], "labels": {"__metrics_path__": path, **labels}}

    def config(self, row: str, faulty: dict[str, Any] | None, write_url: str, jobs: str = "", rw: str = "") -> Path:
        """The row's config: the healthy members (and ``faulty``) from targets.json and targets.yml
        (empty), more scrape ``jobs`` and remote-write settings ``rw`` as YAML text."""
        folder = self.work / row
        folder.mkdir(parents=True, exist_ok=True)
        groups = [self.groups[i] for i in HEALTHY] + ([faulty] if faulty else [])
        (folder / "targets.json").write_text(json.dumps(groups))
        (folder / "targets.yml").write_text("[]\n")
        cfg = folder / "relay.yml"
        cfg.write_text(
            "global:\n  scrape_interval: 1s\n  scrape_timeout: 800ms\n  body_size_limit: 10MB\n"
            "  sample_limit: 100000\n  label_value_length_limit: 65536\n"
            f"  external_labels: {{bench_row: '{row}'}}\n"
            f"scrape_configs:\n  - job_name: faults\n    file_sd_configs: [{{files: ['{folder / 'targets.json'}', "
            f"'{folder / 'targets.yml'}']}}]\n{jobs}"
            f"remote_write:\n  - url: {write_url}\n{rw}"
            "    queue_config: {batch_send_deadline: 500ms, min_backoff: 50ms, max_backoff: 1s, min_shards: 2}\n"
        )
        return cfg

    def relay(self, cfg: Path, run: str, *extra: str, nofile: int = 0) -> RelayProcess:
        self.n += 1
        relay = RelayProcess(cfg, cfg.parent / f"{run}-{self.n}", *extra, nofile=nofile)
        relay.wait_ready()
        self.probes[id(relay)] = StallProbe(relay.url)
        return relay

    def stop_probe(self, relay: RelayProcess, counts: Counts) -> None:
        probe = self.probes.pop(id(relay), None)
        if probe is not None:
            counts.stall_ms = max(counts.stall_ms, probe.stop())

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
        self.stop_probe(relay, counts)
        if relay.proc.poll() is not None:
            counts.survived = False
            raise RuntimeError(f"the relay ended by itself (exit {relay.proc.returncode}): {relay.log_tail(300)}")
        counts.metrics = relay_metrics(relay)
        batch = relay_parse(relay)
        for mname, labels, value, _ in batch.samples():
            key = (mname, dict(labels).get("job", ""))
            counts.metrics_by_job[key] = counts.metrics_by_job.get(key, 0.0) + value
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
        return Row(name, observed, lost, counts.rss, counts.stall_ms)

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
            if fault == "huge_answer":
                taken = proxy.stats.huge_answer_bytes
                hit += (f" (the relay hung up after at most {taken >> 20} MiB of an answer)" if taken else
                        " (the relay hung up before the proxy's first 1 MiB write of each answer was taken)")
            observed = (f"{hit}; "
                        f"samples failed {m.get('relay_remote_write_samples_failed_total', 0):.0f}, "
                        f"retried {m.get('relay_remote_write_samples_retried_total', 0):.0f}, "
                        f"most pending {counts.max_pending:.0f}, shards at the end "
                        f"{m.get('relay_remote_write_shards', 0):.0f}")
        return Row(name, observed, lost, counts.rss, counts.stall_ms)

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
                   counts.rss, counts.stall_ms)

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
                         f"{counts.pending} pending at the second exit", lost, counts.rss, counts.stall_ms)

    def relay_sigkill_restart(self, outage: bool = False) -> Row:
        row = "relay-sigkill-outage" if outage else "relay-sigkill"
        counts = Counts()
        with ReceiverProxy(self.vm.port) as proxy:
            cfg = self.config(row, None, proxy.write_url)
            sink = cfg.parent / "accepted.jsonl"
            if outage:
                proxy.set_fault("down")
            with self.relay(cfg, "first", "--sink-jsonl", str(sink)) as relay:
                self.watch(relay, self.duration, counts)
                self.stop_probe(relay, counts)
                relay.kill()
                counts.rss = relay.peak_rss
            before = sum(1 for line in sink.open("rb") if line.endswith(b"\n"))
            counts.accepted += before
            with self.relay(cfg, "second") as relay:
                if outage:
                    self.watch(relay, 3, counts)
                    proxy.set_fault("pass")
                self.watch(relay, 8 if outage else 5, counts)
                self.finish(relay, counts)
            lost = self.lost(row, counts, proxy)
        if outage:
            return Row(f"relay: SIGKILL during a receiver outage ({self.duration:g} s), restart, receiver back 3 s "
                       "later", f"{before} samples accepted before the kill, none sent; restarted from the queue, "
                       f"{counts.pending} pending at exit", lost, counts.rss, counts.stall_ms)
        return Row("relay: SIGKILL, restart", f"{before} samples accepted before the kill; restarted from the "
                                               f"queue, {counts.pending} pending at exit", lost, counts.rss,
                   counts.stall_ms)

    # -- hostile input: files, member lists, reloads, secrets, the listener -----------------

    def input_row(self, name: str, act: Callable[[RelayProcess, Path], str], *, jobs: str = "", rw: str = "",
                  nofile: int = 0, row: str = "") -> Row:
        """A relay running 2 s, then ``act`` (changes what it reads; returns what it observed),
        then the rest of the duration: healthy members' samples lost, the loop's longest stall."""
        row = row or "input-" + re.sub(r"[^a-z0-9]+", "-", name.lower())[:48].strip("-")
        counts = Counts()
        with ReceiverProxy(self.vm.port) as proxy:
            cfg = self.config(row, None, proxy.write_url, jobs=jobs, rw=rw)
            with self.relay(cfg, "run", nofile=nofile) as relay:
                self.watch(relay, 2, counts)
                seen = act(relay, cfg)
                self.watch(relay, max(1.0, self.duration - 2), counts)
                with urllib.request.urlopen(relay.url + "/targets", timeout=10) as resp:
                    targets = json.loads(resp.read())["data"]["activeTargets"]
                try:
                    self.finish(relay, counts)
                except RuntimeError:
                    return Row(name, f"{seen}; the relay ended", "?", relay.peak_rss, counts.stall_ms, "no")
            lost = self.lost(row, counts, proxy)
        m = counts.metrics
        healthy = [t for t in targets if t["scrapePool"] == "faults"]
        errors = {k: v for k, v in m.items() if k.startswith("relay_discovery_errors_total")}
        observed = (f"{seen}; healthy members up={int(bool(healthy) and all(t['health'] == 'up' for t in healthy))}"
                    f" ({len(healthy)} of {len(HEALTHY)} kept)"
                    + (f", discovery errors {sum(errors.values()):.0f}" if errors else "")
                    + f", missed intervals {m.get('relay_scrape_missed_intervals_total', 0):.0f}")
        return Row(name, observed, lost, counts.rss, counts.stall_ms)

    def _first_error(self, relay: RelayProcess, needle: str) -> str:
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            lines = [ln for ln in relay.log_tail(200_000).splitlines() if needle in ln]
            if lines:
                text = lines[0].split(": ", 1)[-1].replace(str(self.work) + "/", "")
                return f"{len(lines)} log line(s): '{text[:110]}'"
            time.sleep(0.2)
        return f"no log line with {needle!r}"

    def act_file(self, which: str, body: bytes, needle: str) -> Callable[[RelayProcess, Path], str]:
        def act(relay: RelayProcess, cfg: Path) -> str:
            path = cfg.parent / which
            if body:
                path.write_bytes(body)
            else:
                with open(path, "r+b") as f:
                    f.truncate(65 << 20)  # sparse: 65 MiB without the disk
            return self._first_error(relay, needle)
        return act

    def act_member_lists(self, relay: RelayProcess, cfg: Path) -> str:
        odd = [b"[]", b'{"members": ["x"]}', b'{"members": 5}', b"[" * 100_000 + b"]" * 100_000, b"not json",
               b"x" * (17 << 20)]
        for body in odd:
            self.stage.answer("/v3/cluster/member/list", body=body)
            time.sleep(1.2)
        self.stage.answer("/v3/cluster/member/list", body=self._member_list())
        m = relay_metrics(relay)
        dropped = m.get("relay_discovery_dropped_total{client_url_scheme}", 0)
        errors = m.get("relay_discovery_errors_total", 0)
        with urllib.request.urlopen(relay.url + "/targets", timeout=10) as resp:
            kept = [t for t in json.loads(resp.read())["data"]["activeTargets"] if t["scrapePool"] == "etcd"]
        return (f"6 odd member lists ([], members not objects, members 5, JSON 100,000 deep, not JSON, 17 MiB) "
                f"one a second: {errors:.0f} discovery errors, the etcd job's {len(kept)} good member kept; "
                f"non-http client URLs dropped {dropped:.0f}")

    def _member_list(self) -> bytes:
        member = self.groups[HEALTHY[0]]["targets"][0]
        members = [{"ID": "1", "name": "good", "clientURLs": [f"http://{member}"]},
                   {"ID": "2", "name": "sock", "clientURLs": ["unix://localhost:2379"]},
                   {"ID": "3", "name": "file", "clientURLs": ["file:///etc/passwd"]}]
        return json.dumps({"header": {"cluster_id": "9"}, "members": members}).encode()

    def act_reload(self, relay: RelayProcess, cfg: Path) -> str:
        good = cfg.read_bytes()
        bad = [b"[" * 100_000 + b"]" * 100_000,
               ("global:\n  external_labels:\n" + BILLION_LAUGHS.split("labels:\n", 1)[1].replace("    v: *i\n", "")
                ).encode(),
               good.replace(b"job_name: faults", b"job_name: caf\xe9")]
        for body in bad:
            cfg.write_bytes(body)
            relay.proc.send_signal(signal.SIGHUP)
            time.sleep(1.5)
        m = relay_metrics(relay)
        cfg.write_bytes(good)
        return (f"SIGHUP with the config nested 100,000 deep, an alias bomb, a latin-1 byte: reload failures "
                f"{m.get('relay_config_reloads_total{failure}', m.get('relay_config_reloads_total', 0)):.0f}, "
                f"relay_config_last_reload_successful {m.get('relay_config_last_reload_successful', -1):.0f}")

    def act_secrets(self, relay: RelayProcess, cfg: Path) -> str:
        token, password = cfg.parent / "token", cfg.parent / "password"
        token.unlink()
        password.unlink()
        time.sleep(4)
        with urllib.request.urlopen(relay.url + "/targets", timeout=10) as resp:
            auth = [t for t in json.loads(resp.read())["data"]["activeTargets"] if t["scrapePool"] == "auth"]
        m = relay_metrics(relay)
        token.write_text("tok\n")
        password.write_text("pw\n")
        reason = auth[0]["lastErrorReason"] if auth else "?"
        return (f"bearer_token_file and password_file deleted for 4 s: the auth job's scrape reason {reason}, "
                f"remote-write samples failed {m.get('relay_remote_write_samples_failed_total', 0):.0f} (retried "
                f"after the files came back); {self._first_error(relay, 'cannot read authorization')}")

    def secrets_row(self, name: str) -> Row:
        folder = self.work / "input-secrets"
        folder.mkdir(parents=True, exist_ok=True)
        (folder / "token").write_text("tok\n")
        (folder / "password").write_text("pw\n")
        member = self.groups[HEALTHY[0]]["targets"][0]
        jobs = (f"  - job_name: auth\n    basic_auth: {{username: u, password_file: {folder / 'password'}}}\n"
                f"    static_configs: [{{targets: ['{member}'], labels: {{copy: auth}}}}]\n")
        return self.input_row(name, self.act_secrets, jobs=jobs, rw=f"    bearer_token_file: {folder / 'token'}\n",
                              row="input-secrets")

    def act_flood(self, relay: RelayProcess, cfg: Path) -> str:
        flood: list[socket.socket] = []
        try:
            for _ in range(400):
                try:
                    flood.append(socket.create_connection((LOOPBACK, relay.port), timeout=2))
                except OSError:
                    break
            time.sleep(5)
        finally:
            for sock in flood:
                sock.close()
        time.sleep(1.5)
        m = relay_metrics(relay)
        return (f"open-files limit 128, {len(flood)} connections held for 5 s: accept errors "
                f"{m.get('relay_web_accept_errors_total', 0):.0f} (retried after a pause); "
                f"{self._first_error(relay, 'cannot accept')}")

    # -- done means: 1,000 members keep every interval while hostile targets do their worst ----

    def fleet_row(self, members: int = 1000, seconds: float = 60.0, hostile_jobs: bool = True) -> Row:
        """``members`` simulated etcd 3.5 members every 15 s, with hostile jobs every 1 s beside them
        (gzip bomb, endless chunk, churn, long names under a relabel regex, endless body, 500,000
        series, 4 MiB label): missed intervals and scrapes of the healthy members, remote write
        straight to VictoriaMetrics (no proxy: it could not decode 100,000 samples a second)."""
        row = "fleet" if hostile_jobs else "fleet-alone"
        folder = self.work / row
        folder.mkdir(parents=True, exist_ok=True)
        targets = folder / "fleet.json"
        targets.unlink(missing_ok=True)
        sim = subprocess.Popen(
            [sys.executable, "-m", "relay.cli", "sim", "--members", str(members), "--single-port",
             "--write-targets", str(targets), "--duration", str(seconds + 120)],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, cwd=REPO)
        counts = Counts()
        try:
            deadline = time.monotonic() + 60
            while not targets.exists():
                if time.monotonic() > deadline or sim.poll() is not None:
                    raise RuntimeError("relay sim did not write its targets")
                time.sleep(0.2)
            more = f"{LOOPBACK}:{self.more.port}"
            hostile = f"{LOOPBACK}:{self.hostile.port}"
            jobs = "".join(
                f"  - job_name: hostile-{path.strip('/')}\n    scrape_interval: 1s\n    scrape_timeout: 800ms\n"
                f"    metrics_path: {path}\n"
                f"    static_configs: [{{targets: ['{addr}']}}]\n"
                for addr, path in [(more, "/gzip-bomb"), (more, "/endless-chunk"), (more, "/churn"),
                                   (hostile, "/endless"), (hostile, "/many-series"), (hostile, "/huge-label")])
            jobs += REGEX_JOB.format(target=more).replace("job_name: regex", "job_name: hostile-regex\n"
                                                          "    scrape_interval: 1s\n    scrape_timeout: 800ms")
            if not hostile_jobs:
                jobs = ""
            cfg = folder / "relay.yml"
            cfg.write_text(
                "global:\n  scrape_interval: 15s\n  scrape_timeout: 10s\n  body_size_limit: 10MB\n"
                "  sample_limit: 100000\n  label_value_length_limit: 65536\n"
                f"  external_labels: {{bench_row: '{row}'}}\n"
                f"scrape_configs:\n  - job_name: fleet\n    file_sd_configs: [{{files: ['{targets}']}}]\n{jobs}"
                f"remote_write:\n  - url: {self.vm.write_url}\n"
            )
            with self.relay(cfg, "run") as relay:
                self.watch(relay, seconds, counts)
                self.finish(relay, counts)
        finally:
            sim.terminate()
            sim.wait(30)
        m = counts.metrics
        scrapes = {k: v for k, v in m.items() if k.startswith("relay_scrapes_total")}
        stored = self.vm.sample_count(f'{{bench_row="{row}"}}')
        raw = relay_metrics_by_job(counts)
        fleet_scrapes = raw.get(("relay_scrapes_total", "fleet"), 0.0)
        missed = raw.get(("relay_scrape_missed_intervals_total", "fleet"), 0.0)
        hostile_missed = sum(v for (n, j), v in raw.items()
                             if n == "relay_scrape_missed_intervals_total" and j.startswith("hostile"))
        failed = sum(v for (n, j), v in raw.items() if n == "relay_scrape_failures_total" and j == "fleet")
        beside = "beside 7 hostile jobs every 1 s" if hostile_jobs else "alone (the pair's reference)"
        observed = (f"{members} members every 15 s for {seconds:g} s {beside}: fleet scrapes "
                    f"{fleet_scrapes:.0f} (expected about {members * seconds / 15:.0f}), failed {failed:.0f}, "
                    f"**missed intervals of the {members:,}: {missed:.0f}**"
                    + (f"; hostile jobs' own missed {hostile_missed:.0f}" if hostile_jobs else "")
                    + f"; all scrapes {sum(scrapes.values()):.0f}; remote write: shards at the end "
                    f"{m.get('relay_remote_write_shards', 0):.0f}")
        lost = f"{counts.accepted - stored - counts.pending} of {counts.accepted} (VictoriaMetrics holds {stored}"
        lost += f", {counts.pending} still queued on disk after the 30 s drain)" if counts.pending else ")"
        name = (f"{members:,} members + hostile targets (the done-means case)" if hostile_jobs
                else f"{members:,} members alone")
        return Row(name, observed, lost, counts.rss, counts.stall_ms)

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
            "gzip-bomb": ("target gzip bomb (10 GiB of zeros in 10 MB)", g(f"{LOOPBACK}:{self.more.port}", "/gzip-bomb")),
            "endless-chunk": ("target endless chunk (size ffffffffffffffff)",
                              g(f"{LOOPBACK}:{self.more.port}", "/endless-chunk")),
            "churn": ("target churning (10,000 new series every scrape)", g(f"{LOOPBACK}:{self.more.port}", "/churn")),
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
            "rx-2gib": (f"receiver stores, then answers 200 with a 2 GiB body ({w})", "huge_answer", {}),
        }
        for key, (label, fault, args) in receivers.items():
            out[key] = functools.partial(self.receiver_row, label, fault, **args)
        out["sigterm"] = self.relay_sigterm
        out["restart"] = self.relay_sigterm_down_restart
        out["sigkill"] = self.relay_sigkill_restart
        out["sigkill-outage"] = functools.partial(self.relay_sigkill_restart, outage=True)
        out["corrupt"] = functools.partial(self.relay_sigterm_down_restart, corrupt=True)
        more = f"{LOOPBACK}:{self.more.port}"
        out["regex"] = functools.partial(
            self.input_row, "target: 2,000 new 250-byte names a scrape under metric_relabel_configs "
            "regex (.*)_(.*)_(.*)_total", lambda r, c: "the regex job scraped beside the members",
            jobs=REGEX_JOB.format(target=more))
        member = self.groups[HEALTHY[0]]["targets"][0]
        good = json.dumps([self.groups[i] for i in HEALTHY])
        out["latin1"] = functools.partial(self.input_row, "file_sd: one latin-1 byte", self.act_file(
            "targets.json", good.replace("etcd", "\xe9tcd", 1).encode("latin-1"), "not UTF-8"))
        out["deep-json"] = functools.partial(self.input_row, "file_sd: JSON nested 100,000 deep", self.act_file(
            "targets.json", b"[" * 100_000 + b"]" * 100_000, "nested too deeply"))
        out["yaml-bomb"] = functools.partial(self.input_row, "file_sd: YAML alias bomb (billion laughs) as a label value",
                                             self.act_file("targets.yml", BILLION_LAUGHS.format(target=member).encode(),
                                                           "must be a string"))
        out["huge-file"] = functools.partial(self.input_row, "file_sd: a 65 MiB file", self.act_file(
            "targets.json", b"", "larger than"))
        self.stage.answer("/v3/cluster/member/list", body=self._member_list())
        out["member-lists"] = functools.partial(
            self.input_row, "etcd_sd: odd member lists and non-http client URLs", self.act_member_lists,
            jobs=("  - job_name: etcd\n    etcd_sd_configs:\n"
                  f"      - {{endpoints: ['http://{LOOPBACK}:{self.stage.port}'], refresh_interval: 1s}}\n"
                  "    relabel_configs: [{target_label: copy, replacement: etcd_sd}]\n"))
        out["reload"] = functools.partial(self.input_row, "reload: nested, alias bomb, latin-1 configs",
                                          self.act_reload)
        out["secrets"] = functools.partial(self.secrets_row, "secrets: bearer_token_file and password_file deleted")
        out["accept-fd"] = functools.partial(self.input_row, "listener: out of file descriptors on accept",
                                             self.act_flood, nofile=128)
        out["fleet-alone"] = functools.partial(self.fleet_row, hostile_jobs=False)
        out["fleet"] = self.fleet_row
        return out


ROW_KEYS = ["down", "refusing", "slow", "reset", "500", "garbage", "huge", "endless", "many-series", "huge-label",
            "bad-utf8", "gzip-bomb", "endless-chunk", "churn", "regex", "rx-down", "rx-slow", "rx-500", "rx-429",
            "rx-400", "rx-reset", "rx-close", "rx-noanswer", "rx-lost-answer", "rx-2gib", "sigterm", "restart",
            "sigkill", "sigkill-outage", "corrupt", "latin1", "deep-json", "yaml-bomb", "huge-file", "member-lists",
            "reload", "secrets", "accept-fd", "fleet-alone", "fleet"]


def relay_metrics_by_job(counts: Counts) -> dict[tuple[str, str], float]:
    """The fleet row's metrics per (name, job), from the last /metrics read."""
    return counts.metrics_by_job


def table(rows: list[Row]) -> str:
    lines = ["| fault | what was observed | samples lost | longest loop stall (ms) | peak RSS (MiB) | survived |",
             "| --- | --- | --- | --- | --- | --- |"]
    for r in rows:
        lines.append(f"| {r.fault} | {r.observed} | {r.lost} | {r.stall_ms:.0f} | {r.rss_mib:.0f} | {r.survived} |")
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
                    import traceback
                    traceback.print_exc()
                    row = Row(key, f"not measured: {type(exc).__name__}: {exc}", "?", survived="?")
                rows.append(row)
                print(f"[{time.monotonic() - t0:5.1f}s] {row.fault}: {row.observed} | lost {row.lost} | "
                      f"stall {row.stall_ms:.0f} ms | {row.rss_mib:.0f} MiB | survived {row.survived}",
                      file=sys.stderr, flush=True)
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
