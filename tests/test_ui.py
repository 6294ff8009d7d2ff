"""The web UI in a real browser: headless Chromium (Debian ``chromium``) loads each page from a
running relay; the test reads the DOM after load and keeps a screenshot of each page as an artefact
(in ``$RELAY_TEST_ARTIFACTS``, default ``test-artifacts/`` in the checkout).

The relay scrapes three ``relay sim`` members, a closed port (a down target with its error) and a
file_sd target whose label value is an HTML injection attempt, with etcd_health on."""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import orjson
import pytest

from relay.devtools.localenv import free_ports, wait_http
from relay.http import ui
from tests.conftest import missing_service

ROOT = Path(__file__).resolve().parents[1]
ARTIFACTS = Path(os.environ.get("RELAY_TEST_ARTIFACTS", ROOT / "test-artifacts")) / (
    "ui-pure-python" if os.environ.get("RELAY_NO_EXTENSIONS") else "ui")
EVIL = "<script>alert(1)</script>"


def _chromium() -> str:
    for name in ("chromium", "chromium-browser", "google-chrome"):
        path = shutil.which(name)
        if path:
            return path
    missing_service("chromium (Debian chromium) is not installed")


def _browser(*args: str) -> subprocess.CompletedProcess[str]:
    with tempfile.TemporaryDirectory(prefix="relay-chromium-") as profile:
        return subprocess.run(
            [_chromium(), "--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
             "--no-first-run", f"--user-data-dir={profile}", *args],
            capture_output=True, text=True, timeout=120,
        )


def dom(url: str) -> str:
    ran = _browser("--dump-dom", url)
    assert ran.returncode == 0 and "<html" in ran.stdout[:200], ran.stderr[-2000:]
    return ran.stdout


def screenshot(url: str, name: str) -> Path:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    path = ARTIFACTS / f"{name}.png"
    path.unlink(missing_ok=True)
    ran = _browser(f"--screenshot={path}", "--window-size=1280,900", "--hide-scrollbars", url)
    assert ran.returncode == 0, ran.stderr[-2000:]
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and path.stat().st_size > 5000
    return path


@pytest.fixture(scope="module")
def relay_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    _chromium()
    tmp = tmp_path_factory.mktemp("ui")
    targets = tmp / "targets.json"
    sim = subprocess.Popen([sys.executable, "-m", "relay.cli", "sim", "--members", "3", "--write-targets", str(targets),
                            "--duration", "300"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 30
    while not targets.exists() and time.monotonic() < deadline:
        time.sleep(0.1)
    port, closed, unused = free_ports(3)
    (tmp / "evil.json").write_text(orjson.dumps([{"targets": [f"127.0.0.1:{unused}"], "labels": {"note": EVIL}}]).decode())
    config = tmp / "relay.yml"
    config.write_text(
        "global: {scrape_interval: 1s, scrape_timeout: 900ms}\n"
        "etcd_health: {}\n"
        "scrape_configs:\n"
        f"  - job_name: etcd\n    file_sd_configs: [{{files: ['{targets}']}}]\n"
        f"  - job_name: broken\n    static_configs: [{{targets: ['127.0.0.1:{closed}']}}]\n"
        f"    file_sd_configs: [{{files: ['{tmp / 'evil.json'}']}}]\n",
        encoding="utf-8",
    )
    with (tmp / "relay.log").open("wb") as log:
        relay = subprocess.Popen(
            [sys.executable, "-m", "relay.cli", "run", "--config", str(config), "--listen", f"127.0.0.1:{port}",
             "--queue.memory"], stdout=subprocess.DEVNULL, stderr=log)
    base = f"http://127.0.0.1:{port}"
    try:
        wait_http(base + "/-/ready", 60)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:  # every target scraped once
            data = orjson.loads(urllib.request.urlopen(base + "/api/v1/targets", timeout=10).read())["data"]
            if len(data["activeTargets"]) == 5 and all(t["lastScrapeTs"] for t in data["activeTargets"]):
                break
            time.sleep(0.3)
        time.sleep(2)
        yield base
    finally:
        relay.send_signal(signal.SIGTERM)
        relay.wait(60)
        sim.send_signal(signal.SIGTERM)
        sim.wait(30)


def _nav_active(html: str) -> list[str]:
    nav = re.search(r"<nav>(.*?)</nav>", html, re.S)
    assert nav is not None, "no navigation bar"
    titles = re.findall(r"<a [^>]*>([^<]+)</a>", nav.group(1))
    assert titles == [t for _, t, _ in ui.NAV]
    return re.findall(r'<a href="[^"]*" class="on">([^<]+)</a>', nav.group(1))


@pytest.mark.services
@pytest.mark.slow
def test_targets_page(relay_url: str) -> None:
    html = dom(relay_url + "/")  # / redirects to the targets page
    assert _nav_active(html) == ["Targets"]
    rows = re.findall(r'<tr class="target">(.*?)</tr>', html, re.S)
    assert len(rows) == 5
    assert sum('class="up">up<' in r for r in rows) == 3
    down = [r for r in rows if 'class="down">down<' in r]
    assert len(down) == 2 and all("cannot connect to 127.0.0.1:" in r for r in down)
    assert re.search(r'<a href="/targets\?format=html&amp;job=etcd">etcd</a></td><td class="up">3/3 up', html)
    # the injection attempt is text, not markup
    assert "<script>" not in html and "&lt;script&gt;alert(1)&lt;/script&gt;" in html
    screenshot(relay_url + "/targets?format=html", "targets")
    # the filter form's GET: one job, one state
    html = dom(relay_url + "/targets?format=html&job=broken&health=down")
    assert len(re.findall(r'<tr class="target">', html)) == 2
    assert "2 targets of job broken, down; page 1 of 1" in html
    html = dom(relay_url + "/targets?format=html&health=sideways")
    assert "health 'sideways' is not one of any, up, down, unknown: showing any" in html


@pytest.mark.services
@pytest.mark.slow
@pytest.mark.parametrize(
    ("path", "active", "expect"),
    [
        ("/service-discovery", "Service discovery", ["Service discovery", "etcd", "broken"]),
        ("/config?format=html", "Config", ['<pre id="config">', "job_name: etcd", "job_name: broken"]),
        ("/status", "Status", ['<table id="build">', '<table id="runtime">', '<table id="flags">', "cExtensions"]),
        ("/fleet", "etcd fleet", ["sim-00000"]),
    ],
    ids=["service-discovery", "config", "status", "fleet"],
)
def test_other_pages(relay_url: str, path: str, active: str, expect: list[str]) -> None:
    html = dom(relay_url + path)
    assert _nav_active(html) == [active]
    for text in expect:
        assert text in html, text
    assert "<script>" not in html
    screenshot(relay_url + path, path.strip("/").split("?")[0])


@pytest.mark.services
def test_pages_send_the_security_headers(relay_url: str) -> None:
    for path in ("/targets?format=html", "/service-discovery", "/config?format=html", "/status", "/fleet"):
        with urllib.request.urlopen(relay_url + path, timeout=10) as resp:
            assert resp.headers["Content-Security-Policy"] == "default-src 'none'; style-src 'unsafe-inline'", path
            assert resp.headers["X-Content-Type-Options"] == "nosniff", path
            assert resp.headers["Content-Type"].startswith("text/html"), path


def test_ten_thousand_targets_come_in_pages() -> None:
    targets = [{"scrapePool": f"job{i % 3}", "scrapeUrl": f"http://127.0.0.{i // 250 + 1}:{2000 + i}/metrics",
                "labels": {"instance": f"m{i}"}, "health": "up" if i % 7 else "down", "lastError": "",
                "lastScrapeTs": 1.0, "lastScrapeDuration": 0.01, "lastSamples": 1400} for i in range(10_000)]
    html = ui.targets_page(targets, {}).decode()
    assert html.count("<tr class='target'>") == ui.TARGETS_PER_PAGE
    assert "10000 targets; page 1 of 20" in html and ">next</a>" in html and ">previous</a>" not in html
    html = ui.targets_page(targets, {"page": ["20"], "job": ["job1"]}).decode()
    n = sum(1 for t in targets if t["scrapePool"] == "job1")
    assert f"{n} targets of job job1; page 7 of 7" in html
    assert html.count("<tr class='target'>") == n - 6 * ui.TARGETS_PER_PAGE
    assert "page=6" in html and ">next</a>" not in html
