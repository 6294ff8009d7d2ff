"""Per-member state: only the series the rules read, in rings bounded by the longest window.

A member (one scrape target, known by its ``up`` series' labels) keeps a *row* per scrape: one
value per kept signal (NaN: no sample in that scrape, or a staleness marker). Rows live in three
classes, each with its own retention (short: the rate windows and the 5 m lookback; mid: failed
proposals and the leader-change subquery; long: the database size for the growth prediction).

A new row is appended to a small row-major segment (one C-level ``extend``); every
``SEGMENT_ROWS`` rows the segment is moved into the columns, one strided slice per column. A column
that has not changed over its whole ring is held as one number (most histogram buckets and most
gRPC methods of an etcd never move), an ``array('d')`` once it does.
"""

from __future__ import annotations

import math
from array import array
from bisect import bisect_left, bisect_right

__all__ = ["SEGMENT_ROWS", "Column", "RingClass"]

NAN = math.nan
SEGMENT_ROWS = 8


class Column:
    """One signal's flushed values, aligned with its class's flushed rows: constant (``const``
    from absolute row ``since``, NaN before) or an array (``has_nan``: it holds a NaN)."""

    __slots__ = ("arr", "const", "has_nan", "since")

    def __init__(self, since: int) -> None:
        self.const = NAN
        self.since = since
        self.arr: array[float] | None = None
        self.has_nan = False


class RingClass:
    """Timestamps of the rows of one retention class, its columns and its unflushed segment."""

    __slots__ = ("base", "columns", "flushed", "retention_ms", "seg", "ts")

    def __init__(self, retention_ms: int) -> None:
        self.retention_ms = retention_ms
        self.ts: array[int] = array("q")  # every row: flushed, then the segment's
        self.base = 0  # absolute row index of ts[0]
        self.flushed = 0  # rows of ts held in the columns
        self.columns: list[Column] = []
        self.seg: array[float] = array("d")  # row-major, len(columns) values per row

    @property
    def width(self) -> int:
        return len(self.columns)

    def add_column(self) -> int:
        self.flush()
        self.columns.append(Column(self.base + self.flushed))
        return len(self.columns) - 1

    def append(self, ts_ms: int, values: tuple[float, ...] | list[float]) -> None:
        """One scrape: a value per column, in column order."""
        self.ts.append(ts_ms)
        self.seg.extend(values)
        if len(self.ts) - self.flushed >= SEGMENT_ROWS:
            self.flush()

    def flush(self) -> None:
        """Move the segment's rows into the columns."""
        rows = len(self.ts) - self.flushed
        if rows == 0:
            return
        seg = self.seg
        width = len(self.columns)
        start = self.base + self.flushed
        for c, col in enumerate(self.columns):
            part = seg[c::width]
            arr = col.arr
            if arr is None:
                const = col.const
                if const == const and part.count(const) == rows:
                    continue
                if const != const and col.since == start and part[0] == part[0] and part.count(part[0]) == rows:
                    col.const = part[0]  # a new column's first rows
                    continue
                lead = max(0, min(self.flushed, col.since - self.base))
                arr = col.arr = array("d", [NAN]) * lead + array("d", [const]) * (self.flushed - lead)
                col.has_nan = lead > 0 or (const != const and self.flushed > 0)
            arr.extend(part)
            if not col.has_nan and any(v != v for v in part):
                col.has_nan = True
        self.seg = array("d")
        self.flushed = len(self.ts)

    def evict(self, now_ms: int) -> None:
        """Drop flushed rows older than the retention; a column constant again goes back to one number."""
        cut = now_ms - self.retention_ms
        k = min(bisect_left(self.ts, cut), self.flushed)
        if k == 0:
            return
        del self.ts[:k]
        self.base += k
        self.flushed -= k
        for col in self.columns:
            arr = col.arr
            if arr is None:
                continue
            del arr[:k]
            if not arr:
                continue
            first = arr[0]
            if first == first and arr.count(first) == len(arr):
                col.arr, col.const, col.since, col.has_nan = None, first, self.base, False
            elif col.has_nan:
                col.has_nan = any(v != v for v in arr)

    def _column(self, k: int, lo: int, hi: int) -> list[float]:
        """Column ``k``'s values at rows ``lo:hi`` (indexes into ``ts``)."""
        col = self.columns[k]
        out: list[float] = []
        f = self.flushed
        if lo < f:
            top = min(hi, f)
            if col.arr is not None:
                out = col.arr[lo:top].tolist()
            else:
                lead = max(0, min(top, col.since - self.base) - lo)
                out = [NAN] * lead + [col.const] * (top - lo - lead)
        if hi > f:
            width = len(self.columns)
            a = max(lo, f) - f
            b = hi - f
            out += self.seg[a * width + k : b * width : width].tolist()
        return out

    def value(self, k: int, i: int) -> float:
        """Column ``k`` at row ``i`` (an index into ``ts``)."""
        f = self.flushed
        if i >= f:
            return self.seg[(i - f) * len(self.columns) + k]
        col = self.columns[k]
        if col.arr is not None:
            return col.arr[i]
        return col.const if self.base + i >= col.since else NAN

    def rows_in(self, start_ms: int, end_ms: int) -> tuple[int, int]:
        """Row indexes ``lo:hi`` with timestamps in ``[start, end]``."""
        return bisect_left(self.ts, start_ms), bisect_right(self.ts, end_ms)

    def is_constant(self, k: int) -> bool:
        """The column holds one value, not NaN, over every row."""
        col = self.columns[k]
        if col.arr is not None or col.since > self.base or col.const != col.const:
            return False
        if len(self.ts) == self.flushed:
            return True
        part = self.seg[k :: len(self.columns)]
        return part.count(col.const) == len(part)

    def count_in(self, start_ms: int, end_ms: int) -> int:
        return bisect_right(self.ts, end_ms) - bisect_left(self.ts, start_ms)

    def select(self, k: int, start_ms: int, end_ms: int) -> tuple[list[int], list[float]]:
        """Samples of column ``k`` in ``[start, end]`` (NaN rows left out): a range selection."""
        lo = bisect_left(self.ts, start_ms)
        hi = bisect_right(self.ts, end_ms)
        if lo >= hi:
            return [], []
        ts = self.ts[lo:hi].tolist()
        vs = self._column(k, lo, hi)
        col = self.columns[k]
        if (col.has_nan or col.arr is None or hi > self.flushed) and any(v != v for v in vs):
            keep = [i for i, v in enumerate(vs) if v == v]
            return [ts[i] for i in keep], [vs[i] for i in keep]
        return ts, vs

    def instant(self, k: int, at_ms: int, lookback_ms: int) -> float | None:
        """The instant-vector value at ``at_ms`` (newest row within the lookback; NaN: none)."""
        i = bisect_right(self.ts, at_ms) - 1
        if i < 0 or self.ts[i] < at_ms - lookback_ms:
            return None
        v = self._column(k, i, i + 1)[0]
        return None if v != v else v

    def nbytes(self) -> int:
        size = self.ts.buffer_info()[1] * 8 + self.seg.buffer_info()[1] * 8 + 128
        for col in self.columns:
            size += 72 + (col.arr.buffer_info()[1] * 8 + 64 if col.arr is not None else 0)
        return size
