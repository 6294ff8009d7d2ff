"""Per-member state: only the series the rules read, in rings bounded by the longest window.

A member (one scrape target, known by its ``up`` series' labels) keeps a *row* per scrape: one
value per kept signal (NaN: no sample in that scrape, or a staleness marker). Rows live in three
classes, each with its own retention (short: the rate windows and the 5 m lookback; mid: failed
proposals and the leader-change subquery; long: the database size for the growth prediction).

A class is row-major: one ``array('d')`` of ``width`` values per row, appended with one C-level
``extend`` per scrape and evicted with one ``del`` of whole rows (lazily, ``EVICT_ROWS`` rows at a
time: a row kept past its retention is never selected, as selections are by timestamp). A column's
values over rows are a strided slice, which the kernels (``relay.health._kernel_c``) read directly.
Which columns are idle is known from the member's change times (``Member.since``), not from here.
"""

from __future__ import annotations

import math
from array import array
from bisect import bisect_left, bisect_right

__all__ = ["EVICT_ROWS", "RingClass"]

NAN = math.nan
EVICT_ROWS = 8


class RingClass:
    """Timestamps of the rows of one retention class and their values, row-major."""

    __slots__ = ("base", "data", "retention_ms", "ts", "width")

    def __init__(self, retention_ms: int) -> None:
        self.retention_ms = retention_ms
        self.ts: array[int] = array("q")
        self.data: array[float] = array("d")  # len(ts) * width values
        self.width = 0
        self.base = 0  # absolute row number of ts[0]

    def add_column(self) -> int:
        """A new column, NaN in the rows so far (rare: series the member had not shown before)."""
        w, n = self.width, len(self.ts)
        if n:
            new = array("d", [NAN]) * (n * (w + 1))
            for c in range(w):
                new[c :: w + 1] = self.data[c::w]
            self.data = new
        self.width = w + 1
        return w

    def append(self, ts_ms: int, values: tuple[float, ...] | list[float]) -> None:
        """One scrape: a value per column, in column order."""
        self.ts.append(ts_ms)
        self.data.extend(values)

    def evict(self, now_ms: int) -> None:
        """Drop rows older than the retention, ``EVICT_ROWS`` or more at a time."""
        k = bisect_left(self.ts, now_ms - self.retention_ms)
        if k < EVICT_ROWS and k < len(self.ts):
            return
        del self.ts[:k]
        del self.data[: k * self.width]
        self.base += k

    def column(self, k: int, lo: int, hi: int) -> array[float]:
        """Column ``k``'s values at rows ``lo:hi`` (indexes into ``ts``)."""
        if lo >= hi:
            return array("d")
        w = self.width
        return self.data[lo * w + k : (hi - 1) * w + k + 1 : w]

    def value(self, k: int, i: int) -> float:
        """Column ``k`` at row ``i`` (an index into ``ts``)."""
        return self.data[i * self.width + k]

    def rows_in(self, start_ms: int, end_ms: int) -> tuple[int, int]:
        """Row indexes ``lo:hi`` with timestamps in ``[start, end]``."""
        return bisect_left(self.ts, start_ms), bisect_right(self.ts, end_ms)

    def count_in(self, start_ms: int, end_ms: int) -> int:
        return bisect_right(self.ts, end_ms) - bisect_left(self.ts, start_ms)

    def select(self, k: int, start_ms: int, end_ms: int) -> tuple[list[int], list[float]]:
        """Samples of column ``k`` in ``[start, end]`` (NaN rows left out): a range selection."""
        lo, hi = self.rows_in(start_ms, end_ms)
        if lo >= hi:
            return [], []
        ts = self.ts[lo:hi].tolist()
        vs = self.column(k, lo, hi).tolist()
        if any(v != v for v in vs):
            keep = [i for i, v in enumerate(vs) if v == v]
            return [ts[i] for i in keep], [vs[i] for i in keep]
        return ts, vs

    def last_in(self, k: int, start_ms: int, end_ms: int) -> float | None:
        """``last_over_time``: the newest sample of column ``k`` in ``[start, end]``, or None."""
        lo, hi = self.rows_in(start_ms, end_ms)
        w, data = self.width, self.data
        for i in range(hi - 1, lo - 1, -1):
            v = data[i * w + k]
            if v == v:
                return v
        return None

    def instant(self, k: int, at_ms: int, lookback_ms: int) -> float | None:
        """The instant-vector value at ``at_ms`` (newest row within the lookback; NaN: none)."""
        i = bisect_right(self.ts, at_ms) - 1
        if i < 0 or self.ts[i] < at_ms - lookback_ms:
            return None
        v = self.data[i * self.width + k]
        return None if v != v else v

    def nbytes(self) -> int:
        return self.ts.buffer_info()[1] * 8 + self.data.buffer_info()[1] * 8 + 96
