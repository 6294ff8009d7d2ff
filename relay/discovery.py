"""Service discovery: static_configs, file_sd_configs and etcd_sd_configs -> target groups.

Each provider runs as a task and calls ``send(groups)`` with the full, current list of its target
groups whenever it changes. The scrape manager turns groups into targets (``target.build_target``).

``etcd_sd_configs`` asks a running cluster for its member list (``POST /v3/cluster/member/list``
on any of the given endpoints) and makes one target per member, with these labels:

    __meta_etcd_member_name, __meta_etcd_member_id (hex), __meta_etcd_cluster_id (hex),
    __meta_etcd_client_url, __meta_etcd_peer_url, __meta_etcd_member_is_learner

The address is the client URL's host with ``metrics_port`` as the port when set (usually 2381,
the plain-HTTP metrics listener), else the client URL's host:port.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import anyio
import httpx
import yaml

from .clients import ClientPool
from .config import EtcdSDConfig, FileSDConfig, StaticConfig

__all__ = ["EtcdSDProvider", "FileSDProvider", "Provider", "StaticProvider", "TargetGroup", "read_file_sd"]

log = logging.getLogger("relay.discovery")


@dataclass(frozen=True)
class TargetGroup:
    source: str
    targets: tuple[str, ...]
    labels: tuple[tuple[str, str], ...] = ()


Send = Callable[[list[TargetGroup]], None]


class Provider:
    """A discovery mechanism; ``run`` sends the complete list of groups on every change."""

    name = "provider"

    async def run(self, send: Send) -> None:
        raise NotImplementedError


class StaticProvider(Provider):
    name = "static"

    def __init__(self, configs: tuple[StaticConfig, ...], job: str) -> None:
        self.groups = [
            TargetGroup(source=f"{job}/static/{i}", targets=c.targets, labels=c.labels) for i, c in enumerate(configs)
        ]

    async def run(self, send: Send) -> None:
        send(self.groups)


class DiscoveryError(ValueError):
    pass


def read_file_sd(path: str) -> list[TargetGroup]:
    """Read one file_sd file (JSON or YAML list of ``{targets: [...], labels: {...}}``)."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as exc:
        raise DiscoveryError(f"{path}: cannot read: {exc.strerror or exc}") from None
    try:
        data = json.loads(text) if path.endswith(".json") else yaml.safe_load(text)
    except json.JSONDecodeError as exc:
        raise DiscoveryError(f"{path}:{exc.lineno}:{exc.colno}: not valid JSON: {exc.msg}") from None
    except yaml.YAMLError as exc:
        # Only the position and the problem: never a snippet of the file's content.
        mark = getattr(exc, "problem_mark", None)
        where = f"{path}:{mark.line + 1}:{mark.column + 1}" if mark is not None else path
        raise DiscoveryError(f"{where}: not valid YAML: {getattr(exc, 'problem', None) or 'syntax error'}") from None
    if data is None:
        return []
    if not isinstance(data, list):
        raise DiscoveryError(f"{path}: must be a list of target groups")
    groups = []
    for i, g in enumerate(data):
        if not isinstance(g, dict) or not isinstance(g.get("targets", []), list):
            raise DiscoveryError(f"{path}[{i}]: must be a mapping with a list of targets")
        unknown = set(g) - {"targets", "labels"}
        if unknown:
            raise DiscoveryError(f"{path}[{i}].{sorted(unknown)[0]}: unknown key")
        labels = g.get("labels") or {}
        if not isinstance(labels, dict):
            raise DiscoveryError(f"{path}[{i}].labels: must be a mapping")
        targets = tuple(str(t) for t in g.get("targets") or [])
        lbl = {str(k): str(v) for k, v in labels.items()}
        lbl["__meta_filepath"] = path
        groups.append(TargetGroup(source=f"{path}:{i}", targets=targets, labels=tuple(sorted(lbl.items()))))
    return groups


class FileSDProvider(Provider):
    """Reads file_sd files and re-reads them when they change (polled every few seconds)."""

    name = "file"

    def __init__(self, config: FileSDConfig, job: str, poll: float = 2.0) -> None:
        self.config = config
        self.job = job
        self.poll = poll
        self.last_error: str | None = None
        self._refused: set[str] = set()

    def _files(self) -> list[str]:
        """The files named, and the files a pattern matches in its own folder: a match that is a
        link to somewhere outside that folder is not followed (security: read only what was named)."""
        import glob

        out: list[str] = []
        for pattern in self.config.files:
            if not any(c in pattern for c in "*?["):
                out.append(pattern)
                continue
            folder = os.path.realpath(os.path.dirname(pattern) or ".")
            for match in sorted(glob.glob(pattern)):
                real = os.path.realpath(match)
                if os.path.dirname(real) != folder and not real.startswith(folder + os.sep):
                    if match not in self._refused:
                        self._refused.add(match)
                        log.error("file_sd for job %s: %s links outside %s; not read", self.job, match, folder)
                    continue
                out.append(match)
        return out

    def _stamp(self) -> tuple[tuple[str, float, int], ...]:
        stamp = []
        for f in self._files():
            try:
                st = os.stat(f)
                stamp.append((f, st.st_mtime, st.st_size))
            except OSError:
                stamp.append((f, -1.0, -1))
        return tuple(stamp)

    async def run(self, send: Send) -> None:
        last_stamp: tuple[tuple[str, float, int], ...] | None = None
        previous: dict[str, list[TargetGroup]] = {}
        since_full = 0.0
        while True:
            stamp = self._stamp()
            if stamp != last_stamp or since_full >= self.config.refresh_interval:
                last_stamp, since_full = stamp, 0.0
                current: dict[str, list[TargetGroup]] = {}
                for f in self._files():
                    try:
                        current[f] = read_file_sd(f)
                        self.last_error = None
                    except DiscoveryError as exc:
                        # Keep what the file said last time it was valid; say why once per change.
                        log.error("file_sd for job %s: %s", self.job, exc)
                        self.last_error = str(exc)
                        current[f] = previous.get(f, [])
                previous = current
                send([g for gs in current.values() for g in gs])
            await anyio.sleep(self.poll)
            since_full += self.poll


def _hex_id(value: Any) -> str:
    try:
        return f"{int(value):x}"
    except (TypeError, ValueError):
        return str(value)


def members_to_groups(data: dict[str, Any], config: EtcdSDConfig, source: str) -> list[TargetGroup]:
    """Target groups for the member list JSON of ``/v3/cluster/member/list``."""
    cluster_id = _hex_id(data.get("header", {}).get("cluster_id", ""))
    groups = []
    for m in data.get("members", []):
        client_urls = m.get("clientURLs") or []
        if not client_urls:
            continue  # a member that has not started yet has no client URL
        client = urlsplit(client_urls[0])
        host = client.hostname or ""
        if ":" in host:
            host = f"[{host}]"
        port = config.metrics_port or client.port or 2379
        labels = {
            "__meta_etcd_member_name": str(m.get("name", "")),
            "__meta_etcd_member_id": _hex_id(m.get("ID", "")),
            "__meta_etcd_cluster_id": cluster_id,
            "__meta_etcd_client_url": client_urls[0],
            "__meta_etcd_peer_url": (m.get("peerURLs") or [""])[0],
            "__meta_etcd_member_is_learner": "true" if m.get("isLearner") else "false",
        }
        groups.append(
            TargetGroup(
                source=f"{source}/{labels['__meta_etcd_member_id']}",
                targets=(f"{host}:{port}",),
                labels=tuple(sorted(labels.items())),
            )
        )
    return groups


class EtcdSDProvider(Provider):
    """Discovers the members of a running etcd cluster from its member list, every refresh_interval."""

    name = "etcd"

    def __init__(self, config: EtcdSDConfig, job: str, clients: ClientPool) -> None:
        self.config = config
        self.job = job
        self.clients = clients
        self.last_error: str | None = None

    async def fetch(self) -> list[TargetGroup]:
        client = self.clients.get(self.config.http)
        errors = []
        for endpoint in self.config.endpoints:
            try:
                resp = await client.post(f"{endpoint}/v3/cluster/member/list", content=b"{}", timeout=10.0)
                if resp.status_code != 200:
                    errors.append(f"{endpoint}: HTTP {resp.status_code}")
                    continue
                return members_to_groups(resp.json(), self.config, f"{self.job}/etcd")
            except (httpx.HTTPError, ValueError, OSError) as exc:
                errors.append(f"{endpoint}: {exc.__class__.__name__}: {exc}")
        raise DiscoveryError("; ".join(errors))

    async def run(self, send: Send) -> None:
        while True:
            try:
                groups = await self.fetch()
                self.last_error = None
                send(groups)
            except DiscoveryError as exc:
                # Keep the last known members: a cluster that cannot answer for a moment is not empty.
                if self.last_error != str(exc):
                    log.error("etcd_sd for job %s: no endpoint answered: %s", self.job, exc)
                self.last_error = str(exc)
            await anyio.sleep(self.config.refresh_interval)
