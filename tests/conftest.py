"""Shared fixtures: real etcd members and real receivers on loopback.

A test that needs a service it cannot start is skipped, unless RELAY_REQUIRE_SERVICES=1 (as CI
sets it), where it fails: a missing etcd or receiver must never pass silently.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import NoReturn, TypeVar

import pytest

from relay.devtools.localenv import EtcdCluster, PrometheusReceiver, ServiceUnavailable, VictoriaMetrics

REPO = Path(__file__).resolve().parents[1]
DATA = REPO / "tests" / "data"  # copies of ../shared: etcd bodies (relay/data) and the OpenMetrics suite
REQUIRE_SERVICES = os.environ.get("RELAY_REQUIRE_SERVICES", "") not in ("", "0")


S = TypeVar("S")


def missing_service(reason: str) -> NoReturn:
    """Skip (or, with RELAY_REQUIRE_SERVICES=1, fail) a test whose service is unavailable."""
    if REQUIRE_SERVICES:
        pytest.fail(f"required service unavailable: {reason}")
    pytest.skip(reason)


def available(make: Callable[[], S]) -> S:
    """``make()`` (a service's constructor, which finds its binary); a test whose service is not
    installed is skipped, or fails with RELAY_REQUIRE_SERVICES=1 (see :func:`missing_service`)."""
    try:
        return make()
    except ServiceUnavailable as exc:
        missing_service(str(exc))


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture(scope="session")
def etcd_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EtcdCluster]:
    """A 3-member etcd 3.5.1 cluster for the whole session (do not stop its members in tests)."""
    with available(lambda: EtcdCluster(3, version="3.5", base_dir=tmp_path_factory.mktemp("etcd35"))) as cluster:
        yield cluster


@pytest.fixture(scope="session")
def victoria_metrics(tmp_path_factory: pytest.TempPathFactory) -> Iterator[VictoriaMetrics]:
    with available(lambda: VictoriaMetrics(base_dir=tmp_path_factory.mktemp("vm"))) as vm:
        yield vm


@pytest.fixture(scope="session")
def prometheus_receiver(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PrometheusReceiver]:
    with available(lambda: PrometheusReceiver(base_dir=tmp_path_factory.mktemp("prom"))) as prom:
        yield prom
