"""Discovery: file_sd files (watched), and etcd_sd against a real etcd cluster's member list."""

from __future__ import annotations

import json
from pathlib import Path

import anyio
import httpx
import pytest

from relay.config import EtcdSDConfig, FileSDConfig
from relay.devtools.localenv import EtcdCluster
from relay.discovery import (
    DiscoveryError,
    EtcdSDProvider,
    FileSDProvider,
    TargetGroup,
    members_to_groups,
    read_file_sd,
)
from relay.http.client import ClientPool
from tests.mockpool import MockPool

pytestmark = pytest.mark.anyio


def test_read_file_sd_json_and_yaml(tmp_path: Path) -> None:
    j = tmp_path / "t.json"
    j.write_text(json.dumps([{"targets": ["a:1", "b:2"], "labels": {"env": "x"}}]))
    y = tmp_path / "t.yml"
    y.write_text("- targets: ['c:3']\n")
    (g,) = read_file_sd(str(j))
    assert g.targets == ("a:1", "b:2") and ("env", "x") in g.labels and ("__meta_filepath", str(j)) in g.labels
    assert read_file_sd(str(y))[0].targets == ("c:3",)


@pytest.mark.parametrize(
    ("content", "problem"),
    [("{", "not valid JSON"), ('{"targets": []}', "must be a list"), ('[{"targetz": []}]', "unknown key")],
)
def test_read_file_sd_errors(tmp_path: Path, content: str, problem: str) -> None:
    p = tmp_path / "t.json"
    p.write_text(content)
    with pytest.raises(DiscoveryError, match=problem):
        read_file_sd(str(p))


@pytest.mark.parametrize(
    ("name", "content", "problem"),
    [
        ("t.json", b'[{"targets": ["a:1"], "labels": {"a": "caf\xe9"}}]', r"not UTF-8 \(byte 0xe9 at offset \d+\)"),
        ("t.json", b"[" * 100_000 + b"]" * 100_000, "nested too deeply"),
        ("t.yml", b"[" * 100_000 + b"]" * 100_000, "nested too deeply"),
        ("t.yml", b"- targets: ['a:1']\n  labels: {a: &x [1, 2], b: *x}\n", r"\[0\]\.labels\.a: must be a string, got list"),
        ("t.yml", b"- targets: [[a, b]]\n", r"\[0\]\.targets\[0\]: must be a string, got list"),
        ("t.yml", b"- targets: ['a:1']\n  labels: {a: {b: c}}\n", "labels.a: must be a string, got dict"),
    ],
)
def test_read_file_sd_hostile_files(tmp_path: Path, name: str, content: bytes, problem: str) -> None:
    """Whatever the file holds, one DiscoveryError naming the file (never another exception)."""
    p = tmp_path / name
    p.write_bytes(content)
    with pytest.raises(DiscoveryError, match=problem) as info:
        read_file_sd(str(p))
    assert str(info.value).startswith(str(p))


def test_read_file_sd_refuses_a_file_past_its_limit(tmp_path: Path) -> None:
    from relay.discovery.file import FILE_LIMIT

    p = tmp_path / "t.json"
    with open(p, "wb") as f:
        f.truncate(FILE_LIMIT + 1)  # sparse
    with pytest.raises(DiscoveryError, match="larger than 64 MiB"):
        read_file_sd(str(p))
    p.write_text('[{"targets": ["a:1"], "labels": {"n": 1, "b": true}}]')  # numbers and booleans are fine
    (g,) = read_file_sd(str(p))
    assert ("n", "1") in g.labels and ("b", "true") in g.labels


async def test_file_sd_picks_up_changes_and_keeps_last_good(tmp_path: Path) -> None:
    p = tmp_path / "t.json"
    p.write_text(json.dumps([{"targets": ["a:1"]}]))
    seen: list[list[TargetGroup]] = []
    provider = FileSDProvider(FileSDConfig(files=(str(p),)), "job", poll=0.05)
    async with anyio.create_task_group() as tg:
        tg.start_soon(provider.run, seen.append)
        with anyio.fail_after(5):
            while not seen:
                await anyio.sleep(0.01)
        p.write_text(json.dumps([{"targets": ["a:1", "b:2"]}]))
        with anyio.fail_after(5):
            while seen[-1][0].targets != ("a:1", "b:2"):
                await anyio.sleep(0.01)
        p.write_text("{broken")
        with anyio.fail_after(5):
            while provider.last_error is None:
                await anyio.sleep(0.01)
        assert seen[-1][0].targets == ("a:1", "b:2")  # a broken file keeps what it said last
        tg.cancel_scope.cancel()


def test_members_to_groups_rewrites_port() -> None:
    data = {
        "header": {"cluster_id": "17237436991929493444"},
        "members": [
            {"ID": "10501334649042878790", "name": "m0", "peerURLs": ["http://10.0.0.1:2380"],
             "clientURLs": ["https://10.0.0.1:2379"]},
            {"ID": "1", "name": "", "peerURLs": ["http://10.0.0.9:2380"]},  # not started: no client URL
        ],
    }
    (g,) = members_to_groups(data, EtcdSDConfig(endpoints=("https://x:2379",), metrics_port=2381), "src")
    labels = dict(g.labels)
    assert g.targets == ("10.0.0.1:2381",)
    assert labels["__meta_etcd_member_name"] == "m0"
    assert labels["__meta_etcd_member_id"] == f"{10501334649042878790:x}"
    assert labels["__meta_etcd_cluster_id"] == f"{17237436991929493444:x}"
    assert labels["__meta_etcd_client_url"] == "https://10.0.0.1:2379"


@pytest.mark.services
async def test_etcd_sd_real_cluster(etcd_cluster: EtcdCluster) -> None:
    endpoints = (*tuple(m.client_url for m in etcd_cluster.members[:1]), "http://127.0.0.1:1")
    ports = {m.client_port: m.metrics_port for m in etcd_cluster.members}
    pool = ClientPool()
    provider = EtcdSDProvider(EtcdSDConfig(endpoints=("http://127.0.0.1:1", *endpoints)), "etcd", pool)
    try:
        groups = await provider.fetch()
    finally:
        await pool.aclose()
    assert sorted(g.targets[0] for g in groups) == sorted(f"127.0.0.1:{p}" for p in ports)
    names = sorted(dict(g.labels)["__meta_etcd_member_name"] for g in groups)
    assert names == ["m0", "m1", "m2"]
    assert len({dict(g.labels)["__meta_etcd_cluster_id"] for g in groups}) == 1


async def test_file_sd_pattern_does_not_follow_links_outside_its_folder(tmp_path: Path) -> None:
    inside = tmp_path / "targets"
    inside.mkdir()
    (inside / "a.json").write_text(json.dumps([{"targets": ["a:1"]}]))
    secret = tmp_path / "secret.json"
    secret.write_text(json.dumps([{"targets": ["leak:1"]}]))
    (inside / "b.json").symlink_to(secret)
    seen: list[list[TargetGroup]] = []
    provider = FileSDProvider(FileSDConfig(files=(str(inside / "*.json"),)), "job", poll=0.05)
    async with anyio.create_task_group() as tg:
        tg.start_soon(provider.run, seen.append)
        with anyio.fail_after(5):
            while not seen:
                await anyio.sleep(0.01)
        tg.cancel_scope.cancel()
    assert [g.targets for g in seen[-1]] == [("a:1",)]


def test_file_sd_errors_show_no_content(tmp_path: Path) -> None:
    p = tmp_path / "t.yml"
    p.write_text("password: hunter2-secret\n  bad: [indent\n")
    with pytest.raises(DiscoveryError) as info:
        read_file_sd(str(p))
    assert "hunter2" not in str(info.value) and str(info.value).startswith(f"{p}:")


@pytest.mark.parametrize(
    ("status", "body", "problem"),
    [
        (200, b"[]", "unexpected member list"),
        (200, b'{"members": ["x"]}', "unexpected member list"),
        (200, b"not json", "unexpected member list"),
        (503, b"", "HTTP 503"),
        (200, b"x" * (17 << 20), "body_size_limit"),
    ],
)
async def test_etcd_sd_bad_answers_are_discovery_errors(status: int, body: bytes, problem: str) -> None:
    """Whatever an endpoint answers, fetch() fails with one DiscoveryError naming it (run() keeps the
    last good members), and a member list is read at most RESPONSE_LIMIT bytes far."""

    def answer(request: httpx.Request) -> httpx.Response:
        assert request.url.path == "/v3/cluster/member/list" and request.method == "POST"
        return httpx.Response(status, content=body)

    provider = EtcdSDProvider(EtcdSDConfig(endpoints=("http://127.0.0.1:1",)), "job", MockPool(answer))
    with pytest.raises(DiscoveryError, match=problem) as info:
        await provider.fetch()
    assert "http://127.0.0.1:1" in str(info.value) and "\n" not in str(info.value)
