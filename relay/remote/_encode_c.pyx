# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True, initializedcheck=False
"""The C twin of relay.remote.encode: remote-write WriteRequest encoding and shard splitting.

Same names, behaviour, errors and output bytes as ``WriteRequestEncoderPy`` and ``split_by_shard_py``
in relay/rwencode.py, which documents the wire format and the grouping rule. Here no Python object
is made per sample: the columns are read through their buffers, each run of samples of one series
gets its label bytes copied straight from the C SeriesTable's distinct labels (``pairs``, one copy per
label id of the series, read through its C interface, relay/_series_c.pxd; the pointers taken once
per add(): nothing adds series during an add()),
and everything is written into one growing C buffer that finish() turns into bytes.
"""

from cpython.array cimport array, clone
from cpython.bytes cimport PyBytes_FromStringAndSize
from libc.stdint cimport int64_t, uint8_t, uint16_t, uint32_t, uint64_t
from libc.stdlib cimport free, malloc, realloc
from libc.string cimport memcpy, memset

import cramjam

from cpython.bytearray cimport PyByteArray_AS_STRING, PyByteArray_GET_SIZE

from relay._series_c cimport SeriesTable

cdef extern from *:
    """
    #include <stdint.h>
    #include <string.h>

    /* Bytes that n takes as a base-128 varint: 1..10. */
    static inline Py_ssize_t rw_varint_len(uint64_t n) {
    #if defined(__GNUC__) || defined(__clang__)
        return 1 + (63 - __builtin_clzll(n | 1)) / 7;
    #else
        Py_ssize_t len = 1;
        while (n >= 0x80) { n >>= 7; len++; }
        return len;
    #endif
    }

    static inline uint8_t *rw_put_varint(uint8_t *p, uint64_t n) {
        while (n >= 0x80) {
            *p++ = (uint8_t)(n | 0x80);
            n >>= 7;
        }
        *p++ = (uint8_t)n;
        return p;
    }

    /* The 8 bytes of a fixed64 field: little endian whatever the host. */
    static inline uint8_t *rw_put_fixed64(uint8_t *p, uint64_t v) {
    #if defined(__BYTE_ORDER__) && __BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__
        memcpy(p, &v, 8);
    #else
        for (int k = 0; k < 8; k++) p[k] = (uint8_t)(v >> (8 * k));
    #endif
        return p + 8;
    }

    /* n bytes from src to dst with fixed-size copies (inlined: no call for the usual 10-60 byte
       label); never reads or writes outside [src, src + n) and [dst, dst + n). */
    static inline void rw_copy(uint8_t *dst, const uint8_t *src, size_t n) {
        if (n <= 16) {
            if (n >= 8) {
                memcpy(dst, src, 8);
                memcpy(dst + n - 8, src + n - 8, 8);
            } else if (n >= 4) {
                memcpy(dst, src, 4);
                memcpy(dst + n - 4, src + n - 4, 4);
            } else {
                for (size_t k = 0; k < n; k++) dst[k] = src[k];
            }
        } else if (n <= 32) {
            memcpy(dst, src, 16);
            memcpy(dst + n - 16, src + n - 16, 16);
        } else if (n <= 64) {
            memcpy(dst, src, 32);
            memcpy(dst + n - 32, src + n - 32, 32);
        } else {
            memcpy(dst, src, n);
        }
    }

    /* Total bytes of the labels ids[s0:s1] (2- or 4-byte ids), or -1 if an id is not below npairs
       or its offsets are out of order (poff[npairs] was checked against the pairs' size). */
    static inline Py_ssize_t rw_labels_len(const void *ids, int wide, uint32_t s0, uint32_t s1,
                                           const uint32_t *poff, uint32_t npairs) {
        Py_ssize_t total = 0;
        if (wide) {
            const uint32_t *p = (const uint32_t *)ids;
            for (uint32_t t = s0; t < s1; t++) {
                uint32_t q = p[t];
                if (q >= npairs || poff[q + 1] < poff[q] || poff[q + 1] > poff[npairs]) return -1;
                total += poff[q + 1] - poff[q];
            }
        } else {
            const uint16_t *p = (const uint16_t *)ids;
            for (uint32_t t = s0; t < s1; t++) {
                uint32_t q = p[t];
                if (q >= npairs || poff[q + 1] < poff[q] || poff[q + 1] > poff[npairs]) return -1;
                total += poff[q + 1] - poff[q];
            }
        }
        return total;
    }

    /* Copy the labels ids[s0:s1] (checked by rw_labels_len) to out; returns the end. */
    static inline uint8_t *rw_copy_labels(uint8_t *out, const void *ids, int wide, uint32_t s0, uint32_t s1,
                                          const uint32_t *poff, const uint8_t *pairs) {
        if (wide) {
            const uint32_t *p = (const uint32_t *)ids;
            for (uint32_t t = s0; t < s1; t++) {
                uint32_t a = poff[p[t]], b = poff[p[t] + 1];
                rw_copy(out, pairs + a, b - a);
                out += b - a;
            }
        } else {
            const uint16_t *p = (const uint16_t *)ids;
            for (uint32_t t = s0; t < s1; t++) {
                uint32_t a = poff[p[t]], b = poff[p[t] + 1];
                rw_copy(out, pairs + a, b - a);
                out += b - a;
            }
        }
        return out;
    }
    """
    Py_ssize_t rw_varint_len(uint64_t n) nogil
    Py_ssize_t rw_labels_len(const void *ids, int wide, uint32_t s0, uint32_t s1, const uint32_t *poff,
                             uint32_t npairs) nogil
    uint8_t* rw_copy_labels(uint8_t *out, const void *ids, int wide, uint32_t s0, uint32_t s1,
                            const uint32_t *poff, const uint8_t *pairs) nogil
    uint8_t* rw_put_varint(uint8_t* p, uint64_t n) nogil
    uint8_t* rw_put_fixed64(uint8_t* p, uint64_t v) nogil


# A Sample field: tag, length (one byte: a Sample is at most 20 bytes), 0x09, 8 value bytes, 0x10,
# then the timestamp varint. SLACK: bytes a sample may write past its end (a fixed-size copy of a
# cached 10-byte varint), reserved beyond what is needed.
cdef enum:
    SAMPLE_FIXED = 12
    SLACK = 16
    MIN_CAPACITY = 65536
    KEEP_MAX = 16 << 20  # a buffer larger than this is freed at finish(), never kept as the spare

cdef array _INDEX_TEMPLATE = array("I")
_compress_raw = cramjam.snappy.compress_raw
_compress_raw_into = cramjam.snappy.compress_raw_into
_compress_raw_max_len = cramjam.snappy.compress_raw_max_len

# One spare output buffer for the compressor, taken while in use (so two threads never share
# it): compressing into a kept buffer spares a fresh max-size allocation, its page faults and
# its unmapping on every request (about 5 % of snappy's time on scrape-sized blocks).
cdef object _out_spare = None

# One spare buffer, handed from an encoder that goes away to the next one made, so that the
# one-shot pattern (encode_write_request, one encoder per send) does not grow a buffer each time.
cdef uint8_t* _spare = NULL
cdef Py_ssize_t _spare_cap = 0


cdef inline bint _is_array(object a, char typecode) noexcept:
    return isinstance(a, array) and (<array>a).ob_descr.typecode == typecode


cdef tuple _layout_of(object series):
    """(pairs bytearray, pair_offsets array('I'), label_ids array('H' or 'I'), starts array('I')) of
    the C SeriesTable (its typed columns, relay/_series_c.pxd); for any other table (the Python
    twin, or anything with an ``encoded`` sequence of bytes), the same built from its ``encoded``,
    one label per series."""
    cdef SeriesTable table
    if isinstance(series, SeriesTable):
        table = series
        return table.pairs, table.pair_offsets, table.label_ids, table.starts
    pairs = bytearray()
    poff = array("I", [0])
    for item in series.encoded:
        if not isinstance(item, bytes):
            raise TypeError(f"SeriesTable.encoded[{len(poff) - 1}] is not bytes")
        pairs += item
        poff.append(len(pairs))
    n = len(poff) - 1
    return pairs, poff, array("I", range(n)), array("I", range(n + 1))


cdef Py_ssize_t _check_columns(object batch) except -1:
    cdef Py_ssize_t n = len(batch.ids)
    if len(batch.values) != n or len(batch.timestamps) != n:
        raise ValueError(
            f"Batch columns differ in length: {n} ids, {len(batch.values)} values, "
            f"{len(batch.timestamps)} timestamps"
        )
    return n


cdef class WriteRequestEncoder:
    """Accumulates samples from one or more Batches (possibly different SeriesTables) into one WriteRequest.

    The C twin of ``relay.remote.encode.WriteRequestEncoderPy`` (same output, byte for byte).
    """

    cdef uint8_t* _buf
    cdef Py_ssize_t _len
    cdef Py_ssize_t _cap
    cdef Py_ssize_t _count
    cdef bint _busy  # the buffer is lent to the compressor (which may run without the GIL)

    def __cinit__(self):
        global _spare, _spare_cap
        self._buf = _spare
        self._cap = _spare_cap
        _spare = NULL
        _spare_cap = 0
        self._len = 0
        self._count = 0
        self._busy = False

    def __dealloc__(self):
        global _spare, _spare_cap
        if self._buf == NULL:
            return
        if _spare_cap < self._cap <= KEEP_MAX:
            free(_spare)
            _spare = self._buf
            _spare_cap = self._cap
        else:
            free(self._buf)
        self._buf = NULL

    def __len__(self):
        """Samples added since the last finish()."""
        return self._count

    cdef int _check_idle(self) except -1:
        if self._busy:
            raise RuntimeError("WriteRequestEncoder used from another thread during finish_compressed()")
        return 0

    cdef int _grow(self, Py_ssize_t need) except -1:
        cdef Py_ssize_t cap = self._cap * 2 if self._cap else MIN_CAPACITY
        cdef uint8_t* buf
        if cap < need:
            cap = need
        buf = <uint8_t*>realloc(self._buf, <size_t>cap)
        if buf == NULL:
            raise MemoryError(f"cannot grow the WriteRequest buffer to {cap} bytes")
        self._buf = buf
        self._cap = cap
        return 0

    def add(self, batch, index=None):
        """Append samples of ``batch``: those at positions ``index``, in that order, or all of them
        when ``index`` is None. ``index`` is an ``array('I')`` (other iterables of ints are converted).

        Raises IndexError for a position or a series id out of range; the encoder is then unchanged.
        """
        self._check_idle()
        cdef Py_ssize_t n = _check_columns(batch)
        # The columns are array.array (read through .data, no buffer acquisition: add() is called
        # once per batch and shard); anything else with the buffer protocol through memoryviews.
        cdef const uint32_t[::1] ids_view
        cdef const double[::1] values_view
        cdef const int64_t[::1] timestamps_view
        cdef const uint32_t[::1] positions
        cdef const uint32_t* ids = NULL
        cdef const uint64_t* vbits = NULL
        cdef const int64_t* stamps = NULL
        cdef const uint32_t* pos = NULL
        cdef Py_ssize_t m = n
        cdef Py_ssize_t start = self._len
        cdef object pairs
        cdef array poff, label_ids, starts
        pairs, poff, label_ids, starts = _layout_of(batch.series)
        cdef Py_ssize_t nseries = len(starts) - 1
        cdef Py_ssize_t npairs = len(poff) - 1
        cdef bint wide = label_ids.ob_descr.typecode == b"I"
        if nseries < 0 or npairs < 0 or poff.data.as_uints[npairs] > <size_t>PyByteArray_GET_SIZE(pairs):
            raise ValueError("SeriesTable pair_offsets do not match its pairs")
        if n:
            col = batch.ids
            if _is_array(col, b"I"):
                ids = (<array>col).data.as_uints
            else:
                ids_view = col
                ids = &ids_view[0]
            col = batch.values
            if _is_array(col, b"d"):
                vbits = <const uint64_t*>(<array>col).data.as_doubles
            else:
                values_view = col
                vbits = <const uint64_t*>&values_view[0]
            col = batch.timestamps
            if _is_array(col, b"q"):
                stamps = <const int64_t*>(<array>col).data.as_longlongs
            else:
                timestamps_view = col
                stamps = &timestamps_view[0]
        if index is not None:
            if not _is_array(index, b"I"):
                index = array("I", index)
            m = len(index)
            if m:
                pos = (<array>index).data.as_uints
        if m == 0:
            return
        if n == 0:
            # Every position is out of range; report the first one as the Python twin does.
            raise IndexError(f"sample position {pos[0]} out of range for a batch of 0 samples")
        try:
            self._encode(ids, vbits, stamps, n, pos, m,
                         <const uint8_t*>PyByteArray_AS_STRING(pairs), poff.data.as_uints, npairs,
                         <const void*>label_ids.data.as_chars, wide, len(label_ids),
                         starts.data.as_uints, nseries)
        except BaseException:
            self._len = start
            raise
        self._count += m

    cdef int _encode(self, const uint32_t* ids, const uint64_t* vbits, const int64_t* ts,
                     Py_ssize_t n, const uint32_t* pos, Py_ssize_t m, const uint8_t* pairs,
                     const uint32_t* poff, Py_ssize_t npairs, const void* label_ids, bint wide,
                     Py_ssize_t nids, const uint32_t* starts, Py_ssize_t nseries) except -1:
        cdef Py_ssize_t i = 0, j, k, p, q, body, lablen
        cdef uint32_t sid, s0, s1
        cdef uint8_t* out = self._buf + self._len
        cdef uint8_t* end = self._buf + self._cap
        # The last timestamp written, its varint (padded to SLACK bytes) and the varint's length.
        cdef int64_t last_ts
        cdef uint8_t ts_bytes[SLACK]
        cdef Py_ssize_t ts_len
        memset(ts_bytes, 0, SLACK)
        last_ts = ts[pos[0] if pos != NULL else 0]
        ts_len = rw_put_varint(ts_bytes, <uint64_t>last_ts) - ts_bytes
        while i < m:
            p = pos[i] if pos != NULL else i
            if p >= n:
                raise IndexError(f"sample position {p} out of range for a batch of {n} samples")
            sid = ids[p]
            if sid >= nseries:
                raise IndexError(
                    f"series id {sid} of sample {p} not in the batch's SeriesTable ({nseries} series)"
                )
            s0 = starts[sid]
            s1 = starts[sid + 1]
            if s1 < s0 or s1 > <size_t>nids:
                raise ValueError(f"SeriesTable starts of series {sid} are out of order")
            lablen = rw_labels_len(label_ids, wide, s0, s1, poff, <uint32_t>npairs)
            if lablen < 0:
                raise ValueError(f"SeriesTable labels of series {sid} are out of range")
            if ts[p] != last_ts:
                last_ts = ts[p]
                ts_len = rw_put_varint(ts_bytes, <uint64_t>last_ts) - ts_bytes
            # The run: following samples of the same series (a position out of range ends it and
            # is reported when the loop gets to it).
            body = lablen + SAMPLE_FIXED + ts_len
            j = i + 1
            while j < m:
                q = pos[j] if pos != NULL else j
                if q >= n or ids[q] != sid:
                    break
                body += SAMPLE_FIXED + rw_varint_len(<uint64_t>ts[q])
                j += 1
            if end - out < 1 + 10 + body + SLACK:
                self._len = out - self._buf
                self._grow(self._len + 1 + 10 + body + SLACK)
                out = self._buf + self._len
                end = self._buf + self._cap
            out[0] = 0x0A
            out = rw_put_varint(out + 1, <uint64_t>body)
            out = rw_copy_labels(out, label_ids, wide, s0, s1, poff, pairs)
            k = i
            while True:
                # Sample k of the run; ts_bytes holds the varint of ts[q].
                out[0] = 0x12
                out[1] = <uint8_t>(SAMPLE_FIXED - 2 + ts_len)
                out[2] = 0x09
                rw_put_fixed64(out + 3, vbits[p])
                out[11] = 0x10
                memcpy(out + SAMPLE_FIXED, ts_bytes, SLACK)
                out += SAMPLE_FIXED + ts_len
                k += 1
                if k == j:
                    break
                p = pos[k] if pos != NULL else k
                if ts[p] != last_ts:
                    last_ts = ts[p]
                    ts_len = rw_put_varint(ts_bytes, <uint64_t>last_ts) - ts_bytes
            i = j
        self._len = out - self._buf
        return 0

    def finish(self):
        """The WriteRequest bytes of everything added; the encoder is then empty, ready for reuse."""
        self._check_idle()
        data = PyBytes_FromStringAndSize(<char*>self._buf, self._len)
        self._reset()
        return data

    cdef void _reset(self):
        self._len = 0
        self._count = 0
        if self._cap > KEEP_MAX:
            free(self._buf)
            self._buf = NULL
            self._cap = 0

    def finish_compressed(self):
        """``compress(finish())`` without the intermediate bytes: snappy straight from the buffer."""
        cdef bytes data
        self._check_idle()
        if self._len == 0:
            data = bytes(_compress_raw(b""))
        else:
            self._busy = True
            try:
                data = _compress_kept(<uint8_t[:self._len]>self._buf)
            finally:
                self._busy = False
        self._reset()
        return data


cdef bytes _compress_kept(const uint8_t[::1] src):
    """Snappy block of ``src``, compressed into the spare output buffer."""
    global _out_spare
    cdef Py_ssize_t need = _compress_raw_max_len(src)
    out = _out_spare
    _out_spare = None
    if out is None or len(<bytearray>out) < need:
        out = bytearray(need)
    cdef Py_ssize_t size = _compress_raw_into(src, out)
    data = PyBytes_FromStringAndSize(PyByteArray_AS_STRING(out), size)
    if len(<bytearray>out) <= KEEP_MAX:
        _out_spare = out
    return data


def max_timestamp(batch):
    """The newest sample timestamp of ``batch`` (milliseconds), None when it is empty.

    The C twin of ``relay.remote.encode.max_timestamp_py``.
    """
    cdef const int64_t[::1] ts
    cdef Py_ssize_t i, n = len(batch.timestamps)
    cdef int64_t hi
    if n == 0:
        return None
    ts = batch.timestamps
    hi = ts[0]
    for i in range(1, n):
        if ts[i] > hi:
            hi = ts[i]
    return hi


def split_by_shard(batch, Py_ssize_t n):
    """Sample positions of ``batch`` per shard (``array('I')`` each, ascending): a sample goes to shard
    ``SeriesTable.hashes[sid] % n``, so a series always lands in the same shard, in order.

    The C twin of ``relay.remote.encode.split_by_shard_py``.
    """
    if n < 1:
        raise ValueError(f"shard count must be at least 1, got {n}")
    cdef const uint64_t[::1] hashes
    cdef const uint32_t[::1] ids
    cdef Py_ssize_t nseries = len(batch.series.hashes)
    cdef Py_ssize_t m = len(batch.ids)
    cdef Py_ssize_t i, s
    cdef uint32_t sid
    cdef Py_ssize_t* shard_of = NULL  # shard of each series, -1 until a sample of it is seen
    cdef Py_ssize_t* fill = NULL
    cdef uint32_t** dest = NULL
    cdef list shards
    if nseries:
        hashes = batch.series.hashes
    if m:
        ids = batch.ids
    shard_of = <Py_ssize_t*>malloc(<size_t>(nseries + 1) * sizeof(Py_ssize_t))
    fill = <Py_ssize_t*>malloc(<size_t>n * sizeof(Py_ssize_t))
    dest = <uint32_t**>malloc(<size_t>n * sizeof(uint32_t*))
    try:
        if shard_of == NULL or fill == NULL or dest == NULL:
            raise MemoryError()
        memset(shard_of, 0xFF, <size_t>(nseries + 1) * sizeof(Py_ssize_t))
        memset(fill, 0, <size_t>n * sizeof(Py_ssize_t))
        for i in range(m):
            sid = ids[i]
            if sid >= nseries:
                raise IndexError(
                    f"series id {sid} of sample {i} not in the batch's SeriesTable ({nseries} series)"
                )
            s = shard_of[sid]
            if s < 0:
                s = <Py_ssize_t>(hashes[sid] % <uint64_t>n)
                shard_of[sid] = s
            fill[s] += 1
        shards = []
        for s in range(n):
            shard = clone(_INDEX_TEMPLATE, fill[s], False)
            shards.append(shard)
            dest[s] = <uint32_t*>(<array>shard).data.as_uints
            fill[s] = 0
        for i in range(m):
            s = shard_of[ids[i]]
            dest[s][fill[s]] = <uint32_t>i
            fill[s] += 1
        return shards
    finally:
        free(shard_of)
        free(fill)
        free(dest)
