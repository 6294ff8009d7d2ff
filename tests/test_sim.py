"""The etcd fleet simulator: bodies, value dynamics, gzip, routing, faults, TLS and the CLI front."""

from __future__ import annotations

import argparse
import datetime
import gzip
import ipaddress
import json
import math
import socket
import ssl
import zlib
from pathlib import Path
from typing import Any

import anyio
import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from relay import ConfigError
from relay.devtools import sim

pytestmark = pytest.mark.timeout(60)

REAL = {
    "3.4": ["etcd-3.4.23-member-2381.prom", "etcd-3.4.23-member-2391.prom", "etcd-3.4.23-member-2401.prom"],
    "3.5": ["etcd-3.5.1-member-3381.prom", "etcd-3.5.1-member-3391.prom", "etcd-3.5.1-member-3401.prom"],
}
GZIP = {"Accept-Encoding": "gzip"}
IDENTITY = {"Accept-Encoding": "identity"}


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


def real_body(name: str) -> str:
    return (sim.DATA_DIR / name).read_text()


def families(text: str) -> dict[str, Any]:
    return {f.name: f for f in text_string_to_metric_families(text)}


def samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    out = {}
    for fam in text_string_to_metric_families(text):
        for s in fam.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


async def get(url: str, **kw: Any) -> httpx.Response:
    async with httpx.AsyncClient(timeout=kw.pop("timeout", 5.0)) as client:
        return await client.get(url, **kw)


# -- bodies


@pytest.mark.parametrize("version", ["3.4", "3.5"])
@pytest.mark.parametrize("extensive", [False, True], ids=["default", "extensive"])
@pytest.mark.anyio
async def test_bodies_parse_and_have_the_real_families(version: str, extensive: bool) -> None:
    async with sim.Fleet(sim.SimConfig(members=3, version=version, extensive=extensive)) as fleet:
        for i in range(3):
            r = await get(fleet.metrics_url(i))
            assert r.status_code == 200
            assert r.headers["content-type"] == "text/plain; version=0.0.4; charset=utf-8"
            got = families(r.text)
            want = set(families(real_body(REAL[version][i])))
            if extensive:
                want.add("grpc_server_handling_seconds")
            assert set(got) == want
            real_samples = samples(real_body(REAL[version][i]))
            # same series apart from the member IDs in labels
            assert len(samples(r.text)) >= len(real_samples)


def test_go_float_format_matches_every_value_of_the_real_bodies() -> None:
    checked = 0
    for path in sorted(sim.DATA_DIR.glob("*.prom")):
        for line in path.read_bytes().split(b"\n"):
            if line and not line.startswith(b"#"):
                value = line.rpartition(b" ")[2]
                if value not in (b"+Inf", b"NaN"):
                    assert sim.render_go_float(float(value)) == value
                    checked += 1
    assert checked > 9000
    assert sim.render_go_float(1234567.0) == b"1.234567e+06"
    assert sim.render_go_float(0.5) == b"0.5"
    assert sim.render_go_float(-3.0) == b"-3"


def _check_histograms(text: str) -> None:
    for fam in text_string_to_metric_families(text):
        if fam.type != "histogram":
            continue
        groups: dict[tuple[tuple[str, str], ...], dict[str, Any]] = {}
        for s in fam.samples:
            key = tuple(sorted((k, v) for k, v in s.labels.items() if k != "le"))
            g = groups.setdefault(key, {"buckets": []})
            if s.name.endswith("_bucket"):
                g["buckets"].append((float(s.labels["le"]), s.value))
            elif s.name.endswith("_count"):
                g["count"] = s.value
            elif s.name.endswith("_sum"):
                g["sum"] = s.value
        for key, g in groups.items():
            buckets = sorted(g["buckets"])
            values = [v for _, v in buckets]
            assert values == sorted(values), (fam.name, key)
            assert buckets[-1][0] == math.inf and buckets[-1][1] == g["count"], (fam.name, key)
            assert g["sum"] >= 0


@pytest.mark.anyio
async def test_counters_grow_histograms_stay_consistent_gauges_wander() -> None:
    config = sim.SimConfig(members=3, update_interval=0.05, extensive=True)
    async with sim.Fleet(config) as fleet:
        first = (await get(fleet.metrics_url(2))).text
        await anyio.sleep(1.2)
        second = (await get(fleet.metrics_url(2))).text
    _check_histograms(first)
    _check_histograms(second)
    kinds = {f.name: f.type for f in text_string_to_metric_families(first)}
    a, b = samples(first), samples(second)
    assert a.keys() == b.keys()
    grew = moved = 0
    for key, before in a.items():
        after = b[key]
        family = next(n for n in (key[0], key[0].rsplit("_", 1)[0]) if n in kinds)
        if kinds[family] in ("counter", "histogram") or key[0].endswith(("_count", "_sum")):
            assert after >= before, key
            grew += after > before
        elif kinds[family] == "gauge":
            moved += after != before
    assert grew > 50
    assert moved > 10
    # applied never passes committed, and both grow
    assert b[("etcd_server_proposals_applied_total", ())] <= b[("etcd_server_proposals_committed_total", ())]


@pytest.mark.anyio
async def test_values_are_cached_within_the_update_interval() -> None:
    async with sim.Fleet(sim.SimConfig(members=1, update_interval=60)) as fleet:
        one = (await get(fleet.metrics_url(0))).content
        two = (await get(fleet.metrics_url(0))).content
        assert one == two
        assert fleet.requests_served == 2
        assert fleet.cpu_seconds >= 0


@pytest.mark.anyio
async def test_members_differ_and_a_cluster_names_its_peers() -> None:
    async with sim.Fleet(sim.SimConfig(members=6, seed=7)) as fleet:
        bodies = [samples((await get(fleet.metrics_url(i))).text) for i in range(6)]
    ids = []
    for body in bodies:
        (server_id,) = [dict(k[1])["server_id"] for k in body if k[0] == "etcd_server_id"]
        ids.append(server_id)
    assert len(set(ids)) == 6
    for i, body in enumerate(bodies):
        cluster = i // 3
        mates = {ids[j] for j in range(cluster * 3, cluster * 3 + 3) if j != i}
        remotes = {dict(k[1])["To"] for k in body if k[0] == "etcd_network_peer_sent_bytes_total"}
        assert remotes == mates
        locals_ = {dict(k[1])["Local"] for k in body if k[0] == "etcd_network_active_peers"}
        assert locals_ == {ids[i]}
    leaders = [body[("etcd_server_is_leader", ())] for body in bodies]
    assert leaders.count(1.0) == 2  # one per cluster
    key = (
        "grpc_server_handled_total",
        (
            ("grpc_code", "OK"),
            ("grpc_method", "Put"),
            ("grpc_service", "etcdserverpb.KV"),
            ("grpc_type", "unary"),
        ),
    )
    assert len({body[key] for body in bodies}) > 1


# -- HTTP


@pytest.mark.anyio
async def test_gzip_when_asked_and_only_then() -> None:
    async with (
        sim.Fleet(sim.SimConfig(members=2, update_interval=60)) as fleet,
        httpx.AsyncClient() as client,
    ):
        plain = await client.get(fleet.metrics_url(1), headers=IDENTITY)
        zipped = await client.get(fleet.metrics_url(1), headers=GZIP)
        raw = b""
        async with client.stream("GET", fleet.metrics_url(1), headers=GZIP) as r:
            async for chunk in r.aiter_raw():
                raw += chunk
        head = await client.head(fleet.metrics_url(1), headers=GZIP)
    assert "content-encoding" not in plain.headers
    assert zipped.headers["content-encoding"] == "gzip"
    assert zipped.content == plain.content  # decoded by httpx; same epoch, same bytes
    assert gzip.decompress(raw) == plain.content
    assert zlib.decompressobj(31).decompress(raw) == plain.content
    assert len(raw) < len(plain.content) / 3
    assert int(head.headers["content-length"]) == len(raw) and head.content == b""

    async with sim.Fleet(sim.SimConfig(members=1, gzip=False)) as fleet:
        r = await get(fleet.metrics_url(0), headers=GZIP)
        assert "content-encoding" not in r.headers
        assert "etcd_server_has_leader 1" in r.text


@pytest.mark.anyio
async def test_keep_alive_and_pipelining() -> None:
    async with sim.Fleet(sim.SimConfig(members=1)) as fleet:
        host, port = fleet.targets[0].rsplit(":", 1)
        stream = await anyio.connect_tcp(host, int(port))
        async with stream:
            request = b"GET /metrics HTTP/1.1\r\nHost: x\r\nAccept-Encoding: gzip\r\n\r\n"
            await stream.send(request * 3 + b"GET /nope HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            data = b""
            with anyio.fail_after(5):
                while True:
                    try:
                        data += await stream.receive()
                    except anyio.EndOfStream:
                        break
        assert data.count(b"HTTP/1.1 200 OK") == 3
        assert b"HTTP/1.1 404 Not Found" in data
        assert fleet.requests_served == 4


@pytest.mark.anyio
async def test_single_port_serves_members_by_path() -> None:
    async with sim.Fleet(sim.SimConfig(members=4, single_port=True, faults={2: "down"})) as fleet:
        assert len(set(fleet.ports)) == 1
        assert fleet.targets[3].endswith("/member/3/metrics")
        ids: set[str] = set()
        for i in (0, 1, 3):
            r = await get(fleet.metrics_url(i))
            assert r.status_code == 200
            ids.update(dict(k[1])["server_id"] for k in samples(r.text) if k[0] == "etcd_server_id")
        assert len(ids) == 3
        assert (await get(fleet.metrics_url(2))).status_code == 503
        base = fleet.metrics_url(0).split("/member/")[0]
        for path in ("/member/4/metrics", "/metrics", "/member/x/metrics"):
            assert (await get(base + path)).status_code == 404


@pytest.mark.anyio
async def test_fixed_ports_from_base_port() -> None:
    base = free_port_range(3)
    async with sim.Fleet(sim.SimConfig(members=3, base_port=base)) as fleet:
        assert fleet.ports == [base, base + 1, base + 2]
        assert (await get(f"http://127.0.0.1:{base + 2}/metrics")).status_code == 200
        with pytest.raises(ConfigError, match="--base-port"):
            async with sim.Fleet(sim.SimConfig(members=1, base_port=base + 1)):
                pass


@pytest.mark.anyio
async def test_large_fleet_on_free_ports() -> None:
    async with sim.Fleet(sim.SimConfig(members=70, update_interval=0)) as fleet:
        assert len(set(fleet.ports)) == 70
        async with httpx.AsyncClient() as client:
            for i in (0, 35, 69):
                r = await client.get(fleet.metrics_url(i), headers=GZIP)
                assert r.status_code == 200
                _check_histograms(r.text)
        assert fleet.requests_served == 3


def test_config_is_checked_when_a_fleet_is_made() -> None:
    with pytest.raises(ConfigError) as info:
        sim.Fleet(sim.SimConfig(members=2, faults={5: "500"}))
    assert info.value.where == "--fault"
    with pytest.raises(ConfigError, match="unknown fault"):
        sim.Fleet(sim.SimConfig(members=2, faults={1: "flaky"}))


def free_port_range(n: int) -> int:
    """The first of `n` consecutive loopback ports that are free right now (best effort)."""
    for start in range(31000, 32700 - n, 37):
        socks = []
        try:
            for port in range(start, start + n):
                sock = socket.socket()
                socks.append(sock)
                sock.bind(("127.0.0.1", port))
            return start
        except OSError:
            continue
        finally:
            for sock in socks:
                sock.close()
    raise RuntimeError("no free port range")


# -- faults


@pytest.mark.anyio
async def test_faults_do_what_they_say() -> None:
    faults = {1: "500", 2: "garbage", 3: "truncated", 4: "reset", 5: "slow:30", 6: "down", 7: "huge:3"}
    async with sim.Fleet(sim.SimConfig(members=8, faults=faults)) as fleet:
        url = fleet.metrics_url
        assert (await get(url(0))).status_code == 200

        r = await get(url(1))
        assert r.status_code == 500

        r = await get(url(2))
        assert r.status_code == 200
        with pytest.raises(ValueError):
            families(r.content.decode("utf-8", "replace"))

        for headers in (GZIP, IDENTITY):
            with pytest.raises(httpx.RemoteProtocolError, match="complete message body"):
                await get(url(3), headers=headers)

        with pytest.raises((httpx.ReadError, httpx.RemoteProtocolError)):
            await get(url(4))

        with pytest.raises(httpx.ReadTimeout):
            await get(url(5), timeout=0.3)

        with pytest.raises(httpx.ConnectError):
            await get(url(6))

        async with httpx.AsyncClient() as client, client.stream("GET", url(7), headers=GZIP) as r:
            assert "content-encoding" not in r.headers
            size = int(r.headers["content-length"])
            assert 3 * 2**20 - 200 < size <= 3 * 2**20
            body = b"".join([chunk async for chunk in r.aiter_raw()])
        assert len(body) == size
        got = families(body.decode())
        assert "etcd_sim_padding_series" in got and "etcd_server_id" in got
        assert len(got["etcd_sim_padding_series"].samples) > 20000

        # the healthy member is still fine afterwards
        assert (await get(url(0))).status_code == 200


@pytest.mark.anyio
async def test_huge_body_is_streamed_lazily_and_can_be_abandoned() -> None:
    async with sim.Fleet(sim.SimConfig(members=1, faults={0: "huge"}, huge_mb=400)) as fleet:
        async with httpx.AsyncClient() as client, client.stream("GET", fleet.metrics_url(0)) as r:
            assert int(r.headers["content-length"]) > 399 * 2**20
            seen = 0
            async for chunk in r.aiter_raw():
                seen += len(chunk)
                if seen > 4 * 2**20:
                    break
        assert fleet.cpu_seconds < 5  # not 400 MB worth of work
        assert (await get(fleet.metrics_url(0).replace("/metrics", "/health"))).json()["health"] == "true"


def test_parse_faults() -> None:
    faults = sim.parse_faults(["slow=0.1,500=0.05", "down@0/3-5", "huge:50@9"], 100, seed=1)
    kinds = list(faults.values())
    assert faults[0] == faults[3] == faults[5] == "down" and faults[9] == "huge:50"
    assert kinds.count("slow") == 10 and kinds.count("500") == 5
    assert sim.parse_faults(["slow=0.1"], 100, seed=1) == sim.parse_faults(["slow=0.1"], 100, seed=1)
    assert sim.parse_faults(["slow=0.1"], 100, seed=1) != sim.parse_faults(["slow=0.1"], 100, seed=2)
    for bad, words in [
        ("bogus=0.1", "unknown fault"),
        ("slow=2", "between 0 and 1"),
        ("slow@100", "does not exist"),
        ("slow@a", "not a member index"),
        ("500:3@1", "takes no argument"),
        ("slow:-1@1", "positive"),
        ("slow", "KIND=FRACTION"),
    ]:
        with pytest.raises(ConfigError, match=words) as info:
            sim.parse_faults([bad], 100)
        assert info.value.where == "--fault"


# -- TLS


def _make_pki(tmp: Path) -> dict[str, str]:
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    now = datetime.datetime.now(datetime.UTC)

    def name(cn: str) -> x509.Name:
        return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])

    def write(stem: str, cert: x509.Certificate, key: ec.EllipticCurvePrivateKey) -> None:
        (tmp / f"{stem}.pem").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
        (tmp / f"{stem}-key.pem").write_bytes(
            key.private_bytes(
                serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
            )
        )

    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca = (
        x509.CertificateBuilder()
        .subject_name(name("sim-ca"))
        .issuer_name(name("sim-ca"))
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                key_cert_sign=True,
                crl_sign=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .sign(ca_key, hashes.SHA256())
    )
    write("ca", ca, ca_key)
    for stem, usage in (
        ("server", ExtendedKeyUsageOID.SERVER_AUTH),
        ("client", ExtendedKeyUsageOID.CLIENT_AUTH),
    ):
        key = ec.generate_private_key(ec.SECP256R1())
        cert = (
            x509.CertificateBuilder()
            .subject_name(name(f"sim-{stem}"))
            .issuer_name(ca.subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(
                x509.SubjectAlternativeName(
                    [x509.IPAddress(ipaddress.ip_address("127.0.0.1")), x509.DNSName("localhost")]
                ),
                critical=False,
            )
            .add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
            .sign(ca_key, hashes.SHA256())
        )
        write(stem, cert, key)
    return {k: str(tmp / f"{k}.pem") for k in ("ca", "server", "client")} | {
        "server_key": str(tmp / "server-key.pem"),
        "client_key": str(tmp / "client-key.pem"),
    }


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    return _make_pki(tmp_path_factory.mktemp("pki"))


@pytest.mark.anyio
async def test_tls_with_client_certificates(pki: dict[str, str]) -> None:
    config = sim.SimConfig(members=2, tls_ca=pki["ca"], tls_cert=pki["server"], tls_key=pki["server_key"])
    async with sim.Fleet(config) as fleet:
        assert fleet.metrics_url(0).startswith("https://127.0.0.1:")
        ctx = ssl.create_default_context(cafile=pki["ca"])
        ctx.load_cert_chain(pki["client"], pki["client_key"])
        async with httpx.AsyncClient(verify=ctx) as client:
            r = await client.get(fleet.metrics_url(1), headers=GZIP)
            assert r.status_code == 200 and r.headers["content-encoding"] == "gzip"
            assert "etcd_server_id" in families(r.text)
        no_cert = ssl.create_default_context(cafile=pki["ca"])
        async with httpx.AsyncClient(verify=no_cert) as client:
            with pytest.raises((httpx.ConnectError, httpx.ReadError, httpx.RemoteProtocolError)):
                await client.get(fleet.metrics_url(0))
        served = fleet.requests_served
        assert served == 1


# -- CLI front


def parse_cli(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="relay sim")
    sim.add_arguments(parser)
    return parser.parse_args(argv)


def test_no_flags_is_the_default_config() -> None:
    assert sim.validate(parse_cli()) == sim.SimConfig()


def test_validate_turns_flags_into_a_config(pki: dict[str, str]) -> None:
    config = sim.validate(
        parse_cli(
            "--members",
            "9",
            "--version",
            "3.4",
            "--extensive",
            "--single-port",
            "--no-gzip",
            "--update-interval",
            "0.5",
            "--fault",
            "slow=0.34",
            "--fault",
            "down@8",
            "--seed",
            "3",
            "--tls-cert",
            pki["server"],
            "--tls-key",
            pki["server_key"],
            "--tls-ca",
            pki["ca"],
        )
    )
    assert config.members == 9 and config.version == "3.4" and config.extensive and config.single_port
    assert not config.gzip and config.update_interval == 0.5 and config.seed == 3
    assert config.faults[8] == "down" and list(config.faults.values()).count("slow") == 3
    assert config.tls_ca == pki["ca"]


@pytest.mark.parametrize(
    ("argv", "flag"),
    [
        (["--members", "0"], "--members"),
        (["--etcd-version", "3.6"], "--etcd-version"),
        (["--base-port", "65535", "--members", "2"], "--base-port"),
        (["--update-interval", "-1"], "--update-interval"),
        (["--fault", "boom=0.1"], "--fault"),
        (["--fault", "slow@5", "--members", "3"], "--fault"),
        (["--tls-cert", "/nonexistent.pem", "--tls-key", "/nonexistent.pem"], "--tls-cert"),
        (["--tls-key", "/x.pem"], "--tls-cert"),
        (["--duration", "-2"], "--duration"),
        (["--write-targets", "/nonexistent-dir/t.json"], "--write-targets"),
        (["--host", "example.com"], "--host"),
    ],
)
def test_bad_flags_name_the_flag(argv: list[str], flag: str) -> None:
    with pytest.raises(ConfigError) as info:
        sim.validate(parse_cli(*argv))
    assert info.value.where == flag
    assert "\n" not in str(info.value)


def test_main_serves_for_a_duration_and_writes_file_sd(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "targets.json"
    args = parse_cli("--members", "4", "--duration", "0.3", "--write-targets", str(out), "--fault", "down@3")
    assert sim.main(args) == 0
    groups = json.loads(out.read_text())
    assert len(groups) == 4
    assert groups[0]["labels"]["__metrics_path__"] == "/metrics"
    assert groups[0]["labels"]["__scheme__"] == "http"
    assert groups[3]["labels"]["sim_fault"] == "down"
    assert all(g["targets"][0].startswith("127.0.0.1:") for g in groups)
    captured = capsys.readouterr()
    assert "serving 4 simulated etcd 3.5 members" in captured.out
    assert "served 0 requests" in captured.err

    args = parse_cli("--members", "2", "--single-port", "--duration", "0.1", "--write-targets", str(out))
    assert sim.main(args) == 0
    groups = json.loads(out.read_text())
    assert [g["labels"]["__metrics_path__"] for g in groups] == ["/member/0/metrics", "/member/1/metrics"]
    assert groups[1]["labels"]["instance"] == groups[1]["targets"][0] + "/member/1"
