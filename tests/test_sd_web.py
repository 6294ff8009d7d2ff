"""What discovery found, on a running relay: /api/v1/targets droppedTargets and ?state=, the
/service-discovery page (escaped, with its security headers), and relay_discovery_errors_total."""

from __future__ import annotations

import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import orjson
import pytest

from relay.devtools.localenv import free_ports, wait_http

RELAY = [sys.executable, "-m", "relay.cli"]

CONFIG = """\
global: {scrape_interval: 1s}
scrape_configs:
  - job_name: web
    keep_dropped_targets: 2
    static_configs:
      - targets: ['127.0.0.1:1', '127.0.0.1:2', '127.0.0.1:3', '127.0.0.1:4']
        labels: {role: "<script>alert(1)</script>"}
    relabel_configs:
      - source_labels: [__address__]
        regex: '127\\.0\\.0\\.1:1'
        action: keep
  - job_name: files
    file_sd_configs: [{files: ['%s'], refresh_interval: 1s}]
"""


def _get(url: str) -> tuple[int, dict[str, str], bytes]:
    try:
        with urllib.request.urlopen(url) as r:
            return r.status, dict(r.headers), r.read()
    except urllib.error.HTTPError as exc:
        return exc.code, dict(exc.headers), exc.read()


def test_dropped_targets_state_filter_page_and_error_counter(tmp_path: Path) -> None:
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    cfg = tmp_path / "c.yml"
    cfg.write_text(CONFIG % bad)
    port = free_ports(1)[0]
    base = f"http://127.0.0.1:{port}"
    proc = subprocess.Popen([*RELAY, "run", "--config", str(cfg), "--listen", f"127.0.0.1:{port}"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_http(base + "/-/ready", 20, proc)
        status, _, body = _get(base + "/api/v1/targets")
        data = orjson.loads(body)["data"]
        assert status == 200
        assert [t["scrapeUrl"] for t in data["activeTargets"]] == ["http://127.0.0.1:1/metrics"]
        active = data["activeTargets"][0]
        assert active["discoveredLabels"]["__address__"] == "127.0.0.1:1"
        assert active["discoveredLabels"]["role"] == "<script>alert(1)</script>"
        # three dropped, two kept (keep_dropped_targets: 2), the count says all
        assert data["droppedTargetCounts"] == {"web": 3, "files": 0}
        assert len(data["droppedTargets"]) == 2
        d = data["droppedTargets"][0]
        assert d["scrapePool"] == "web" and d["discoveredLabels"]["job"] == "web"
        assert d["discoveredLabels"]["__address__"] in ("127.0.0.1:2", "127.0.0.1:3", "127.0.0.1:4")
        assert d["discoveredLabels"]["__scheme__"] == "http"

        only_dropped = orjson.loads(_get(base + "/api/v1/targets?state=dropped")[2])["data"]
        assert only_dropped["activeTargets"] == [] and len(only_dropped["droppedTargets"]) == 2
        only_active = orjson.loads(_get(base + "/api/v1/targets?state=ACTIVE")[2])["data"]
        assert len(only_active["activeTargets"]) == 1 and only_active["droppedTargets"] == []
        assert "droppedTargetCounts" not in only_active
        pool = orjson.loads(_get(base + "/api/v1/targets?scrapePool=files&state=any")[2])["data"]
        assert pool["activeTargets"] == [] and pool["droppedTargets"] == [] and pool["droppedTargetCounts"] == {"files": 0}
        status, _, body = _get(base + "/api/v1/targets?state=bogus")
        err = orjson.loads(body)
        assert status == 400 and err["status"] == "error" and "parameter state" in err["error"]
        assert "\n" not in err["error"]

        # the page: every discovered target, escaped, with its state, and the file_sd error
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            status, headers, body = _get(base + "/service-discovery")
            if b"not valid JSON" in body or b"invalid" in body.lower():
                break
            time.sleep(0.2)
        page = body.decode()
        assert status == 200
        assert headers["Content-Security-Policy"] == "default-src 'none'; style-src 'unsafe-inline'"
        assert headers["X-Content-Type-Options"] == "nosniff"
        assert "<script>" not in page and "&lt;script&gt;alert(1)&lt;/script&gt;" in page
        assert "4 discovered: 1 active, 3 dropped" in page
        assert page.count("dropped by relabel_configs") == 3
        assert "bad.json" in page and "class='err'" in page
        status, _, body = _get(base + "/service-discovery?offset=x")
        assert status == 400 and b"parameter offset" in body
        one = _get(base + "/service-discovery?scrapePool=files")[2].decode()
        assert "<h2 id='files'>" in one and "<h2 id='web'>" not in one

        # the error counter: once per failed read, growing while the file stays bad
        def errors() -> float:
            text = _get(base + "/metrics")[2].decode()
            for line in text.splitlines():
                if line.startswith('relay_discovery_errors_total{job="files",mechanism="file"}'):
                    return float(line.split()[-1])
            return 0.0

        first = errors()
        assert first >= 1
        deadline = time.monotonic() + 30
        while errors() <= first and time.monotonic() < deadline:
            time.sleep(0.3)
        assert errors() > first
    finally:
        proc.terminate()
        proc.wait(20)


@pytest.mark.parametrize("n", [10_000])
def test_page_of_many_targets_is_paged(n: int) -> None:
    from relay.http.pages import PAGE_SIZE, JobDiscovery, service_discovery_html
    from relay.scrape import DiscoveredTarget

    shown = [DiscoveredTarget({"__address__": f"10.0.{i // 256}.{i % 256}:2381"}, "dropped") for i in range(PAGE_SIZE)]
    page = service_discovery_html([JobDiscovery("etcd", [("kubernetes", None)], shown, n, 0, {"dropped": n})]).decode()
    assert f"targets 1-{PAGE_SIZE} of {n}" in page and f"offset={PAGE_SIZE}" in page and "next" in page
    assert page.count("<tr>") == PAGE_SIZE + 3  # the target rows, one provider row, two header rows
