"""Alerts to Alertmanager (API v2), as Prometheus' notifier sends them.

After each evaluation the engine picks what to send (``HealthEngine.notifications``: firing alerts
every resend delay, resolved ones with their ``endsAt``); :class:`AlertmanagerSender` POSTs that
list to every target of every ``etcd_health.alertmanagers`` entry, each in its own task with the
entry's timeout, so that an Alertmanager that is down or slow never delays evaluation or scraping.
A failed send is counted and logged once per change of state; the next resend is its retry (as
with Prometheus, whose notifier also drops what it could not send).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

import anyio
import orjson

from .._exceptions import HTTPError
from ..config import AlertmanagerConfig
from ..http.client import ClientPool

__all__ = ["AlertmanagerSender"]

log = logging.getLogger("relay.health")

RESPONSE_LIMIT = 64 * 1024


class AlertmanagerSender:
    """Sends alert lists to the configured Alertmanagers; ``sent``/``errors`` count per target URL."""

    def __init__(self, managers: Sequence[AlertmanagerConfig], clients: ClientPool) -> None:
        self.managers = tuple(managers)
        self.clients = clients
        self.sent: dict[str, int] = {}
        self.errors: dict[str, int] = {}
        self._failing: dict[str, str] = {}

    def urls(self) -> list[tuple[AlertmanagerConfig, str]]:
        out = []
        for m in self.managers:
            prefix = "/" + m.path_prefix.strip("/") if m.path_prefix.strip("/") else ""
            out += [(m, f"{m.scheme}://{t}{prefix}/api/v2/alerts") for t in m.targets]
        return out

    def start(self, tg: anyio.abc.TaskGroup, alerts: list[dict[str, Any]]) -> None:
        """Send ``alerts`` to every target, each in a task of ``tg`` (returns at once)."""
        if not alerts:
            return
        body = orjson.dumps(alerts)
        for m, url in self.urls():
            tg.start_soon(self._send, m, url, body, len(alerts))

    async def send_all(self, alerts: list[dict[str, Any]]) -> None:
        """Send and wait (tests, ``relay fleet``)."""
        async with anyio.create_task_group() as tg:
            self.start(tg, alerts)

    async def _send(self, m: AlertmanagerConfig, url: str, body: bytes, n: int) -> None:
        problem = ""
        try:
            client = self.clients.get(m.http)
            resp = await client.post(url, body, headers={"Content-Type": "application/json"}, timeout=m.timeout,
                                     limit=RESPONSE_LIMIT, truncate=True)
            if not 200 <= resp.status_code < 300:
                problem = f"HTTP {resp.status_code}: {resp.content[:200].decode('utf-8', 'replace').strip()}"
        except HTTPError as exc:
            problem = f"{exc.__class__.__name__} ({exc.reason}): {exc}"
        if problem:
            self.errors[url] = self.errors.get(url, 0) + n
            if self._failing.get(url) != problem:
                log.warning("alertmanager %s: %d alerts not sent: %s", url, n, problem)
            self._failing[url] = problem
            return
        self.sent[url] = self.sent.get(url, 0) + n
        if self._failing.pop(url, None) is not None:
            log.info("alertmanager %s: sending again", url)
