"""TLS as in kubeadm clusters: real etcd members with --client-cert-auth, certificates made here."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

from relay.batch import Batch
from relay.config import parse_config
from relay.devtools.localenv import EtcdCluster, ServiceUnavailable, TLSFiles, make_tls_files
from relay.http.client import ClientPool
from relay.metrics import SelfMetrics
from relay.scrape import ScrapeLoop
from relay.target import Target, build_target
from tests.conftest import missing_service

pytestmark = [pytest.mark.anyio, pytest.mark.services]


@pytest.fixture(scope="module")
def tls_files(tmp_path_factory: pytest.TempPathFactory) -> TLSFiles:
    return make_tls_files(tmp_path_factory.mktemp("pki"))


@pytest.fixture(scope="module")
def tls_member(tls_files: TLSFiles, tmp_path_factory: pytest.TempPathFactory) -> Iterator[EtcdCluster]:
    try:
        cluster = EtcdCluster(1, base_dir=tmp_path_factory.mktemp("etcd-tls"), tls=tls_files)
    except ServiceUnavailable as exc:
        missing_service(str(exc))
    with cluster:
        yield cluster


def tls_target(member_port: int, tls_yaml: str) -> Target:
    sc = parse_config(
        "scrape_configs:\n  - job_name: etcd-tls\n    scheme: https\n    scrape_interval: 5s\n"
        f"    tls_config: {tls_yaml}\n"
    ).scrape_configs[0]
    t = build_target(f"127.0.0.1:{member_port}", {}, sc)
    assert t is not None
    return t


async def scrape(target: Target, pool: ClientPool | None = None) -> tuple[ScrapeLoop, Batch]:
    own = pool is None
    pool = pool or ClientPool()
    loop = ScrapeLoop(target, pool, [], SelfMetrics())
    try:
        return loop, await loop.scrape_once()
    finally:
        if own:
            await pool.aclose()


def names(batch: Batch) -> set[str]:
    return {n for n, *_ in batch.samples()}


async def test_client_certificate_scrape(tls_member: EtcdCluster, tls_files: TLSFiles) -> None:
    m = tls_member.members[0]
    t = tls_target(m.client_port, f"{{ca_file: {tls_files.ca_file}, cert_file: {tls_files.client_cert}, "
                                  f"key_file: {tls_files.client_key}}}")
    loop, batch = await scrape(t)
    assert loop.health.health == "up", loop.health.last_error
    assert "etcd_server_has_leader" in names(batch)


@pytest.mark.parametrize("case", ["no-client-cert", "untrusted-server", "wrong-server-name"])
async def test_tls_failures_are_up_zero_with_reason(
    tls_member: EtcdCluster, tls_files: TLSFiles, tmp_path: Path, case: str
) -> None:
    m = tls_member.members[0]
    client = f"cert_file: {tls_files.client_cert}, key_file: {tls_files.client_key}"
    if case == "no-client-cert":
        yaml = f"{{ca_file: {tls_files.ca_file}}}"
    elif case == "untrusted-server":
        other = make_tls_files(tmp_path / "other", ca_name="other-ca")
        yaml = f"{{ca_file: {other.ca_file}, {client}}}"
    else:
        yaml = f"{{ca_file: {tls_files.ca_file}, {client}, server_name: etcd.example}}"
    loop, batch = await scrape(tls_target(m.client_port, yaml))
    up = [v for n, _, v, _ in batch.samples() if n == "up"]
    assert up == [0.0]
    assert loop.health.last_reason == "tls", (loop.health.last_reason, loop.health.last_error)
    assert tls_files.client_key not in loop.health.last_error


async def test_insecure_skip_verify(tls_member: EtcdCluster, tls_files: TLSFiles) -> None:
    m = tls_member.members[0]
    t = tls_target(m.client_port, f"{{insecure_skip_verify: true, cert_file: {tls_files.client_cert}, "
                                  f"key_file: {tls_files.client_key}}}")
    loop, _ = await scrape(t)
    assert loop.health.health == "up", loop.health.last_error


async def test_rotated_client_certificate_is_picked_up(
    tls_member: EtcdCluster, tls_files: TLSFiles, tmp_path: Path
) -> None:
    m = tls_member.members[0]
    live = tmp_path / "live"
    live.mkdir()
    shutil.copy(tls_files.client_cert, live / "client.crt")
    shutil.copy(tls_files.client_key, live / "client.key")
    t = tls_target(m.client_port, f"{{ca_file: {tls_files.ca_file}, cert_file: {live / 'client.crt'}, "
                                  f"key_file: {live / 'client.key'}}}")
    pool = ClientPool(check_interval=0.0)
    try:
        loop, _ = await scrape(t, pool)
        assert loop.health.health == "up"
        # Rotate to a certificate the server does not trust: the next scrape must use it (and fail).
        other = make_tls_files(tmp_path / "other", ca_name="other-ca")
        shutil.copy(other.client_cert, live / "client.crt")
        shutil.copy(other.client_key, live / "client.key")
        loop, _ = await scrape(t, pool)
        assert loop.health.health == "down"
        # Rotate back to a good one: scraping works again, no restart.
        shutil.copy(tls_files.client_cert, live / "client.crt")
        shutil.copy(tls_files.client_key, live / "client.key")
        loop, _ = await scrape(t, pool)
        assert loop.health.health == "up", loop.health.last_error
    finally:
        await pool.aclose()
