"""The health engine's per-scrape kernel, pure-Python twin (``_kernel_c.pyx`` is the fast one).

``gather`` turns one batch into a member's row: a value per kept signal (slot), NaN for a slot the
batch lacks, the gRPC counters summed per method; and keeps, per slot, the latest value (``prev``)
and the timestamp from which it has held (``since``: the row where it last changed, a NaN row
included), so that the rules can tell an idle signal without reading its ring. ``rate`` and
``quantile`` read a column (or a histogram's columns) of a row-major ring (``relay.health.store``)
with ``relay.health.promql``'s semantics and arithmetic, operation for operation.
"""

from __future__ import annotations

from array import array
from collections.abc import Sequence

from . import promql

__all__ = ["gather", "quantile", "rate"]

NAN = float("nan")


def gather(values: Sequence[float], src: Sequence[int], dst: Sequence[int], first: Sequence[int], width: int,
           prev: array[float], since: array[int], ts: int) -> array[float]:
    """``row[dst[j]]`` = ``values[src[j]]`` (``first[j]``) or ``+=`` it (the next of a sum)."""
    row = array("d", [NAN]) * width
    for s, d, f in zip(src, dst, first, strict=True):
        if f:
            row[d] = values[s]
        else:
            row[d] += values[s]
    for k in range(width):
        a = row[k]
        b = prev[k]
        if a != b and (a == a or b == b):
            since[k] = ts
    prev[:] = row
    return row


def rate(data: Sequence[float], width: int, k: int, ts: Sequence[int], lo: int, hi: int,
         start_ms: int, end_ms: int, is_rate: bool) -> float | None:
    """``rate``/``increase`` of column ``k`` of a row-major ring over rows ``lo:hi`` (NaN rows are
    no samples), with ``promql.extrapolated_rate``'s arithmetic."""
    t_sel: list[int] = []
    v_sel: list[float] = []
    for i in range(lo, hi):
        v = data[i * width + k]
        if v == v:
            t_sel.append(ts[i])
            v_sel.append(v)
    return promql.extrapolated_rate(t_sel, v_sel, start_ms, end_ms, is_rate=is_rate)


def quantile(q: float, data: Sequence[float], width: int, cols: Sequence[int], les: Sequence[float],
             ts: Sequence[int], lo: int, hi: int, start_ms: int, end_ms: int) -> float:
    """``histogram_quantile(q, rate(bucket[range]))`` of one histogram's bucket columns (sorted by
    ``le``); a bucket without a rate (under two samples) is left out, as Prometheus leaves it."""
    pairs = [(le, r) for c, le in zip(cols, les, strict=True)
             if (r := rate(data, width, c, ts, lo, hi, start_ms, end_ms, True)) is not None]
    return promql.histogram_quantile(q, pairs)
