"""``http_sd_configs``: target groups from an HTTP endpoint, as Prometheus' HTTP SD.

Every ``refresh_interval`` a GET of ``url`` (headers ``Accept: application/json`` and
``X-Prometheus-Refresh-Interval-Seconds``) must answer 200 with ``Content-Type: application/json``
and a JSON list of ``{"targets": [...], "labels": {...}}``; each group also gets
``__meta_url`` (the configured URL). Anything else (another status or content type, a body that
is not that list, one larger than ``MAX_BODY``, a connection error) keeps the last good targets
and is logged once per change of error.
"""

from __future__ import annotations

import json
import logging
import re
from typing import Any

import anyio

from .._exceptions import HTTPError
from ..config import HTTPSDConfig
from ..http.client import ClientPool
from .base import DiscoveryError, Provider, Send, TargetGroup

__all__ = ["MAX_BODY", "HTTPSDProvider", "parse_http_sd"]

log = logging.getLogger("relay.discovery.http")

MAX_BODY = 32 << 20  # bytes; some 300,000 targets
_CONTENT_TYPE = re.compile(r'^application/json(;\s*charset=("utf-8"|utf-8))?$', re.IGNORECASE)
_LABEL_NAME = re.compile(r"^[a-zA-Z_][a-zA-Z0-9_]*$")


def parse_http_sd(body: bytes, url: str, source: str) -> list[TargetGroup]:
    """The target groups of one HTTP SD response body (strict, as Prometheus' decoder)."""
    try:
        data: Any = json.loads(body)
    except UnicodeDecodeError:
        raise DiscoveryError("body is not UTF-8") from None
    except json.JSONDecodeError as exc:
        raise DiscoveryError(f"body is not JSON: {exc.msg} at line {exc.lineno} column {exc.colno}") from None
    if not isinstance(data, list):
        raise DiscoveryError(f"body must be a JSON list of target groups, got {type(data).__name__}")
    groups = []
    for i, g in enumerate(data):
        if not isinstance(g, dict):
            raise DiscoveryError(f"[{i}]: must be an object with targets and labels, got {type(g).__name__}")
        unknown = sorted(set(g) - {"targets", "labels"})
        if unknown:
            raise DiscoveryError(f"[{i}].{unknown[0]}: unknown key")
        targets = g.get("targets") or []
        if not isinstance(targets, list) or not all(isinstance(t, str) for t in targets):
            raise DiscoveryError(f"[{i}].targets: must be a list of strings")
        labels = g.get("labels") or {}
        if not isinstance(labels, dict):
            raise DiscoveryError(f"[{i}].labels: must be an object of strings")
        for k, v in labels.items():
            if not _LABEL_NAME.match(k):
                raise DiscoveryError(f"[{i}].labels: {k!r} is not a valid label name")
            if not isinstance(v, str):
                raise DiscoveryError(f"[{i}].labels.{k}: must be a string, got {type(v).__name__}")
        lbl = {**labels, "__meta_url": url}
        groups.append(TargetGroup(source=f"{source}:{i}", targets=tuple(targets), labels=tuple(sorted(lbl.items()))))
    return groups


class HTTPSDProvider(Provider):
    """Polls one HTTP SD endpoint every refresh_interval; a bad answer keeps the last good groups."""

    name = "http"

    def __init__(self, config: HTTPSDConfig, job: str, clients: ClientPool) -> None:
        self.config = config
        self.job = job
        self.clients = clients
        self.last_error: str | None = None

    async def _get(self) -> tuple[int, str, bytes]:
        """Status, content type and body (at most MAX_BODY bytes) of one GET: the one HTTP call site."""
        client = self.clients.get(self.config.http)
        headers = {
            "Accept": "application/json",
            "X-Prometheus-Refresh-Interval-Seconds": f"{self.config.refresh_interval:g}",
        }
        async with client.stream("GET", self.config.url, headers=headers, timeout=self.config.refresh_interval) as resp:
            kind = resp.headers.get("content-type", "").strip()
            if resp.status_code != 200:
                return resp.status_code, kind, b""
            declared = resp.headers.get("content-length", "")
            if declared.isdigit() and int(declared) > MAX_BODY:
                raise DiscoveryError(f"body of {declared} bytes is over the {MAX_BODY} byte limit")
            chunks, size = [], 0
            async for chunk in resp.aiter_bytes():
                size += len(chunk)
                if size > MAX_BODY:
                    raise DiscoveryError(f"body is over the {MAX_BODY} byte limit")
                chunks.append(chunk)
            return resp.status_code, kind, b"".join(chunks)

    async def fetch(self) -> list[TargetGroup]:
        try:
            status, kind, body = await self._get()
        except DiscoveryError:
            raise
        except HTTPError as exc:
            raise DiscoveryError(f"{exc.reason}: {exc}") from None
        except OSError as exc:
            raise DiscoveryError(f"{exc.__class__.__name__}: {exc.strerror or exc}") from None
        except Exception as exc:  # whatever a transport raises must not stop the relay: say it, keep targets
            raise DiscoveryError(f"unexpected {exc.__class__.__name__}: {exc}") from None
        if status != 200:
            raise DiscoveryError(f"server returned HTTP status {status}")
        if not _CONTENT_TYPE.match(kind):
            raise DiscoveryError(f"unsupported content type {kind!r} (want application/json)")
        return parse_http_sd(body, self.config.url, f"{self.job}/http/{self.config.url}")

    async def run(self, send: Send) -> None:
        sent: list[TargetGroup] | None = None
        while True:
            try:
                groups = await self.fetch()
                if self.last_error is not None:
                    log.info("http_sd for job %s: %s answers again", self.job, self.config.url)
                self.last_error = None
                if groups != sent:
                    send(groups)
                    sent = groups
            except DiscoveryError as exc:
                # Keep the last good groups: an endpoint that fails for a moment does not empty the job.
                self.failed(str(exc))
                if self.last_error != str(exc):
                    log.error("http_sd for job %s: %s: %s; keeping the last targets", self.job, self.config.url, exc)
                self.last_error = str(exc)
            await anyio.sleep(self.config.refresh_interval)
