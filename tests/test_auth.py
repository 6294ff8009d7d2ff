"""basic_auth and authorization (inline and from files, re-read when they change), against a real
HTTP server on loopback; and secrets never show in /targets, /metrics, logs or error messages."""

from __future__ import annotations

import base64
import signal
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import orjson
import pytest

from relay.config import parse_config
from relay.devtools.localenv import free_ports, wait_http
from relay.http.client import ClientPool
from relay.metrics import SelfMetrics
from relay.scrape import ScrapeLoop
from relay.target import build_target

PASSWORD = "hunter2-very-secret"
TOKEN = "tok-abc-very-secret"
ROTATED = "tok-rotated-very-secret"


class _Handler(BaseHTTPRequestHandler):
    accepted = frozenset({f"Basic {base64.b64encode(f'etcd:{PASSWORD}'.encode()).decode()}", f"Bearer {TOKEN}",
                f"Bearer {ROTATED}"})

    def do_GET(self) -> None:
        if self.headers.get("Authorization") not in self.accepted:
            self.send_response(401)
            self.end_headers()
            return
        body = b"authed_metric 1\n"
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture(scope="module")
def auth_server() -> Iterator[int]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    t = threading.Thread(target=server.serve_forever, daemon=True)
    t.start()
    yield server.server_address[1]
    server.shutdown()


async def scrape_with(port: int, auth_yaml: str) -> ScrapeLoop:
    sc = parse_config(f"scrape_configs:\n  - job_name: a\n    scrape_interval: 5s\n{auth_yaml}").scrape_configs[0]
    t = build_target(f"127.0.0.1:{port}", {}, sc)
    assert t is not None
    pool = ClientPool()
    loop = ScrapeLoop(t, pool, [], SelfMetrics())
    try:
        await loop.scrape_once()
    finally:
        await pool.aclose()
    return loop


@pytest.mark.anyio
@pytest.mark.parametrize(
    ("auth", "health"),
    [
        (f"    basic_auth: {{username: etcd, password: {PASSWORD}}}\n", "up"),
        ("    basic_auth: {username: etcd, password: wrong}\n", "down"),
        (f"    authorization: {{credentials: {TOKEN}}}\n", "up"),
        (f"    bearer_token: {TOKEN}\n", "up"),
        ("", "down"),
    ],
)
async def test_auth_inline(auth_server: int, auth: str, health: str) -> None:
    loop = await scrape_with(auth_server, auth)
    assert loop.health.health == health, loop.health.last_error
    if health == "down":
        assert loop.health.last_reason == "http_status" and "401" in loop.health.last_error


@pytest.mark.anyio
async def test_credentials_file_is_reread_when_it_changes(auth_server: int, tmp_path: Path) -> None:
    f = tmp_path / "token"
    f.write_text(TOKEN + "\n")
    auth = f"    authorization: {{credentials_file: {f}}}\n"
    sc = parse_config(f"scrape_configs:\n  - job_name: a\n    scrape_interval: 5s\n{auth}").scrape_configs[0]
    t = build_target(f"127.0.0.1:{auth_server}", {}, sc)
    assert t is not None
    pool = ClientPool()
    loop = ScrapeLoop(t, pool, [], SelfMetrics())
    try:
        await loop.scrape_once()
        assert loop.health.health == "up"
        f.write_text("not-valid")
        time.sleep(0.01)
        Path(f).touch()
        await loop.scrape_once()
        assert loop.health.health == "down"
        f.write_text(ROTATED)
        await loop.scrape_once()
        assert loop.health.health == "up"
    finally:
        await pool.aclose()


@pytest.mark.anyio
async def test_password_file(auth_server: int, tmp_path: Path) -> None:
    f = tmp_path / "pw"
    f.write_text(PASSWORD)
    loop = await scrape_with(auth_server, f"    basic_auth: {{username: etcd, password_file: {f}}}\n")
    assert loop.health.health == "up", loop.health.last_error


def test_secrets_never_show(auth_server: int, tmp_path: Path) -> None:
    config = tmp_path / "relay.yml"
    config.write_text(
        "global: {scrape_interval: 1s}\nscrape_configs:\n"
        f"  - job_name: wrong\n    basic_auth: {{username: etcd, password: {PASSWORD}x}}\n"
        f"    static_configs: [{{targets: ['127.0.0.1:{auth_server}']}}]\n"
        f"  - job_name: tok\n    authorization: {{credentials: {TOKEN}}}\n"
        f"    static_configs: [{{targets: ['127.0.0.1:1']}}]\n"
        f"remote_write:\n  - url: http://127.0.0.1:1/w\n    basic_auth: {{username: u, password: {PASSWORD}}}\n"
        f"    authorization: {{credentials: {TOKEN}}}\n"
    )
    out = subprocess.run([sys.executable, "-m", "relay.cli", "check-config", "--config", str(config)],
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 2 and "at most one of basic_auth and authorization" in out.stderr
    assert PASSWORD not in out.stderr and TOKEN not in out.stderr
    config.write_text(config.read_text().replace(f"    authorization: {{credentials: {TOKEN}}}\n", "", 1)
                      .replace(f"    basic_auth: {{username: u, password: {PASSWORD}}}\n", ""))
    port = free_ports(1)[0]
    proc = subprocess.Popen([sys.executable, "-m", "relay.cli", "--log-level", "debug", "run", "--config",
                             str(config), "--listen", f"127.0.0.1:{port}", "--drain-timeout", "1",
                             "--queue.memory"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        wait_http(f"http://127.0.0.1:{port}/-/ready", 20)
        time.sleep(3)
        pages = b"".join(urllib.request.urlopen(f"http://127.0.0.1:{port}{p}").read()
                         for p in ("/targets", "/targets?format=html", "/metrics")).decode()
        data = orjson.loads(urllib.request.urlopen(f"http://127.0.0.1:{port}/targets").read())
        assert {t["health"] for t in data["data"]["activeTargets"]} == {"down"}
    finally:
        proc.send_signal(signal.SIGTERM)
        stdout, stderr = proc.communicate(timeout=60)
    for secret in (PASSWORD, TOKEN, base64.b64encode(f"etcd:{PASSWORD}x".encode()).decode()):
        assert secret not in pages and secret not in stdout and secret not in stderr
    assert "remote_write" in stderr  # the logs were there to search
