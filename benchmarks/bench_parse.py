"""Parser throughput: relay's two twins against prometheus-client, on real etcd 3.5.1 bodies.

    python benchmarks/bench_parse.py [--repeats 7] [--seconds 0.3]

Single core, all implementations side by side in one run; each figure is the median of the
repeats (interleaved across implementations). "warm" is a later scrape of the same target (same Parser: every series cached), "cold" a
fresh Parser per body (every series new: labels parsed and encoded), relay.textparse is the one-shot
function (cold too). Also prints the memory the series cache holds per cached series, beyond the
series text itself. Prints a table; asserts nothing about time.
"""

from __future__ import annotations

import argparse
import gc
import importlib
import statistics
import sys
import time
import tracemalloc
from collections.abc import Callable
from pathlib import Path
from typing import Any

from prometheus_client.parser import text_string_to_metric_families

from relay.textparse import _text_py

SHARED = Path(__file__).resolve().parents[1] / "tests" / "data"  # copies of ../shared
BODIES = [p.read_bytes() for p in sorted((SHARED / "etcd-metrics").glob("etcd-3.5.1-*.prom"))]
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
T0 = 1_700_000_000_000


def prometheus_client_parse() -> Callable[[bytes], int]:
    def run(body: bytes) -> int:
        return sum(len(f.samples) for f in text_string_to_metric_families(body.decode()))

    return run


def cold(factory: Callable[[], Any]) -> Callable[[bytes], int]:
    def run(body: bytes) -> int:
        return len(factory().parse(body, CONTENT_TYPE, T0))

    return run


def warm(factory: Callable[[], Any]) -> Callable[[bytes], int]:
    parsers = [factory() for _ in BODIES]
    for p, body in zip(parsers, BODIES, strict=True):
        p.parse(body, CONTENT_TYPE, T0)
    by_body = {id(body): p for p, body in zip(parsers, BODIES, strict=True)}

    def run(body: bytes) -> int:
        return len(by_body[id(body)].parse(body, CONTENT_TYPE, T0))

    return run


def one_shot(module: Any) -> Callable[[bytes], int]:
    def run(body: bytes) -> int:
        return len(module.parse(body, CONTENT_TYPE, T0))

    return run


def calibrate(run: Callable[[bytes], int], seconds: float) -> int:
    """Number of passes over the bodies that takes about ``seconds``."""
    rounds = 1
    while True:
        t = time.perf_counter()
        for _ in range(rounds):
            for body in BODIES:
                run(body)
        elapsed = time.perf_counter() - t
        if elapsed > seconds / 4 or rounds > 1 << 16:
            return max(1, int(rounds * seconds / max(elapsed, 1e-9)))
        rounds *= 2


def one_round(run: Callable[[bytes], int], rounds: int) -> tuple[float, float]:
    """(samples/s, MB/s) of ``rounds`` passes over the bodies."""
    gc.collect()
    samples = 0
    t = time.perf_counter()
    for _ in range(rounds):
        for body in BODIES:
            samples += run(body)
    elapsed = time.perf_counter() - t
    return samples / elapsed, rounds * sum(len(b) for b in BODIES) / elapsed / 1e6


def measure(run: Callable[[bytes], int], seconds: float, repeats: int) -> tuple[float, float]:
    """Median (samples/s, MB/s) of ``repeats`` rounds of about ``seconds`` (one implementation)."""
    passes = calibrate(run, seconds)
    rounds = [one_round(run, passes) for _ in range(repeats)]
    return statistics.median(r[0] for r in rounds), statistics.median(r[1] for r in rounds)


def cache_memory(factory: Callable[[], Any], c_twin: bool) -> tuple[int, float]:
    """(cached series, bytes per cached series beyond the series text) for one body's cache."""
    body = BODIES[0]
    tracemalloc.start()
    parser = factory()
    table = parser.series
    base = tracemalloc.get_traced_memory()[0]
    parser.parse(body, CONTENT_TYPE, T0)
    traced = tracemalloc.get_traced_memory()[0] - base
    tracemalloc.stop()
    # the series table is the parser's output, not its cache: take it out
    table_bytes = table.nbytes()
    n = len(parser)
    if c_twin:
        # exact: slot tables (keys and comment lines), unused arena capacity, the per-key list
        slots, text, capacity, info_list = parser.cache_bytes()
        overhead = slots + (capacity - text) + info_list
    else:
        text = sum(len(k) for k in parser._cache)
        overhead = traced - table_bytes - text
    return n, overhead / n


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--repeats", type=int, default=7)
    ap.add_argument("--seconds", type=float, default=0.3, help="length of one repeat")
    args = ap.parse_args()

    rows: list[tuple[str, Callable[[bytes], int]]] = [("prometheus-client text_string_to_metric_families",
                                                       prometheus_client_parse())]
    rows += [("relay pure-Python, cold (fresh Parser)", cold(_text_py.Parser)),
             ("relay pure-Python, warm (same Parser)", warm(_text_py.Parser))]
    try:
        c_parser = importlib.import_module("relay.textparse._text_c").Parser
    except ImportError:
        c_parser = None
        print("relay.textparse._text_c is not built: Cython rows left out", file=sys.stderr)
    if c_parser is not None:
        parse_module = importlib.import_module("relay.textparse")
        rows += [("relay Cython, cold (fresh Parser)", cold(c_parser)),
                 ("relay Cython, relay.parse() one-shot", one_shot(parse_module)),
                 ("relay Cython, warm (same Parser)", warm(c_parser))]

    samples = sum(len(_text_py.Parser().parse(b, CONTENT_TYPE, T0)) for b in BODIES)
    size = sum(len(b) for b in BODIES)
    print(f"bodies: {len(BODIES)} etcd 3.5.1 /metrics, {samples} samples, {size / 1e3:.0f} kB; "
          f"median of {args.repeats} repeats of ~{args.seconds}s, one core")
    print()
    header = f"| {'implementation':<52} | {'samples/s':>12} | {'MB/s':>8} | {'x prometheus-client':>19} |"
    print(header)
    print("|" + "-" * 54 + "|" + "-" * 14 + ":|" + "-" * 9 + ":|" + "-" * 20 + ":|")
    # repeats are interleaved (every implementation once per repeat), so that load from other
    # processes on a shared machine falls on all rows alike; each figure is the median
    passes = [calibrate(run, args.seconds) for _, run in rows]
    results: list[list[tuple[float, float]]] = [[] for _ in rows]
    for _ in range(args.repeats):
        for i, (_, run) in enumerate(rows):
            results[i].append(one_round(run, passes[i]))
    base = statistics.median(r[0] for r in results[0])
    for (name, _), res in zip(rows, results, strict=True):
        rate = statistics.median(r[0] for r in res)
        mbs = statistics.median(r[1] for r in res)
        print(f"| {name:<52} | {rate:>12,.0f} | {mbs:>8.1f} | {rate / base:>19.1f} |", flush=True)
    print()
    print("series cache memory, per cached series, beyond the series text itself:")
    n, per = cache_memory(_text_py.Parser, False)
    print(f"  pure-Python: {per:6.0f} bytes  ({n} series; dict entry + bytes object)")
    if c_parser is not None:
        n, per = cache_memory(c_parser, True)
        print(f"  Cython:      {per:6.0f} bytes  ({n} series; 24-byte slots at load <= 1/2 for keys "
              f"and comment lines, arena slack, one list entry per key)")


if __name__ == "__main__":
    main()
