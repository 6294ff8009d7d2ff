"""oauth2 (client credentials, RFC 6749 4.4) against a token endpoint of ours on loopback that checks
the grant, for scraping and for remote write into a real VictoriaMetrics behind a Bearer-checking
receiver: the token cached, refreshed before expiry and after a 401, the secret file re-read; the
endpoint down or refusing: a failed scrape and a remote-write retry with reason oauth2, no sample lost."""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from pathlib import Path

import anyio
import pytest

from relay._exceptions import OAuth2Error
from relay.config import parse_config
from relay.devtools.localenv import VictoriaMetrics
from relay.http.client import ClientPool
from relay.metrics import SelfMetrics
from relay.remote.writer import RemoteWriter
from relay.scrape import ScrapeLoop
from relay.target import build_target
from tests.authkit import Receiver, TokenEndpoint, bearer
from tests.test_remote_write import make_batches, run_writer, rw_config

pytestmark = pytest.mark.anyio

SECRET = "s3cret/with+odd chars&=%"  # form-urlencoded before Basic: each of these must survive
CLIENT = "relay client"


@pytest.fixture
def endpoint() -> Iterator[TokenEndpoint]:
    ep = TokenEndpoint(CLIENT, SECRET, scopes=("metrics.write", "metrics.read"), params={"audience": "vm"})
    yield ep
    ep.close()


@pytest.fixture
def target(endpoint: TokenEndpoint) -> Iterator[Receiver]:
    rc = Receiver(bearer(lambda: endpoint.issued))
    yield rc
    rc.close()


def oauth2_yaml(endpoint: TokenEndpoint, secret: str = f"client_secret: '{SECRET}'", indent: str = "    ") -> str:
    return (f"{indent}oauth2:\n{indent}  client_id: {CLIENT}\n{indent}  {secret}\n"
            f"{indent}  token_url: {endpoint.url}\n{indent}  scopes: [metrics.write, metrics.read]\n"
            f"{indent}  endpoint_params: {{audience: vm}}\n")


def scrape_loop(port: int, extra: str, pool: ClientPool) -> ScrapeLoop:
    sc = parse_config(f"scrape_configs:\n  - job_name: a\n    scrape_interval: 5s\n{extra}").scrape_configs[0]
    t = build_target(f"127.0.0.1:{port}", {}, sc)
    assert t is not None
    return ScrapeLoop(t, pool, [], SelfMetrics())


@pytest.mark.parametrize("fast", [True, False], ids=["fast", "httpx"])
async def test_scrape_with_a_cached_token(endpoint: TokenEndpoint, target: Receiver, fast: bool) -> None:
    pool = ClientPool(fast=fast)
    loop = scrape_loop(target.port, oauth2_yaml(endpoint), pool)
    try:
        for _ in range(3):
            await loop.scrape_once()
            assert loop.health.health == "up", loop.health.last_error
    finally:
        await pool.aclose()
    assert endpoint.violations == []
    assert endpoint.grants == 1  # one token for three scrapes
    assert target.seen[-1]["authorization"] == "Bearer tok-1"


async def test_token_refreshed_before_expiry_and_after_a_401(endpoint: TokenEndpoint, target: Receiver) -> None:
    endpoint.expires_in = 2  # used for half its life (the 10 s margin is longer than that)
    pool = ClientPool()
    loop = scrape_loop(target.port, oauth2_yaml(endpoint), pool)
    try:
        await loop.scrape_once()
        await loop.scrape_once()
        assert endpoint.grants == 1
        await anyio.sleep(1.2)
        await loop.scrape_once()
        assert loop.health.health == "up" and endpoint.grants == 2
        # the target stops accepting the token in hand (revoked): one 401, a new token, the scrape is up
        endpoint.expires_in = 3600
        endpoint.issued.remove("tok-2")
        await loop.scrape_once()
        assert loop.health.health == "up", loop.health.last_error
        assert endpoint.grants == 3 and target.refused == 1
        # a target that refuses every token: one new token per scrape, never a loop; the scrape fails
        target.check = lambda _h, _b: False
        await loop.scrape_once()
        assert loop.health.health == "down" and loop.health.last_reason == "http_status"
        assert endpoint.grants == 4 and target.refused == 3
    finally:
        await pool.aclose()
    assert endpoint.violations == []


async def test_client_secret_file_is_reread(endpoint: TokenEndpoint, target: Receiver, tmp_path: Path) -> None:
    f = tmp_path / "secret"
    f.write_text("old-secret\n")
    endpoint.secret = "old-secret"
    pool = ClientPool()
    loop = scrape_loop(target.port, oauth2_yaml(endpoint, f"client_secret_file: {f}"), pool)
    try:
        await loop.scrape_once()
        assert loop.health.health == "up" and endpoint.grants == 1
        endpoint.secret = "new-secret"
        f.write_text("new-secret\n")
        time.sleep(0.01)
        f.touch()
        await loop.scrape_once()  # the file changed: the cached token is dropped, a grant with the new secret
        assert loop.health.health == "up", loop.health.last_error
        assert endpoint.grants == 2
        f.unlink()
        endpoint.issued.clear()
        await loop.scrape_once()
        assert loop.health.health == "down" and loop.health.last_reason == "oauth2"
        assert "client_secret_file" in loop.health.last_error
    finally:
        await pool.aclose()


async def test_failures_are_oauth2_errors_without_secrets(endpoint: TokenEndpoint, target: Receiver) -> None:
    pool = ClientPool()
    try:
        endpoint.mode = "reject"
        loop = scrape_loop(target.port, oauth2_yaml(endpoint), pool)
        await loop.scrape_once()
        assert loop.health.health == "down" and loop.health.last_reason == "oauth2"
        assert "HTTP 401: invalid_client" in loop.health.last_error and endpoint.url in loop.health.last_error
        assert SECRET not in loop.health.last_error
        assert target.seen == []  # nothing was sent to the target without a token

        endpoint.mode = "huge"
        client = pool.get(loop.target.config.http)
        assert client.oauth2 is not None
        with pytest.raises(OAuth2Error, match="larger than 1048576 bytes"):
            await client.oauth2.header()

        endpoint.mode = "ok"
        endpoint.close()  # the token endpoint is down
        await loop.scrape_once()
        assert loop.health.health == "down" and loop.health.last_reason == "oauth2"
        assert "connect" in loop.health.last_error
    finally:
        await pool.aclose()


@pytest.mark.services
async def test_remote_write_through_oauth2_into_victoria_metrics(
    victoria_metrics: VictoriaMetrics, endpoint: TokenEndpoint, caplog: pytest.LogCaptureFixture
) -> None:
    receiver = Receiver(bearer(lambda: endpoint.issued), upstream=victoria_metrics.write_url)
    pool = ClientPool()
    t0 = (int(time.time()) - 900) * 1000
    try:
        cfg = rw_config(f"{receiver.url}/api/v1/write", oauth2_yaml(endpoint) +
                        "    queue_config: {min_backoff: 50ms, max_backoff: 200ms}\n")
        writer = RemoteWriter(cfg, pool, SelfMetrics())
        assert await run_writer(writer, make_batches(20, 3, "rw-oauth2", t0))
        assert endpoint.grants == 1 and writer.sent_samples == 60

        # the token endpoint refuses for a while, and the token in hand is revoked: retries with
        # reason oauth2, then everything arrives once it accepts again
        endpoint.mode = "reject"
        endpoint.issued.clear()
        writer = RemoteWriter(cfg, pool, SelfMetrics())
        caplog.set_level(logging.WARNING, logger="relay.remote")

        async def heal() -> None:
            await anyio.sleep(1.0)
            endpoint.mode = "ok"

        async with anyio.create_task_group() as tg:
            tg.start_soon(heal)
            assert await run_writer(writer, make_batches(20, 3, "rw-oauth2-late", t0 + 10_000), timeout=30)
        assert writer.retried_samples > 0 and writer.dropped == {}
        assert any("(oauth2), will retry" in r.getMessage() for r in caplog.records)
        assert not any(SECRET in r.getMessage() for r in caplog.records)
    finally:
        await pool.aclose()
        receiver.close()
    assert endpoint.violations == []
    victoria_metrics.flush()
    assert victoria_metrics.sample_count('{job="rw-oauth2"}') == 60
    assert victoria_metrics.sample_count('{job="rw-oauth2-late"}') == 60


@pytest.mark.parametrize("fast", [True, False], ids=["fast", "httpx"])
async def test_http_sd_with_oauth2(endpoint: TokenEndpoint, target: Receiver, fast: bool) -> None:
    from relay.discovery import HTTPSDProvider

    target.get_body = (b'[{"targets": ["10.0.0.1:2381", "10.0.0.2:2381"], "labels": {"dc": "a"}}]',
                       "application/json")
    cfg = parse_config("scrape_configs:\n  - job_name: a\n    http_sd_configs:\n"
                       f"      - url: {target.url}/sd\n{oauth2_yaml(endpoint, indent='        ')}").scrape_configs[0]
    pool = ClientPool(fast=fast)
    try:
        provider = HTTPSDProvider(cfg.http_sd_configs[0], "a", pool)
        for _ in range(2):
            groups = await provider.fetch()
            assert sorted(t for g in groups for t in g.targets) == ["10.0.0.1:2381", "10.0.0.2:2381"]
    finally:
        await pool.aclose()
    assert endpoint.grants == 1 and endpoint.violations == []
    assert target.seen[-1]["authorization"] == "Bearer tok-1"


@pytest.mark.services
async def test_refused_credentials_are_retried_until_fixed(victoria_metrics: VictoriaMetrics, tmp_path: Path,
                                                          caplog: pytest.LogCaptureFixture) -> None:
    """A receiver that refuses the credentials (401) keeps the samples queued and retried; once the
    password file is fixed they all arrive."""
    import base64

    good = "Basic " + base64.b64encode(b"writer:right-password").decode()
    receiver = Receiver(lambda h, _b: h.headers.get("Authorization") == good, upstream=victoria_metrics.write_url)
    pw = tmp_path / "pw"
    pw.write_text("wrong-password")
    pool = ClientPool()
    t0 = (int(time.time()) - 1800) * 1000
    caplog.set_level(logging.WARNING, logger="relay.remote")
    try:
        cfg = rw_config(f"{receiver.url}/api/v1/write", f"    basic_auth: {{username: writer, password_file: {pw}}}\n"
                        "    queue_config: {min_backoff: 50ms, max_backoff: 200ms}\n")
        writer = RemoteWriter(cfg, pool, SelfMetrics())

        async def fix() -> None:
            await anyio.sleep(1.0)
            pw.write_text("right-password")

        async with anyio.create_task_group() as tg:
            tg.start_soon(fix)
            assert await run_writer(writer, make_batches(10, 3, "rw-refused", t0), timeout=30)
        assert writer.dropped == {} and writer.sent_samples == 30 and receiver.refused > 0
        assert any("HTTP 401 (credentials refused" in r.getMessage() for r in caplog.records)
        assert not any("password" in r.getMessage().split("check")[0] for r in caplog.records
                       if "credentials refused" in r.getMessage())
    finally:
        await pool.aclose()
        receiver.close()
    victoria_metrics.flush()
    assert victoria_metrics.sample_count('{job="rw-refused"}') == 30
