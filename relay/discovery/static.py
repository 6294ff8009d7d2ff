"""``static_configs``: the targets written in the config file, sent once."""

from __future__ import annotations

from ..config import StaticConfig
from .base import Provider, Send, TargetGroup

__all__ = ["StaticProvider"]


class StaticProvider(Provider):
    name = "static"

    def __init__(self, configs: tuple[StaticConfig, ...], job: str) -> None:
        self.groups = [
            TargetGroup(source=f"{job}/static/{i}", targets=c.targets, labels=c.labels) for i, c in enumerate(configs)
        ]

    async def run(self, send: Send) -> None:
        send(self.groups)
