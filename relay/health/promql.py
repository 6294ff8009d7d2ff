"""The few PromQL functions the etcd mixin's rules use, with Prometheus 2.x semantics.

Not a query engine: each function takes the samples of one series in a range, as parallel
sequences of timestamps (int milliseconds) and values, already selected the way Prometheus selects
them (see :func:`select_range`). Written from Prometheus' ``promql/functions.go`` and
``quantile.go`` behaviour (2.42, the version Debian ships and the oracle tests run):

- range selection is closed, ``[t - range, t]``, and drops staleness markers;
- an instant selector takes the newest sample in ``[t - 5m, t]`` unless it is a staleness marker;
- ``rate``/``increase`` correct counter resets and extrapolate to the range boundaries (by at most
  half an average sample interval past a boundary the series does not reach, and never below zero);
- ``histogram_quantile`` sorts and merges buckets by ``le``, forces them monotonic and interpolates
  linearly inside the bucket holding the rank;
- ``predict_linear`` is an ordinary least-squares fit with the intercept at the evaluation time.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

__all__ = [
    "LOOKBACK_MS",
    "extrapolated_rate",
    "histogram_quantile",
    "instant",
    "last_over_time",
    "predict_linear",
    "select_range",
    "subquery_steps",
]

LOOKBACK_MS = 300_000
"""Prometheus' default ``--query.lookback-delta``: 5 minutes."""


def select_range(ts: Sequence[int], vs: Sequence[float], start_ms: int, end_ms: int) -> tuple[list[int], list[float]]:
    """Samples with ``start_ms <= t <= end_ms`` that are not staleness markers (NaN here means no
    sample: the store keeps a real NaN value apart, see ``relay.health.store``)."""
    out_t: list[int] = []
    out_v: list[float] = []
    for t, v in zip(ts, vs, strict=True):
        if start_ms <= t <= end_ms and v == v:
            out_t.append(t)
            out_v.append(v)
    return out_t, out_v


def instant(ts: Sequence[int], vs: Sequence[float], stale: Sequence[bool], at_ms: int,
            lookback_ms: int = LOOKBACK_MS) -> float | None:
    """The instant-vector value at ``at_ms``: the newest sample in ``[at - lookback, at]``, or None
    when there is none or it is a staleness marker. ``ts`` ascending."""
    for i in range(len(ts) - 1, -1, -1):
        t = ts[i]
        if t > at_ms:
            continue
        if t < at_ms - lookback_ms or stale[i]:
            return None
        return vs[i]
    return None


def extrapolated_rate(ts: Sequence[int], vs: Sequence[float], start_ms: int, end_ms: int, *,
                      is_counter: bool = True, is_rate: bool = True) -> float | None:
    """``rate`` (``is_rate``) or ``increase`` of one series over ``[start_ms, end_ms]``, given its
    selected samples; None (no result) with fewer than two samples."""
    n = len(ts)
    if n < 2:
        return None
    result = vs[-1] - vs[0]
    if is_counter:
        prev = vs[0]
        for v in vs[1:]:
            if v < prev:
                result += prev
            prev = v
    duration_to_start = (ts[0] - start_ms) / 1000.0
    duration_to_end = (end_ms - ts[-1]) / 1000.0
    sampled = (ts[-1] - ts[0]) / 1000.0
    average = sampled / (n - 1)
    if is_counter and result > 0 and vs[0] >= 0:
        # counters do not go below zero: extrapolate at most to the counter's zero point
        duration_to_zero = sampled * (vs[0] / result)
        if duration_to_zero < duration_to_start:
            duration_to_start = duration_to_zero
    threshold = average * 1.1
    interval = sampled
    interval += duration_to_start if duration_to_start < threshold else average / 2
    interval += duration_to_end if duration_to_end < threshold else average / 2
    factor = interval / sampled
    if is_rate:
        factor /= (end_ms - start_ms) / 1000.0
    return result * factor


def histogram_quantile(q: float, buckets: Sequence[tuple[float, float]]) -> float:
    """The ``q`` quantile of ``(upper bound, cumulative count)`` buckets (any order), as Prometheus'
    ``bucketQuantile``: NaN without a ``+Inf`` bucket, with fewer than two buckets or no observations."""
    if math.isnan(q):
        return math.nan
    if q < 0:
        return -math.inf
    if q > 1:
        return math.inf
    ordered = sorted(buckets, key=lambda b: b[0])
    if not ordered or not math.isinf(ordered[-1][0]) or ordered[-1][0] < 0:
        return math.nan
    merged: list[list[float]] = []
    for upper, count in ordered:  # buckets with the same bound are added up
        if merged and merged[-1][0] == upper:
            merged[-1][1] += count
        else:
            merged.append([upper, count])
    top = merged[0][1]
    for bucket in merged:  # non-monotonic counts (rates of buckets scraped at slightly different times)
        if bucket[1] < top:
            bucket[1] = top
        else:
            top = bucket[1]
    if len(merged) < 2:
        return math.nan
    observations = merged[-1][1]
    if observations == 0 or math.isnan(observations):
        return math.nan
    rank = q * observations
    b = len(merged) - 1
    for i in range(len(merged) - 1):  # the first bucket whose count reaches the rank
        if merged[i][1] >= rank:
            b = i
            break
    if b == len(merged) - 1:
        return merged[-2][0]
    if b == 0 and merged[0][0] <= 0:
        return merged[0][0]
    start = 0.0
    end, count = merged[b]
    if b > 0:
        start = merged[b - 1][0]
        count -= merged[b - 1][1]
        rank -= merged[b - 1][1]
    return start + (end - start) * (rank / count)


def predict_linear(ts: Sequence[int], vs: Sequence[float], at_ms: int, horizon_s: float) -> float | None:
    """``predict_linear(v[range], horizon)`` at ``at_ms`` from the selected samples (None below two)."""
    n = len(ts)
    if n < 2:
        return None
    first = vs[0]
    if all(v == first for v in vs):
        return math.nan if math.isinf(first) else first
    xs = [(t - at_ms) / 1000.0 for t in ts]
    sum_x = math.fsum(xs)
    sum_y = math.fsum(vs)
    sum_xy = math.fsum(x * y for x, y in zip(xs, vs, strict=True))
    sum_x2 = math.fsum(x * x for x in xs)
    cov_xy = sum_xy - sum_x * sum_y / n
    var_x = sum_x2 - sum_x * sum_x / n
    slope = cov_xy / var_x
    intercept = sum_y / n - slope * sum_x / n
    return slope * horizon_s + intercept


def last_over_time(ts: Sequence[int], vs: Sequence[float]) -> float | None:
    """The newest selected sample (staleness markers are not selected), or None."""
    return vs[-1] if ts else None


def subquery_steps(at_ms: int, range_ms: int, step_ms: int) -> list[int]:
    """The evaluation times of a subquery ``[range:step]`` at ``at_ms``: multiples of the step
    (absolute, from the epoch) from the first at or after ``at - range`` through ``at``."""
    start = at_ms - range_ms
    first = step_ms * (start // step_ms)
    if first < start:
        first += step_ms
    return list(range(first, at_ms + 1, step_ms))
