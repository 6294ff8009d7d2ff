"""CPU to inflate one etcd /metrics gzip body: stdlib zlib vs zlib-ng vs ISA-L (python-isal).

The bodies are real: a real etcd 3.5.1 (and 3.4, where the Debian package is installed) member
started on loopback, its /metrics fetched with ``Accept-Encoding: gzip`` (Go's compress/gzip, the
stream a scraper inflates in production), and the ``relay sim`` body the fleet benchmarks use.
Each module inflates each body with ``decompressobj(47).decompress(data, INFLATE_STEP)``, the call
relay/http/fetch.py makes; CPU time (``time.process_time``) per body is the median of ``--rounds``
rounds in which every module runs once, so machine noise hits all alike::

    python benchmarks/bench_gunzip.py [--bodies 300] [--rounds 11]

Prints a markdown table; asserts nothing about time.
"""

from __future__ import annotations

import argparse
import importlib
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
import zlib
from pathlib import Path
from types import ModuleType

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from relay.devtools.localenv import EtcdCluster, free_ports
from relay.http.fetch import INFLATE_STEP


def _get_gzip(url: str) -> bytes:
    req = urllib.request.Request(url, headers={"Accept-Encoding": "gzip"})
    with urllib.request.urlopen(req, timeout=10) as resp:
        assert resp.headers.get("Content-Encoding") == "gzip", url
        return bytes(resp.read())


def _etcd_body(version: str) -> bytes | None:
    try:
        with EtcdCluster(1, version=version) as cluster:
            time.sleep(1.0)
            return _get_gzip(f"http://{cluster.members[0].metrics_target}/metrics")
    except Exception as exc:  # a missing binary: that row is left out, said on stderr
        print(f"etcd {version}: {exc}", file=sys.stderr)
        return None


def _sim_body() -> bytes:
    (port,) = free_ports(1)
    proc = subprocess.Popen(
        [sys.executable, "-m", "relay.cli", "sim", "--members", "1", "--base-port", str(port), "--duration", "60"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                return _get_gzip(f"http://127.0.0.1:{port}/metrics")
            except OSError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.2)
    finally:
        proc.terminate()
        proc.wait(10)


def _modules() -> dict[str, ModuleType]:
    found: dict[str, ModuleType] = {"zlib (stdlib)": zlib}
    for label, name in (("zlib-ng", "zlib_ng.zlib_ng"), ("isal", "isal.isal_zlib")):
        try:
            found[label] = importlib.import_module(name)
        except ImportError:
            print(f"{label}: not installed (pip install {label.split()[0]})", file=sys.stderr)
    return found


def _cpu_per_body(module: ModuleType, data: bytes, n: int, size: int) -> float:
    t0 = time.process_time()
    for _ in range(n):
        out = module.decompressobj(47).decompress(data, INFLATE_STEP)
    elapsed = time.process_time() - t0
    assert len(out) == size
    return elapsed / n


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0] if __doc__ else None)
    p.add_argument("--bodies", type=int, default=300, help="bodies inflated per module per round")
    p.add_argument("--rounds", type=int, default=11, help="rounds (the median is shown)")
    args = p.parse_args()
    bodies: dict[str, bytes] = {}
    for version in ("3.5", "3.4"):
        if version == "3.4" and not shutil.which("etcd"):
            continue
        body = _etcd_body(version)
        if body is not None:
            bodies[f"real etcd {version} (Go gzip)"] = body
    bodies["relay sim 3.5"] = _sim_body()
    modules = _modules()
    print(f"| body | gzip bytes | inflated | {' | '.join(modules)} | best vs zlib |")
    print(f"| --- | ---: | ---: | {' | '.join('---:' for _ in modules)} | ---: |")
    for label, data in bodies.items():
        size = len(zlib.decompress(data, 47))
        times: dict[str, list[float]] = {m: [] for m in modules}
        for _ in range(args.rounds):
            for name, module in modules.items():
                times[name].append(_cpu_per_body(module, data, args.bodies, size))
        med = {name: statistics.median(v) for name, v in times.items()}
        base = med["zlib (stdlib)"]
        best = min(med.values())
        cells = " | ".join(f"{v * 1e3:.3f} ms" for v in med.values())
        print(f"| {label} | {len(data):,} | {size:,} | {cells} | {base / best:.2f}x |")


if __name__ == "__main__":
    with tempfile.TemporaryDirectory():
        main()
