"""Discovery errors, for every mechanism, against real servers on loopback: each failed attempt is
counted (``on_error``, which feeds ``relay_discovery_errors_total{mechanism}``), each error is
logged once per change of state (not once per retry), it is the provider's current error (what
/service-discovery shows), the last good targets are kept, and the provider recovers by itself.

Mechanisms and faults: kubernetes_sd (an unreachable API server, one that resets connections,
401, 403 naming the verb and resource, a malformed event, a watch that never sends), dns_sd
(NXDOMAIN, the DNS server down), http_sd (garbage), etcd_sd (the member list: its server down, an
answer that is not a member list) and file_sd (a file that is not valid). The last test runs a
real ``relay run`` with one broken job per mechanism and reads /metrics and /service-discovery.
"""

from __future__ import annotations

import json
import logging
import shutil
import subprocess
import sys
import threading
import time
import urllib.request
from collections import Counter
from collections.abc import Awaitable, Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import anyio
import pytest

from relay.config import DNSSDConfig, EtcdSDConfig, FileSDConfig, HTTPSDConfig, KubernetesSDConfig
from relay.devtools.localenv import EtcdCluster, free_ports, wait_http
from relay.discovery import DNSSDProvider, EtcdSDProvider, FileSDProvider, HTTPSDProvider, TargetGroup
from relay.discovery.base import Provider
from relay.http.client import ClientPool

from .conftest import available, missing_service
from .fakek8s import FakeK8s, kubeadm_objects

pytestmark = pytest.mark.anyio

NODES = [("cp-1", "127.0.13.1"), ("cp-2", "127.0.13.2"), ("cp-3", "127.0.13.3")]
ETCD = {f"{ip}:2381" for _, ip in NODES}
SRV = "_etcd-client._tcp.example.test"


class Probe:
    """One provider, run: what it sends, each error it counts, the error lines it logs."""

    def __init__(self, provider: Provider, caplog: pytest.LogCaptureFixture) -> None:
        self.provider = provider
        self.caplog = caplog
        self.sent: list[list[TargetGroup]] = []
        self.errors: list[str] = []
        provider.on_error = self.errors.append
        caplog.set_level(logging.INFO, logger="relay")

    def addresses(self) -> set[str]:
        return {t for g in self.sent[-1] for t in g.targets} if self.sent else set()

    def logged(self, level: int = logging.ERROR) -> list[str]:
        return [r.getMessage() for r in self.caplog.records if r.levelno == level and r.name.startswith("relay")]

    async def until(self, check: Callable[[], object], what: str, timeout: float = 20.0) -> None:
        try:
            with anyio.fail_after(timeout):
                while not check():
                    await anyio.sleep(0.02)
        except TimeoutError:
            raise AssertionError(f"not within {timeout:g} s: {what}; errors {self.errors[-3:]}, "
                                 f"logged {self.logged()[-3:]}") from None

    async def breaks_and_mends(self, break_it: Callable[[], object], mend_it: Callable[[], object], says: str,
                               parts: int = 1) -> None:
        """From a good state: ``break_it()``; then every failed attempt is counted, ``says`` is the
        current error and was logged, no error line is logged twice however many attempts fail
        (``parts``: how many parts of the provider fail on their own, each counted), the targets
        stay; ``mend_it()``: the error clears and the recovery is logged."""
        await self.until(lambda: self.sent and self.addresses(), "the first targets")
        good, sent = self.addresses(), len(self.sent)
        self.caplog.clear()
        counted = len(self.errors)
        break_it()
        await self.until(lambda: len(self.errors) >= counted + 2 * parts, "two failed attempts, counted")
        shown = self.provider.current_error()
        assert shown is not None and says in shown, shown
        assert "\n" not in shown
        await self.until(lambda: any(says in m for m in self.logged()), f"{says!r} logged")
        first = Counter(self.logged())
        await self.until(lambda: len(self.errors) >= counted + 6 * parts, "more failed attempts, counted", 40.0)
        again = Counter(self.logged())
        assert again == first and set(again.values()) == {1}, again  # once per change of state
        assert self.addresses() == good and len(self.sent) == sent  # the last good targets, nothing sent
        self.caplog.clear()
        mend_it()
        await self.until(lambda: self.provider.current_error() is None, "the error clears")
        assert self.logged() == []
        assert self.logged(logging.INFO), "the recovery is not logged"


async def _run(provider: Provider, caplog: pytest.LogCaptureFixture, body: Callable[[Probe], Awaitable[None]],
               setup: Callable[[anyio.abc.TaskGroup], None] | None = None) -> None:
    probe = Probe(provider, caplog)
    async with anyio.create_task_group() as tg:
        if setup is not None:
            setup(tg)
        tg.start_soon(provider.run, probe.sent.append)
        try:
            await body(probe)
        finally:
            tg.cancel_scope.cancel()


# -- kubernetes_sd ---------------------------------------------------------------------------------

FAST = dict(page_size=500, watch_timeout=(30, 30), idle_margin=0.5, backoff_min=0.02, backoff_max=0.1,
            debounce=0.02, linger=0.2, request_timeout=2.0)


async def _kubernetes(api_url: str, caplog: pytest.LogCaptureFixture, body: Callable[[Probe], Awaitable[None]],
                      **tuning: Any) -> None:
    from relay.discovery.kubernetes import KubernetesHub, KubernetesSDProvider, Tuning

    pool = ClientPool()
    hub = KubernetesHub(pool, Tuning(**{**FAST, **tuning}))

    def setup(tg: anyio.abc.TaskGroup) -> None:
        hub.tg = tg

    try:
        await _run(KubernetesSDProvider(KubernetesSDConfig(role="endpoints", api_server=api_url), "etcd", hub),
                   caplog, body, setup)
    finally:
        await pool.aclose()


@pytest.fixture
def api() -> Iterator[FakeK8s]:
    # Bookmarks, as a real API server sends them: after a malformed or silent stream, the first
    # line of a new stream (an event or a bookmark) is what shows it healthy again.
    with FakeK8s(bookmark_interval=0.3) as fake:
        fake.load(kubeadm_objects(NODES))
        yield fake


def _fault(api: FakeK8s, **faults: Any) -> Callable[[], None]:
    def apply() -> None:
        for name, value in faults.items():
            getattr(api, name).update(value) if isinstance(value, set) else setattr(api, name, value)
        api.drop_watches()
    return apply


def _mend(api: FakeK8s, **values: Any) -> Callable[[], None]:
    def apply() -> None:
        api.forbidden.clear()
        for name, value in values.items():
            setattr(api, name, value)
        api.drop_watches()
    return apply


@pytest.mark.parametrize(
    ("fault", "mend", "says", "parts"),
    [
        ({"down": True}, {"down": False}, "watch endpoints cluster-wide", 3),
        ({"token": "rotated"}, {"token": None}, "HTTP 401 Unauthorized to watch endpoints cluster-wide", 3),
        ({"forbidden": {("watch", "endpoints"), ("list", "endpoints")}}, {},
         "HTTP 403 Forbidden: RBAC does not allow watch on endpoints cluster-wide", 1),
        ({"garbage": 1_000_000}, {"garbage": 0}, "malformed event", 3),
        ({"silent": True}, {"silent": False}, "the stream sent nothing", 3),
    ],
    ids=["resets", "401", "403", "malformed", "silent"],
)
async def test_kubernetes_errors(api: FakeK8s, caplog: pytest.LogCaptureFixture, fault: dict[str, Any],
                                 mend: dict[str, Any], says: str, parts: int) -> None:
    async def body(probe: Probe) -> None:
        await probe.until(lambda: probe.addresses() >= ETCD, "the etcd members")
        await probe.breaks_and_mends(_fault(api, **fault), _mend(api, **mend), says, parts)
        if "403" in says:  # the 403's message names the verb, the resource and the user
            assert any('cannot watch resource "endpoints"' in m for m in probe.errors)

    # A silent stream is given up after its timeoutSeconds and idle_margin: 1 + 0.5 s here.
    await _kubernetes(api.url, caplog, body, **({"watch_timeout": (1, 1)} if "sent nothing" in says else {}))


async def test_kubernetes_unreachable_from_the_start(caplog: pytest.LogCaptureFixture) -> None:
    port = free_ports(1)[0]

    async def body(probe: Probe) -> None:
        await probe.until(lambda: len(probe.errors) >= 9, "failed lists of endpoints, services and pods, counted")
        shown = probe.provider.current_error()
        assert shown is not None and shown.count("cannot list") == 3 and f"127.0.0.1:{port}" in shown
        first = Counter(probe.logged())
        await probe.until(lambda: len(probe.errors) >= 30, "more failed attempts")
        assert Counter(probe.logged()) == first and sorted(first.values()) == [1, 1, 1], first
        assert probe.sent == []  # nothing known, nothing sent (a reload keeps the old targets)

    await _kubernetes(f"http://127.0.0.1:{port}", caplog, body)


# -- dns_sd ----------------------------------------------------------------------------------------


class Dnsmasq:
    """Debian's dnsmasq for example.test on a loopback port, restartable on the same port."""

    def __init__(self, folder: Path) -> None:
        self.port = free_ports(1)[0]
        self.log = folder / "dnsmasq.log"
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self, *records: str) -> None:
        import dns.exception
        import dns.resolver

        self.stop()
        exe = shutil.which("dnsmasq") or "/usr/sbin/dnsmasq"
        with self.log.open("ab") as out:
            self.proc = subprocess.Popen(
                [exe, "--no-daemon", "--no-resolv", "--no-hosts", f"--port={self.port}", "--listen-address=127.0.0.1",
                 "--bind-interfaces", "--local=/example.test/", "--user=root", "--group=root", "--log-facility=-",
                 *records], stdout=out, stderr=subprocess.STDOUT)
        r = dns.resolver.Resolver(configure=False)
        r.nameservers, r.port = ["127.0.0.1"], self.port
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            assert self.proc.poll() is None, self.log.read_text()[-500:]
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


RECORDS = ("--host-record=m1.example.test,127.0.0.11", "--host-record=m2.example.test,127.0.0.12",
           f"--srv-host={SRV},m1.example.test,2379,0,10", f"--srv-host={SRV},m2.example.test,2379,0,10")


def _dns(server: Dnsmasq) -> DNSSDProvider:
    return DNSSDProvider(DNSSDConfig(names=(SRV,), refresh_interval=0.05, nameservers=(("127.0.0.1", server.port),)),
                         "etcd")


async def test_dns_server_down(dnsmasq: Dnsmasq, caplog: pytest.LogCaptureFixture) -> None:
    dnsmasq.start(*RECORDS)
    provider = _dns(dnsmasq)

    async def body(probe: Probe) -> None:
        await probe.until(lambda: probe.addresses() == {"m1.example.test:2379", "m2.example.test:2379"}, "the SRV")
        await probe.breaks_and_mends(dnsmasq.stop, lambda: dnsmasq.start(*RECORDS), "timed out")

    await _run(provider, caplog, body)


async def test_dns_nxdomain(dnsmasq: Dnsmasq, caplog: pytest.LogCaptureFixture) -> None:
    """The SRV record goes away (NXDOMAIN): the last targets stay (Prometheus drops them)."""
    dnsmasq.start(*RECORDS)
    provider = _dns(dnsmasq)
    await _run(provider, caplog, lambda probe: probe.breaks_and_mends(
        lambda: dnsmasq.start(*RECORDS[:2]), lambda: dnsmasq.start(*RECORDS), "no such name (NXDOMAIN)"))


# -- http_sd and etcd_sd's member list: a real HTTP server that answers what it is told -----------


class Answers:
    """A loopback HTTP server answering every GET and POST with ``answer`` (status, type, body)."""

    def __init__(self) -> None:
        self.answer: tuple[int, str, bytes] = (200, "application/json", b"[]")
        self.requests = 0
        outer = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: object) -> None:
                pass

            def _reply(self) -> None:
                self.rfile.read(int(self.headers.get("Content-Length") or 0))
                status, kind, body = outer.answer  # one tuple: no reply mixes two answers
                outer.requests += 1
                self.send_response(status)
                self.send_header("Content-Type", kind)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            do_GET = do_POST = _reply

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def answers() -> Iterator[Answers]:
    server = Answers()
    try:
        yield server
    finally:
        server.close()


GOOD_SD = json.dumps([{"targets": ["127.0.0.11:2381", "127.0.0.12:2381"], "labels": {"cluster": "a"}}]).encode()


async def test_http_sd_garbage(answers: Answers, caplog: pytest.LogCaptureFixture) -> None:
    answers.answer = (200, "application/json", GOOD_SD)
    pool = ClientPool()
    try:
        provider = HTTPSDProvider(HTTPSDConfig(url=answers.url + "/sd", refresh_interval=0.05), "etcd", pool)
        await _run(provider, caplog, lambda probe: probe.breaks_and_mends(
            lambda: setattr(answers, "answer", (200, "application/json", b"<html>502 Bad Gateway</html>")),
            lambda: setattr(answers, "answer", (200, "application/json", GOOD_SD)), "body is not JSON"))
    finally:
        await pool.aclose()


async def test_etcd_sd_member_list_not_a_member_list(answers: Answers, caplog: pytest.LogCaptureFixture) -> None:
    members = {"header": {"cluster_id": "1", "member_id": "2"}, "members": [
        {"ID": "2", "name": "m1", "peerURLs": ["http://127.0.0.11:2380"], "clientURLs": ["http://127.0.0.11:2379"]}]}
    answers.answer = (200, "application/json", json.dumps(members).encode())
    pool = ClientPool()
    try:
        provider = EtcdSDProvider(EtcdSDConfig(endpoints=(answers.url,), refresh_interval=0.05), "etcd", pool)
        await _run(provider, caplog, lambda probe: probe.breaks_and_mends(
            lambda: setattr(answers, "answer", (200, "application/json", b'{"members": ["x"]}')),
            lambda: setattr(answers, "answer", (200, "application/json", json.dumps(members).encode())),
            "unexpected member list"))
    finally:
        await pool.aclose()


async def test_etcd_sd_member_down(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    with available(lambda: EtcdCluster(1, version="3.5", base_dir=tmp_path / "etcd")) as cluster:
        (m,) = cluster.members
        pool = ClientPool()
        try:
            provider = EtcdSDProvider(EtcdSDConfig(endpoints=(m.client_url,), refresh_interval=0.05), "etcd", pool)

            def restart() -> None:
                cluster.start_member(m)
                cluster.wait_member(m)

            await _run(provider, caplog, lambda probe: probe.breaks_and_mends(
                lambda: cluster.stop_member(m), restart, m.client_url))
        finally:
            await pool.aclose()


# -- file_sd ---------------------------------------------------------------------------------------


async def test_file_sd_invalid_file(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    path = tmp_path / "etcd.json"
    path.write_text(GOOD_SD.decode())
    provider = FileSDProvider(FileSDConfig(files=(str(path),), refresh_interval=0.05), "etcd", poll=0.02)

    async def body(probe: Probe) -> None:
        # (file_sd sends what it has after every read: the same targets again while the file is bad)
        await probe.until(lambda: probe.addresses(), "the first targets")
        good = probe.addresses()
        probe.caplog.clear()
        counted = len(probe.errors)
        path.write_text('[{"targets": ["127.0.0.11:2381"]')
        await probe.until(lambda: len(probe.errors) >= counted + 6, "failed reads, counted")
        shown = probe.provider.current_error()
        assert shown is not None and "not valid JSON" in shown and str(path) in shown
        assert Counter(probe.logged()) == Counter({probe.logged()[0]: 1}) and "not valid JSON" in probe.logged()[0]
        assert all({t for g in s for t in g.targets} == good for s in probe.sent[-5:])  # kept
        probe.caplog.clear()
        path.write_text(GOOD_SD.decode())
        await probe.until(lambda: probe.provider.current_error() is None, "the error clears")
        assert probe.logged() == [] and any("valid again" in m for m in probe.logged(logging.INFO))

    await _run(provider, caplog, body)


# -- a running relay: the counter by mechanism, the page -------------------------------------------


@pytest.mark.slow
def test_relay_counts_and_shows_every_mechanisms_errors(tmp_path: Path, answers: Answers) -> None:
    """One job per mechanism, each broken its own way: relay_discovery_errors_total grows for each
    mechanism and /service-discovery shows each error; the relay keeps running."""
    bad_file = tmp_path / "bad.json"
    bad_file.write_text("{not json")
    answers.answer = (200, "application/json", b"<html>")
    down = free_ports(1)[0]
    with FakeK8s() as api:
        api.load(kubeadm_objects(NODES))
        api.forbidden.add(("list", "endpoints"))
        config = tmp_path / "relay.yml"
        config.write_text(f"""\
global: {{scrape_interval: 1h}}
scrape_configs:
  - job_name: k8s
    kubernetes_sd_configs: [{{role: endpoints, api_server: '{api.url}'}}]
  - job_name: dns
    dns_sd_configs: [{{names: ['{SRV}'], refresh_interval: 1s, nameservers: ['127.0.0.1:{down}']}}]
  - job_name: http
    http_sd_configs: [{{url: '{answers.url}/sd', refresh_interval: 1s}}]
  - job_name: etcd
    etcd_sd_configs: [{{endpoints: ['http://127.0.0.1:{down}'], refresh_interval: 1s}}]
  - job_name: file
    file_sd_configs: [{{files: ['{bad_file}'], refresh_interval: 1s}}]
""")
        port = free_ports(1)[0]
        base = f"http://127.0.0.1:{port}"
        log = (tmp_path / "relay.log").open("wb")
        proc = subprocess.Popen([sys.executable, "-m", "relay.cli", "run", "--config", str(config), "--listen",
                                 f"127.0.0.1:{port}"], stdout=log, stderr=subprocess.STDOUT)
        try:
            wait_http(base + "/-/healthy", 30, proc)
            wanted = {"kubernetes": "k8s", "dns": "dns", "http": "http", "etcd": "etcd", "file": "file"}

            def counts() -> dict[str, float]:
                out = {}
                with urllib.request.urlopen(base + "/metrics", timeout=5) as r:
                    for line in r.read().decode().splitlines():
                        if line.startswith("relay_discovery_errors_total{"):
                            labels, value = line.rsplit(" ", 1)
                            for mechanism, job in wanted.items():
                                if f'job="{job}"' in labels and f'mechanism="{mechanism}"' in labels:
                                    out[mechanism] = float(value)
                return out

            deadline = time.monotonic() + 40
            first: dict[str, float] = {}
            while time.monotonic() < deadline and set(first) != set(wanted):
                first = counts()
                time.sleep(0.3)
            assert set(first) == set(wanted) and all(v >= 1 for v in first.values()), first
            while time.monotonic() < deadline and not all(counts().get(m, 0) > first[m] for m in wanted):
                time.sleep(0.3)
            later = counts()
            assert all(later[m] > first[m] for m in wanted), (first, later)  # each failed attempt
            with urllib.request.urlopen(base + "/service-discovery", timeout=5) as r:
                page = r.read().decode()
            for shown in ("RBAC does not allow list on endpoints cluster-wide", "timed out", "body is not JSON",
                          f"http://127.0.0.1:{down}", "not valid JSON"):
                assert shown in page, shown
            assert proc.poll() is None
        finally:
            proc.terminate()
            proc.wait(20)
            log.close()
