"""etcd fleet health: what the health sink and the rule evaluation cost next to the scraping.

    python benchmarks/bench_health.py [--members 1000] [--rounds 30] [--interval 15] [--warm 24]

One process, single core. ``--members`` simulated etcd 3.5.1 members (relay.devtools.sim's bodies:
real bodies whose counters and histograms move) are parsed once per round, as the scrape loops
would, with simulated time advancing ``--interval`` seconds per round; the batches go to a
HealthEngine (the mixin's rules, default windows) and the rules are evaluated once per round
(evaluation_interval = scrape interval). Rounds after the first ``--warm`` (24: six minutes of
simulated time, the 5 m rings are full; 70: the 15 m windows of the leader-change subquery and
failed proposals are full too) are timed; each figure is the median per round.

The relay's CPU per round is the measured relay at the same fleet size and interval in
benchmarks/RESULTS.md (0.134 cores at 1,000 members, 15 s: 2.01 CPU-s per round, scraping, parsing
and remote write); the parse-only column is a lower bound of it measured here. Prints a table;
asserts nothing about time.
"""

from __future__ import annotations

import argparse
import gc
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from relay.devtools import sim
from relay.health import HealthEngine, default_rules
from relay.labels import LabelMerge
from relay.textparse import Parser

RELAY_CORES_1000_15S = 0.134  # benchmarks/RESULTS.md, run of 2026-12-01, 1,000 members, 15 s


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--members", type=int, default=1000)
    ap.add_argument("--rounds", type=int, default=30)
    ap.add_argument("--interval", type=float, default=15.0)
    ap.add_argument("--warm", type=int, default=24, help="rounds before timing (default 24)")
    args = ap.parse_args()
    warm = args.warm
    if args.rounds <= warm:
        ap.error(f"--rounds must be more than {warm}")
    templates = sim.load_templates("3.5", False)
    members = [sim._Member(i, templates[i % 3], 0, None) for i in range(args.members)]
    parsers = []
    ups = []
    for i in range(args.members):
        labels = (("instance", f"10.0.{i // 250}.{i % 250}:2379"), ("job", f"etcd-{i // 3}"))
        p = Parser(on_new_series=LabelMerge(labels, False, ()))
        parsers.append(p)
        ups.append(p.series.add("up", labels))
    engine = HealthEngine(default_rules(), interval=args.interval)
    t0_ms = 1_800_000_000_000
    parse_s: list[float] = []
    ingest_s: list[float] = []
    eval_s: list[float] = []
    gc.collect()
    for r in range(args.rounds):
        elapsed = r * args.interval
        bodies = [m.render(elapsed, False)[0] for m in members]
        ts = t0_ms + int(elapsed * 1000)
        a = time.process_time()
        batches = []
        for p, body, up in zip(parsers, bodies, ups, strict=True):
            assert body is not None
            b = p.parse(body, None, ts)
            b.append(up, 1.0, ts)
            batches.append(b)
        b0 = time.process_time()
        for b in batches:
            engine.ingest(b)
        c = time.process_time()
        engine.evaluate(ts / 1000 + 1)
        d = time.process_time()
        if r >= warm:
            parse_s.append(b0 - a)
            ingest_s.append(c - b0)
            eval_s.append(d - c)
    parse = statistics.median(parse_s)
    ingest = statistics.median(ingest_s)
    ev = statistics.median(eval_s)
    relay_round = RELAY_CORES_1000_15S * args.interval * args.members / 1000
    per_member = [m.nbytes() for m in engine.members.values()]
    print(f"members {args.members}, interval {args.interval:g}s, timed rounds {len(parse_s)}, "
          f"alerts active {len(engine.alerts)}, clusters {len(engine.clusters())}")
    print("| parse ms/round | health ingest ms/round | health eval ms/round | health ms/round | "
          "% of parse | % of relay CPU (RESULTS.md) | state bytes/member (median) |")
    print("|---|---|---|---|---|---|---|")
    health = ingest + ev
    print(f"| {parse * 1000:.1f} | {ingest * 1000:.1f} | {ev * 1000:.1f} | {health * 1000:.1f} | "
          f"{100 * health / parse:.1f} % | {100 * health / relay_round:.2f} % | {statistics.median(per_member):,.0f} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
