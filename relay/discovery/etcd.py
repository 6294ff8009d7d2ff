"""``etcd_sd_configs``: the members of a running etcd cluster, from its member list.

``etcd_sd_configs`` asks a running cluster for its member list (``POST /v3/cluster/member/list``
on any of the given endpoints) and makes one target per member, with these labels:

    __meta_etcd_member_name, __meta_etcd_member_id (hex), __meta_etcd_cluster_id (hex),
    __meta_etcd_client_url, __meta_etcd_peer_url, __meta_etcd_member_is_learner

The address is the client URL's host with ``metrics_port`` as the port when set (usually 2381,
the plain-HTTP metrics listener), else the client URL's host:port.
"""

from __future__ import annotations

import logging
from typing import Any
from urllib.parse import urlsplit

import anyio

from .._exceptions import HTTPError
from ..config import EtcdSDConfig
from ..http.client import ClientPool
from .base import DiscoveryError, Provider, Send, TargetGroup

__all__ = ["EtcdSDProvider", "members_to_groups"]

log = logging.getLogger("relay.discovery.etcd")

#: The member list of a large cluster is a few hundred KiB; more than this is not a member list.
RESPONSE_LIMIT = 16 << 20


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
                resp = await client.post(f"{endpoint}/v3/cluster/member/list", b"{}", timeout=10.0,
                                         limit=RESPONSE_LIMIT)
                if resp.status_code != 200:
                    errors.append(f"{endpoint}: HTTP {resp.status_code}")
                    continue
                return members_to_groups(resp.json(), self.config, f"{self.job}/etcd")
            except HTTPError as exc:
                errors.append(f"{endpoint}: {exc.reason}: {exc}")
            except (ValueError, TypeError, AttributeError) as exc:  # not JSON, or not a member list's shape
                errors.append(f"{endpoint}: unexpected member list: {exc.__class__.__name__}: {exc}")
        raise DiscoveryError("; ".join(errors))

    async def run(self, send: Send) -> None:
        while True:
            try:
                groups = await self.fetch()
                if self.last_error is not None:
                    log.info("etcd_sd for job %s: the member list answers again", self.job)
                self.last_error = None
                send(groups)
            except DiscoveryError as exc:
                # Keep the last known members: a cluster that cannot answer for a moment is not empty.
                self.failed(str(exc))
                if self.last_error != str(exc):
                    log.error("etcd_sd for job %s: no endpoint answered: %s", self.job, exc)
                self.last_error = str(exc)
            await anyio.sleep(self.config.refresh_interval)
