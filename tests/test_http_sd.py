"""http_sd_configs against a real local HTTP server (http.server in a thread)."""

from __future__ import annotations

import base64
import json
import logging
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import anyio
import pytest

from relay.config import BasicAuth, HTTPClientConfig, HTTPSDConfig, Secret
from relay.discovery import DiscoveryError, HTTPSDProvider, TargetGroup, parse_http_sd
from relay.discovery import http as http_sd
from relay.http.client import ClientPool

pytestmark = pytest.mark.anyio

GOOD = [
    {"targets": ["127.0.0.1:2381", "127.0.0.2:2381"], "labels": {"__meta_datacenter": "a", "env": "prod"}},
    {"targets": ["127.0.0.3:2381"]},
]


@dataclass
class Reply:
    """What the server answers. ``answer`` is one tuple, set in one assignment: the server thread
    reads it once per request, so a request never sees the status of one answer and the body of
    another (which logged a seventh, mixed error once in CI)."""

    answer: tuple[int, str, bytes] = (200, "application/json", json.dumps(GOOD).encode())
    seen_headers: list[dict[str, str]] = field(default_factory=list)
    password: str | None = None


@pytest.fixture
def sd_server() -> Iterator[tuple[str, Reply]]:
    reply = Reply()

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            reply.seen_headers.append({k.lower(): v for k, v in self.headers.items()})
            if reply.password is not None:
                want = "Basic " + base64.b64encode(f"sd:{reply.password}".encode()).decode()
                if self.headers.get("Authorization") != want:
                    self.send_response(401)
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
            status, content_type, body = reply.answer
            self.send_response(status)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/sd", reply
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)


def _flat(groups: list[TargetGroup]) -> dict[str, dict[str, str]]:
    return {t: dict(g.labels) for g in groups for t in g.targets}


@pytest.mark.parametrize("fast", [True, False], ids=["fast-transport", "httpx-transport"])
async def test_http_sd_good_then_garbage_then_500(
    sd_server: tuple[str, Reply], fast: bool, caplog: pytest.LogCaptureFixture
) -> None:
    url, reply = sd_server
    pool = ClientPool(fast=fast)
    provider = HTTPSDProvider(HTTPSDConfig(url=url, refresh_interval=0.1), "etcd", pool)
    seen: list[list[TargetGroup]] = []
    try:
        async with anyio.create_task_group() as tg:
            tg.start_soon(provider.run, seen.append)
            with anyio.fail_after(10):
                while not seen:
                    await anyio.sleep(0.02)
            assert _flat(seen[-1]) == {
                "127.0.0.1:2381": {"__meta_datacenter": "a", "env": "prod", "__meta_url": url},
                "127.0.0.2:2381": {"__meta_datacenter": "a", "env": "prod", "__meta_url": url},
                "127.0.0.3:2381": {"__meta_url": url},
            }
            headers = reply.seen_headers[-1]
            assert headers["accept"] == "application/json"
            assert headers["x-prometheus-refresh-interval-seconds"] == "0.1"
            good = seen[-1]
            caplog.clear()
            with caplog.at_level(logging.ERROR, logger="relay.discovery.http"):
                for status, kind, body, problem in [
                    (200, "application/json", b"<html>oops</html>", "body is not JSON"),
                    (200, "application/json", b'{"targets": []}', "must be a JSON list"),
                    (200, "application/json", b'[{"targets": ["a:1"], "lables": {}}]', "[0].lables: unknown key"),
                    (200, "application/json", b'[{"targets": ["a:1"], "labels": {"a": 1}}]', "must be a string"),
                    (200, "text/plain", json.dumps(GOOD).encode(), "unsupported content type 'text/plain'"),
                    (500, "application/json", b"[]", "HTTP status 500"),
                ]:
                    reply.answer = (status, kind, body)
                    n = len(reply.seen_headers)
                    with anyio.fail_after(10):
                        while problem not in (provider.last_error or "") or len(reply.seen_headers) < n + 3:
                            await anyio.sleep(0.02)
            # Every bad answer kept the last good targets and was logged once, however many refreshes.
            assert seen[-1] == good
            lines = [r.getMessage() for r in caplog.records]
            assert len(lines) == 6, lines
            assert all("keeping the last targets" in line and url in line for line in lines)
            # Good again: a changed list reaches the scrape manager.
            reply.answer = (200, "application/json; charset=utf-8", b"[]")
            with anyio.fail_after(10):
                while seen[-1] != []:
                    await anyio.sleep(0.02)
            assert provider.last_error is None
            tg.cancel_scope.cancel()
    finally:
        await pool.aclose()


async def test_http_sd_basic_auth_and_size_limit(
    sd_server: tuple[str, Reply], monkeypatch: pytest.MonkeyPatch
) -> None:
    url, reply = sd_server
    reply.password = "s3cret"
    pool = ClientPool(fast=True)
    try:
        bad = HTTPSDProvider(HTTPSDConfig(url=url), "j", pool)
        with pytest.raises(DiscoveryError, match="HTTP status 401"):
            await bad.fetch()
        auth = HTTPClientConfig(basic_auth=BasicAuth(username="sd", password=Secret("s3cret")))
        good = HTTPSDProvider(HTTPSDConfig(url=url, http=auth), "j", pool)
        assert len(_flat(await good.fetch())) == 3
        monkeypatch.setattr(http_sd, "MAX_BODY", 64)
        with pytest.raises(DiscoveryError, match="over the 64 byte limit"):
            await good.fetch()
    finally:
        await pool.aclose()


async def test_http_sd_unreachable_is_an_error_not_a_crash() -> None:
    from relay.devtools.localenv import free_ports

    pool = ClientPool(fast=True)
    try:
        provider = HTTPSDProvider(HTTPSDConfig(url=f"http://127.0.0.1:{free_ports(1)[0]}/sd"), "j", pool)
        with pytest.raises(DiscoveryError):
            await provider.fetch()
    finally:
        await pool.aclose()


def test_parse_http_sd_rejects_bad_label_names_and_null_groups() -> None:
    with pytest.raises(DiscoveryError, match="not a valid label name"):
        parse_http_sd(b'[{"targets": [], "labels": {"a-b": "x"}}]', "u", "s")
    with pytest.raises(DiscoveryError, match=r"\[1\]: must be an object"):
        parse_http_sd(b'[{"targets": []}, null]', "u", "s")
    assert parse_http_sd(b"[]", "u", "s") == []


async def test_http_sd_labels_match_vmagent(sd_server: tuple[str, Reply], tmp_path: Path) -> None:
    """Debian's vmagent, pointed at the same endpoint, finds the same targets with the same
    discoveredLabels and labels (its /api/v1/targets) as the relay."""
    import shutil
    import subprocess
    import urllib.request

    from relay.config import load_config
    from relay.devtools.localenv import free_ports
    from relay.target import build_target

    from .conftest import missing_service

    exe = shutil.which("vmagent")
    if exe is None:
        missing_service("vmagent is not installed (Debian package vmagent)")
        return
    url, _ = sd_server
    cfg = tmp_path / "scrape.yml"  # vmagent has no refresh_interval here: its flag sets the interval
    cfg.write_text(f"scrape_configs:\n  - job_name: etcd\n    scrape_interval: 5s\n    http_sd_configs:\n      - url: {url}\n")
    port = free_ports(1)[0]
    log = (tmp_path / "vmagent.log").open("wb")
    proc = subprocess.Popen(
        [exe, f"-promscrape.config={cfg}", "-promscrape.httpSDCheckInterval=1s", f"-httpListenAddr=127.0.0.1:{port}",
         "-remoteWrite.url=http://127.0.0.1:1/api/v1/write", f"-remoteWrite.tmpDataPath={tmp_path / 'q'}",
         "-loggerLevel=ERROR"],
        stdout=log, stderr=subprocess.STDOUT,
    )  # fmt: skip
    try:
        theirs: dict[str, tuple[dict[str, str], dict[str, str]]] = {}
        with anyio.fail_after(60):
            while len(theirs) < 3:
                await anyio.sleep(0.2)
                assert proc.poll() is None, (tmp_path / "vmagent.log").read_text()[-500:]
                try:
                    with urllib.request.urlopen(f"http://127.0.0.1:{port}/api/v1/targets", timeout=2) as resp:
                        data = json.load(resp)["data"]
                except OSError:
                    continue
                theirs = {
                    t["discoveredLabels"]["__address__"]: (t["discoveredLabels"], t["labels"])
                    for t in data["activeTargets"]
                }
    finally:
        proc.terminate()
        proc.wait(10)
        log.close()
    (sc,) = load_config(cfg).scrape_configs
    pool = ClientPool(fast=True)
    try:
        groups = await HTTPSDProvider(sc.http_sd_configs[0], "etcd", pool).fetch()
    finally:
        await pool.aclose()
    ours = {}
    for address, labels in _flat(groups).items():
        t = build_target(address, labels, sc)
        assert t is not None
        ours[address] = (dict(t.discovered_labels), dict(t.labels))
    assert ours == theirs
