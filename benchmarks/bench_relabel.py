"""Per-call cost of typical relabel rules (one ``Relabeler(labels)`` call per new series).

Each case is one rule list applied to one label set, timed as the median over rounds of the mean
per call. With ``--against REV`` the same cases also run on ``relay/relabel.py`` as of git revision
REV (loaded beside the current one, in this process), alternating rounds: a paired A/B, e.g.
``python benchmarks/bench_relabel.py --against 04170a5`` compares with the Python-``re`` translation
that RE2 replaced. A pathological case (``(a+)+b`` on 24 ``a`` and a ``c``) is run once per round.
"""

from __future__ import annotations

import argparse
import importlib.util
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from types import ModuleType
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import relay.relabel as current  # noqa: E402

POD = {
    "__address__": "10.132.183.40:80",
    "__meta_kubernetes_namespace": "loki",
    "__meta_kubernetes_pod_container_port_name": "http-metrics",
    "__meta_kubernetes_pod_label_name": "promtail",
    "__meta_kubernetes_pod_label_app_kubernetes_io_instance": "loki-1",
    "__meta_kubernetes_pod_annotation_prometheus_io_port": "3100",
    "job": "kubernetes-pods",
}
SERIES = {"__name__": "etcd_network_peer_sent_bytes_total", "instance": "10.0.0.1:2379", "job": "etcd", "To": "8e9e05c52164694d"}

CASES: list[tuple[str, list[dict[str, Any]], dict[str, str]]] = [
    ("replace, default (.*)", [{"source_labels": ["job"], "target_label": "service"}], SERIES),
    ("drop go_.*|process_.* (miss)", [{"source_labels": ["__name__"], "regex": "go_.*|process_.*", "action": "drop"}], SERIES),
    ("keep etcd_(disk|network)_.*", [{"source_labels": ["__name__"], "regex": "etcd_(disk|network)_.*", "action": "keep"}], SERIES),
    (
        "replace (.+?)(\\:\\d+)?;(\\d+)",
        [
            {
                "source_labels": ["__address__", "__meta_kubernetes_pod_annotation_prometheus_io_port"],
                "regex": "(.+?)(\\:\\d+)?;(\\d+)",
                "target_label": "__address__",
                "replacement": "$1:$3",
            }
        ],
        POD,
    ),
    ("labelmap pod_label_(.+)", [{"regex": "__meta_kubernetes_pod_label_(.+)", "action": "labelmap"}], POD),
    ("labeldrop __meta_.*", [{"regex": "__meta_.*", "action": "labeldrop"}], POD),
    (
        "kubernetes list (6 rules)",
        [
            {"source_labels": ["__meta_kubernetes_pod_container_port_name"], "regex": ".*-metrics", "action": "keep"},
            {"source_labels": ["__meta_kubernetes_pod_label_name"], "regex": "", "action": "drop"},
            {
                "source_labels": ["__address__", "__meta_kubernetes_pod_annotation_prometheus_io_port"],
                "regex": "(.+?)(\\:\\d+)?;(\\d+)",
                "target_label": "__address__",
                "replacement": "$1:$3",
            },
            {"regex": "__meta_kubernetes_pod_label_(.+)", "action": "labelmap"},
            {"source_labels": ["__meta_kubernetes_namespace", "__meta_kubernetes_pod_label_name"], "separator": "/", "target_label": "job"},
            {"regex": "__meta_.*", "action": "labeldrop"},
        ],
        POD,
    ),
]
PATHOLOGICAL = ([{"source_labels": ["v"], "regex": "(a+)+b", "action": "drop"}], {"v": "a" * 24 + "c"})


def load_revision(rev: str) -> ModuleType:
    """relay/relabel.py as of `rev`, imported as a sibling module of the current relay package."""
    text = subprocess.run(
        ["git", "-C", str(ROOT), "show", f"{rev}:relay/relabel.py"], check=True, capture_output=True, text=True
    ).stdout
    folder = Path(tempfile.mkdtemp(prefix="bench-relabel-"))
    path = folder / "relabel_before.py"
    path.write_text(text)
    spec = importlib.util.spec_from_file_location("relay._relabel_before", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    module.__package__ = "relay"
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def per_call(fn: Callable[[], object], calls: int) -> float:
    start = time.perf_counter()
    for _ in range(calls):
        fn()
    return (time.perf_counter() - start) / calls


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--against", metavar="REV", help="also time relay/relabel.py of this git revision")
    ap.add_argument("--rounds", type=int, default=9)
    ap.add_argument("--calls", type=int, default=3000)
    args = ap.parse_args()
    impls: dict[str, ModuleType] = {"now": current}
    if args.against:
        impls = {f"{args.against}": load_revision(args.against), "now": current}
    rows: dict[str, dict[str, list[float]]] = {}
    for name, raw, labels in [*CASES, ("(a+)+b, 24 a + c (1 call)", *PATHOLOGICAL)]:
        calls = 1 if name.startswith("(a+)+b") else args.calls
        fns = {}
        for impl_name, mod in impls.items():
            relabeler = mod.Relabeler(mod.parse_relabel_configs(raw, "bench"))
            outs = relabeler(labels)
            fns[impl_name] = (lambda r=relabeler, lb=labels: r(lb))
            if impl_name == "now" and len(impls) == 2:
                assert outs == next(iter(impls.values())).Relabeler(
                    next(iter(impls.values())).parse_relabel_configs(raw, "bench")
                )(labels), name
        rows[name] = {k: [] for k in impls}
        for _ in range(args.rounds if calls > 1 else 3):
            for impl_name, fn in fns.items():  # alternating: one round of each, in turn
                rows[name][impl_name].append(per_call(fn, calls))
    names = list(impls)
    head = f"{'case':34}" + "".join(f"{n:>14}" for n in names) + ("   ratio" if len(names) == 2 else "")
    print(head)
    print("-" * len(head))
    for name, times in rows.items():
        med = [statistics.median(times[n]) for n in names]
        cells = "".join(f"{m * 1e6:>11.2f} us" for m in med)
        ratio = f"  {med[1] / med[0]:6.2f}x" if len(med) == 2 else ""
        print(f"{name:34}{cells}{ratio}")


if __name__ == "__main__":
    main()
