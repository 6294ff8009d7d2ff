"""Loop stalls: how long one large step holds a running relay's event loop, case by case.

    python benchmarks/bench_loop_lag.py                       # every case, about 3 minutes
    python benchmarks/bench_loop_lag.py --only reload --label before

Each case is its own ``relay run`` (a subprocess on loopback, queue in memory, no remote write).
While the case's action runs, a probe thread GETs ``/-/healthy`` every 20 ms and keeps the
longest answer (the longest stall a client saw, to within 20 ms); the relay's own histograms are
read before and after: ``relay_event_loop_lag_seconds`` (how late its 50 ms monitor woke: the
worst bucket reached) and ``relay_event_loop_cpu_seconds`` (the loop thread's CPU per monitor
window: a long step of the relay's own, not a busy machine). Cases:

- reload: a config of 3,000 jobs (one static target each, every label changed), POST /-/reload;
- file_sd: one file_sd file going from 0 to 100,000 targets (scrape interval 5 m), watched until
  ``relay_targets`` says 100,000 and 40 s more (their loops start meanwhile, about 30 s);
- new series: one target whose every answer has 100,000 series never seen before;
- large body: one target with a 100,000-sample body (about 5 MiB), the same series each time;
- gzip: the same body, gzip-compressed on the wire.

Targets of the first two cases are 127.0.0.1:1 (connection refused at once). The histograms'
figures are bucket upper bounds. It asserts nothing.
"""

from __future__ import annotations

import argparse
import gzip
import http.server
import json
import signal
import sys
import tempfile
import threading
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tests.faultproxy import RelayProcess


class Probe:
    """GET /-/healthy every ``period`` seconds in a thread; the longest answer while it runs."""

    def __init__(self, url: str, period: float = 0.02) -> None:
        self.url, self.period, self.worst = url + "/-/healthy", period, 0.0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            t0 = time.monotonic()
            try:
                with urllib.request.urlopen(self.url, timeout=60) as r:
                    r.read()
            except OSError:
                pass
            self.worst = max(self.worst, time.monotonic() - t0)
            time.sleep(self.period)

    def __enter__(self) -> Probe:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(70)


def buckets(text: str, name: str) -> dict[float, float]:
    out: dict[float, float] = {}
    for line in text.splitlines():
        if line.startswith(name + "_bucket{"):
            out[float(line.split('le="', 1)[1].split('"', 1)[0])] = float(line.rsplit(" ", 1)[1])
    return out


def worst_bucket(before: dict[float, float], after: dict[float, float]) -> float | None:
    """The smallest ``le`` holding every observation made between the two readings."""
    if not after:
        return None
    total = after[float("inf")] - before.get(float("inf"), 0.0)
    if total <= 0:  # nothing observed (a relay without the monitor)
        return None
    for le in sorted(after):
        if after[le] - before.get(le, 0.0) >= total:
            return le
    return float("inf")


class BodyServer:
    """A loopback /metrics whose answer ``make(n)`` gives for the n-th request."""

    def __init__(self, make: Callable[[int], bytes], gzipped: bool = False) -> None:
        owner = self
        self.served = 0

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_GET(self) -> None:
                body = make(owner.served)
                owner.served += 1
                self.send_response(200)
                self.send_header("Content-Type", "text/plain; version=0.0.4")
                if gzipped:
                    body = gzip.compress(body, 1)
                    self.send_header("Content-Encoding", "gzip")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: object) -> None:
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self.server.server_address[1]
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def jobs_yaml(n: int, tag: str) -> str:
    lines = ["global: {scrape_interval: 60s, scrape_timeout: 1s}", "scrape_configs:"]
    for i in range(n):
        lines.append(f"  - job_name: j{i}\n    static_configs:\n"
                     f"      - targets: ['127.0.0.1:1']\n        labels: {{tag: {tag}, n: '{i}'}}")
    return "\n".join(lines) + "\n"


def wait_for(check: Callable[[], bool], timeout: float) -> bool:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if check():
            return True
        time.sleep(0.1)
    return False


def metrics(relay: RelayProcess) -> str:
    """The relay's /metrics, waiting as long as it takes (a stalled relay answers late)."""
    with urllib.request.urlopen(relay.url + "/metrics", timeout=300) as r:
        return str(r.read().decode())


def counter(text: str, prefix: str) -> float:
    return sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines() if line.startswith(prefix))


def run_case(name: str, folder: Path) -> dict[str, object]:
    folder.mkdir(parents=True, exist_ok=True)
    config = folder / "relay.yml"
    server: BodyServer | None = None
    action: Callable[[RelayProcess], None]
    settle = 2.0
    if name == "reload":
        config.write_text(jobs_yaml(3000, "a"))

        def action(relay: RelayProcess) -> None:
            config.write_text(jobs_yaml(3000, "b"))
            with urllib.request.urlopen(urllib.request.Request(relay.url + "/-/reload", method="POST"),
                                        timeout=300) as r:
                r.read()
    elif name == "file_sd":
        targets = folder / "targets.json"
        targets.write_text("[]")
        config.write_text("global: {scrape_interval: 5m, scrape_timeout: 1s}\nscrape_configs:\n"
                          f"  - job_name: sd\n    file_sd_configs:\n      - files: ['{targets}']\n")

        def action(relay: RelayProcess) -> None:
            targets.write_text(json.dumps([{"targets": [f"127.0.{i // 250 % 256}.{i % 250 + 1}:{1000 + i // 65536}"
                                                        for i in range(100_000)], "labels": {"env": "b"}}]))
            wait_for(lambda: counter(metrics(relay), 'relay_targets{job="sd"}') >= 100_000, 300)
            time.sleep(40.0)  # the gauge counts the targets; their loops start in slices after it
    else:
        n = 100_000
        if name == "new series":
            server = BodyServer(lambda k: "".join(f'churn{{id="{k}-{i}",pod="p{i % 100}"}} {i}\n'
                                                  for i in range(n)).encode())
        else:
            body = "".join(f'stable_series{{id="{i}",pod="p{i % 100}"}} {i}\n' for i in range(n)).encode()
            server = BodyServer(lambda k: body, gzipped=name == "gzip")
        config.write_text("global: {scrape_interval: 2s, scrape_timeout: 1900ms, sample_limit: 0}\n"
                          f"scrape_configs:\n  - job_name: big\n    static_configs:\n"
                          f"      - targets: ['127.0.0.1:{server.port}']\n")

        def action(relay: RelayProcess) -> None:
            time.sleep(8.0)  # four scrapes
        settle = 0.5
    relay = RelayProcess(config, folder, "--web.enable-lifecycle", queue=False)
    try:
        relay.wait_ready(120)
        time.sleep(settle)
        text = metrics(relay)
        lag0, cpu0 = buckets(text, "relay_event_loop_lag_seconds"), buckets(text, "relay_event_loop_cpu_seconds")
        t0 = time.monotonic()
        with Probe(relay.url) as probe:
            action(relay)
            took = time.monotonic() - t0
            time.sleep(0.5)
        text = metrics(relay)
        row: dict[str, object] = {
            "case": name, "took": took, "probe_worst": probe.worst,
            "lag_worst_le": worst_bucket(lag0, buckets(text, "relay_event_loop_lag_seconds")),
            "cpu_worst_le": worst_bucket(cpu0, buckets(text, "relay_event_loop_cpu_seconds")),
            "scrapes_failed": counter(text, "relay_scrape_failures_total"),
            "peak_rss_mib": relay.sample_rss(),
        }
        relay.proc.send_signal(signal.SIGTERM)  # (RelayProcess.stop reads a remote_write summary: none here)
        relay.proc.wait(60)
    finally:
        if relay.proc.poll() is None:
            relay.proc.kill()
        if server is not None:
            server.close()
    return row


CASES = ("reload", "file_sd", "new series", "large body", "gzip")


def fmt(v: object) -> str:
    if v is None:
        return "-"
    if isinstance(v, float):
        return "inf" if v == float("inf") else f"{v:.3g}"
    return str(v)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--only", default="", help="comma-separated cases (default all): " + ", ".join(CASES))
    ap.add_argument("--label", default="", help="a name for this run in the table (e.g. before, after)")
    ap.add_argument("--json", default=None, help="append the rows to this JSON-lines file")
    args = ap.parse_args(argv)
    cases = [c.strip() for c in args.only.split(",") if c.strip()] or list(CASES)
    rows = []
    with tempfile.TemporaryDirectory(prefix="bench-loop-lag-") as tmp:
        for i, case in enumerate(cases):
            row = run_case(case, Path(tmp) / f"case{i}")
            row["run"] = args.label
            rows.append(row)
            print(json.dumps(row), file=sys.stderr)
    print("| run | case | action took s | longest /-/healthy s | loop lag <= s | loop CPU per window <= s |"
          " failed scrapes | peak RSS MiB |")
    print("|---|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['run']} | {r['case']} | {fmt(r['took'])} | {fmt(r['probe_worst'])} | {fmt(r['lag_worst_le'])} |"
              f" {fmt(r['cpu_worst_le'])} | {fmt(r['scrapes_failed'])} | {fmt(r['peak_rss_mib'])} |")
    if args.json:
        with open(args.json, "a") as f:
            for r in rows:
                f.write(json.dumps(r) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
