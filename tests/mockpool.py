"""A ClientPool whose client answers from a handler: for fault shapes no real server makes on demand."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import httpx

from relay.config import HTTPClientConfig
from relay.http.client import ClientPool, HTTPClient


class MockPool(ClientPool):
    """Every config gets one `HTTPClient` over ``httpx.MockTransport(handler)`` (errors the
    handler raises as httpx's come out as the relay's, as from httpx's own transport)."""

    def __init__(self, handler: Callable[[httpx.Request], Any]) -> None:
        super().__init__(fast=False)
        self.client = HTTPClient(httpx.MockTransport(handler))

    def get(self, cfg: HTTPClientConfig) -> HTTPClient:
        return self.client
