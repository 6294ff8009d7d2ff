"""What every discovery mechanism shares: target groups, the provider interface, its error."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

__all__ = ["DiscoveryError", "Provider", "Send", "TargetGroup"]


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


class DiscoveryError(ValueError):
    pass
