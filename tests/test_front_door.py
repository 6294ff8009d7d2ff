"""The relay's own listener, attacked and misused on loopback: out of file descriptors, too many or
too slow clients, cross-origin POSTs, reload without the lifecycle flag, TLS and basic auth.

Real parts: the relay as a subprocess (its open-files limit lowered where the test needs it), a real
HTTP target it scrapes, real sockets and a real TLS handshake.
"""

from __future__ import annotations

import base64
import http.server
import resource
import signal
import socket
import ssl
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import bcrypt
import orjson
import pytest

from relay.devtools.localenv import free_ports, make_tls_files, wait_http

RELAY = [sys.executable, "-m", "relay.cli"]
BODY = b"# TYPE up_test gauge\nup_test 1\nother_metric{a=\"b\"} 2\n"


@pytest.fixture
def target() -> Iterator[int]:
    """A plain HTTP /metrics target on loopback."""

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self.send_response(200)
            self.send_header("Content-Type", "text/plain; version=0.0.4")
            self.send_header("Content-Length", str(len(BODY)))
            self.end_headers()
            self.wfile.write(BODY)

        def log_message(self, *args: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server.server_address[1]
    finally:
        server.shutdown()
        server.server_close()


def write_config(path: Path, target_port: int | None = None) -> None:
    targets = f"['127.0.0.1:{target_port}']" if target_port else "[]"
    path.write_text(
        "global: {scrape_interval: 1s, scrape_timeout: 1s}\n"
        f"scrape_configs:\n  - job_name: fd\n    static_configs: [{{targets: {targets}}}]\n"
    )


def start(cfg: Path, port: int, *extra: str, nofile: int | None = None, log: Path | None = None) -> subprocess.Popen[bytes]:
    def limit() -> None:
        if nofile is not None:
            resource.setrlimit(resource.RLIMIT_NOFILE, (nofile, nofile))

    err = log.open("wb") if log is not None else subprocess.DEVNULL
    try:
        return subprocess.Popen([*RELAY, "run", "--config", str(cfg), "--listen", f"127.0.0.1:{port}", *extra],
                                stdout=subprocess.DEVNULL, stderr=err, preexec_fn=limit if nofile else None)
    finally:
        if log is not None:
            err.close()  # type: ignore[union-attr]


def stop(proc: subprocess.Popen[bytes]) -> int:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)
    return proc.returncode


def post(url: str, headers: dict[str, str] | None = None) -> tuple[int, bytes]:
    req = urllib.request.Request(url, method="POST", headers=headers or {})
    try:
        with urllib.request.urlopen(req, timeout=20) as resp:
            return resp.status, resp.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


def scrapes(base: str) -> float:
    text = urllib.request.urlopen(base + "/metrics", timeout=10).read().decode()
    return sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines()
               if line.startswith("relay_scrapes_total{"))


def test_out_of_file_descriptors_is_survived(target: int, tmp_path: Path) -> None:
    """Open-files limit 64, flooded with connections until accept fails with EMFILE; relieved, it
    is alive, answers /-/healthy and goes on scraping."""
    cfg = tmp_path / "c.yml"
    write_config(cfg, target)
    port = free_ports(1)[0]
    base = f"http://127.0.0.1:{port}"
    log = tmp_path / "relay.log"
    proc = start(cfg, port, "--queue.memory", nofile=64, log=log)
    flood: list[socket.socket] = []
    try:
        wait_http(base + "/-/ready", 20, proc)
        before = scrapes(base)
        for _ in range(200):  # far more than the relay's 64 descriptors: the kernel backlog takes the rest
            try:
                s = socket.create_connection(("127.0.0.1", port), timeout=2)
            except OSError:
                break
            flood.append(s)
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline and "cannot accept connections" not in log.read_text():
            time.sleep(0.2)
        assert "cannot accept connections (Too many open files)" in log.read_text()
        time.sleep(2)  # a while out of descriptors: retried after a pause, not a busy loop, not a crash
        assert proc.poll() is None
        for s in flood:
            s.close()
        flood.clear()
        deadline = time.monotonic() + 30
        healthy = False
        while time.monotonic() < deadline and not healthy:
            try:
                healthy = urllib.request.urlopen(base + "/-/healthy", timeout=5).status == 200
            except OSError:
                time.sleep(0.2)
        assert healthy and proc.poll() is None
        after = scrapes(base)
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline and scrapes(base) < after + 2:
            time.sleep(0.3)
        assert scrapes(base) >= after + 2 > before  # scraping goes on after the flood
        text = urllib.request.urlopen(base + "/metrics", timeout=10).read().decode()
        (errors,) = [float(x.split()[1]) for x in text.splitlines() if x.startswith("relay_web_accept_errors_total ")]
        assert errors >= 1  # each failed accept counted
        text = log.read_text()
        assert text.count("cannot accept connections") == 1, text  # logged once per change of state
        assert "accepting connections again" in text
    finally:
        for s in flood:
            s.close()
        assert stop(proc) == 0


def test_connection_cap_and_slow_clients(tmp_path: Path) -> None:
    """At --web.max-connections idle clients, the next waits (not refused, not a crash); a client
    that sends no complete head is cut off after --web.read-timeout; an oversized head gets 431."""
    cfg = tmp_path / "c.yml"
    write_config(cfg)
    port = free_ports(1)[0]
    base = f"http://127.0.0.1:{port}"
    proc = start(cfg, port, "--web.max-connections", "3", "--web.read-timeout", "1500ms")
    idle: list[socket.socket] = []
    try:
        wait_http(base + "/-/ready", 20, proc)
        for _ in range(3):
            s = socket.create_connection(("127.0.0.1", port), timeout=5)
            s.sendall(b"GET /-/healthy HTTP/1.1\r\n")  # a slowloris: never the blank line
            idle.append(s)
        time.sleep(0.3)
        t0 = time.monotonic()
        assert urllib.request.urlopen(base + "/-/healthy", timeout=10).status == 200  # waited for a slot
        waited = time.monotonic() - t0
        assert waited > 0.5  # it could not be served while the three held every slot
        for s in idle:  # and the slow ones were cut off: EOF without a response
            s.settimeout(5)
            assert s.recv(100) == b""
        big = socket.create_connection(("127.0.0.1", port), timeout=5)
        big.sendall(b"GET / HTTP/1.1\r\nX-Big: " + b"a" * 40000 + b"\r\n\r\n")
        assert big.recv(100).startswith(b"HTTP/1.1 431 ")
        big.close()
        assert proc.poll() is None
    finally:
        for s in idle:
            s.close()
        assert stop(proc) == 0


def test_reload_needs_the_lifecycle_flag(tmp_path: Path) -> None:
    cfg = tmp_path / "c.yml"
    write_config(cfg)
    port = free_ports(1)[0]
    base = f"http://127.0.0.1:{port}"
    proc = start(cfg, port)
    try:
        wait_http(base + "/-/ready", 20, proc)
        status, body = post(base + "/-/reload")
        assert status == 403 and body == b"Lifecycle API is not enabled (start the relay with --web.enable-lifecycle)\n"
        cfg.write_text("scrape_configs:\n  - job_name: hup\n    static_configs: [{targets: ['127.0.0.1:1']}]\n")
        proc.send_signal(signal.SIGHUP)  # SIGHUP reloads without the flag
        deadline = time.monotonic() + 20
        jobs: list[str] = []
        while time.monotonic() < deadline and jobs != ["hup"]:
            data = orjson.loads(urllib.request.urlopen(base + "/targets", timeout=10).read())
            jobs = [t["labels"]["job"] for t in data["data"]["activeTargets"]]
            time.sleep(0.1)
        assert jobs == ["hup"]
        write_config(cfg)
    finally:
        assert stop(proc) == 0
    log = tmp_path / "old.log"
    proc = start(cfg, port, "--web.disable-reload", log=log)  # deprecated, still accepted
    try:
        wait_http(base + "/-/ready", 20, proc)
        assert post(base + "/-/reload")[0] == 403
    finally:
        assert stop(proc) == 0
    assert "--web.disable-reload is deprecated" in log.read_text()
    proc = start(cfg, port, "--web.enable-lifecycle")
    try:
        wait_http(base + "/-/ready", 20, proc)
        assert post(base + "/-/reload") == (200, b"config reloaded\n")
    finally:
        assert stop(proc) == 0


def test_cross_origin_posts_are_refused(tmp_path: Path) -> None:
    cfg = tmp_path / "c.yml"
    write_config(cfg)
    port = free_ports(1)[0]
    base = f"http://127.0.0.1:{port}"
    proc = start(cfg, port, "--web.enable-lifecycle")
    try:
        wait_http(base + "/-/ready", 20, proc)
        for headers in ({"Origin": "http://evil.example"}, {"Origin": f"http://evil.example:{port}"},
                        {"Origin": f"http://127.0.0.1:{port + 1}"}, {"Origin": "null"},
                        {"Sec-Fetch-Site": "cross-site"}):
            status, body = post(base + "/-/reload", headers)
            assert status == 403 and b"refused" in body, headers
        for headers in ({}, {"Origin": f"http://127.0.0.1:{port}"}, {"Origin": f"http://localhost:{port}"},
                        {"Sec-Fetch-Site": "same-origin"}):
            assert post(base + "/-/reload", headers)[0] == 200, headers
        # a GET from anywhere is still served (it changes nothing)
        req = urllib.request.Request(base + "/-/healthy", headers={"Origin": "http://evil.example"})
        assert urllib.request.urlopen(req, timeout=10).status == 200
    finally:
        assert stop(proc) == 0


def test_web_config_tls_and_basic_auth(tmp_path: Path) -> None:
    tls = make_tls_files(tmp_path / "tls")
    hashed = bcrypt.hashpw(b"s3cret", bcrypt.gensalt(rounds=4)).decode()
    web = tmp_path / "web.yml"
    web.write_text(
        f"tls_server_config:\n  cert_file: {tls.server_cert}\n  key_file: {tls.server_key}\n"
        "http_server_config:\n  headers: {X-Frame-Options: deny}\n"
        f"basic_auth_users:\n  alice: '{hashed}'\n"
    )
    cfg = tmp_path / "c.yml"
    write_config(cfg)
    port = free_ports(1)[0]
    proc = start(cfg, port, "--web.config.file", str(web))
    ctx = ssl.create_default_context(cafile=tls.ca_file)

    def get(path: str, user: str | None, password: str = "") -> tuple[int, dict[str, str]]:
        headers = {}
        if user is not None:
            headers["Authorization"] = "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()
        req = urllib.request.Request(f"https://127.0.0.1:{port}{path}", headers=headers)
        try:
            with urllib.request.urlopen(req, timeout=10, context=ctx) as resp:
                return resp.status, dict(resp.headers)
        except urllib.error.HTTPError as exc:
            return exc.code, dict(exc.headers)

    try:
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            try:
                get("/-/healthy", "alice", "s3cret")
                break
            except OSError:
                assert proc.poll() is None
                time.sleep(0.2)
        status, headers = get("/metrics", "alice", "s3cret")
        assert status == 200 and headers.get("X-Frame-Options") == "deny"
        for path in ("/metrics", "/-/healthy", "/targets", "/-/reload"):
            assert get(path, "alice", "wrong")[0] == 401
            assert get(path, "mallory", "s3cret")[0] == 401
            status, headers = get(path, None)
            assert status == 401 and headers.get("WWW-Authenticate") == 'Basic realm="relay"'
        with pytest.raises((urllib.error.URLError, ConnectionError, http.client.HTTPException)):
            urllib.request.urlopen(f"http://127.0.0.1:{port}/-/healthy", timeout=10)  # no TLS: refused
        assert proc.poll() is None
    finally:
        assert stop(proc) == 0


@pytest.mark.parametrize(
    ("text", "expect"),
    [
        ("basic_auth_users: {alice: plain}\n", "basic_auth_users.alice: is not a bcrypt hash"),
        ("tls_server_config: {cert_file: /nonexistent.crt, key_file: /nonexistent.key}\n",
         "tls_server_config.cert_file: cannot load /nonexistent.crt"),
        ("tls_server_config: {key_file: k}\n", "tls_server_config.cert_file: is required"),
        ("tls_server_config: {cert_file: a, key_file: b, min_version: TLS9}\n",
         "tls_server_config.min_version: 'TLS9' is not one of"),
        ("http_server_config: {headers: {Set-Cookie: x}}\n", "http_server_config.headers.Set-Cookie: cannot be set"),
        ("bogus: 1\n", "bogus: unknown key"),
        ("tls_server_config: [1\n", "invalid YAML"),
    ],
)
def test_bad_web_config_is_one_line_exit_2(tmp_path: Path, text: str, expect: str) -> None:
    cfg = tmp_path / "c.yml"
    write_config(cfg)
    web = tmp_path / "web.yml"
    web.write_text(text)
    out = subprocess.run([*RELAY, "run", "--config", str(cfg), "--web.config.file", str(web),
                          "--listen", f"127.0.0.1:{free_ports(1)[0]}"], capture_output=True, text=True, timeout=60)
    lines = out.stderr.strip().splitlines()
    assert out.returncode == 2 and len(lines) == 1 and expect in lines[0] and str(web) in lines[0], out.stderr


def test_reload_does_not_block_the_loop(tmp_path: Path) -> None:
    """A reload reads and parses in a worker thread: /-/healthy answers while a big config loads."""
    cfg = tmp_path / "c.yml"
    write_config(cfg)
    port = free_ports(1)[0]
    base = f"http://127.0.0.1:{port}"
    proc = start(cfg, port, "--web.enable-lifecycle")
    try:
        wait_http(base + "/-/ready", 20, proc)
        jobs = "".join(
            f"  - job_name: j{i}\n    static_configs: [{{targets: ['127.0.0.1:1']}}]\n"
            "    relabel_configs: [{source_labels: [__address__], regex: '(.*):1', target_label: a, replacement: $1}]\n"
            for i in range(3000)
        )
        big = "global: {scrape_interval: 1h}\nscrape_configs:\n" + jobs
        cfg.write_text(big)
        result: list[tuple[int, bytes]] = []
        t = threading.Thread(target=lambda: result.append(post(base + "/-/reload")))
        t0 = time.monotonic()
        t.start()
        answered: list[float] = []
        while t.is_alive() and time.monotonic() - t0 < 60:
            s0 = time.monotonic()
            assert urllib.request.urlopen(base + "/-/healthy", timeout=10).status == 200
            answered.append(time.monotonic() - s0)
        t.join(60)
        assert result and result[0][0] == 200
        data = orjson.loads(urllib.request.urlopen(base + "/targets", timeout=30).read())
        assert len(data["data"]["activeTargets"]) == 3000
        # Parsed on the loop, the reload would hold every request until it is done: one or two
        # answers. In a thread the loop answers all along (applying the new jobs is still on it).
        assert len(answered) >= 10, answered
        print(f"reload took {time.monotonic() - t0:.2f}s; {len(answered)} health checks meanwhile, "
              f"slowest {max(answered, default=0) * 1000:.0f} ms")
    finally:
        assert stop(proc) == 0
