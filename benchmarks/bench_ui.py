"""The targets page with many targets: build time and size of one page (relay.http.ui).

    python benchmarks/bench_ui.py [--targets 1000,10000,50000] [--rounds 7]

Synthetic targets of the shape /api/v1/targets has (three jobs, a seventh down with an error);
the page shows ui.TARGETS_PER_PAGE of them plus a summary per job. Median wall time of --rounds
builds of the first page, unfiltered and filtered to one job and state. Prints a table; asserts
nothing about time.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from relay.http import ui


def targets(n: int) -> list[dict[str, Any]]:
    return [{"scrapePool": f"etcd-{i % 3}", "scrapeUrl": f"http://10.0.{i // 250}.{i % 250}:2381/metrics",
             "labels": {"instance": f"10.0.{i // 250}.{i % 250}:2381", "job": f"etcd-{i % 3}", "cluster": f"c{i // 3}"},
             "health": "down" if i % 7 == 0 else "up", "lastError": "cannot connect" if i % 7 == 0 else "",
             "lastScrapeTs": time.time() - 3, "lastScrapeDuration": 0.012, "lastSamples": 1400} for i in range(n)]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0] if __doc__ else None)
    p.add_argument("--targets", default="1000,10000,50000")
    p.add_argument("--rounds", type=int, default=7)
    args = p.parse_args()
    print("| targets | filter | page build ms (median) | page KiB |")
    print("|---:|---|---:|---:|")
    for n in (int(x) for x in args.targets.split(",")):
        data = targets(n)
        for label, query in (("none", {}), ("job=etcd-1&health=down", {"job": ["etcd-1"], "health": ["down"]})):
            times = []
            for _ in range(args.rounds):
                t0 = time.perf_counter()
                body = ui.targets_page(data, query)
                times.append(time.perf_counter() - t0)
            print(f"| {n:,} | {label} | {statistics.median(times) * 1000:.1f} | {len(body) / 1024:.0f} |")


if __name__ == "__main__":
    main()
