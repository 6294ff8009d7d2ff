"""How the parser twins are compared: one outcome per parse, equal for the Cython and the Python twin.

Shared by the hypothesis differential tests (tests/test_parse_fuzz.py), the coverage-guided fuzz
harness (tests/fuzz/fuzz_parse.py) and its corpus replay (tests/fuzz/test_fuzz_corpus.py).
Samples are compared with their values' exact bits (``rows`` of tests/test_parse.py), so NaN
payloads and -0.0 count.
"""

from __future__ import annotations

import struct
from typing import Any

from relay._exceptions import ParseError, ScrapeError
from tests.test_parse import rows

T0 = 1_700_000_000_000


def outcome(parser: Any, body: bytes | memoryview, content_type: str | None) -> tuple[Any, ...]:
    """Everything a parse yields, or the error it raised (ParseError line, ScrapeError reason, and
    the message: both twins say the same)."""
    try:
        batch = parser.parse(body, content_type, T0)
    except ParseError as exc:
        return ("ParseError", exc.line, str(exc))
    except ScrapeError as exc:
        return ("ScrapeError", exc.reason, str(exc))
    return ("ok", rows(batch), list(batch.ids),
            [(i, lab, struct.pack("<d", v), ts) for i, lab, v, ts in batch.exemplars], batch.families,
            len(parser), parser.last_dropped)


def series_state(parser: Any) -> tuple[list[bytes], list[int]]:
    """The parser's series table: every series' pre-encoded labels, in id order, and their hashes."""
    table = parser.series
    return list(table.encoded), list(table.hashes)
