"""Shared fixtures: real etcd members and real receivers on loopback.

A test that needs a service it cannot start is skipped, unless RELAY_REQUIRE_SERVICES=1 (as CI
sets it), where it fails: a missing etcd or receiver must never pass silently.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from relay.devtools.localenv import EtcdCluster, PrometheusReceiver, ServiceUnavailable, VictoriaMetrics

REPO = Path(__file__).resolve().parents[1]
DATA = REPO / "tests" / "data"  # copies of ../shared: etcd bodies (relay/data) and the OpenMetrics suite
REQUIRE_SERVICES = os.environ.get("RELAY_REQUIRE_SERVICES", "") not in ("", "0")


def missing_service(reason: str) -> None:
    """Skip (or, with RELAY_REQUIRE_SERVICES=1, fail) a test whose service is unavailable."""
    if REQUIRE_SERVICES:
        pytest.fail(f"required service unavailable: {reason}")
    pytest.skip(reason)


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture(scope="session")
def etcd_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EtcdCluster]:
    """A 3-member etcd 3.5.1 cluster for the whole session (do not stop its members in tests)."""
    try:
        cluster = EtcdCluster(3, version="3.5", base_dir=tmp_path_factory.mktemp("etcd35"))
    except ServiceUnavailable as exc:
        missing_service(str(exc))
    with cluster:
        yield cluster


@pytest.fixture(scope="session")
def victoria_metrics(tmp_path_factory: pytest.TempPathFactory) -> Iterator[VictoriaMetrics]:
    try:
        vm = VictoriaMetrics(base_dir=tmp_path_factory.mktemp("vm"))
    except ServiceUnavailable as exc:
        missing_service(str(exc))
    with vm:
        yield vm


@pytest.fixture(scope="session")
def prometheus_receiver(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PrometheusReceiver]:
    try:
        prom = PrometheusReceiver(base_dir=tmp_path_factory.mktemp("prom"))
    except ServiceUnavailable as exc:
        missing_service(str(exc))
    with prom:
        yield prom
