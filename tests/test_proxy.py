"""proxy_url, no_proxy, proxy_from_environment and proxy_connect_header, through a real forward proxy
(Debian's tinyproxy on a loopback port, its own config): http targets in absolute form, https targets
through CONNECT, scrapes and remote write into VictoriaMetrics, both transports; a proxy that is down
or wants credentials: a failed scrape and a remote-write retry with reason proxy, no sample lost."""

from __future__ import annotations

import base64
import logging
import time
from collections.abc import Iterator
from pathlib import Path

import anyio
import httpx
import pytest

from relay._exceptions import ConfigError
from relay.config import parse_config
from relay.config_http import ProxyConfig
from relay.devtools.localenv import TLSFiles, VictoriaMetrics, make_tls_files
from relay.http.client import ClientPool
from relay.http.proxy import ProxyRoute
from relay.metrics import SelfMetrics
from relay.remote.writer import RemoteWriter
from relay.scrape import ScrapeLoop
from relay.target import build_target
from tests.authkit import Receiver, Tinyproxy, tinyproxy
from tests.conftest import missing_service
from tests.test_remote_write import make_batches, run_writer, rw_config

pytestmark = pytest.mark.anyio

VIA = "relay-test-proxy"
PROXY_USER, PROXY_PASSWORD = "relay", "proxy-pass-very-secret"


def _start(tmp: Path, basic_auth: tuple[str, str] | None = None) -> Iterator[Tinyproxy]:
    try:
        cm = tinyproxy(tmp, basic_auth)
        proxy = cm.__enter__()
    except FileNotFoundError as exc:
        missing_service(str(exc))
    try:
        yield proxy
    finally:
        cm.__exit__(None, None, None)


@pytest.fixture
def proxy(tmp_path: Path) -> Iterator[Tinyproxy]:
    yield from _start(tmp_path / "open")


@pytest.fixture
def auth_proxy(tmp_path: Path) -> Iterator[Tinyproxy]:
    (tmp_path / "auth").mkdir()
    yield from _start(tmp_path / "auth", (PROXY_USER, PROXY_PASSWORD))


@pytest.fixture(scope="module")
def tls_files(tmp_path_factory: pytest.TempPathFactory) -> TLSFiles:
    return make_tls_files(tmp_path_factory.mktemp("proxy-tls"))


@pytest.fixture
def target() -> Iterator[Receiver]:
    rc = Receiver(lambda _h, _b: True)
    yield rc
    rc.close()


@pytest.fixture
def tls_target(tls_files: TLSFiles) -> Iterator[Receiver]:
    rc = Receiver(lambda _h, _b: True, tls=(tls_files.server_cert, tls_files.server_key))
    yield rc
    rc.close()


@pytest.fixture(autouse=True)
def _dirs(tmp_path: Path) -> None:
    (tmp_path / "open").mkdir(exist_ok=True)


async def scrape(target: Receiver, extra: str, *, fast: bool = True, scheme: str = "http") -> ScrapeLoop:
    sc = parse_config(f"scrape_configs:\n  - job_name: a\n    scrape_interval: 5s\n    scheme: {scheme}\n{extra}"
                      ).scrape_configs[0]
    t = build_target(f"127.0.0.1:{target.port}", {}, sc)
    assert t is not None
    pool = ClientPool(fast=fast)
    loop = ScrapeLoop(t, pool, [], SelfMetrics())
    try:
        await loop.scrape_once()
    finally:
        await pool.aclose()
    return loop


def test_no_proxy_rules_as_go() -> None:
    def route(no_proxy: str) -> ProxyRoute:
        r = ProxyRoute.from_config(ProxyConfig(proxy_url="http://p:3128", no_proxy=no_proxy))
        assert r is not None
        return r

    def via(r: ProxyRoute, url: str) -> bool:
        return r.choose(httpx.URL(url)) is not None

    everything = ProxyRoute.from_config(ProxyConfig(proxy_url="http://p:3128"))
    assert everything is not None and via(everything, "http://127.0.0.1:9/") and via(everything, "http://localhost/")
    r = route("example.com, .internal,10.0.0.0/8,192.168.1.5,other.org:8443,[::5]:80")
    assert not via(r, "http://example.com/") and not via(r, "http://a.b.example.com/")
    assert via(r, "http://notexample.com/")
    assert not via(r, "http://x.internal/") and via(r, "http://internal/")  # .internal: subdomains only
    assert not via(r, "http://10.9.8.7:2381/") and via(r, "http://11.0.0.1/")
    assert not via(r, "http://192.168.1.5/") and via(r, "http://192.168.1.6/")
    assert not via(r, "https://other.org:8443/") and via(r, "https://other.org/")
    assert not via(r, "http://[::5]/") and via(r, "http://[::6]/")
    # with no_proxy, localhost and loopback are never proxied (Go's httpproxy)
    assert not via(r, "http://localhost:9/") and not via(r, "http://127.0.0.2/") and not via(r, "http://[::1]/")
    assert not via(route("*"), "http://anything.example/")
    for bad in ("10.0.0.0/33", "a b", "host:port"):
        with pytest.raises(ValueError):
            route(bad)


def test_proxy_from_environment() -> None:
    env = {"HTTP_PROXY": "proxy-a:3128", "https_proxy": "http://u:p@proxy-b:8080", "NO_PROXY": ".corp"}
    r = ProxyRoute.from_config(ProxyConfig(proxy_from_environment=True), env)
    assert r is not None and r.http is not None and r.https is not None
    assert (r.http.host, r.http.port) == ("proxy-a", 3128) and r.https.shown == "http://<secret>@proxy-b:8080"
    assert r.https.auth == ((b"Proxy-Authorization", b"Basic " + base64.b64encode(b"u:p")),)
    assert r.choose(httpx.URL("http://a.corp/")) is None and r.choose(httpx.URL("https://x.example/")) is r.https
    assert ProxyRoute.from_config(ProxyConfig(proxy_from_environment=True), {}) is None
    assert ProxyRoute.from_config(ProxyConfig(proxy_from_environment=True),
                                  {"HTTP_PROXY": "http://p:1", "REQUEST_METHOD": "GET"}) is None  # CGI: ignored
    with pytest.raises(ConfigError, match="proxy_from_environment"):
        ProxyRoute.from_config(ProxyConfig(proxy_from_environment=True), {"HTTPS_PROXY": "socks5://p:1"})


def test_config_errors_and_secrets() -> None:
    cases = {
        "proxy_url: http://p:1\n    no_proxy: 10.0.0.0/40": "no_proxy: '10.0.0.0/40' is not a CIDR",
        "no_proxy: example.com": "no_proxy: needs proxy_url",
        "proxy_url: socks5://p:1080": "socks5 proxies are not supported",
        "proxy_url: http://p:1\n    proxy_from_environment: true": "cannot be used together with proxy_url",
        "proxy_connect_header: {X-A: [b]}": "needs proxy_url or proxy_from_environment",
        "proxy_url: http://p:1\n    proxy_connect_header: {'bad name': [b]}": "is not an HTTP header name",
        "proxy_url: http://p:1\n    proxy_connect_header: {X-A: 3}": "must be a list of strings",
        "proxy_url: 'http://u:pw-secret@p:x'": "is not a proxy URL",
    }
    for extra, message in cases.items():
        with pytest.raises(ConfigError, match=message) as info:
            parse_config(f"remote_write:\n  - url: http://a/\n    {extra}\n")
        assert "pw-secret" not in str(info.value)
    cfg = parse_config("remote_write:\n  - url: http://a/\n    proxy_url: http://u:pw-secret@p:1\n"
                       "    proxy_connect_header: {X-Token: [hdr-secret]}\n").remote_write[0]
    assert "pw-secret" not in repr(cfg) and "hdr-secret" not in repr(cfg) and "<secret>@p:1" in repr(cfg)


@pytest.mark.parametrize("fast", [True, False], ids=["fast", "httpx"])
async def test_http_scrape_through_the_proxy(proxy: Tinyproxy, target: Receiver, fast: bool) -> None:
    loop = await scrape(target, f"    proxy_url: {proxy.url}\n", fast=fast)
    assert loop.health.health == "up", loop.health.last_error
    assert VIA in target.seen[-1].get("via", "")
    time.sleep(0.1)
    assert f"GET http://127.0.0.1:{target.port}/metrics" in proxy.log_text()


@pytest.mark.parametrize("fast", [True, False], ids=["fast", "httpx"])
async def test_no_proxy_bypass(proxy: Tinyproxy, target: Receiver, fast: bool) -> None:
    loop = await scrape(target, f"    proxy_url: {proxy.url}\n    no_proxy: 127.0.0.1\n", fast=fast)
    assert loop.health.health == "up", loop.health.last_error
    assert "via" not in target.seen[-1]
    assert f"127.0.0.1:{target.port}" not in proxy.log_text()


@pytest.mark.parametrize("fast", [True, False], ids=["fast", "httpx"])
async def test_https_scrape_through_connect(proxy: Tinyproxy, tls_target: Receiver, tls_files: TLSFiles,
                                            fast: bool) -> None:
    loop = await scrape(tls_target, f"    proxy_url: {proxy.url}\n    tls_config: {{ca_file: {tls_files.ca_file}}}\n",
                        fast=fast, scheme="https")
    assert loop.health.health == "up", loop.health.last_error
    assert "via" not in tls_target.seen[-1]  # a tunnel: the proxy does not see (or touch) the request
    time.sleep(0.1)
    assert f"CONNECT 127.0.0.1:{tls_target.port}" in proxy.log_text()


@pytest.mark.parametrize("fast", [True, False], ids=["fast", "httpx"])
async def test_proxy_credentials(auth_proxy: Tinyproxy, target: Receiver, tls_target: Receiver, tls_files: TLSFiles,
                                 fast: bool) -> None:
    # without credentials: reason proxy, for http (407 answer) and https (CONNECT refused)
    loop = await scrape(target, f"    proxy_url: {auth_proxy.url}\n", fast=fast)
    assert loop.health.health == "down" and loop.health.last_reason == "proxy", loop.health.last_error
    assert "407" in loop.health.last_error
    tls = f"    tls_config: {{ca_file: {tls_files.ca_file}}}\n"
    loop = await scrape(tls_target, f"    proxy_url: {auth_proxy.url}\n{tls}", fast=fast, scheme="https")
    assert loop.health.health == "down" and loop.health.last_reason == "proxy", loop.health.last_error
    # user:password in proxy_url: both work; the password never shows
    with_auth = auth_proxy.url.replace("http://", f"http://{PROXY_USER}:{PROXY_PASSWORD}@")
    loop = await scrape(target, f"    proxy_url: {with_auth}\n", fast=fast)
    assert loop.health.health == "up", loop.health.last_error
    assert "proxy-authorization" not in target.seen[-1]  # the proxy's credentials stay with the proxy
    loop = await scrape(tls_target, f"    proxy_url: {with_auth}\n{tls}", fast=fast, scheme="https")
    assert loop.health.health == "up", loop.health.last_error
    # proxy_connect_header: sent with CONNECT, and only there (here it carries the proxy's credentials)
    token = base64.b64encode(f"{PROXY_USER}:{PROXY_PASSWORD}".encode()).decode()
    header = f"    proxy_connect_header: {{Proxy-Authorization: ['Basic {token}'], X-Relay-Tunnel: ['yes']}}\n"
    loop = await scrape(tls_target, f"    proxy_url: {auth_proxy.url}\n{header}{tls}", fast=fast, scheme="https")
    assert loop.health.health == "up", loop.health.last_error
    loop = await scrape(target, f"    proxy_url: {auth_proxy.url}\n{header}", fast=fast)
    assert loop.health.health == "down" and loop.health.last_reason == "proxy"  # not sent for http targets
    assert "x-relay-tunnel" not in target.seen[-1] if target.seen else True


@pytest.mark.parametrize("fast", [True, False], ids=["fast", "httpx"])
async def test_proxy_down_is_reason_proxy(target: Receiver, tls_target: Receiver, tls_files: TLSFiles,
                                          fast: bool) -> None:
    from relay.devtools.localenv import free_ports

    down = f"http://127.0.0.1:{free_ports(1)[0]}"
    loop = await scrape(target, f"    proxy_url: {down}\n", fast=fast)
    assert loop.health.health == "down" and loop.health.last_reason == "proxy", loop.health.last_error
    assert down in loop.health.last_error
    loop = await scrape(tls_target, f"    proxy_url: {down}\n    tls_config: {{ca_file: {tls_files.ca_file}}}\n",
                        fast=fast, scheme="https")
    assert loop.health.health == "down" and loop.health.last_reason == "proxy", loop.health.last_error
    assert target.seen == [] and tls_target.seen == []


@pytest.mark.services
async def test_remote_write_through_the_proxy(victoria_metrics: VictoriaMetrics, tmp_path: Path,
                                              caplog: pytest.LogCaptureFixture) -> None:
    receiver = Receiver(lambda _h, _b: True, upstream=victoria_metrics.write_url)
    try:
        proxy = Tinyproxy(tmp_path / "open")  # not started yet: the first sends find it down
    except FileNotFoundError as exc:
        missing_service(str(exc))
    pool = ClientPool()
    t0 = (int(time.time()) - 1200) * 1000
    caplog.set_level(logging.WARNING, logger="relay.remote")
    try:
        cfg = rw_config(f"{receiver.url}/api/v1/write", f"    proxy_url: {proxy.url}\n"
                        "    queue_config: {min_backoff: 50ms, max_backoff: 200ms}\n")
        writer = RemoteWriter(cfg, pool, SelfMetrics())

        async def start_later() -> None:
            await anyio.sleep(1.0)
            proxy.start()

        async with anyio.create_task_group() as tg:
            tg.start_soon(start_later)
            assert await run_writer(writer, make_batches(30, 4, "rw-proxy", t0), timeout=30)
        assert writer.retried_samples > 0 and writer.dropped == {} and writer.sent_samples == 120
        assert any("(proxy), will retry" in r.getMessage() for r in caplog.records)
        assert receiver.seen and all(VIA in h.get("via", "") for h in receiver.seen)
        time.sleep(0.1)
        assert f"POST http://127.0.0.1:{receiver.port}/api/v1/write" in proxy.log_text()
    finally:
        await pool.aclose()
        proxy.stop()
        receiver.close()
    victoria_metrics.flush()
    assert victoria_metrics.sample_count('{job="rw-proxy"}') == 120


CHECK_OK = """
scrape_configs:
  - job_name: through-proxy
    proxy_url: http://relay:proxy-pw-secret@127.0.0.1:3128
    no_proxy: 10.0.0.0/8,.cluster.local
    static_configs: [{targets: ['127.0.0.1:2381']}]
    http_sd_configs:
      - url: http://127.0.0.1:8080/sd
        oauth2: {client_id: sd, client_secret: sd-secret-value, token_url: http://127.0.0.1:1/token}
remote_write:
  - url: https://aps-workspaces.eu-west-1.amazonaws.com/workspaces/ws-1/api/v1/remote_write
    sigv4: {region: eu-west-1, access_key: AKIDCHECK, secret_key: aws-secret-value}
    proxy_url: http://127.0.0.1:3128
    proxy_connect_header: {Proxy-Authorization: [Basic hdr-secret-value]}
  - url: https://metrics.example.com/api/v1/write
    oauth2:
      client_id: relay
      client_secret_file: oauth2-secret
      token_url: https://auth.example.com/token
      scopes: [metrics.write]
      proxy_from_environment: true
"""
SECRETS = ("proxy-pw-secret", "sd-secret-value", "aws-secret-value", "hdr-secret-value")


def test_check_config_accepts_the_keys_and_names_bad_values(tmp_path: Path) -> None:
    import subprocess
    import sys

    config = tmp_path / "relay.yml"
    config.write_text(CHECK_OK)

    def check(text: str) -> subprocess.CompletedProcess[str]:
        config.write_text(text)
        return subprocess.run([sys.executable, "-m", "relay.cli", "check-config", "--config", str(config)],
                              capture_output=True, text=True, timeout=60)

    out = check(CHECK_OK)
    assert out.returncode == 0, out.stderr
    assert "2 remote_write endpoints" in out.stdout
    bad = {
        CHECK_OK.replace("no_proxy: 10.0.0.0/8", "no_proxy: 10.0.0.0/88"):
            "scrape_configs[0].no_proxy: '10.0.0.0/88' is not a CIDR",
        CHECK_OK.replace("region: eu-west-1, ", ""): "remote_write[0].sigv4.region: is not set",
        CHECK_OK.replace("token_url: https://auth.example.com/token", "token_url: auth.example.com"):
            "remote_write[1].oauth2.token_url: 'auth.example.com' is not an http(s) URL",
        CHECK_OK.replace("    proxy_url: http://127.0.0.1:3128\n", ""):
            "remote_write[0].proxy_connect_header: needs proxy_url or proxy_from_environment",
        CHECK_OK.replace("scopes: [metrics.write]", "scopes: metrics.write"): "remote_write[1].oauth2.scopes: must be a list",
    }
    for text, message in bad.items():
        out = check(text)
        assert out.returncode == 2 and message in out.stderr, out.stderr
        assert not any(s in out.stderr + out.stdout for s in SECRETS)


async def test_token_endpoint_has_its_own_tls_config_and_proxy(proxy: Tinyproxy, target: Receiver,
                                                               tls_files: TLSFiles) -> None:
    from tests.authkit import TokenEndpoint, bearer

    endpoint = TokenEndpoint("relay", "token-secret", tls=(tls_files.server_cert, tls_files.server_key))
    target.check = bearer(lambda: endpoint.issued)
    try:
        oauth2 = (f"    oauth2:\n      client_id: relay\n      client_secret: token-secret\n"
                  f"      token_url: {endpoint.url}\n      tls_config: {{ca_file: {tls_files.ca_file}}}\n"
                  f"      proxy_url: {proxy.url}\n")
        loop = await scrape(target, oauth2)
        assert loop.health.health == "up", loop.health.last_error
        assert endpoint.grants == 1 and endpoint.violations == []
        time.sleep(0.1)
        log = proxy.log_text()
        assert f"CONNECT 127.0.0.1:{endpoint.port}" in log  # the token request went through its proxy
        assert f"127.0.0.1:{target.port}" not in log and "via" not in target.seen[-1]  # the scrape did not
        # without the token endpoint's CA: a TLS failure, reported as oauth2 with the cause
        loop = await scrape(target, oauth2.replace(f"      tls_config: {{ca_file: {tls_files.ca_file}}}\n", ""))
        assert loop.health.health == "down" and loop.health.last_reason == "oauth2"
        assert "tls" in loop.health.last_error and "token-secret" not in loop.health.last_error
    finally:
        endpoint.close()
