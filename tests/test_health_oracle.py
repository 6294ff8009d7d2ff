"""The oracle: Debian's Prometheus (server mode, the etcd mixin's rules with shortened windows and
``for``) and the relay (the same shortening through ``etcd_health.overrides``) scrape the same
targets; their ``/api/v1/alerts`` must name the same alerts with the same labels and states.

Targets: a real etcd 3.5 cluster driven into states (one member stopped, then two of three), and
scenario members: an HTTP server whose etcd bodies carry what real etcd cannot produce on demand
(slow fsync, commit and peer round trips, failed gRPC requests and proposals, leader changes, two
leaders, mixed versions, a nearly full, a fragmented and a fast-growing database).
"""

from __future__ import annotations

import math
import re
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import anyio
import httpx
import pytest
import yaml

from relay.app import Relay, RelayOptions
from relay.config import parse_config
from relay.devtools.localenv import EtcdCluster, ServiceUnavailable, _binary, _HTTPService, free_ports
from relay.health.rules import MIXIN_FILE
from tests.conftest import missing_service
from tests.healthkit import etcd_body, slow

pytestmark = [pytest.mark.services, pytest.mark.slow, pytest.mark.anyio]

FOR = "3s"
# the mixin's ranges, shortened (as README's table maps them): [5m] rates/quantiles/last_over_time,
# [15m] failed proposals, [15m:1m] leader changes (step = window / 15), [120s] peer failures, [4h] growth
WINDOWS = {"[5m]": "[10s]", "[15m]": "[10s]", "[15m:1m]": "[30s:2s]", "[120s]": "[10s]", "[4h]": "[30s]"}
WINDOW_OF = {"etcdHighNumberOfLeaderChanges": "30s", "etcdExcessiveDatabaseGrowth": "30s"}
RANGED = ("etcdMembersDown", "etcdHighNumberOfLeaderChanges", "etcdHighNumberOfFailedGRPCRequests",
          "etcdGRPCRequestsSlow", "etcdMemberCommunicationSlow", "etcdHighNumberOfFailedProposals",
          "etcdHighFsyncDurations", "etcdHighCommitDurations", "etcdDatabaseQuotaLowSpace",
          "etcdExcessiveDatabaseGrowth", "etcdDatabaseHighFragmentationRatio")
# ours, in PromQL, for the oracle
EXTRA_RULES = [
    {"alert": "etcdMultipleLeaders", "expr": 'count without (instance) (etcd_server_is_leader{job=~".*etcd.*"} == 1) > 1',
     "for": FOR, "labels": {"severity": "critical"}},
    {"alert": "etcdMixedVersions",
     "expr": 'count without (server_version) (count without (instance) (etcd_server_version{job=~".*etcd.*"})) > 1',
     "for": FOR, "labels": {"severity": "warning"}},
]


def rules_file(path: Path) -> None:
    doc = yaml.safe_load(MIXIN_FILE.read_text())
    for rule in doc["groups"][0]["rules"]:
        expr = rule["expr"]
        for old, new in WINDOWS.items():
            expr = expr.replace(old, new)
        assert not re.search(r"\[(5m|15m|120s|4h)", expr), expr
        rule["expr"] = expr
        rule["for"] = FOR
    doc["groups"][0]["rules"] += EXTRA_RULES
    doc["groups"][0]["interval"] = "1s"
    path.write_text(yaml.safe_dump(doc))


def overrides() -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    for name in sorted({r["alert"] for r in yaml.safe_load(MIXIN_FILE.read_text())["groups"][0]["rules"]}
                       | {"etcdMultipleLeaders", "etcdMixedVersions"}):
        o: dict[str, Any] = {"alert": name, "for": FOR}
        if name in RANGED:
            o["window"] = WINDOW_OF.get(name, "10s")
        out.append(o)
    return out


class Scenario:
    """Three members of cluster ``etcd-scen`` whose bodies move with the time since start."""

    def __init__(self) -> None:
        self.start = time.monotonic()
        self.servers = [ThreadingHTTPServer(("127.0.0.1", 0), self._handler(i)) for i in range(3)]
        self.threads = [threading.Thread(target=s.serve_forever, daemon=True) for s in self.servers]

    def body(self, member: int) -> bytes:
        e = time.monotonic() - self.start
        n = 100 + 10 * e
        if member == 0:  # slow fsync and peer round trips, a nearly full database, the leader
            return etcd_body(is_leader=1, fsync=slow(n, 0.5), rtt=slow(n, 0.5), db=0.97e9, in_use=0.9e9, quota=1e9)
        if member == 1:  # no leader, 9 % failed and slow gRPC requests, failed proposals, fragmented
            grpc = {("Range", "OK"): 100 * e, ("Range", "Unavailable"): 10 * e, ("Put", "OK"): 5 * e}
            return etcd_body(has_leader=0, grpc=grpc, proposals_failed=10 * e, db=500e6, in_use=200e6, quota=1e9,
                             grpc_handling=slow(n, 0.5))
        # a second leader on another version, elections every 2 s, slow commits, a growing database
        return etcd_body(is_leader=1, version="3.4.23", leader_changes=1 + math.floor(e / 2), commit=slow(n, 0.5),
                         db=1e8 + 1e5 * e, quota=1e9)

    def _handler(self, member: int) -> type[BaseHTTPRequestHandler]:
        scenario = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                data = scenario.body(member)
                self.send_response(200)
                self.send_header("Content-Type", "text/plain; version=0.0.4")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *args: object) -> None:
                pass

        return Handler

    @property
    def targets(self) -> list[str]:
        return [f"127.0.0.1:{s.server_address[1]}" for s in self.servers]

    def __enter__(self) -> Scenario:
        for t in self.threads:
            t.start()
        return self

    def __exit__(self, *exc: object) -> None:
        for s in self.servers:
            s.shutdown()
            s.server_close()


class PrometheusServer(_HTTPService):
    name = "prometheus"

    def __init__(self, base_dir: Path, config: str) -> None:
        self.binary = _binary("prometheus", "prometheus")
        super().__init__(base_dir, free_ports(1)[0])
        (self.base_dir / "prometheus.yml").write_text(config)

    def command(self) -> list[str]:
        return [self.binary, f"--config.file={self.base_dir / 'prometheus.yml'}",
                f"--storage.tsdb.path={self.base_dir / 'data'}", f"--web.listen-address=127.0.0.1:{self.port}",
                "--log.level=error"]


def scrape_yaml(scen_targets: list[str], etcd_targets: list[str]) -> str:
    jobs = [{"job_name": "etcd-scen", "static_configs": [{"targets": scen_targets, "labels": {"cluster": "scen"}}]},
            {"job_name": "etcd-real", "static_configs": [{"targets": etcd_targets}]}]
    return yaml.safe_dump({"scrape_configs": jobs})


@pytest.fixture(scope="module")
def etcd3(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EtcdCluster]:
    try:
        cluster = EtcdCluster(3, version="3.5", base_dir=tmp_path_factory.mktemp("etcd-oracle"))
    except ServiceUnavailable as exc:
        missing_service(str(exc))
    with cluster:
        yield cluster


Key = tuple[str, tuple[tuple[str, str], ...]]


def _alerts(data: dict[str, Any]) -> dict[Key, str]:
    return {(a["labels"]["alertname"], tuple(sorted(a["labels"].items()))): a["state"] for a in data["data"]["alerts"]}


async def _both(client: httpx.AsyncClient, relay_url: str, prom_url: str) -> tuple[dict[Key, str], dict[Key, str]]:
    r = await client.get(relay_url + "/api/v1/alerts")
    p = await client.get(prom_url + "/api/v1/alerts")
    return _alerts(r.json()), _alerts(p.json())


async def _agree(client: httpx.AsyncClient, relay_url: str, prom_url: str, must_fire: set[tuple[str, str]],
                 timeout: float = 45.0) -> dict[Key, str]:
    """Wait until both report the same alerts in the same states, with ``must_fire`` (alertname,
    job) among the firing ones; fail with both sets if they never agree."""
    deadline = time.monotonic() + timeout
    relay: dict[Key, str] = {}
    prom: dict[Key, str] = {}
    while time.monotonic() < deadline:
        relay, prom = await _both(client, relay_url, prom_url)
        firing = {(k[0], dict(k[1]).get("job", "")) for k, s in relay.items() if s == "firing"}
        if relay == prom and must_fire <= firing:
            return relay
        await anyio.sleep(0.5)
    only_relay = {k: v for k, v in relay.items() if prom.get(k) != v}
    only_prom = {k: v for k, v in prom.items() if relay.get(k) != v}
    pytest.fail(f"relay and Prometheus disagree:\n relay only: {only_relay}\n prometheus only: {only_prom}\n"
                f" missing firing: {must_fire - {(k[0], dict(k[1]).get('job', '')) for k in relay}}")


async def test_relay_alerts_match_prometheus(etcd3: EtcdCluster, tmp_path: Path) -> None:
    targets = [m.metrics_target for m in etcd3.members]
    with Scenario() as scen:
        scrapes = scrape_yaml(scen.targets, targets)
        rules = tmp_path / "etcd-rules.yaml"
        rules_file(rules)
        prom_cfg = "global: {scrape_interval: 1s, evaluation_interval: 1s}\n" + \
            f"rule_files: [{rules}]\n" + scrapes
        relay_cfg = "global: {scrape_interval: 1s, evaluation_interval: 1s}\n" + scrapes + \
            yaml.safe_dump({"etcd_health": {"overrides": overrides()}})
        (tmp_path / "relay.yml").write_text(relay_cfg)
        try:
            prom = PrometheusServer(tmp_path / "prom", prom_cfg)
        except ServiceUnavailable as exc:
            missing_service(str(exc))
        with prom:
            relay = Relay(RelayOptions(config_file=str(tmp_path / "relay.yml"), listen=("127.0.0.1", 0)),
                          parse_config(relay_cfg, source="relay.yml"))
            async with anyio.create_task_group() as tg, httpx.AsyncClient(timeout=10) as client:
                port = await tg.start(relay.run)
                url = f"http://127.0.0.1:{port}"
                scen_fire = {(name, "etcd-scen") for name in (
                    "etcdHighFsyncDurations", "etcdMemberCommunicationSlow", "etcdDatabaseQuotaLowSpace",
                    "etcdNoLeader", "etcdHighNumberOfFailedGRPCRequests", "etcdHighNumberOfFailedProposals",
                    "etcdDatabaseHighFragmentationRatio", "etcdHighNumberOfLeaderChanges", "etcdHighCommitDurations",
                    "etcdExcessiveDatabaseGrowth", "etcdMultipleLeaders", "etcdMixedVersions", "etcdGRPCRequestsSlow")}
                # checkpoint 1: everything up; the scenario members' alerts fire in both
                first = await _agree(client, url, prom.url, scen_fire, timeout=60)
                assert not any(dict(k[1]).get("job") == "etcd-real" for k in first)
                # both severities where the mixin has two, with the member's and the method's labels
                assert {(k[0], dict(k[1])["severity"], dict(k[1]).get("instance"), dict(k[1]).get("grpc_method"))
                        for k in first if k[0] in ("etcdHighFsyncDurations", "etcdHighNumberOfFailedGRPCRequests")} == {
                    ("etcdHighFsyncDurations", "warning", scen.targets[0], None),
                    ("etcdHighFsyncDurations", "critical", scen.targets[0], None),
                    ("etcdHighNumberOfFailedGRPCRequests", "warning", scen.targets[1], "Range"),
                    ("etcdHighNumberOfFailedGRPCRequests", "critical", scen.targets[1], "Range")}
                print("checkpoint 1:", sorted((k[0], dict(k[1]).get("instance", "")) for k in first))
                # checkpoint 2: one real member stopped
                await anyio.to_thread.run_sync(etcd3.stop_member, etcd3.members[2])
                await _agree(client, url, prom.url, scen_fire | {("etcdMembersDown", "etcd-real")})
                # checkpoint 3: two of three stopped: no quorum, the survivor has no leader
                await anyio.to_thread.run_sync(etcd3.stop_member, etcd3.members[1])
                last = await _agree(client, url, prom.url, scen_fire | {
                    ("etcdMembersDown", "etcd-real"), ("etcdInsufficientMembers", "etcd-real"),
                    ("etcdNoLeader", "etcd-real")})
                assert ("etcdMembersDown", (("alertname", "etcdMembersDown"), ("job", "etcd-real"),
                                            ("severity", "warning"))) in last
                print("checkpoint 3:", sorted((k[0], dict(k[1]).get("instance", "")) for k in last
                                              if dict(k[1])["job"] == "etcd-real"))
                relay.request_stop()
