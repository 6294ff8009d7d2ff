"""kubernetes_sd_configs at scale, against the fake API server (tests/fakek8s.py).

Two tables:

1. list cost, A/B in alternating rounds (medians): our list (httpx + orjson, plain dicts) against
   kubernetes_asyncio's (aiohttp + its generated models), each in a fresh child process that lists
   and keeps every pod, endpoints and service (pages of 500, as an informer does). kubernetes_asyncio
   is not a dependency: give its interpreter with ``--k8s-asyncio-python`` (a venv with
   ``pip install kubernetes-asyncio``); without it, only our rows are printed.
2. the relay's endpoints role on the same cluster, while Endpoints objects change ``--rate`` times a
   second: time from start to the first complete target set, latency from a change to the provider
   sending it (median, p99), CPU seconds and peak RSS of the process.

    .venv/bin/python benchmarks/bench_k8s_sd.py --pods 10000 --endpoints 3000 --rate 100
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.fakek8s import FakeK8s  # noqa: E402

NS = "bench"


def cluster(api: FakeK8s, pods: int, endpoints: int) -> None:
    per = max(1, pods // endpoints)
    objs: dict[str, list[Any]] = {"pods": [], "services": [], "endpoints": []}
    for i in range(pods):
        ip = f"10.{(i >> 16) & 255}.{(i >> 8) & 255}.{i & 255}"
        objs["pods"].append({
            "metadata": {"name": f"p{i}", "namespace": NS, "labels": {"app": f"a{i // per}", "tier": "x"},
                         "ownerReferences": [{"apiVersion": "apps/v1", "kind": "ReplicaSet", "name": f"rs{i // per}",
                                                 "uid": f"u{i // per}", "controller": True}]},
            "spec": {"nodeName": f"n{i % 100}", "containers": [{"name": "c", "image": "img:1", "ports": [
                {"name": "http", "containerPort": 2381, "protocol": "TCP"}]}]},
            "status": {"phase": "Running", "podIP": ip, "hostIP": "10.255.0.1",
                       "conditions": [{"type": "Ready", "status": "True"}]},
        })
    for e in range(endpoints):
        members = [objs["pods"][j] for j in range(e * per, min(pods, (e + 1) * per))]
        objs["services"].append({"metadata": {"name": f"s{e}", "namespace": NS, "labels": {"app": f"a{e}"}},
                                 "spec": {"clusterIP": "None", "type": "ClusterIP",
                                          "ports": [{"name": "http", "port": 2381, "protocol": "TCP"}]}})
        objs["endpoints"].append(endpoints_obj(e, members, 0))
    api.load(objs)


def endpoints_obj(e: int, members: list[Any], seq: int) -> Any:
    return {"metadata": {"name": f"s{e}", "namespace": NS, "labels": {"app": f"a{e}", "seq": str(seq)}},
            "subsets": [{"addresses": [{"ip": p["status"]["podIP"], "nodeName": p["spec"]["nodeName"],
                                        "targetRef": {"kind": "Pod", "namespace": NS, "name": p["metadata"]["name"]}}
                                       for p in members],
                         "ports": [{"name": "http", "port": 2381, "protocol": "TCP"}]}]}


# -- children ------------------------------------------------------------------------------------

def _rss_peak_mib() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return 0.0


def _cpu() -> float:
    import resource

    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def child_list_ours(url: str) -> dict[str, float]:
    import anyio

    from relay.discovery.kubernetes import Connection, Tuning, Watcher, _Api
    from relay.http.client import ClientPool

    base_rss, base_cpu = _rss_peak_mib(), _cpu()

    async def main() -> list[Watcher]:
        pool = ClientPool()
        api = _Api(Connection(url), pool)
        ws = [Watcher(api, kind, NS, "", "", Tuning()) for kind in ("pod", "endpoints", "service")]
        for w in ws:
            await w._list()
        await pool.aclose()
        return ws

    t0 = time.perf_counter()
    ws = anyio.run(main)
    took = time.perf_counter() - t0
    return {"seconds": took, "cpu": _cpu() - base_cpu, "rss_mib": _rss_peak_mib() - base_rss,
            "objects": float(sum(len(w.objects) for w in ws))}


def child_list_k8s_asyncio(url: str) -> dict[str, float]:
    import asyncio

    from kubernetes_asyncio import client

    base_rss, base_cpu = _rss_peak_mib(), _cpu()

    async def main() -> list[Any]:
        cfg = client.Configuration(host=url)
        async with client.ApiClient(cfg) as api_client:
            v1 = client.CoreV1Api(api_client)
            kept: list[Any] = []
            for fn in (v1.list_namespaced_pod, v1.list_namespaced_endpoints, v1.list_namespaced_service):
                token = None
                while True:
                    page = await fn(NS, limit=500, _continue=token) if token else await fn(NS, limit=500)
                    kept += page.items
                    token = page.metadata._continue
                    if not token:
                        break
            return kept

    t0 = time.perf_counter()
    kept = asyncio.run(main())
    took = time.perf_counter() - t0
    return {"seconds": took, "cpu": _cpu() - base_cpu, "rss_mib": _rss_peak_mib() - base_rss, "objects": float(len(kept))}


def child_provider(url: str, expected: int, out: str, duration: float) -> dict[str, float]:
    import anyio

    from relay.config import KubernetesSDConfig
    from relay.discovery.kubernetes import KubernetesHub, KubernetesSDProvider, Tuning
    from relay.http.client import ClientPool

    seen: dict[str, float] = {}
    result: dict[str, float] = {}
    base_cpu = _cpu()
    t0 = time.time()

    def send(groups: list[Any]) -> None:
        now = time.time()
        if "first" not in result and len(groups) >= expected:
            result["first"] = now - t0
        for g in groups:
            for k, v in g.labels:
                if k == "__meta_kubernetes_endpoints_label_seq" and v != "0" and v not in seen:
                    seen[v] = now

    async def main() -> None:
        pool = ClientPool()
        hub = KubernetesHub(pool, Tuning(debounce=0.2))
        async with anyio.create_task_group() as tg:
            hub.tg = tg
            provider = KubernetesSDProvider(KubernetesSDConfig(role="endpoints", api_server=url, namespaces=(NS,)),
                                            "bench", hub)
            tg.start_soon(provider.run, send)
            await anyio.sleep(duration)
            tg.cancel_scope.cancel()
        await pool.aclose()

    anyio.run(main)
    Path(out).write_text(json.dumps(seen))
    result.update(cpu=_cpu() - base_cpu, rss_mib=_rss_peak_mib())
    return result


# -- parent --------------------------------------------------------------------------------------

def run_child(python: str, mode: str, *args: str) -> dict[str, float]:
    proc = subprocess.run([python, __file__, "--child", mode, *args], capture_output=True, text=True, timeout=900,
                          cwd=ROOT)
    if proc.returncode != 0:
        raise RuntimeError(f"{mode} failed: {proc.stderr[-2000:]}")
    return dict(json.loads(proc.stdout.strip().splitlines()[-1]))


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--pods", type=int, default=10000)
    p.add_argument("--endpoints", type=int, default=3000)
    p.add_argument("--rate", type=float, default=100.0, help="Endpoints changes a second (table 2)")
    p.add_argument("--changes", type=int, default=1000)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--k8s-asyncio-python", default=None)
    p.add_argument("--child", default=None)
    p.add_argument("rest", nargs="*")
    a = p.parse_args()
    if a.child:
        fn = {"ours": child_list_ours, "k8s_asyncio": child_list_k8s_asyncio}.get(a.child)
        if fn is not None:
            print(json.dumps(fn(a.rest[0])))
        else:
            url, expected, out, duration = a.rest
            print(json.dumps(child_provider(url, int(expected), out, float(duration))))
        return

    with FakeK8s() as api:
        t = time.perf_counter()
        cluster(api, a.pods, a.endpoints)
        print(f"fake cluster: {a.pods} pods, {a.endpoints} services and endpoints ({time.perf_counter() - t:.1f} s)\n")
        libs = [("ours (httpx + orjson)", sys.executable, "ours")]
        if a.k8s_asyncio_python:
            libs.append(("kubernetes_asyncio 36.1 (aiohttp, models)", a.k8s_asyncio_python, "k8s_asyncio"))
        rows: dict[str, list[dict[str, float]]] = {name: [] for name, _, _ in libs}
        for _ in range(a.rounds):
            for name, python, mode in libs:
                rows[name].append(run_child(python, mode, api.url))
        print("| list and keep pods+endpoints+services | objects | wall s | CPU s | RSS growth MiB |")
        print("| --- | --- | --- | --- | --- |")
        for name, rs in rows.items():
            med = {k: statistics.median(r[k] for r in rs) for k in rs[0]}
            print(f"| {name} | {med['objects']:.0f} | {med['seconds']:.2f} | {med['cpu']:.2f} | {med['rss_mib']:.0f} |")

        # Table 2: the endpoints role with changes at --rate.
        per = max(1, a.pods // a.endpoints)
        pods = [api.objects["pods"][f"{NS}/p{i}"] for i in range(a.pods)]
        changed: dict[str, float] = {}
        duration = 8.0 + a.changes / a.rate
        with tempfile.TemporaryDirectory() as tmp:
            out = str(Path(tmp) / "seen.json")
            holder: dict[str, dict[str, float]] = {}
            th = threading.Thread(target=lambda: holder.setdefault("r", run_child(
                sys.executable, "provider", api.url, str(min(a.pods, per * a.endpoints)), out, str(duration))))
            th.start()
            time.sleep(6.0)  # past the first complete set
            for n in range(1, a.changes + 1):
                e = n % a.endpoints
                changed[str(n)] = time.time()
                api.put("endpoints", endpoints_obj(e, pods[e * per:(e + 1) * per], n))
                time.sleep(max(0.0, 1 / a.rate - 0.0005))
            th.join()
            seen = json.loads(Path(out).read_text())
        r = holder["r"]
        lat = sorted(seen[k] - changed[k] for k in changed if k in seen)
        p99 = lat[int(0.99 * (len(lat) - 1))] if lat else float("nan")
        print(f"\n| endpoints role, {a.pods} pods, {a.endpoints} Endpoints, {a.rate:g} changes/s | value |")
        print("| --- | --- |")
        print(f"| start to first complete target set | {r.get('first', float('nan')):.2f} s |")
        print(f"| change to send, median / p99 ({len(lat)} of {len(changed)} seen) | "
              f"{statistics.median(lat) * 1000:.0f} / {p99 * 1000:.0f} ms |")
        print(f"| CPU over the run ({duration:.0f} s) | {r['cpu']:.1f} s |")
        print(f"| peak RSS | {r['rss_mib']:.0f} MiB |")


if __name__ == "__main__":
    main()
