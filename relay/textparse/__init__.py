"""The exposition-format parser: Prometheus text 0.0.4 and OpenMetrics 1.0 into columnar batches.

The fast twin is the Cython extension ``relay.textparse._text_c``; the pure-Python twin
(:mod:`relay.textparse._text_py`) is the readable reference with the same behaviour. The fast one is used when
it is built, unless ``RELAY_NO_EXTENSIONS=1``.

    >>> import relay
    >>> batch = relay.parse(b'up{job="etcd"} 1\\n', timestamp_ms=1000)
    >>> list(batch.samples())
    [('up', (('job', 'etcd'),), 1.0, 1000)]
    >>> parser = relay.Parser()        # one per target: it caches the series of that target
    >>> len(parser.parse(b"a 1\\nb 2\\n"))
    2
"""

from __future__ import annotations

import json
import math
import os
import sys
from typing import IO, TYPE_CHECKING

from .. import _ext
from .._exceptions import ParseError
from ..batch import Batch, is_stale_nan
from . import _text_py
from ._text_py import is_openmetrics

__all__ = ["Parser", "cli_parse", "is_openmetrics", "parse"]

if TYPE_CHECKING:
    Parser = _text_py.Parser
else:
    _c = _ext.load("relay.textparse._text_c")
    Parser = _c.Parser if _c is not None else _text_py.Parser


def parse(body: bytes | bytearray | memoryview, content_type: str | None = None,
          timestamp_ms: int | None = None, *, keep_exemplars: bool = False) -> Batch:
    """Parse one body with a fresh series table (no cache kept); see :class:`Parser`."""
    return Parser(keep_exemplars=keep_exemplars).parse(body, content_type, timestamp_ms)


def _json_value(value: float) -> float | str:
    if math.isnan(value):
        return "StaleNaN" if is_stale_nan(value) else "NaN"
    if math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    return value


def cli_parse(path: str, out: IO[str], content_type: str | None = None) -> int:
    """``relay parse FILE|-``: print each sample as a JSON line; returns the exit status.

    Without ``content_type`` the format is OpenMetrics when the body ends with ``# EOF``, else
    text 0.0.4. A body that does not parse prints one line on stderr and returns 1.
    """
    try:
        if path == "-":
            body = sys.stdin.buffer.read()
        else:
            with open(path, "rb") as f:
                body = f.read()
    except OSError as exc:
        print(f"relay parse: {path}: {exc.strerror}", file=sys.stderr)
        return 2
    if content_type is None:
        tail = body.rstrip(b"\n")
        if tail.endswith(b"\n# EOF") or tail == b"# EOF":
            content_type = "application/openmetrics-text; version=1.0.0"
    try:
        batch = parse(body, content_type)
    except ParseError as exc:
        print(f"relay parse: {path}: {exc}", file=sys.stderr)
        return 1
    try:
        for name, labels, value, ts in batch.samples():
            row: dict[str, object] = {"name": name, "labels": dict(labels), "value": _json_value(value),
                                      "timestamp_ms": ts}
            out.write(json.dumps(row) + "\n")
        out.flush()
    except BrokenPipeError:  # the reader went away (`relay parse f | head`): not our error
        if out is sys.stdout:  # keep the interpreter from failing to flush it again at exit
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
    return 0
