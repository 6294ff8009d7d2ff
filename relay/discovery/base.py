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
    """A discovery mechanism; ``run`` sends the complete list of groups on every change.

    ``last_error`` is the provider's current error (None when healthy; shown on /service-discovery);
    ``on_error``, set by the owner, is called once per failed refresh or watch attempt (it counts
    ``relay_discovery_errors_total``); ``on_dropped`` likewise counts objects refused
    (``relay_discovery_dropped_total``).
    """

    name = "provider"
    last_error: str | None = None
    on_error: Callable[[str], None] | None = None
    on_dropped: Callable[[str, int], None] | None = None

    async def run(self, send: Send) -> None:
        raise NotImplementedError

    def current_error(self) -> str | None:
        """What is wrong now, for people (a provider with parts of its own says all of them)."""
        return self.last_error

    def failed(self, error: str) -> None:
        """One failed attempt: counted (the log line is the provider's, once per change of state)."""
        if self.on_error is not None:
            self.on_error(error)

    def dropped(self, reason: str, n: int) -> None:
        """``n`` discovered objects refused for ``reason`` (counted in relay_discovery_dropped_total)."""
        if self.on_dropped is not None:
            self.on_dropped(reason, n)


class DiscoveryError(ValueError):
    pass
