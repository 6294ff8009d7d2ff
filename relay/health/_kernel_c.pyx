# cython: language_level=3
"""The health engine's per-scrape kernel, C twin of ``relay.health._kernel_py`` (same behaviour)."""

from cpython.array cimport array, clone
from cpython.mem cimport PyMem_Free, PyMem_Malloc
from libc.math cimport INFINITY, NAN, isinf, isnan

cdef array _D = array("d")


def gather(const double[:] values, const int[:] src, const int[:] dst, const signed char[:] first,
           Py_ssize_t width, double[:] prev, long long[:] since, long long ts):
    cdef array row = clone(_D, width, False)
    cdef double* out = row.data.as_doubles
    cdef Py_ssize_t j, k, n = src.shape[0]
    cdef double a, b
    if prev.shape[0] < width or since.shape[0] < width:
        raise ValueError("prev and since must have width entries")
    for k in range(width):
        out[k] = NAN
    for j in range(n):
        k = dst[j]
        if k < 0 or k >= width or src[j] < 0 or src[j] >= values.shape[0]:
            raise IndexError("plan position out of range")
        if first[j]:
            out[k] = values[src[j]]
        else:
            out[k] += values[src[j]]
    for k in range(width):
        a = out[k]
        b = prev[k]
        if a != b and (a == a or b == b):
            since[k] = ts
        prev[k] = a
    return row


cdef bint _rate(const double[:] data, Py_ssize_t width, Py_ssize_t k, const long long[:] ts, Py_ssize_t lo,
                Py_ssize_t hi, long long start_ms, long long end_ms, bint is_rate, double* out):
    """promql.extrapolated_rate on the column's non-NaN rows, operation for operation."""
    cdef Py_ssize_t i, n = 0, i0 = -1, i1 = -1
    cdef double v, prev, result, first, d_start, d_end, sampled, average, d_zero, threshold, interval, factor
    for i in range(lo, hi):
        v = data[i * width + k]
        if v == v:
            if i0 < 0:
                i0 = i
            i1 = i
            n += 1
    if n < 2:
        return False
    first = data[i0 * width + k]
    result = data[i1 * width + k] - first
    prev = first
    for i in range(i0 + 1, i1 + 1):
        v = data[i * width + k]
        if v == v:
            if v < prev:
                result += prev
            prev = v
    d_start = <double>(ts[i0] - start_ms) / 1000.0
    d_end = <double>(end_ms - ts[i1]) / 1000.0
    sampled = <double>(ts[i1] - ts[i0]) / 1000.0
    average = sampled / <double>(n - 1)
    if result > 0 and first >= 0:
        d_zero = sampled * (first / result)
        if d_zero < d_start:
            d_start = d_zero
    threshold = average * 1.1
    interval = sampled
    interval += d_start if d_start < threshold else average / 2
    interval += d_end if d_end < threshold else average / 2
    factor = interval / sampled
    if is_rate:
        factor /= <double>(end_ms - start_ms) / 1000.0
    out[0] = result * factor
    return True


def _check(const double[:] data, Py_ssize_t width, Py_ssize_t k, const long long[:] ts, Py_ssize_t lo,
           Py_ssize_t hi):
    if lo < 0 or hi > ts.shape[0] or k < 0 or k >= width or hi * width > data.shape[0]:
        raise IndexError("rows or column out of range")


def rate(const double[:] data, Py_ssize_t width, Py_ssize_t k, const long long[:] ts, Py_ssize_t lo,
         Py_ssize_t hi, long long start_ms, long long end_ms, bint is_rate):
    cdef double out
    _check(data, width, k, ts, lo, hi)
    if _rate(data, width, k, ts, lo, hi, start_ms, end_ms, is_rate, &out):
        return out
    return None


def quantile(double q, const double[:] data, Py_ssize_t width, const int[:] cols, const double[:] les,
             const long long[:] ts, Py_ssize_t lo, Py_ssize_t hi, long long start_ms, long long end_ms):
    cdef Py_ssize_t nb = cols.shape[0], j, m = 0, b, i
    cdef double r, top, observations, rank, start, end, count
    cdef double* upper
    cdef double* counts
    if isnan(q):
        return NAN
    if q < 0:
        return -INFINITY
    if q > 1:
        return INFINITY
    for j in range(nb):
        _check(data, width, cols[j], ts, lo, hi)
    upper = <double*>PyMem_Malloc(2 * (nb + 1) * sizeof(double))
    if upper == NULL:
        raise MemoryError()
    counts = upper + nb + 1
    try:
        for j in range(nb):
            if not _rate(data, width, cols[j], ts, lo, hi, start_ms, end_ms, True, &r):
                continue
            if m > 0 and upper[m - 1] == les[j]:
                counts[m - 1] += r
            else:
                upper[m] = les[j]
                counts[m] = r
                m += 1
        if m == 0 or not isinf(upper[m - 1]) or upper[m - 1] < 0:
            return NAN
        top = counts[0]
        for i in range(m):
            if counts[i] < top:
                counts[i] = top
            else:
                top = counts[i]
        if m < 2:
            return NAN
        observations = counts[m - 1]
        if observations == 0 or isnan(observations):
            return NAN
        rank = q * observations
        b = m - 1
        for i in range(m - 1):
            if counts[i] >= rank:
                b = i
                break
        if b == m - 1:
            return upper[m - 2]
        if b == 0 and upper[0] <= 0:
            return upper[0]
        start = 0.0
        end = upper[b]
        count = counts[b]
        if b > 0:
            start = upper[b - 1]
            count -= counts[b - 1]
            rank -= counts[b - 1]
        return start + (end - start) * (rank / count)
    finally:
        PyMem_Free(upper)
