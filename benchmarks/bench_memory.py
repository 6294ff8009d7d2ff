"""Memory per scrape target: what one Parser (series cache + SeriesTable + metadata) keeps.

    python benchmarks/bench_memory.py [--targets 50] [--python]

The scenario: ``--targets`` Parsers (the Cython twin unless ``--python`` or
``RELAY_NO_EXTENSIONS=1``), each parsing the same etcd 3.5.1 body once with an ``on_new_series``
hook that adds the target labels ``instance`` (different per target) and ``job``, as the scraper
does. tracemalloc counts every Python allocation (PyMem_* included, so the Cython twin's C tables
too). Components are measured by taking them apart and counting what is freed:

    families        the parser's metadata dict (Family objects, HELP texts)
    parser cache    the rest of the Parser: series cache (C slot tables, or dicts of bytes), etc.
    series table    the SeriesTable (encoded label sets, hashes, dedup index)
    shared          what stays when every target is gone (the Cython twin's cache of Family
                    objects, shared by all targets), divided by the number of targets

The last Batch of each scrape is transient (it goes to the sinks) and is shown on its own line,
not in the total. vmagent, for comparison, holds about 318 KiB per target in all (1,000 targets:
318 MiB peak RSS). Prints a table; asserts nothing.
"""

from __future__ import annotations

import argparse
import gc
import tracemalloc
from pathlib import Path
from typing import Any

DATA = Path(__file__).resolve().parents[1] / "tests" / "data" / "etcd-metrics"
BODY_FILE = DATA / "etcd-3.5.1-member-3381.prom"
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
T0 = 1_700_000_000_000


def hook_for(k: int) -> Any:
    target = (("instance", f"10.0.{k // 250}.{k % 250 + 1}:2379"), ("job", "etcd"))

    def on_new_series(name: str, labels: tuple[tuple[str, str], ...]) -> tuple[str, tuple[tuple[str, str], ...]]:
        return name, (*labels, *target)

    return on_new_series


def traced() -> int:
    gc.collect()
    return tracemalloc.get_traced_memory()[0]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--targets", type=int, default=50)
    ap.add_argument("--python", action="store_true", help="the pure-Python twin")
    args = ap.parse_args()
    if args.python:
        from relay.textparse._text_py import Parser
    else:
        from relay.textparse import Parser
    twin = f"{Parser.__module__}.Parser"
    body = BODY_FILE.read_bytes()
    n_targets = args.targets

    tracemalloc.start()
    hooks = [hook_for(k) for k in range(n_targets)]
    t0 = traced()
    parsers = [Parser(on_new_series=hooks[k]) for k in range(n_targets)]
    batches = [p.parse(body, CONTENT_TYPE, T0) for p in parsers]
    t_all = traced()
    n_series = len(parsers[0].series)
    n_samples = len(batches[0])
    del batches
    t_kept = traced()
    batch_bytes = t_all - t_kept
    # families: swap in an empty dict, count what goes
    families = [p.families for p in parsers]
    for parser in parsers:
        parser.families = {}
    del parser
    t1 = traced()
    del families
    families_bytes = t1 - traced()
    # the parser without its series table
    tables = [p.series for p in parsers]
    t2 = traced()
    del parsers
    parser_bytes = t2 - traced()
    t3 = traced()
    del tables
    table_bytes = t3 - traced()
    # what stays: caches shared by all targets (the Cython twin's Family objects), counted here
    # as their share per target
    shared_bytes = traced() - t0
    tracemalloc.stop()

    total = families_bytes + parser_bytes + table_bytes + shared_bytes
    print(f"{twin}: {n_targets} targets, one etcd 3.5.1 body each ({len(body) / 1e3:.0f} kB, "
          f"{n_samples} samples, {n_series} series with instance/job added); tracemalloc")
    print()
    print(f"| {'component':<34} | {'KiB per target':>14} | {'bytes per series':>16} |")
    print(f"|{'-' * 36}|{'-' * 15}:|{'-' * 17}:|")

    def row(name: str, nbytes: float) -> None:
        per_target = nbytes / n_targets
        print(f"| {name:<34} | {per_target / 1024:>14.1f} | {per_target / n_series:>16.1f} |")

    row("parser cache (series + comments)", parser_bytes)
    row("series table", table_bytes)
    row("families (metadata)", families_bytes)
    row(f"shared by all targets, / {n_targets}", shared_bytes)
    row("total kept per target", total)
    row("(transient: the scrape's Batch)", batch_bytes)


if __name__ == "__main__":
    main()
