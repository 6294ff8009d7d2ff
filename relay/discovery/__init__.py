"""Service discovery: one module per mechanism, each a :class:`Provider` of target groups.

Each provider runs as a task and calls ``send(groups)`` with the full, current list of its target
groups whenever it changes. The scrape manager turns groups into targets (``target.build_target``).

    static.py   static_configs
    file.py     file_sd_configs (JSON or YAML files, re-read when they change)
    etcd.py     etcd_sd_configs (a running cluster's member list)
    dns.py      dns_sd_configs (SRV, A, AAAA, MX, NS records)
    http.py     http_sd_configs (target groups as JSON from a URL)
"""

from __future__ import annotations

from .base import DiscoveryError, Provider, Send, TargetGroup
from .dns import DNSSDProvider, records_to_groups
from .etcd import EtcdSDProvider, members_to_groups
from .file import FileSDProvider, read_file_sd
from .http import HTTPSDProvider, parse_http_sd
from .static import StaticProvider

__all__ = [
    "DNSSDProvider",
    "DiscoveryError",
    "EtcdSDProvider",
    "FileSDProvider",
    "HTTPSDProvider",
    "Provider",
    "Send",
    "StaticProvider",
    "TargetGroup",
    "members_to_groups",
    "parse_http_sd",
    "read_file_sd",
    "records_to_groups",
]
