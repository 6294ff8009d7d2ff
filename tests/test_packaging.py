"""Packaging: ``pip wheel .`` gives a wheel with the C twins where a compiler exists (and a pure one
under RELAY_NO_EXTENSIONS=1), RELAY_REQUIRE_EXTENSIONS makes a failed compile fail the build, and the
container image's HEALTHCHECK command answers as a probe should against a running relay."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
import tomllib
import urllib.request
import zipfile
from pathlib import Path

import pytest

from relay import _ext
from relay.devtools.localenv import free_ports
from relay.healthcheck import check

ROOT = Path(__file__).resolve().parents[1]
C_SUFFIXES = tuple(name.replace(".", "/") for name in _ext.C_MODULES)


def _source_copy(dest: Path) -> Path:
    """The files a wheel is built from, without in-tree build output (.so, generated .c)."""
    src = dest / "src"
    src.mkdir()
    for name in ("pyproject.toml", "setup.py", "README.md"):
        shutil.copy2(ROOT / name, src / name)
    shutil.copytree(
        ROOT / "relay", src / "relay", ignore=shutil.ignore_patterns("*.so", "*_c.c", "*_c.html", "__pycache__")
    )
    return src


def _pip_wheel(src: Path, out: Path, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "pip", "wheel", str(src), "--no-deps", "-q", "-w", str(out)],
        capture_output=True, text=True, env=env, timeout=900,
    )


@pytest.mark.slow
def test_pip_wheel_carries_the_twin_in_use(tmp_path: Path) -> None:
    src = _source_copy(tmp_path)
    env = dict(os.environ)
    no_ext = _ext.NO_EXTENSIONS
    if no_ext:
        env.pop("RELAY_REQUIRE_EXTENSIONS", None)
    else:
        env.pop("RELAY_NO_EXTENSIONS", None)
        env["RELAY_REQUIRE_EXTENSIONS"] = "1"
    done = _pip_wheel(src, tmp_path / "out", env)
    assert done.returncode == 0, done.stderr[-2000:]
    (wheel,) = (tmp_path / "out").glob("*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    compiled = [n for n in names if n.endswith(".so")]
    assert "relay/healthcheck.py" in names and "relay/health/etcd-mixin-alerts.yaml" in names
    if no_ext:
        assert compiled == [] and wheel.name.endswith("-py3-none-any.whl"), wheel.name
        return
    for module in C_SUFFIXES:
        assert any(n.startswith(module + ".") for n in compiled), (module, compiled)
    assert "-cp3" in wheel.name and "linux" in wheel.name, wheel.name
    # The wheel's own modules (not the checkout's) load their C twins.
    unpacked = tmp_path / "unpacked"
    zipfile.ZipFile(wheel).extractall(unpacked)
    probe = (
        "import sys; sys.path.insert(0, sys.argv[1]); import relay, relay._ext as e; "
        "assert relay.__file__.startswith(sys.argv[1]), relay.__file__; "
        "sys.exit(0 if all(e.loaded().values()) else str(e.loaded()))"
    )
    clean = {k: v for k, v in os.environ.items() if not k.startswith("RELAY_")}
    ran = subprocess.run([sys.executable, "-I", "-c", probe, str(unpacked)], capture_output=True, text=True,
                         env=clean, timeout=60)
    assert ran.returncode == 0, ran.stderr


def test_required_extensions_fail_the_build_when_they_cannot_compile(tmp_path: Path) -> None:
    """A .pyx that does not compile: the default build goes on (pure Python), a required one stops."""
    if _ext.NO_EXTENSIONS:
        # Both variables at once are refused at once: no compile needed to see it.
        src = _source_copy(tmp_path)
        env = dict(os.environ, RELAY_REQUIRE_EXTENSIONS="1")
        done = _pip_wheel(src, tmp_path / "out", env)
        assert done.returncode != 0
        assert "RELAY_NO_EXTENSIONS and RELAY_REQUIRE_EXTENSIONS are both set" in done.stderr + done.stdout
        return
    src = _source_copy(tmp_path)
    for pyx in src.glob("relay/**/*_c.pyx"):
        pyx.write_text("this is not cython\n", encoding="utf-8")
    env = {k: v for k, v in os.environ.items() if k != "RELAY_NO_EXTENSIONS"}
    env["RELAY_REQUIRE_EXTENSIONS"] = "1"
    required = _pip_wheel(src, tmp_path / "required", env)
    assert required.returncode != 0
    assert not list((tmp_path / "required").glob("*.whl"))
    env.pop("RELAY_REQUIRE_EXTENSIONS")
    optional = _pip_wheel(src, tmp_path / "optional", env)
    assert optional.returncode == 0, optional.stderr[-2000:]
    (wheel,) = (tmp_path / "optional").glob("*.whl")
    assert not [n for n in zipfile.ZipFile(wheel).namelist() if n.endswith(".so")]


def test_cibuildwheel_config_requires_the_extensions() -> None:
    conf = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["tool"]["cibuildwheel"]
    assert conf["linux"]["environment"]["RELAY_REQUIRE_EXTENSIONS"] == "1"
    assert "e.loaded()" in conf["test-command"]
    assert set(conf["build"].split()) >= {"cp311-*"}


def test_dockerfile_healthcheck_runs_the_probe() -> None:
    text = (ROOT / "deploy" / "Dockerfile").read_text(encoding="utf-8")
    (line,) = [ln for ln in text.splitlines() if ln.startswith("HEALTHCHECK")]
    assert "--interval=" in line and "--timeout=" in line
    assert '"python", "-m", "relay.healthcheck"' in text
    assert "RELAY_REQUIRE_EXTENSIONS=1 /opt/relay/bin/pip install" in text


def _wait_healthy(url: str, deadline: float) -> None:
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(url, timeout=1) as resp:
                if resp.status == 200:
                    return
        except OSError:
            time.sleep(0.1)
    raise AssertionError(f"relay at {url} never became healthy")


def test_healthcheck_against_a_running_relay(tmp_path: Path) -> None:
    port, closed = free_ports(2)
    config = tmp_path / "relay.yml"
    config.write_text("scrape_configs: []\n", encoding="utf-8")
    log = (tmp_path / "relay.log").open("wb")
    proc = subprocess.Popen(
        [sys.executable, "-m", "relay.cli", "run", "--config", str(config), "--listen", f"127.0.0.1:{port}",
         "--queue.memory"],
        stdout=log, stderr=subprocess.STDOUT,
    )
    try:
        base = f"http://127.0.0.1:{port}"
        _wait_healthy(base + "/-/healthy", time.monotonic() + 60)
        assert check(base + "/-/healthy") is None
        ran = subprocess.run([sys.executable, "-m", "relay.healthcheck", base + "/-/healthy"],
                             capture_output=True, text=True, timeout=30)
        assert (ran.returncode, ran.stderr) == (0, "")
        env = dict(os.environ, RELAY_HEALTHCHECK_URL=base + "/-/healthy")
        ran = subprocess.run([sys.executable, "-m", "relay.healthcheck"], capture_output=True, text=True,
                             env=env, timeout=30)
        assert ran.returncode == 0, ran.stderr
        assert check(base + "/no-such-page") == f"healthcheck: {base}/no-such-page: HTTP status 404"
    finally:
        proc.terminate()
        proc.wait(30)
        log.close()
    ran = subprocess.run([sys.executable, "-m", "relay.healthcheck", f"http://127.0.0.1:{closed}/-/healthy"],
                         capture_output=True, text=True, timeout=30)
    assert ran.returncode == 1
    assert ran.stderr.startswith(f"healthcheck: http://127.0.0.1:{closed}/-/healthy: ") and ran.stderr.count("\n") == 1
    assert "Connection refused" in ran.stderr
    ran = subprocess.run([sys.executable, "-m", "relay.healthcheck", "ftp://x", "y"], capture_output=True, text=True,
                         timeout=30)
    assert ran.returncode == 2
    assert check("ftp://x/") == "healthcheck: 'ftp://x/' is not an http:// or https:// URL"
