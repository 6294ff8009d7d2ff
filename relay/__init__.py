"""etcd fleet metrics relay: scrape etcd members, parse fast, remote-write anywhere.

Public API::

    import relay
    batch = relay.parse(body, content_type="text/plain; version=0.0.4", timestamp_ms=now_ms)
    for name, labels, value, ts in batch.samples(): ...

    parser = relay.Parser()            # keeps a series cache: reuse it for the same target
    batch = parser.parse(body, content_type=..., timestamp_ms=...)
"""

from __future__ import annotations

from ._exceptions import ConfigError, ParseError, RelayError, RemoteWriteError, ScrapeError
from .batch import STALE_NAN, STALE_NAN_BITS, Batch, Family, Labels, SeriesTable, is_stale_nan
from .textparse import Parser, parse

__version__ = "0.1.0"

__all__ = [
    "STALE_NAN",
    "STALE_NAN_BITS",
    "Batch",
    "ConfigError",
    "Family",
    "Labels",
    "ParseError",
    "Parser",
    "RelayError",
    "RemoteWriteError",
    "ScrapeError",
    "SeriesTable",
    "__version__",
    "is_stale_nan",
    "parse",
]
