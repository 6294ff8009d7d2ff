"""dns_sd_configs against a real DNS server: Debian's dnsmasq on a loopback port, started here."""

from __future__ import annotations

import itertools
import logging
import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import anyio
import dns.rdata
import dns.rdataclass
import dns.rdatatype
import dns.resolver
import pytest

from relay.config import DNSSDConfig
from relay.devtools.localenv import free_ports
from relay.discovery import DNSSDProvider, TargetGroup, records_to_groups
from relay.discovery import dns as dns_sd

from .conftest import missing_service

pytestmark = pytest.mark.anyio

SRV = "_etcd-client._tcp.example.test"


class Dnsmasq:
    """One dnsmasq serving ``records`` (dnsmasq options) for example.test on address:port."""

    def __init__(self, log_dir: Path, address: str = "127.0.0.1", port: int | None = None) -> None:
        self.address = address
        self.port = port or free_ports(1)[0]
        self.log = log_dir / f"dnsmasq-{address}-{self.port}.log"
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self, *records: str) -> None:
        self.stop()
        exe = shutil.which("dnsmasq") or "/usr/sbin/dnsmasq"
        args = [
            exe, "--no-daemon", "--no-resolv", "--no-hosts", f"--port={self.port}",
            f"--listen-address={self.address}", "--bind-interfaces", "--local=/example.test/",
            "--user=root", "--group=root", "--log-facility=-", *records,
        ]  # fmt: skip
        with self.log.open("ab") as out:
            self.proc = subprocess.Popen(args, stdout=out, stderr=subprocess.STDOUT)
        r = dns.resolver.Resolver(configure=False)
        r.nameservers = [self.address]
        r.port = self.port
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:  # ready when it answers (NXDOMAIN is an answer)
            if self.proc.poll() is not None:
                raise RuntimeError(f"dnsmasq exited {self.proc.returncode}: {self.log.read_text()[-500:]}")
            try:
                r.resolve("ready.example.test", "A", lifetime=0.5)
                return
            except dns.resolver.NXDOMAIN:
                return
            except dns.exception.DNSException:
                time.sleep(0.05)
        raise RuntimeError("dnsmasq did not answer within 10 s")

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.terminate()
            self.proc.wait(10)
            self.proc = None


@pytest.fixture
def dnsmasq(tmp_path: Path) -> Iterator[Dnsmasq]:
    if shutil.which("dnsmasq") is None and not Path("/usr/sbin/dnsmasq").exists():
        missing_service("dnsmasq is not installed (Debian package dnsmasq)")
    server = Dnsmasq(tmp_path)
    try:
        yield server
    finally:
        server.stop()


def _config(server: Dnsmasq, names: tuple[str, ...] = (SRV,), **kw: object) -> DNSSDConfig:
    return DNSSDConfig(names=names, refresh_interval=0.1, nameservers=((server.address, server.port),), **kw)  # type: ignore[arg-type]


def _flat(groups: list[TargetGroup]) -> dict[str, dict[str, str]]:
    return {t: dict(g.labels) for g in groups for t in g.targets}


async def _until(seen: list[list[TargetGroup]], check: object, what: str, timeout: float = 10) -> None:
    with anyio.fail_after(timeout):
        while not (seen and check(seen[-1])):  # type: ignore[operator]
            await anyio.sleep(0.02)


MEMBERS = ("--host-record=m1.example.test,127.0.0.11", "--host-record=m2.example.test,127.0.0.12",
           "--host-record=m3.example.test,127.0.0.13")  # fmt: skip


async def test_srv_labels_changes_and_nxdomain_keeps_last(dnsmasq: Dnsmasq, caplog: pytest.LogCaptureFixture) -> None:
    dnsmasq.start(*MEMBERS, f"--srv-host={SRV},m1.example.test,2379,0,10", f"--srv-host={SRV},m2.example.test,12379,0,10")
    provider = DNSSDProvider(_config(dnsmasq), "etcd")
    seen: list[list[TargetGroup]] = []
    async with anyio.create_task_group() as tg:
        tg.start_soon(provider.run, seen.append)
        await _until(seen, lambda g: len(_flat(g)) == 2, "two SRV targets")
        # Exactly the labels Prometheus sets for an SRV record (final dot kept in the label only).
        assert _flat(seen[-1]) == {
            "m1.example.test:2379": {
                "__meta_dns_name": SRV,
                "__meta_dns_srv_record_target": "m1.example.test.",
                "__meta_dns_srv_record_port": "2379",
            },
            "m2.example.test:12379": {
                "__meta_dns_name": SRV,
                "__meta_dns_srv_record_target": "m2.example.test.",
                "__meta_dns_srv_record_port": "12379",
            },
        }
        # A member replaced: picked up on a later refresh.
        dnsmasq.start(*MEMBERS, f"--srv-host={SRV},m1.example.test,2379,0,10", f"--srv-host={SRV},m3.example.test,2379,0,10")
        await _until(seen, lambda g: set(_flat(g)) == {"m1.example.test:2379", "m3.example.test:2379"}, "m3 in")
        good = seen[-1]
        sends = len(seen)
        # The name disappears (NXDOMAIN): the last targets stay, logged once over many refreshes.
        caplog.clear()
        with caplog.at_level(logging.ERROR, logger="relay.discovery.dns"):
            dnsmasq.start(*MEMBERS)
            with anyio.fail_after(10):
                while "NXDOMAIN" not in (provider.last_error or ""):
                    await anyio.sleep(0.02)
            await anyio.sleep(0.6)  # about six more refreshes
            # The server gone too (timeouts): still the same targets, one more line for the new state.
            dnsmasq.stop()
            with anyio.fail_after(10):
                while "timed out" not in (provider.last_error or ""):
                    await anyio.sleep(0.02)
        assert len(seen) == sends and seen[-1] == good
        # Once per change of state (a restart's gap may add one timeout line before NXDOMAIN).
        lines = [r.getMessage() for r in caplog.records]
        assert all(a != b for a, b in itertools.pairwise(lines)), lines
        nx = [line for line in lines if "no such name (NXDOMAIN)" in line]
        assert len(nx) == 1 and "keeping its last targets" in nx[0], lines
        assert "timed out" in lines[-1] and len(lines) <= 3, lines
        # Back again: new records reach the scrape manager.
        dnsmasq.start(*MEMBERS, f"--srv-host={SRV},m2.example.test,2379,0,10")
        await _until(seen, lambda g: set(_flat(g)) == {"m2.example.test:2379"}, "back")
        assert provider.last_error is None
        tg.cancel_scope.cancel()


async def test_a_aaaa_mx_and_empty_answers(dnsmasq: Dnsmasq) -> None:
    dnsmasq.start(
        "--host-record=etcd.example.test,127.0.0.21",
        "--host-record=etcd.example.test,127.0.0.22",
        "--host-record=etcd6.example.test,::1",
        "--mx-host=example.test,mail.example.test,10",
        "--host-record=mail.example.test,127.0.0.25",
    )
    cases = [
        ("etcd.example.test", "A", {"127.0.0.21:2381", "127.0.0.22:2381"}, {}),
        ("etcd6.example.test", "AAAA", {"[::1]:2381"}, {}),
        ("example.test", "MX", {"mail.example.test:2381"}, {"__meta_dns_mx_record_target": "mail.example.test."}),
        # The name exists, with no records of the type: no targets (as Prometheus).
        ("etcd.example.test", "SRV", set(), {}),
    ]
    for name, kind, targets, extra in cases:
        seen: list[list[TargetGroup]] = []
        provider = DNSSDProvider(_config(dnsmasq, (name,), type=kind, port=2381 if kind != "SRV" else 0), "j")
        async with anyio.create_task_group() as tg:
            tg.start_soon(provider.run, seen.append)
            await _until(seen, lambda g: True, f"{kind} answer")
            tg.cancel_scope.cancel()
        assert set(_flat(seen[-1])) == targets, (name, kind)
        for labels in _flat(seen[-1]).values():
            assert labels == {"__meta_dns_name": name, **extra}
        assert provider.last_error is None


async def test_refused_name_keeps_nothing_sent_and_says_why(dnsmasq: Dnsmasq) -> None:
    """A name outside the served zone is REFUSED: an error, and nothing is sent (not an empty list)."""
    dnsmasq.start(*MEMBERS)
    seen: list[list[TargetGroup]] = []
    provider = DNSSDProvider(_config(dnsmasq, ("_etcd-client._tcp.elsewhere.test",)), "j")
    async with anyio.create_task_group() as tg:
        tg.start_soon(provider.run, seen.append)
        with anyio.fail_after(10):
            while provider.last_error is None:
                await anyio.sleep(0.02)
        tg.cancel_scope.cancel()
    assert seen == []
    assert "no server gave a usable answer" in (provider.last_error or "")


async def test_system_resolver_uses_resolv_conf_search_list(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, dnsmasq: Dnsmasq
) -> None:
    """Without ``nameservers``: resolv.conf's server and search list, as Prometheus (port 53 only)."""
    server = Dnsmasq(tmp_path, address="127.0.0.77", port=53)
    try:
        server.start(*MEMBERS, f"--srv-host={SRV},m1.example.test,2379,0,10")
    except RuntimeError as exc:
        pytest.skip(f"cannot serve DNS on 127.0.0.77:53 here: {exc}")
    try:
        conf = tmp_path / "resolv.conf"
        conf.write_text("nameserver 127.0.0.77\nsearch nowhere.test example.test\noptions ndots:3\n")
        monkeypatch.setattr(dns_sd, "RESOLV_CONF", str(conf))
        provider = DNSSDProvider(DNSSDConfig(names=("_etcd-client._tcp",), refresh_interval=0.1), "j")
        seen: list[list[TargetGroup]] = []
        async with anyio.create_task_group() as tg:
            tg.start_soon(provider.run, seen.append)
            await _until(seen, lambda g: True, "an answer")
            tg.cancel_scope.cancel()
        # The configured name is the label, the search domain found the record.
        assert _flat(seen[-1]) == {
            "m1.example.test:2379": {
                "__meta_dns_name": "_etcd-client._tcp",
                "__meta_dns_srv_record_target": "m1.example.test.",
                "__meta_dns_srv_record_port": "2379",
            }
        }
        # A resolv.conf that cannot be read: an error, not a crash.
        monkeypatch.setattr(dns_sd, "RESOLV_CONF", str(tmp_path / "missing.conf"))
        provider = DNSSDProvider(DNSSDConfig(names=(SRV,), refresh_interval=0.1), "j")
        async with anyio.create_task_group() as tg:
            tg.start_soon(provider.run, seen.append)
            with anyio.fail_after(5):
                while provider.last_error is None:
                    await anyio.sleep(0.02)
            tg.cancel_scope.cancel()
        assert "missing.conf" in (provider.last_error or "")
    finally:
        server.stop()


def test_records_to_groups_ns_srv_root_and_ipv6() -> None:
    def rd(kind: str, text: str) -> object:
        return dns.rdata.from_text(dns.rdataclass.IN, dns.rdatatype.from_text(kind), text)

    (g,) = records_to_groups("example.test", "NS", 9100, [rd("NS", "ns1.example.test.")], "s")
    assert g.targets == ("ns1.example.test:9100",)
    assert dict(g.labels) == {"__meta_dns_name": "example.test", "__meta_dns_ns_record_target": "ns1.example.test."}
    # SRV target "." means "no such service here" (RFC 2782): no target.
    assert records_to_groups("n", "SRV", 0, [rd("SRV", "0 0 2379 .")], "s") == []
    (g,) = records_to_groups("n", "AAAA", 2381, [rd("AAAA", "fd00::1"), rd("AAAA", "fd00::2")], "s")
    assert g.targets == ("[fd00::1]:2381", "[fd00::2]:2381")


async def test_readme_recipe_rewrites_etcd_srv_to_metrics_port(dnsmasq: Dnsmasq) -> None:
    """The README's recipe, as written there, against etcd's SRV records served by dnsmasq."""
    from relay.config import parse_config
    from relay.target import build_target

    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    recipe = readme.split("  - job_name: etcd-dns\n", 1)[1].split("```", 1)[0]
    config = parse_config("scrape_configs:\n  - job_name: etcd-dns\n" + recipe)
    (sc,) = config.scrape_configs
    (d,) = sc.dns_sd_configs
    assert d.names == ("_etcd-client-ssl._tcp.example.com", "_etcd-client._tcp.example.com")
    dnsmasq.start(
        "--local=/example.com/",
        "--srv-host=_etcd-client-ssl._tcp.example.com,m1.example.com,2379,0,10",
        "--srv-host=_etcd-client-ssl._tcp.example.com,m2.example.com,2379,0,10",
    )
    provider = DNSSDProvider(_config(dnsmasq, d.names), "etcd-dns")
    seen: list[list[TargetGroup]] = []
    async with anyio.create_task_group() as tg:
        tg.start_soon(provider.run, seen.append)
        await _until(seen, lambda g: len(_flat(g)) == 2, "two members")
        tg.cancel_scope.cancel()
    targets = [build_target(a, labels, sc) for a, labels in _flat(seen[-1]).items()]
    got = sorted((t.url, t.instance, dict(t.labels)["member"]) for t in targets if t is not None)
    assert got == [
        ("http://m1.example.com:2381/metrics", "m1.example.com:2381", "m1.example.com"),
        ("http://m2.example.com:2381/metrics", "m2.example.com:2381", "m2.example.com"),
    ]
    # The name with no records (NXDOMAIN) is an error kept apart; the other name's targets are sent.
    assert "_etcd-client._tcp.example.com: no such name" in (provider.last_error or "")


async def test_manager_scrapes_dns_and_http_discovered_targets(dnsmasq: Dnsmasq) -> None:
    """Both mechanisms through the scrape manager: real lookups, a real SD endpoint, real scrapes;
    a target DNS no longer lists stops (with staleness markers) and the others keep their loops."""
    import json
    import math
    import threading
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    from relay.batch import Batch
    from relay.config import parse_config
    from relay.http.client import ClientPool
    from relay.metrics import SelfMetrics
    from relay.scrape import ScrapeManager

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            port = self.server.server_address[1]  # type: ignore[index]
            if self.path == "/sd":
                body, kind = json.dumps([{"targets": [f"127.0.0.1:{port}"], "labels": {"via": "http"}}]).encode(), "application/json"
            else:
                body, kind = b"up_metric 1\n", "text/plain; version=0.0.4"
            self.send_response(200)
            self.send_header("Content-Type", kind)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: object) -> None:
            pass

    # The same port on two loopback addresses: what two A records with one configured port need.
    servers = [ThreadingHTTPServer(("127.0.0.1", 0), Handler)]
    port = servers[0].server_address[1]
    servers.append(ThreadingHTTPServer(("127.0.0.2", port), Handler))
    threads = [threading.Thread(target=s.serve_forever, daemon=True) for s in servers]
    for t in threads:
        t.start()
    dnsmasq.start("--host-record=etcd.example.test,127.0.0.1", "--host-record=etcd.example.test,127.0.0.2")
    config = parse_config(
        "scrape_configs:\n"
        "  - job_name: dns\n    scrape_interval: 200ms\n    scrape_timeout: 100ms\n    dns_sd_configs:\n"
        f"      - {{names: [etcd.example.test], type: A, port: {port}, refresh_interval: 100ms,"
        f" nameservers: ['127.0.0.1:{dnsmasq.port}']}}\n"
        "  - job_name: http\n    scrape_interval: 200ms\n    scrape_timeout: 100ms\n    http_sd_configs:\n"
        f"      - {{url: 'http://127.0.0.1:{port}/sd', refresh_interval: 100ms}}\n"
    )
    got: list[Batch] = []
    pool = ClientPool()
    mgr = ScrapeManager(pool, [got.append], SelfMetrics())

    def instances() -> set[tuple[str, str]]:
        return {(lp.target.job, lp.target.instance) for lp in mgr.loops.values()}

    try:
        async with anyio.create_task_group() as tg:
            await tg.start(mgr.run, config)
            want = {("dns", f"127.0.0.1:{port}"), ("dns", f"127.0.0.2:{port}"), ("http", f"127.0.0.1:{port}")}
            with anyio.fail_after(15):
                while instances() != want or any(lp.health.scrapes == 0 for lp in mgr.loops.values()):
                    await anyio.sleep(0.05)
            assert all(lp.health.health == "up" for lp in mgr.loops.values())
            http_loop = next(lp for lp in mgr.loops.values() if lp.target.job == "http")
            assert dict(http_loop.target.labels)["via"] == "http"
            dnsmasq.start("--host-record=etcd.example.test,127.0.0.1")
            with anyio.fail_after(15):
                while ("dns", f"127.0.0.2:{port}") in instances():
                    await anyio.sleep(0.05)
            assert next(lp for lp in mgr.loops.values() if lp.target.job == "http") is http_loop
            await anyio.sleep(0.2)
            gone = [
                s[2] for b in got for s in b.samples()
                if s[0] == "up_metric" and dict(s[1])["instance"] == f"127.0.0.2:{port}"
            ]  # fmt: skip
            assert gone and math.isnan(gone[-1])
            mgr.stop_all()
            tg.cancel_scope.cancel()
    finally:
        await pool.aclose()
        for server, thread in zip(servers, threads, strict=True):
            server.shutdown()
            server.server_close()
            thread.join(5)
