"""Per-member state: only the series the rules read, in rings bounded by the longest window.

A member (one scrape target, known by its ``up`` series' labels) keeps a *row* per scrape: one
value per kept signal (NaN: no sample in that scrape, or a staleness marker). Rows live in three
classes, each with its own retention (short: the rate windows and the 5 m lookback; mid: failed
proposals and the leader-change subquery; long: the database size for the growth prediction).
A column that has not changed over its whole ring is held as one number (most histogram buckets
and most gRPC methods of an etcd never move), an ``array('d')`` once it does.
"""

from __future__ import annotations

import math
from array import array
from collections.abc import Iterator

__all__ = ["Column", "RingClass"]

NAN = math.nan


class Column:
    """One signal's values, aligned with its class's timestamps: constant (``const`` from absolute
    row ``since``; NaN before) or an array."""

    __slots__ = ("arr", "const", "since")

    def __init__(self, value: float, since: int) -> None:
        self.const = value
        self.since = since
        self.arr: array[float] | None = None


class RingClass:
    """Timestamps of the rows of one retention class and its columns."""

    __slots__ = ("base", "columns", "retention_ms", "ts")

    def __init__(self, retention_ms: int) -> None:
        self.retention_ms = retention_ms
        self.ts: array[int] = array("q")
        self.base = 0  # absolute row index of ts[0]
        self.columns: list[Column] = []

    def add_column(self) -> int:
        self.columns.append(Column(NAN, self.base + len(self.ts)))
        return len(self.columns) - 1

    def append(self, ts_ms: int, row: array[float], slots: list[int]) -> None:
        """One scrape: the values ``row[slots[k]]`` for column ``k``."""
        n = len(self.ts)
        self.ts.append(ts_ms)
        now = self.base + n
        for col, s in zip(self.columns, slots, strict=True):
            v = row[s]
            arr = col.arr
            if arr is not None:
                arr.append(v)
                continue
            c = col.const
            if v == c or (v != v and c != c and col.since <= now):
                continue
            if c != c and col.since == now:  # first row of a new column
                col.const = v
                continue
            # promote: NaN before `since`, the constant from there, then v
            lead = max(0, min(n, col.since - self.base))
            col.arr = array("d", [NAN]) * lead + array("d", [c]) * (n - lead)
            col.arr.append(v)

    def evict(self, now_ms: int) -> None:
        """Drop rows older than the retention; a column constant again goes back to one number."""
        cut = now_ms - self.retention_ms
        ts = self.ts
        k = 0
        while k < len(ts) - 1 and ts[k] < cut:
            k += 1
        if k == 0:
            return
        del ts[:k]
        self.base += k
        for col in self.columns:
            arr = col.arr
            if arr is None:
                continue
            del arr[:k]
            first = arr[0]
            if first == first and arr.count(first) == len(arr):
                col.arr, col.const, col.since = None, first, self.base

    def values(self, k: int) -> Iterator[float]:
        """Column ``k``'s value at every row."""
        col = self.columns[k]
        if col.arr is not None:
            return iter(col.arr)
        lead = max(0, min(len(self.ts), col.since - self.base))
        return iter([NAN] * lead + [col.const] * (len(self.ts) - lead))

    def is_constant(self, k: int) -> bool:
        col = self.columns[k]
        return col.arr is None and col.since <= self.base

    def select(self, k: int, start_ms: int, end_ms: int) -> tuple[list[int], list[float]]:
        """Samples of column ``k`` in ``[start, end]`` (NaN rows left out): a range selection."""
        out_t: list[int] = []
        out_v: list[float] = []
        for t, v in zip(self.ts, self.values(k), strict=True):
            if start_ms <= t <= end_ms and v == v:
                out_t.append(t)
                out_v.append(v)
        return out_t, out_v

    def instant(self, k: int, at_ms: int, lookback_ms: int) -> float | None:
        """The instant-vector value at ``at_ms`` (newest row within the lookback; NaN: none)."""
        ts = self.ts
        col = self.columns[k]
        for i in range(len(ts) - 1, -1, -1):
            t = ts[i]
            if t > at_ms:
                continue
            if t < at_ms - lookback_ms:
                return None
            v = col.arr[i] if col.arr is not None else col.const if self.base + i >= col.since else NAN
            return None if v != v else v
        return None

    def nbytes(self) -> int:
        size = self.ts.buffer_info()[1] * 8 + 64
        for col in self.columns:
            size += 56 + (col.arr.buffer_info()[1] * 8 + 64 if col.arr is not None else 0)
        return size
