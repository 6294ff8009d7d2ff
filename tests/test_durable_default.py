"""Durable by default, secrets kept: a relay with no queue flag keeps its queue on disk in
./data/relay-queue; credentials in a remote-write URL are sent as basic auth and never shown.

Real parts: the relay as a subprocess, a real HTTP target and a real HTTP receiver on loopback.
"""

from __future__ import annotations

import base64
import http.server
import re
import signal
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from relay.devtools.localenv import free_ports, wait_http
from relay.remote.encode import decompress
from tests.remote_write_pb import WriteRequest

BODY = b"# TYPE up_test gauge\nup_test 1\nother_metric{a=\"b\"} 2\n"


class Receiver:
    """A remote-write receiver on loopback: answers 500 to the first ``fail_first`` requests."""

    def __init__(self, fail_first: int = 0) -> None:
        self.requests: list[tuple[str, str | None, int]] = []  # (path, Authorization, samples)
        self.fail_first = fail_first
        outer = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
                n = sum(len(ts.samples) for ts in WriteRequest.FromString(decompress(body)).timeseries)
                outer.requests.append((self.path, self.headers.get("Authorization"), n))
                status = 500 if len(outer.requests) <= outer.fail_first else 204
                self.send_response(status)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def do_GET(self) -> None:
                self.send_response(200)
                self.send_header("Content-Length", str(len(BODY)))
                self.end_headers()
                self.wfile.write(BODY)

            def log_message(self, *args: object) -> None:
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self.server.server_address[1]
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    r = Receiver(fail_first=2)
    try:
        yield r
    finally:
        r.close()


def test_url_credentials_sent_as_basic_auth_never_shown(receiver: Receiver, tmp_path: Path) -> None:
    password = "hunter2%40x"  # percent-encoded in the URL: the password is hunter2@x
    cfg = tmp_path / "relay.yml"
    cfg.write_text(
        "global: {scrape_interval: 1s, scrape_timeout: 1s}\n"
        f"scrape_configs:\n  - job_name: sec\n    static_configs: [{{targets: ['127.0.0.1:{receiver.port}']}}]\n"
        f"remote_write:\n  - url: http://scott:{password}@127.0.0.1:{receiver.port}/api/v1/write\n"
        "    queue_config: {min_backoff: 50ms, max_backoff: 200ms}\n"
    )
    port = free_ports(1)[0]
    log = tmp_path / "relay.log"
    with log.open("wb") as err:
        proc = subprocess.Popen([sys.executable, "-m", "relay.cli", "run", "--config", str(cfg),
                                 "--listen", f"127.0.0.1:{port}"], cwd=tmp_path, stdout=subprocess.DEVNULL, stderr=err)
    try:
        wait_http(f"http://127.0.0.1:{port}/-/ready", 20, proc)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and len(receiver.requests) < 4:
            time.sleep(0.2)
        assert len(receiver.requests) >= 4  # two refused (and logged), then delivered
        expect = "Basic " + base64.b64encode(b"scott:hunter2@x").decode()
        assert all(path == "/api/v1/write" and auth == expect for path, auth, _ in receiver.requests)
        metrics = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10).read().decode()
        shown = f'url="http://<secret>@127.0.0.1:{receiver.port}/api/v1/write"'
        assert re.search(r'relay_remote_write_samples_sent_total\{remote_name="[0-9a-f]{6}",' + re.escape(shown) + "}",
                         metrics), metrics
        assert "hunter2" not in metrics and "scott" not in metrics
        folders = [p.name for p in (tmp_path / "data" / "relay-queue").iterdir()]  # the default queue dir
        assert folders and not any("hunter2" in f or "scott" in f for f in folders)
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(30)
    assert proc.returncode == 0
    text = log.read_text()
    assert "HTTP 500" in text and "<secret>@127.0.0.1" in text  # the refusals were logged, with the URL hidden
    assert "hunter2" not in text and "scott" not in text
