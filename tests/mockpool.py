"""A ClientPool whose client answers from a handler: for fault shapes no real server makes on demand."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import httpx

from relay.config import HTTPClientConfig
from relay.http.client import ClientPool


class MockPool(ClientPool):
    def __init__(self, handler: Callable[[httpx.Request], Any]) -> None:
        super().__init__(fast=False)
        self.client = httpx.AsyncClient(transport=httpx.MockTransport(handler))

    def get(self, cfg: HTTPClientConfig) -> httpx.AsyncClient:
        return self.client
