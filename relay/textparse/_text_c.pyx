# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True, initializedcheck=False
"""Cython twin of relay.textparse._text_py: the same Parser, with the per-line hot loop in C.

Per sample line on a warm cache: memchr the line end, split the value (and timestamp) off the end,
hash the series text (128 bits: two independent 64-bit hashes, one pass), look the hash up in an
open-addressing table of 24-byte slots (no key bytes are kept), parse the float (exact fast path,
Python float() otherwise), append to C buffers. No Python object is made per sample. A new
text-format series without an on_new_series hook (or with a relay.labels.LabelMerge, read through
its documented attributes) is parsed, merged and encoded to remote-write label bytes in C too, and
added through the C interface of the series table (relay/_series_c.pxd); every other slow path
(labels with a hook, metadata, OpenMetrics family checks, exemplars, error messages) calls the shared helpers of
relay.textparse._text_py, so both twins decide alike.
"""

from cpython.buffer cimport PyBUF_SIMPLE, PyBuffer_Release, PyObject_GetBuffer
from cpython.bytes cimport PyBytes_AS_STRING, PyBytes_FromStringAndSize
from cpython.bytearray cimport PyByteArray_AS_STRING, PyByteArray_GET_SIZE, PyByteArray_Resize
from cpython.object cimport PyObject_GenericSetAttr, Py_SIZE
from cpython.ref cimport Py_INCREF
from cpython.tuple cimport PyTuple_New, PyTuple_SET_ITEM
from cpython.unicode cimport PyUnicode_DecodeASCII, PyUnicode_DecodeUTF8
from cpython.mem cimport PyMem_Free, PyMem_Malloc, PyMem_Realloc
from cpython cimport array
from libc.stdint cimport int32_t, int64_t, uint32_t, uint64_t
from libc.string cimport memchr, memcmp, memcpy, memset

from relay._series_c cimport SeriesTable as CSeriesTable

cdef extern from "Python.h":
    char *PyOS_double_to_string(double val, char format_code, int precision, int flags, int *ptype) except NULL

import array as _array_module  # cpython.array needs the array module imported
import sys
import threading as _threading

from relay.textparse import _text_py as _py
from relay._exceptions import ParseError, ScrapeError
from relay.labels import LabelMerge
from relay.batch import Batch, Family, SeriesTable

cdef extern from *:
    """
    #include <stdint.h>
    #include <string.h>
    static inline uint64_t rl_r64(const unsigned char *p) { uint64_t v; memcpy(&v, p, 8); return v; }
    static inline uint64_t rl_r32(const unsigned char *p) { uint32_t v; memcpy(&v, p, 4); return v; }
    static inline uint64_t rl_mix(uint64_t a, uint64_t b) {
        __uint128_t r = (__uint128_t)a * b;
        return (uint64_t)r ^ (uint64_t)(r >> 64);
    }
    #define RL_P0 0xa0761d6478bd642fULL
    #define RL_P1 0xe7037ed1a0b428dbULL
    #define RL_P2 0x8ebc6af09c88c6e3ULL
    #define RL_Q0 0x589965cc75374cc3ULL
    #define RL_Q1 0x1d8e4e27c47d124fULL
    #define RL_Q2 0xc2b2ae3d27d4eb4fULL
    /* Two wyhash-style 64-bit hashes of p[0..n) in one pass (a 128-bit key for the series cache,
       which keeps no key bytes). h1 multiply-folds each 16-byte block (x, y) as
       mix(x ^ P1, y ^ seed1); h2 as mix(y ^ Q1, x ^ seed2): other constants, other operand roles,
       other final fold, so a collision of one says nothing about the other. (A block would have to
       hold the constant P1 or Q1, bytes that are not UTF-8, to reset a lane's state; bodies are
       checked to be UTF-8.) The length is mixed into both. Reads only p[0..n). */
    static inline uint64_t rl_hash128(const unsigned char *p, size_t n, uint64_t *h2) {
        uint64_t seed = RL_P0 ^ (uint64_t)n, seed2 = RL_Q0 ^ ((uint64_t)n << 32), a, b;
        if (n <= 16) {
            if (n >= 4) {
                size_t m = (n >> 3) << 2;
                a = (rl_r32(p) << 32) | rl_r32(p + m);
                b = (rl_r32(p + n - 4) << 32) | rl_r32(p + n - 4 - m);
            } else if (n > 0) {
                a = ((uint64_t)p[0] << 16) | ((uint64_t)p[n >> 1] << 8) | p[n - 1];
                b = 0;
            } else {
                a = b = 0;
            }
        } else {
            size_t i = n;
            while (i > 16) {
                uint64_t x = rl_r64(p), y = rl_r64(p + 8);
                seed = rl_mix(x ^ RL_P1, y ^ seed);
                seed2 = rl_mix(y ^ RL_Q1, x ^ seed2);
                p += 16;
                i -= 16;
            }
            a = rl_r64(p + i - 16);
            b = rl_r64(p + i - 8);
        }
        *h2 = rl_mix(RL_Q2 ^ seed2, rl_mix(b ^ RL_Q0, a ^ seed2 ^ RL_Q1)) ^ (uint64_t)n;
        return rl_mix(RL_P2 ^ (uint64_t)n, rl_mix(a ^ RL_P1, b ^ seed));
    }
    /* Slot of hash h in a table of cap slots (any cap, not only powers of two). */
    static inline size_t rl_reduce(uint64_t h, size_t cap) {
        return (size_t)(((__uint128_t)h * cap) >> 64);
    }
    static const double rl_pow10[23] = {1e0, 1e1, 1e2, 1e3, 1e4, 1e5, 1e6, 1e7, 1e8, 1e9, 1e10, 1e11,
        1e12, 1e13, 1e14, 1e15, 1e16, 1e17, 1e18, 1e19, 1e20, 1e21, 1e22};
    /* Exact parse of [+-]digits[.digits][e[+-]digits] when Clinger's fast path applies
       (<= 19 significant digits, mantissa <= 2^53, |power of ten| <= 22): one correctly rounded
       operation on exact operands, so bit-exact with float(). Returns 0 when it does not apply. */
    static inline int rl_fast_float(const unsigned char *p, const unsigned char *e, double *out) {
        int neg = 0, nd = 0, frac = 0, any = 0, ex = 0;
        uint64_t m = 0;
        if (p < e && (*p == '+' || *p == '-')) { neg = (*p == '-'); p++; }
        while (p < e && *p == '0') { p++; any = 1; }
        while (p < e && (unsigned)(*p - '0') < 10) {
            if (nd >= 19) return 0;
            m = m * 10 + (*p - '0'); nd++; p++; any = 1;
        }
        if (p < e && *p == '.') {
            p++;
            if (nd == 0) { while (p < e && *p == '0') { p++; frac++; any = 1; } }
            while (p < e && (unsigned)(*p - '0') < 10) {
                if (nd >= 19) return 0;
                m = m * 10 + (*p - '0'); nd++; frac++; p++; any = 1;
            }
        }
        if (!any) return 0;
        if (p < e && (*p == 'e' || *p == 'E')) {
            int eneg = 0, ed = 0;
            p++;
            if (p < e && (*p == '+' || *p == '-')) { eneg = (*p == '-'); p++; }
            if (p >= e) return 0;
            while (p < e && (unsigned)(*p - '0') < 10) {
                if (ed >= 4) return 0;
                ex = ex * 10 + (*p - '0'); ed++; p++;
            }
            if (eneg) ex = -ex;
        }
        if (p != e) return 0;
        ex -= frac;
        double v;
        if (m == 0) {
            v = 0.0;
        } else {
            if (m > (1ULL << 53) || ex < -22 || ex > 22) return 0;
            v = (double)m;
            if (ex >= 0) v *= rl_pow10[ex]; else v /= rl_pow10[-ex];
        }
        *out = neg ? -v : v;
        return 1;
    }
    /* [+-]digits into an int64; 0 if not that or out of range. */
    static inline int rl_parse_int64(const unsigned char *p, const unsigned char *e, int64_t *out) {
        int neg = 0;
        uint64_t v = 0;
        if (p < e && (*p == '+' || *p == '-')) { neg = (*p == '-'); p++; }
        if (p >= e) return 0;
        while (p < e) {
            unsigned d = (unsigned)(*p - '0');
            if (d >= 10) return 0;
            if (v > (UINT64_MAX - d) / 10) return 0;
            v = v * 10 + d;
            p++;
        }
        if (neg) {
            if (v > (uint64_t)1 << 63) return 0;
            *out = (int64_t)(0 - v);
        } else {
            if (v > (uint64_t)INT64_MAX) return 0;
            *out = (int64_t)v;
        }
        return 1;
    }
    static inline int rl_is_ascii(const unsigned char *p, size_t n) {
        uint64_t acc = 0;
        size_t i = 0;
        for (; i + 8 <= n; i += 8) acc |= rl_r64(p + i);
        for (; i < n; i++) acc |= p[i];
        return (acc & 0x8080808080808080ULL) == 0;
    }
    """
    uint64_t rl_hash128(const unsigned char *p, size_t n, uint64_t *h2) nogil
    size_t rl_reduce(uint64_t h, size_t cap) nogil
    int rl_fast_float(const unsigned char *p, const unsigned char *e, double *out) nogil
    int rl_parse_int64(const unsigned char *p, const unsigned char *e, int64_t *out) nogil
    int rl_is_ascii(const unsigned char *p, size_t n) nogil


# ---------------------------------------------------------------- the key tables

# The series cache and the set of comment lines seen keep no key bytes: a key is its 128-bit hash
# (two independent 64-bit hashes of the raw text, length mixed in). Two different texts with the
# same 128 bits (about 2**-128 per pair) would share a slot; nothing else can confuse them.
#
# Both are one open-addressing table (rl_reduce to a slot, linear probing, load <= 3/4, h1 == 0
# empty), written once over two slot layouts (the fused type KeyTable): the series cache's 24-byte
# Slot carries a value, the comment set's 16-byte HSlot none (a parser keeps about as many comment
# lines as series: 8 bytes a slot less is about 2.7 KiB per etcd target).

cdef struct Slot:  # 24 bytes
    uint64_t h1      # 0: empty slot (a key's h1 is never 0: see key_hash)
    uint64_t h2
    int32_t sid      # series id, or DROPPED
    uint32_t ordinal # insertion order (index into Parser._info, which OpenMetrics fills)

cdef struct HSlot:  # 16 bytes: a key only
    uint64_t h1      # 0: empty
    uint64_t h2

cdef struct Table:    # the series cache
    Slot *slots
    size_t cap       # any size (rl_reduce); load kept <= 3/4
    size_t count

cdef struct HashSet:  # the comment lines seen
    HSlot *slots
    size_t cap
    size_t count

ctypedef fused KeyTable:
    Table
    HashSet


cdef inline uint64_t key_hash(const unsigned char *p, size_t n, uint64_t *h2) noexcept nogil:
    cdef uint64_t h1 = rl_hash128(p, n, h2)
    return h1 if h1 != 0 else 1


cdef inline size_t cap_for(size_t keys) noexcept nogil:
    """Slots for ``keys`` keys at load <= 3/4."""
    return keys + keys // 3 + 1


cdef int kt_alloc(KeyTable *t, size_t cap) except -1:
    """Fresh empty slots for ``t`` (the old ones, if any, are the caller's)."""
    cdef void *mem = PyMem_Malloc(cap * sizeof(t.slots[0]))
    if mem == NULL:
        raise MemoryError()
    memset(mem, 0, cap * sizeof(t.slots[0]))
    if KeyTable is Table:
        t.slots = <Slot *>mem
    else:
        t.slots = <HSlot *>mem
    t.cap = cap
    return 0


cdef int kt_init(KeyTable *t, size_t capacity) except -1:
    kt_alloc(t, capacity if capacity > 8 else 8)
    t.count = 0
    return 0


cdef void kt_free(KeyTable *t) noexcept:
    PyMem_Free(t.slots)
    t.slots = NULL
    t.cap = 0
    t.count = 0


cdef void kt_clear(KeyTable *t) noexcept:
    memset(t.slots, 0, t.cap * sizeof(t.slots[0]))
    t.count = 0


cdef inline size_t kt_find(KeyTable *t, uint64_t h1, uint64_t h2) noexcept nogil:
    """Slot index of key (h1, h2), else of the empty slot where it would go: the one probing loop."""
    cdef size_t i = rl_reduce(h1, t.cap)
    while True:
        if t.slots[i].h1 == 0 or (t.slots[i].h1 == h1 and t.slots[i].h2 == h2):
            return i
        i += 1
        if i == t.cap:
            i = 0


cdef int kt_resize(KeyTable *t, size_t cap) except -1:
    cdef KeyTable old = t[0]
    cdef size_t i
    try:
        kt_alloc(t, cap)
    except MemoryError:
        t[0] = old
        raise
    for i in range(old.cap):
        if old.slots[i].h1 != 0:
            t.slots[kt_find(t, old.slots[i].h1, old.slots[i].h2)] = old.slots[i]
    PyMem_Free(old.slots)
    return 0


cdef int kt_reserve(KeyTable *t, size_t keys) except -1:
    """Make room for ``keys`` keys in all, at once (a cold parse knows its body)."""
    cdef size_t cap = cap_for(keys)
    if cap > t.cap:
        kt_resize(t, cap)
    return 0


cdef int kt_fill(KeyTable *t, size_t i, uint64_t h1, uint64_t h2) except -1:
    """Put key (h1, h2) in the empty slot ``i`` (from kt_find; its value, if any, set before)."""
    t.slots[i].h1 = h1
    t.slots[i].h2 = h2
    t.count += 1
    if t.count * 4 > t.cap * 3:
        kt_resize(t, t.cap * 2)
    return 0


cdef inline Slot *table_find(Table *t, uint64_t h1, uint64_t h2) noexcept nogil:
    """The series-cache slot holding key (h1, h2), else the empty slot where it would go."""
    return &t.slots[kt_find(t, h1, h2)]


cdef int table_insert(Table *t, Slot *s, uint64_t h1, uint64_t h2, int32_t sid,
                      uint32_t ordinal) except -1:
    """Fill the empty slot ``s`` (from table_find) with key (h1, h2) and its value."""
    s.sid = sid
    s.ordinal = ordinal
    return kt_fill(t, <size_t>(s - t.slots), h1, h2)


cdef int hset_add(HashSet *t, uint64_t h1, uint64_t h2) except -1:
    """Add key (h1, h2) to a set if absent."""
    cdef size_t i = kt_find(t, h1, h2)
    if t.slots[i].h1 != 0:
        return 0
    return kt_fill(t, i, h1, h2)


# ---------------------------------------------------------------- small scanners

cdef unsigned char NAME_CHAR[256]
cdef unsigned char NAME_START[256]
cdef unsigned char LABEL_CHAR[256]
cdef unsigned char LABEL_START[256]
cdef unsigned char BAD_TOKEN[256]   # bytes float() would strip or accept that we refuse


cdef void _init_tables() noexcept:
    cdef int c
    for c in range(256):
        LABEL_START[c] = (65 <= c <= 90) or (97 <= c <= 122) or c == 95
        LABEL_CHAR[c] = LABEL_START[c] or (48 <= c <= 57)
        NAME_START[c] = LABEL_START[c] or c == 58
        NAME_CHAR[c] = LABEL_CHAR[c] or c == 58
        BAD_TOKEN[c] = c == 95 or c == 32 or (9 <= c <= 13) or c == 123


_init_tables()


cdef inline bint is_blank(unsigned char c) noexcept nogil:
    return c == 32 or c == 9


cdef inline Py_ssize_t quoted_end(const unsigned char *buf, Py_ssize_t p, Py_ssize_t end) noexcept nogil:
    """Index of the '"' closing a quoted string whose text starts at buf[p]; -1 if none before end.
    memchr for the quote; a backslash before it (rare) sends us through the escape-aware loop."""
    cdef const unsigned char *q = <const unsigned char *>memchr(buf + p, 34, end - p)
    if q == NULL:
        return -1
    if memchr(buf + p, 92, q - (buf + p)) == NULL:
        return q - buf
    while p < end:
        if buf[p] == 92:
            p += 2
            continue
        if buf[p] == 34:
            return p
        p += 1
    return -1


cdef inline Py_ssize_t block_end(const unsigned char *buf, Py_ssize_t p, Py_ssize_t end) noexcept nogil:
    """Index just past the first unquoted '}' after buf[p] == '{'; -1 if none before end."""
    cdef unsigned char c
    p += 1
    while p < end:
        c = buf[p]
        if c == 34:
            p = quoted_end(buf, p + 1, end)
            if p < 0:
                return -1
        elif c == 125:
            return p + 1
        p += 1
    return -1


cdef inline size_t varint_len(size_t n) noexcept nogil:
    cdef size_t k = 1
    while n >= 0x80:
        n >>= 7
        k += 1
    return k


cdef inline unsigned char *put_varint(unsigned char *o, size_t n) noexcept nogil:
    while n >= 0x80:
        o[0] = <unsigned char>((n & 0x7F) | 0x80)
        o += 1
        n >>= 7
    o[0] = <unsigned char>n
    return o + 1


cdef enum:
    MAX_FAST_LABELS = 64
    _MAX_FAST_ADDED_ENUM = 32  # as relay.labels.MAX_FAST_ADDED (a test checks)

cdef struct LabelRef:
    const unsigned char *name
    size_t name_len
    const unsigned char *value   # raw (still escaped) bytes
    size_t value_len             # raw length
    size_t out_len               # unescaped length
    size_t enc_len               # length of its encoded Label message
    bint escaped
    bint fill                    # an added label (LabelMerge): only where the series has none


cdef _ARRAY_I = array.array("I")
cdef _ARRAY_D = array.array("d")
cdef _ARRAY_Q = array.array("q")
cdef object _DEFAULT_TS = _py.default_timestamp
cdef object _DESCRIBE = _py.describe_bad_line
cdef object _TEXT_COMMENT = _py.text_comment
cdef object _OM_REST = _py.parse_om_rest
cdef object _CHECKER = _py.OpenMetricsChecker
cdef object _IS_OM = _py.is_openmetrics
cdef object _LABEL_MERGE = LabelMerge
cdef int32_t DROPPED = _py.DROPPED

cdef extern from "pythread.h":
    unsigned long PyThread_get_thread_ident() nogil

# A parse in a worker thread (ScrapeLoop sends large bodies there) lets go of the GIL every
# YIELD_LINES + 1 lines, so that the event loop's thread runs meanwhile (CPython hands the GIL to a
# waiting thread when it is released); on the main thread it never does.
cdef Py_ssize_t YIELD_LINES = 0xFFF
cdef unsigned long _MAIN_THREAD = <unsigned long>_threading.main_thread().ident


cdef str _text(const unsigned char *p, Py_ssize_t n):
    """Bytes of the body as text for a message (as the Python twin's ``.decode(errors='replace')``)."""
    return PyBytes_FromStringAndSize(<const char *>p, n).decode("utf-8", "replace")


cdef object _OBJECT_NEW = object.__new__
cdef bint _FAST_FAMILY = False


cdef dict _FAMILIES = {}  # (name, type, help, unit) -> Family, shared by every Parser
cdef Py_ssize_t _FAMILIES_MAX = 1 << 16


cdef object _family(str name, str typ, str help_text, str unit):
    """Family(name, typ, help_text, unit). Families are frozen, and the targets of a fleet send the
    same metadata: one object (one copy of its name and HELP text) serves every Parser. Only
    metadata lines not seen before by a Parser get here. (Keyed by a tuple: hashed and compared
    in C, where a Family's dataclass __hash__ and __eq__ run Python code.)"""
    key = (name, typ, help_text, unit)
    f = _FAMILIES.get(key)
    if f is not None:
        return f
    if len(_FAMILIES) >= _FAMILIES_MAX:
        _FAMILIES.clear()
    f = _FAMILIES[key] = _new_family(name, typ, help_text, unit)
    return f


cdef object _new_family(str name, str typ, str help_text, str unit):
    """Family(name, typ, help_text, unit), made as the frozen dataclass's own __init__ makes it
    (object.__setattr__ on its slots) but without running Python code: metadata lines are many."""
    if not _FAST_FAMILY:
        return Family(name, typ, help_text, unit)
    f = _OBJECT_NEW(Family)
    PyObject_GenericSetAttr(f, "name", name)
    PyObject_GenericSetAttr(f, "type", typ)
    PyObject_GenericSetAttr(f, "help", help_text)
    PyObject_GenericSetAttr(f, "unit", unit)
    return f


_FAST_FAMILY = True
try:
    _FAST_FAMILY = _new_family("n", "gauge", "h", "u") == Family("n", "gauge", "h", "u")
except Exception:  # a Family that is no longer a slots dataclass: use its constructor
    _FAST_FAMILY = False
cdef tuple _MTYPES = (None, "histogram", "summary")
cdef dict _TYPES = {b"counter": "counter", b"gauge": "gauge", b"histogram": "histogram", b"summary": "summary",
                    b"untyped": "unknown"}


cdef class Parser:
    """Parses exposition bodies of one target into Batches (Cython twin of relay.textparse._text_py.Parser).

        >>> p = Parser()
        >>> list(p.parse(b'up{job="etcd"} 1\\n', timestamp_ms=1000).samples())
        [('up', (('job', 'etcd'),), 1.0, 1000)]
    """

    cdef readonly object series
    cdef public dict families
    cdef public bint keep_exemplars  # set again when a reload turns send_exemplars on or off
    cdef readonly bint honor_timestamps
    cdef readonly Py_ssize_t sample_limit
    cdef readonly Py_ssize_t last_dropped  # samples of the last parse whose series on_new_series dropped
    cdef readonly str name_validation      # "utf8" or "legacy" (see _text_py.Parser)
    cdef readonly bint normalize_le        # le/quantile stored as Prometheus 3 stores them
    cdef readonly bint openmetrics_strict  # every OpenMetrics 1.0 rule
    cdef const unsigned char *_buf  # the body being parsed (text format), for _type_before
    cdef Py_ssize_t _type_pos       # _type_before has read the lines before this offset ...
    cdef int _cur_type              # ... and the last # TYPE line among them was: 1 histogram, 2 summary, 0 else
    cdef object _resolver
    cdef object _hook
    cdef object _add_encoded
    cdef LabelRef *_added    # LabelMerge.fast: labels merged into each new series in C
    cdef Py_ssize_t _n_added
    cdef object _added_keep  # owns the bytes _added points into
    cdef unsigned char *_scratch  # a new series' encoding, before CSeriesTable.add_encoded_c
    cdef size_t _scratch_cap
    cdef bint _merge
    cdef tuple _filter_names  # LabelMerge.filter_names: keep/drop decided from these labels' values
    cdef object _keeps        # LabelMerge.keeps(values) -> bool
    cdef dict _decisions      # its remembered decisions (the Relabeler's), looked up first
    cdef CSeriesTable _table # the series table when it is the C twin (new series go in through its
                             # C interface, relay/_series_c.pxd), else None (its add_encoded method)
    cdef bint _direct        # _table is not None
    cdef Py_ssize_t _hint    # samples of the last parse: the column buffers' first size
    cdef Py_ssize_t _label_limit, _name_limit, _value_limit
    cdef Table _keys
    cdef HashSet _comments
    cdef list _info          # per key ordinal: (name, labels), kept for OpenMetrics checks only
    cdef uint32_t *_ids
    cdef double *_vals
    cdef int64_t *_ts
    cdef Py_ssize_t _n, _cap
    cdef list _exemplars

    def __cinit__(self):
        kt_init(&self._keys, 8)
        kt_init(&self._comments, 8)
        self._cap = 0
        self._n = 0
        self._hint = 0
        self._added = NULL
        self._n_added = 0
        self._scratch = NULL
        self._scratch_cap = 0
        self._merge = False

    def __init__(self, *, series=None, on_new_series=None, bint keep_exemplars=False,
                 bint honor_timestamps=True, Py_ssize_t sample_limit=0, Py_ssize_t label_limit=0,
                 Py_ssize_t label_name_length_limit=0, Py_ssize_t label_value_length_limit=0,
                 str name_validation="utf8", bint normalize_le=True, bint openmetrics_strict=False):
        self.name_validation = _py.check_name_validation(name_validation)
        self.normalize_le = normalize_le
        self.openmetrics_strict = openmetrics_strict
        self.series = series if series is not None else SeriesTable()
        self.families = {}
        self.keep_exemplars = keep_exemplars
        self.honor_timestamps = honor_timestamps
        self.sample_limit = sample_limit
        self._hook = on_new_series
        self._label_limit = label_limit
        self._name_limit = label_name_length_limit
        self._value_limit = label_value_length_limit
        self._resolver = _py.SeriesResolver(self.series, on_new_series, label_limit,
                                            label_name_length_limit, label_value_length_limit,
                                            normalize_le=normalize_le, name_validation=name_validation)
        self._add_encoded = self.series.add_encoded
        self._table = self.series if isinstance(self.series, CSeriesTable) else None
        self._direct = self._table is not None
        self._info = []
        self._filter_names = None
        if type(on_new_series) is _LABEL_MERGE and on_new_series.fast is not None:  # relay/labels.py
            self._set_merge(on_new_series.fast)
            if self._merge and on_new_series.filter_names is not None:
                decisions = on_new_series.decisions
                self._filter_names = tuple(on_new_series.filter_names)
                self._keeps = on_new_series.keeps
                self._decisions = decisions if decisions is not None else {}

    cdef int _set_merge(self, tuple fast) except -1:
        cdef Py_ssize_t i, n = len(fast)
        cdef bytes k, v
        if n > _MAX_FAST_ADDED_ENUM:
            return 0
        self._added = <LabelRef *>PyMem_Malloc((n + 1) * sizeof(LabelRef))
        if self._added == NULL:
            raise MemoryError()
        for i in range(n):
            k, v, fill = fast[i]
            self._added[i].name = <const unsigned char *>PyBytes_AS_STRING(k)
            self._added[i].name_len = len(k)
            self._added[i].value = <const unsigned char *>PyBytes_AS_STRING(v)
            self._added[i].value_len = len(v)
            self._added[i].out_len = len(v)
            self._added[i].enc_len = 0
            self._added[i].escaped = False
            self._added[i].fill = bool(fill)
        self._n_added = n
        self._added_keep = fast
        self._merge = True
        return 0

    def __dealloc__(self):
        PyMem_Free(self._added)
        PyMem_Free(self._scratch)
        kt_free(&self._keys)
        kt_free(&self._comments)
        PyMem_Free(self._ids)
        PyMem_Free(self._vals)
        PyMem_Free(self._ts)

    def __len__(self):
        return self._keys.count

    def forget(self):
        """Drop the series cache (the series table and its ids stay)."""
        kt_free(&self._keys)
        kt_free(&self._comments)
        kt_init(&self._keys, 8)
        kt_init(&self._comments, 8)
        self._info = []

    def retain(self, remap, series=None):
        """Forget the cache entries of series that ``remap`` (an array('i') over the table's ids)
        maps to -1, and of dropped series; renumber the others to ``remap[sid]``. The comment lines
        seen and the families are forgotten too (the next parse reads them again). With ``series``,
        new series go to that table from now on (``remap`` maps the old table's ids into it). As
        _text_py.Parser.retain."""
        cdef int[::1] rm = remap
        cdef Py_ssize_t nmap = rm.shape[0], kept = 0, i
        cdef Table old = self._keys
        cdef Slot *s
        cdef int32_t sid
        cdef list info = self._info, new_info = []
        cdef bint om_info = len(info) > 0
        for i in range(<Py_ssize_t>old.cap):
            sid = old.slots[i].sid
            if old.slots[i].h1 != 0 and 0 <= sid < nmap and rm[sid] >= 0:
                kept += 1
        kt_alloc(&self._keys, cap_for(<size_t>kept) if kept > 6 else 8)
        self._keys.count = 0
        for i in range(<Py_ssize_t>old.cap):
            sid = old.slots[i].sid
            if old.slots[i].h1 == 0 or not (0 <= sid < nmap and rm[sid] >= 0):
                continue
            s = table_find(&self._keys, old.slots[i].h1, old.slots[i].h2)
            if om_info:
                new_info.append(info[old.slots[i].ordinal] if old.slots[i].ordinal < len(info) else None)
            s.sid = rm[sid]
            s.ordinal = <uint32_t>self._keys.count
            s.h1 = old.slots[i].h1
            s.h2 = old.slots[i].h2
            self._keys.count += 1
        PyMem_Free(old.slots)
        self._info = new_info
        kt_free(&self._comments)
        kt_init(&self._comments, 8)
        self.families = {}
        if series is not None:
            self.series = series
            self._resolver.series = series
            self._add_encoded = series.add_encoded
            self._table = series if isinstance(series, CSeriesTable) else None
            self._direct = self._table is not None

    def cache_bytes(self):
        """Memory held by the cache: (table slots, key bytes used, key bytes allocated, per-key list).
        Keys are 128-bit hashes in the slots: no key bytes are kept (0, 0)."""
        return (self._keys.cap * sizeof(Slot) + self._comments.cap * sizeof(HSlot), 0, 0,
                sys.getsizeof(self._info))

    def parse(self, body, content_type=None, timestamp_ms=None):
        """Parse one body; raises ParseError (bad body) or ScrapeError (limits)."""
        cdef Py_buffer view
        cdef int64_t dts = _DEFAULT_TS(timestamp_ms)
        cdef bint om = _IS_OM(content_type)
        PyObject_GetBuffer(body, &view, PyBUF_SIMPLE)
        try:
            if not rl_is_ascii(<const unsigned char *>view.buf, <size_t>view.len):
                _py.check_utf8(body)
            self._n = 0
            self.last_dropped = 0
            self._exemplars = []
            before = len(self.series)
            if self._keys.count == 0 and view.len > 0:
                self._presize(<const unsigned char *>view.buf, view.len)
            if om:
                self._parse_om(<const unsigned char *>view.buf, view.len, dts)
            else:
                self._buf = <const unsigned char *>view.buf
                self._type_pos = 0
                self._cur_type = 0
                self._parse_text(<const unsigned char *>view.buf, view.len, dts)
            added = len(self.series) - before
            if added and added * 8 >= len(self.series):
                self.series.compact()
            batch = Batch(self.series, self._column(_ARRAY_I, self._ids, 4),
                          self._column(_ARRAY_D, self._vals, 8), self._column(_ARRAY_Q, self._ts, 8),
                          dict(self.families))
        finally:
            self._buf = NULL
            PyBuffer_Release(&view)
            self._hint = self._n
            self._free_columns()  # not kept between scrapes: the next parse allocates _hint
        batch.exemplars = self._exemplars
        self._exemplars = None
        return batch

    cdef void _free_columns(self) noexcept:
        PyMem_Free(self._ids)
        PyMem_Free(self._vals)
        PyMem_Free(self._ts)
        self._ids = NULL
        self._vals = NULL
        self._ts = NULL
        self._cap = 0

    cdef int _presize(self, const unsigned char *buf, Py_ssize_t n) except -1:
        """First parse: size the key table, the comment set and the series table's index for the
        body's sample and comment lines (no rehash on the way)."""
        cdef Py_ssize_t samples = 0, comments = 0, pos = 0, p
        cdef const unsigned char *eol
        while pos < n:
            p = pos
            while p < n and is_blank(buf[p]):
                p += 1
            eol = <const unsigned char *>memchr(buf + pos, 10, n - pos)
            if p < n and buf[p] == 35:
                comments += 1
            elif p < n and buf[p] != 10:
                samples += 1
            if eol == NULL:
                break
            pos = (eol - buf) + 1
        kt_reserve(&self._keys, samples)
        kt_reserve(&self._comments, comments)
        if self._direct:
            self._table.reserve_c(len(self._table) + samples)
        else:
            self.series.reserve(len(self.series) + samples)
        return 0

    cdef array.array _column(self, array.array template, void *data, size_t itemsize):
        cdef array.array col = array.clone(template, self._n, zero=False)
        if self._n:
            memcpy(col.data.as_voidptr, data, self._n * itemsize)
        return col

    cdef int _grow(self) except -1:
        cdef Py_ssize_t cap = self._cap * 2 if self._cap else (self._hint + 16 if self._hint else 1024)
        cdef void *p
        p = PyMem_Realloc(self._ids, cap * sizeof(uint32_t))
        if p == NULL:
            raise MemoryError()
        self._ids = <uint32_t *>p
        p = PyMem_Realloc(self._vals, cap * sizeof(double))
        if p == NULL:
            raise MemoryError()
        self._vals = <double *>p
        p = PyMem_Realloc(self._ts, cap * sizeof(int64_t))
        if p == NULL:
            raise MemoryError()
        self._ts = <int64_t *>p
        self._cap = cap
        return 0

    cdef inline int _append(self, int32_t sid, double value, int64_t ts) except -1:
        if self._n == self._cap:
            self._grow()
        self._ids[self._n] = <uint32_t>sid
        self._vals[self._n] = value
        self._ts[self._n] = ts
        self._n += 1
        if self.sample_limit > 0 and self._n > self.sample_limit:
            raise ScrapeError("sample_limit", f"more than sample_limit {self.sample_limit} samples")
        return 0

    cdef int _value(self, const unsigned char *p, const unsigned char *e, double *out,
                    Py_ssize_t lineno) except -1:
        cdef const unsigned char *q = p
        if rl_fast_float(p, e, out):
            return 0
        while q < e:
            if BAD_TOKEN[q[0]]:
                break
            q += 1
        if q == e and e > p:
            try:
                out[0] = float(PyBytes_FromStringAndSize(<const char *>p, e - p))
                return 0
            except ValueError:
                pass
        raise ParseError(lineno, f"invalid value {_text(p, e - p)!r}")

    cdef int _bad_timestamp(self, const unsigned char *p, Py_ssize_t n, Py_ssize_t lineno) except -1:
        try:
            _py.parse_text_timestamp(PyBytes_FromStringAndSize(<const char *>p, n))
        except ValueError as exc:
            raise ParseError(lineno, str(exc)) from None
        raise ParseError(lineno, "invalid timestamp")

    cdef int _bad_line(self, const unsigned char *p, Py_ssize_t n, bint om, Py_ssize_t lineno) except -1:
        raise ParseError(lineno, _DESCRIBE(PyBytes_FromStringAndSize(<const char *>p, n), om))

    # ------------------------------------------------------------ text format 0.0.4

    cdef int _parse_text(self, const unsigned char *buf, Py_ssize_t n, int64_t dts) except -1:
        cdef Py_ssize_t pos = 0, end, p, e, q, r, tok1, tok2, ks, ke, vs, ve, ts_s, ts_e, lineno = 0
        cdef const unsigned char *eol
        cdef Slot *slot
        cdef uint64_t h, h2
        cdef double value
        cdef int64_t ts
        cdef bint has_ts, found
        cdef Py_ssize_t len_a, len_b
        cdef uint64_t h_a = 0, h_b = 0, h2_a = 0, h2_b = 0
        cdef Slot *slot_a = NULL
        cdef Slot *slot_b = NULL
        cdef bint honor = self.honor_timestamps
        cdef int32_t sid
        cdef bint cold = self._keys.count == 0  # nothing to hit: go straight to the forward scan
        while pos < n:
            lineno += 1
            if (lineno & YIELD_LINES) == 0 and PyThread_get_thread_ident() != _MAIN_THREAD:
                with nogil:  # in a worker thread (a large body): let the event loop's thread run
                    pass
            eol = <const unsigned char *>memchr(buf + pos, 10, n - pos)
            end = (eol - buf) if eol != NULL else n
            p = pos
            pos = end + 1
            while p < end and is_blank(buf[p]):
                p += 1
            if p == end:
                continue
            if buf[p] == 35:  # '#'
                self._text_comment(buf + p, end - p, lineno)
                continue
            e = end
            while is_blank(buf[e - 1]):
                e -= 1
            # Warm path: split "series value [ts]" from the end; a hit proves the split, since every
            # cached key is (the 128-bit hash of) a whole, valid series text that a forward scan
            # would also stop at.
            found = False
            len_a = len_b = -1
            q = e
            while q > p and not is_blank(buf[q - 1]):
                q -= 1
            tok1 = q
            while q > p and is_blank(buf[q - 1]):
                q -= 1
            if q > p and tok1 > q and not cold:
                h = key_hash(buf + p, q - p, &h2)
                slot = table_find(&self._keys, h, h2)
                len_a, h_a, h2_a, slot_a = q - p, h, h2, slot
                if slot.h1 != 0:
                    found = True
                    ke = q
                    vs = tok1
                    ve = e
                    has_ts = False
                else:
                    r = q
                    while r > p and not is_blank(buf[r - 1]):
                        r -= 1
                    tok2 = r
                    while r > p and is_blank(buf[r - 1]):
                        r -= 1
                    if r > p and tok2 > r:
                        h = key_hash(buf + p, r - p, &h2)
                        slot = table_find(&self._keys, h, h2)
                        len_b, h_b, h2_b, slot_b = r - p, h, h2, slot
                        if slot.h1 != 0:
                            found = True
                            ke = r
                            vs = tok2
                            ve = q
                            has_ts = True
                            ts_s = tok1
                            ts_e = e
            if found and buf[vs] == 123:  # "name {...} v": the name alone is cached, not this series
                found = False
            if not found:
                # Forward scan, exactly the grammar of _text_py._TEXT_LINE.
                ks = p
                if buf[p] == 123:  # a label block first: the metric name is quoted inside
                    p = block_end(buf, p, end)
                    if p < 0:
                        self._bad_line(buf + ks, end - ks, False, lineno)
                else:
                    if not NAME_START[buf[p]]:
                        self._bad_line(buf + ks, end - ks, False, lineno)
                    p += 1
                    while p < end and NAME_CHAR[buf[p]]:
                        p += 1
                    q = p
                    while q < end and is_blank(buf[q]):  # blanks before '{' are allowed
                        q += 1
                    if q < end and buf[q] == 123:
                        p = block_end(buf, q, end)
                        if p < 0:
                            self._bad_line(buf + ks, end - ks, False, lineno)
                ke = p
                if p >= end or (buf[p - 1] != 125 and not is_blank(buf[p])):  # after '}' no blank needed
                    self._bad_line(buf + ks, end - ks, False, lineno)
                while p < end and is_blank(buf[p]):
                    p += 1
                vs = p
                while p < end and not is_blank(buf[p]):
                    p += 1
                ve = p
                if ve == vs:
                    self._bad_line(buf + ks, end - ks, False, lineno)
                while p < end and is_blank(buf[p]):
                    p += 1
                has_ts = p < end
                if has_ts:
                    ts_s = p
                    while p < end and not is_blank(buf[p]):
                        p += 1
                    ts_e = p
                    while p < end and is_blank(buf[p]):
                        p += 1
                    if p < end:
                        self._bad_line(buf + ks, end - ks, False, lineno)
                p = ks
            if not rl_fast_float(buf + vs, buf + ve, &value):  # the usual case, inline
                self._value(buf + vs, buf + ve, &value, lineno)
            ts = dts
            if has_ts:
                if not rl_parse_int64(buf + ts_s, buf + ts_e, &ts):
                    self._bad_timestamp(buf + ts_s, ts_e - ts_s, lineno)
                if not honor:
                    ts = dts
            if not found:
                if ke - p == len_a:  # the backward split guessed the key: reuse its probe
                    h, h2, slot = h_a, h2_a, slot_a
                elif ke - p == len_b:
                    h, h2, slot = h_b, h2_b, slot_b
                else:
                    h = key_hash(buf + p, ke - p, &h2)
                    slot = table_find(&self._keys, h, h2)
                if slot.h1 == 0:
                    sid = self._new_text_series(buf + p, ke - p, lineno)
                    if self._hook is not None:  # Python ran: find the slot again
                        slot = table_find(&self._keys, h, h2)
                        if slot.h1 != 0:
                            raise RuntimeError("series cache changed during on_new_series")
                    table_insert(&self._keys, slot, h, h2, sid, <uint32_t>self._keys.count)
                    if sid >= 0:
                        self._append(sid, value, ts)
                    else:
                        self.last_dropped += 1
                    continue
            if slot.sid >= 0:
                self._append(slot.sid, value, ts)
            else:
                self.last_dropped += 1
        return 0

    cdef int _text_comment(self, const unsigned char *p, Py_ssize_t n, Py_ssize_t lineno) except -1:
        cdef uint64_t h2
        cdef uint64_t h = key_hash(p, n, &h2)
        if self._comments.slots[kt_find(&self._comments, h, h2)].h1 != 0:
            return 0  # seen before: its metadata is already in self.families
        cdef int r = self._metadata(p, n)
        if r >= 0:
            stale = r
        else:
            try:
                stale = _TEXT_COMMENT(PyBytes_FromStringAndSize(<const char *>p, n), self.families)
            except ValueError as exc:
                raise ParseError(lineno, str(exc)) from None
        if stale:
            kt_clear(&self._comments)  # same size: the lines come again
        hset_add(&self._comments, h, h2)
        return 0

    cdef int _metadata(self, const unsigned char *p, Py_ssize_t n) except -2:
        """_text_py.text_comment for the usual lines: 1 if it made the comment cache stale, 0 if
        not; -1 for anything unusual (escapes, errors), which the Python function then handles."""
        cdef Py_ssize_t i = 1, ns, ne, rs, re_
        cdef bint is_help
        if i >= n or not is_blank(p[i]):
            return 0  # a plain comment
        while i < n and is_blank(p[i]):
            i += 1
        if n - i < 4:
            return 0
        if memcmp(p + i, b"HELP", 4) == 0:
            is_help = True
        elif memcmp(p + i, b"TYPE", 4) == 0:
            is_help = False
        else:
            return 0
        i += 4
        if i == n:
            return -1
        if not is_blank(p[i]):
            return 0
        while i < n and is_blank(p[i]):
            i += 1
        ns = i
        if i == n or not NAME_START[p[i]]:
            return -1
        while i < n and NAME_CHAR[p[i]]:
            i += 1
        ne = i
        if i < n and not is_blank(p[i]):
            return -1
        while i < n and is_blank(p[i]):
            i += 1
        rs = i
        re_ = n
        name = PyUnicode_DecodeASCII(<const char *>p + ns, ne - ns, NULL)
        old = self.families.get(name)
        if is_help:
            if memchr(p + rs, 92, re_ - rs) != NULL:
                return -1
            text = PyUnicode_DecodeUTF8(<const char *>p + rs, re_ - rs, NULL)
            if old is None:
                f = _family(name, "unknown", text, "")
                self.families[f.name] = f  # the shared name string is the key
                return 0
            self.families[name] = _family(name, old.type, text, old.unit)
            return old.help != "" and old.help != text
        while re_ > rs and is_blank(p[re_ - 1]):
            re_ -= 1
        typ = _TYPES.get(PyBytes_FromStringAndSize(<const char *>p + rs, re_ - rs))
        if typ is None:
            return -1
        if old is None:
            f = _family(name, typ, "", "")
            self.families[f.name] = f
            return 0
        self.families[name] = _family(name, typ, old.help, old.unit)
        return old.type != "unknown" and old.type != typ

    cdef int32_t _new_text_series(self, const unsigned char *p, Py_ssize_t n, Py_ssize_t lineno) except? -3:
        """Series id of a new text-format series text, or DROPPED."""
        cdef int32_t sid
        if self._hook is None or self._merge:
            sid = self._fast_new_series(p, n)
            if sid != -2:
                return sid
        key = PyBytes_FromStringAndSize(<const char *>p, n)
        return self._resolver.resolve(key, False, lineno, _MTYPES[self._type_before(p)])[0]

    cdef int _type_before(self, const unsigned char *line) except -1:
        """The type of the last ``# TYPE`` line before the line holding ``line`` (1 histogram,
        2 summary, 0 anything else or none), as _text_py.comment_type reads them. Lazy and
        incremental: only new series with an le/quantile label ask, and each asks only about the
        lines after the last question, so a parse reads its body at most once more."""
        cdef const unsigned char *buf = self._buf
        cdef Py_ssize_t upto = line - buf, pos = self._type_pos, end, q, e
        cdef const unsigned char *eol
        while upto > 0 and buf[upto - 1] != 10:  # back to the start of the line
            upto -= 1
        while pos < upto:
            eol = <const unsigned char *>memchr(buf + pos, 10, upto - pos)
            end = (eol - buf) if eol != NULL else upto
            q = pos
            pos = end + 1
            while q < end and is_blank(buf[q]):
                q += 1
            if end - q < 7 or buf[q] != 35 or not is_blank(buf[q + 1]):
                continue
            q += 1
            while q < end and is_blank(buf[q]):
                q += 1
            if end - q < 5 or memcmp(buf + q, b"TYPE", 4) != 0 or not is_blank(buf[q + 4]):
                continue
            e = end  # a TYPE line that parsed: its type is its last word
            while e > q and is_blank(buf[e - 1]):
                e -= 1
            if e - q >= 14 and memcmp(buf + e - 9, b"histogram", 9) == 0:
                self._cur_type = 1
            elif e - q >= 12 and memcmp(buf + e - 7, b"summary", 7) == 0:
                self._cur_type = 2
            else:
                self._cur_type = 0
        if upto > self._type_pos:
            self._type_pos = upto
        return self._cur_type

    cdef int32_t _fast_new_series(self, const unsigned char *p, Py_ssize_t n) except? -3:
        """Parse and encode a text-format series in C; -2 when anything is unusual (the Python
        resolver then decides, raises or explains)."""
        cdef LabelRef labels[MAX_FAST_LABELS + 1]
        cdef LabelRef merged[MAX_FAST_LABELS + 1 + _MAX_FAST_ADDED_ENUM]
        cdef LabelRef *out = labels
        cdef Py_ssize_t nout
        cdef LabelRef tmp
        cdef Py_ssize_t count = 0, i, j, pos, end, stop, name_end = 0
        cdef size_t total = 0, k
        cdef int cmp
        cdef const unsigned char *q
        cdef const unsigned char *v
        cdef unsigned char *o
        cdef unsigned char c
        cdef Py_ssize_t le_at = -1, quantile_at = -1, norm_at = -1, norm_len
        cdef unsigned char norm[48]  # the normalised le/quantile value
        while name_end < n and NAME_CHAR[p[name_end]]:
            name_end += 1
        if name_end == 0 or not NAME_START[p[0]]:
            return -2
        labels[0].name = <const unsigned char *>b"__name__"
        labels[0].name_len = 8
        labels[0].value = p
        labels[0].value_len = name_end
        labels[0].out_len = name_end
        labels[0].escaped = False
        count = 1
        if name_end < n:
            pos = name_end
            while pos < n and is_blank(p[pos]):  # text: blanks before '{'
                pos += 1
            if pos == n or p[pos] != 123 or p[n - 1] != 125:
                return -2
            pos += 1
            end = n - 1
            while True:
                while pos < end and is_blank(p[pos]):
                    pos += 1
                if pos == end:
                    break
                if count > MAX_FAST_LABELS or not LABEL_START[p[pos]]:
                    return -2
                labels[count].name = p + pos
                stop = pos + 1
                while stop < end and LABEL_CHAR[p[stop]]:
                    stop += 1
                labels[count].name_len = stop - pos
                if self.normalize_le:
                    if stop - pos == 2 and p[pos] == 108 and p[pos + 1] == 101:  # le
                        le_at = count
                    elif stop - pos == 8 and memcmp(p + pos, b"quantile", 8) == 0:
                        quantile_at = count
                pos = stop
                while pos < end and is_blank(p[pos]):
                    pos += 1
                if pos == end or p[pos] != 61:  # '='
                    return -2
                pos += 1
                while pos < end and is_blank(p[pos]):
                    pos += 1
                if pos == end or p[pos] != 34:
                    return -2
                pos += 1
                labels[count].value = p + pos
                q = <const unsigned char *>memchr(p + pos, 34, end - pos)
                if q == NULL:
                    return -2
                if memchr(p + pos, 92, q - (p + pos)) == NULL:
                    stop = q - p
                    labels[count].escaped = False
                else:
                    stop = quoted_end(p, pos, end)
                    if stop < 0:
                        return -2
                    labels[count].escaped = True
                labels[count].value_len = stop - pos
                labels[count].out_len = stop - pos  # exact unless escaped (fixed below)
                pos = stop + 1
                count += 1
                while pos < end and is_blank(p[pos]):
                    pos += 1
                if pos == end:
                    break
                if p[pos] != 44:
                    return -2
                pos += 1
        # unknown escapes stay as two bytes: compute the exact unescaped length
        for i in range(1, count):
            if labels[i].escaped:
                v = labels[i].value
                k = 0
                j = 0
                while j < <Py_ssize_t>labels[i].value_len:
                    if v[j] == 92:
                        c = v[j + 1]
                        k += 1 if (c == 92 or c == 110 or c == 34) else 2
                        j += 2
                    else:
                        k += 1
                        j += 1
                labels[i].out_len = k
        # le of a histogram, quantile of a summary (by the last # TYPE line): as Prometheus 3 stores them
        if le_at >= 0 or quantile_at >= 0:
            norm_at = self._type_before(p)
            norm_at = le_at if norm_at == 1 else quantile_at if norm_at == 2 else -1
            if norm_at >= 0:
                if labels[norm_at].escaped:
                    return -2
                norm_len = go_label_float(labels[norm_at].value, labels[norm_at].value_len, norm)
                if norm_len < 0:
                    return -2  # not a plain decimal: Python parses it as Go does
                labels[norm_at].value = norm
                labels[norm_at].value_len = norm_len
                labels[norm_at].out_len = norm_len
        # limits, duplicates, __name__: let Python raise the exact error
        if self._label_limit > 0 and count > self._label_limit:
            return -2
        if self._name_limit > 0 or self._value_limit > 0:
            for i in range(count):
                if self._name_limit > 0 and i > 0 and <Py_ssize_t>labels[i].name_len > self._name_limit:
                    return -2
                if self._value_limit > 0 and <Py_ssize_t>labels[i].out_len > self._value_limit:
                    return -2
        # sort by name (insertion sort: usually already sorted); equal names are duplicates
        for i in range(1, count):
            cmp = _name_cmp(&labels[i - 1], &labels[i])
            if cmp < 0:
                continue
            if cmp == 0:
                return -2
            tmp = labels[i]
            j = i - 1
            while j >= 0:
                cmp = _name_cmp(&labels[j], &tmp)
                if cmp == 0:
                    return -2
                if cmp < 0:
                    break
                labels[j + 1] = labels[j]
                j -= 1
            labels[j + 1] = tmp
        nout = count
        if self._merge:  # LabelMerge without conflicts: both lists are sorted by name
            i = j = nout = 0
            while i < count or j < self._n_added:
                if j >= self._n_added:
                    cmp = -1
                elif i >= count:
                    cmp = 1
                else:
                    cmp = _name_cmp(&labels[i], &self._added[j])
                if cmp < 0:
                    merged[nout] = labels[i]
                    i += 1
                elif cmp > 0:
                    merged[nout] = self._added[j]
                    j += 1
                else:
                    if labels[i].out_len == 0:  # an empty value is no label: the added one goes in
                        merged[nout] = self._added[j]
                    elif self._added[j].fill:
                        merged[nout] = labels[i]
                    else:
                        return -2  # the scraped value becomes exported_<name>: Python does that
                    i += 1
                    j += 1
                nout += 1
            out = merged
            if self._filter_names is not None:
                keep = self._filter(out, nout)
                if keep < 0:
                    return -2
                if keep == 0:
                    return DROPPED
        for i in range(nout):
            if out[i].out_len == 0:
                out[i].enc_len = 0
                continue
            out[i].enc_len = (1 + varint_len(out[i].name_len) + out[i].name_len
                                 + 1 + varint_len(out[i].out_len) + out[i].out_len)
            total += 1 + varint_len(out[i].enc_len) + out[i].enc_len
        cdef unsigned char *grown
        if self._direct:  # into the scratch buffer, then straight into the series table's columns
            if total > self._scratch_cap:
                grown = <unsigned char *>PyMem_Realloc(self._scratch, total)
                if grown == NULL:
                    raise MemoryError()
                self._scratch = grown
                self._scratch_cap = total
            o = self._scratch
        else:
            encoded = PyBytes_FromStringAndSize(NULL, total)
            o = <unsigned char *>PyBytes_AS_STRING(encoded)
        for i in range(nout):
            if out[i].out_len == 0:
                continue
            o[0] = 0x0A
            o = put_varint(o + 1, out[i].enc_len)
            o[0] = 0x0A
            o = put_varint(o + 1, out[i].name_len)
            memcpy(o, out[i].name, out[i].name_len)
            o += out[i].name_len
            o[0] = 0x12
            o = put_varint(o + 1, out[i].out_len)
            if out[i].escaped:
                v = out[i].value
                j = 0
                while j < <Py_ssize_t>out[i].value_len:
                    if v[j] == 92:
                        c = v[j + 1]
                        if c == 110:
                            o[0] = 10
                            o += 1
                        elif c == 92 or c == 34:
                            o[0] = c
                            o += 1
                        else:
                            o[0] = 92
                            o[1] = c
                            o += 2
                        j += 2
                    else:
                        o[0] = v[j]
                        o += 1
                        j += 1
            else:
                memcpy(o, out[i].value, out[i].out_len)
                o += out[i].out_len
        if self._direct:
            return self._table.add_encoded_c(self._scratch, <Py_ssize_t>total)
        return self._add_encoded(encoded)

    cdef int _filter(self, LabelRef *labels, Py_ssize_t count) except -2:
        """Keep/drop relabeling of merged labels: 1 kept, 0 dropped, -1 when a value it reads is
        escaped (Python decides). The filter's labels' values, as a tuple, decide (LabelMerge)."""
        cdef Py_ssize_t nf = len(self._filter_names), f, i
        cdef bytes name
        cdef tuple key = PyTuple_New(nf)
        for f in range(nf):
            name = self._filter_names[f]
            value = ""
            for i in range(count):
                if (labels[i].name_len == <size_t>len(name)
                        and memcmp(labels[i].name, PyBytes_AS_STRING(name), labels[i].name_len) == 0):
                    if labels[i].escaped:
                        return -1
                    if labels[i].out_len:
                        value = PyUnicode_DecodeUTF8(<const char *>labels[i].value, labels[i].out_len, NULL)
                    break
            Py_INCREF(value)
            PyTuple_SET_ITEM(key, f, value)
        decided = self._decisions.get(key)
        if decided is None:
            decided = self._keeps(key)
        return 1 if decided else 0

    # ------------------------------------------------------------ OpenMetrics 1.0

    cdef int _set_info(self, Py_ssize_t ordinal, object info) except -1:
        if ordinal >= len(self._info):
            self._info.extend([None] * (ordinal + 1 - len(self._info)))
        self._info[ordinal] = info
        return 0

    cdef int _parse_om(self, const unsigned char *buf, Py_ssize_t n, int64_t dts) except -1:
        cdef Py_ssize_t pos = 0, end, p, ks, ke, vs, ve, lineno = 0
        cdef const unsigned char *eol
        cdef Slot *slot
        cdef uint64_t h, h2
        cdef double value
        cdef int32_t sid
        cdef bint honor = self.honor_timestamps
        checker = _CHECKER(self.families, self.openmetrics_strict)
        sample = checker.sample
        while pos < n:
            lineno += 1
            if (lineno & YIELD_LINES) == 0 and PyThread_get_thread_ident() != _MAIN_THREAD:
                with nogil:  # in a worker thread (a large body): let the event loop's thread run
                    pass
            eol = <const unsigned char *>memchr(buf + pos, 10, n - pos)
            end = (eol - buf) if eol != NULL else n
            p = pos
            pos = end + 1
            if checker.eof:
                raise ParseError(lineno, "text after # EOF")
            if end == p:
                raise ParseError(lineno, "blank line")
            if buf[p] == 35:
                if end - p == 5 and memcmp(buf + p, b"# EOF", 5) == 0:
                    checker.eof = True
                else:
                    checker.comment(PyBytes_FromStringAndSize(<const char *>buf + p, end - p), lineno)
                continue
            ks = p
            if buf[p] != 123:  # else a label block first: the metric name is quoted inside
                if not NAME_START[buf[p]]:
                    self._bad_line(buf + ks, end - ks, True, lineno)
                p += 1
                while p < end and NAME_CHAR[buf[p]]:
                    p += 1
            if p < end and buf[p] == 123:
                p = block_end(buf, p, end)
                if p < 0:
                    self._bad_line(buf + ks, end - ks, True, lineno)
            ke = p
            if p >= end or buf[p] != 32:
                self._bad_line(buf + ks, end - ks, True, lineno)
            p += 1
            vs = p
            while p < end and buf[p] != 32:
                p += 1
            ve = p
            if ve == vs:
                self._bad_line(buf + ks, end - ks, True, lineno)
            if not rl_fast_float(buf + vs, buf + ve, &value):  # the usual case, inline
                self._value(buf + vs, buf + ve, &value, lineno)
            ts = None
            exemplar = None
            if p < end:
                rest = PyBytes_FromStringAndSize(<const char *>buf + p + 1, end - p - 1)
                try:
                    ts, exemplar = _OM_REST(rest)
                except ValueError as exc:
                    raise ParseError(lineno, str(exc)) from None
            h = key_hash(buf + ks, ke - ks, &h2)
            slot = table_find(&self._keys, h, h2)
            if slot.h1 == 0:
                key = PyBytes_FromStringAndSize(<const char *>buf + ks, ke - ks)
                sid, info = self._resolver.resolve(key, True, lineno, checker.last_type)
                slot = table_find(&self._keys, h, h2)
                if slot.h1 != 0:
                    raise RuntimeError("series cache changed during on_new_series")
                self._set_info(self._keys.count, info)
                table_insert(&self._keys, slot, h, h2, sid, <uint32_t>self._keys.count)
            else:
                sid = slot.sid
                info = self._info[slot.ordinal] if slot.ordinal < len(self._info) else None
                if info is None:
                    key = PyBytes_FromStringAndSize(<const char *>buf + ks, ke - ks)
                    info = _py._parsed_om(key, {}, lineno)
                    self._set_info(slot.ordinal, info)
            sample(info[0], info[1], value, ts, exemplar is not None, lineno)
            if sid < 0:
                self.last_dropped += 1
                continue
            if exemplar is not None and self.keep_exemplars:
                self._exemplars.append((self._n, *exemplar))
            self._append(sid, value, ts if (ts is not None and honor) else dts)
        checker.end(lineno)
        return 0


cdef inline int _name_cmp(LabelRef *a, LabelRef *b) noexcept nogil:
    cdef size_t n = a.name_len if a.name_len < b.name_len else b.name_len
    cdef int c = memcmp(a.name, b.name, n)
    if c != 0:
        return c
    return (a.name_len > b.name_len) - (a.name_len < b.name_len)


MAX_FAST_ADDED = _MAX_FAST_ADDED_ENUM
"""Labels added by a LabelMerge that are merged in C (relay.labels.MAX_FAST_ADDED: a test checks)."""


# ---------------------------------------------------------------- le/quantile values as Prometheus 3 stores them
# (at the end of the module: cold code, kept away from the hot loops' layout)

cdef Py_ssize_t go_label_float(const unsigned char *v, Py_ssize_t n, unsigned char *out) except -2:
    """An le/quantile value as Prometheus 3 stores it (_text_py.normalize_float_label) into ``out``
    (>= 40 bytes): its length, or -1 when the value is not a plain decimal (Python decides).
    The digits are the shortest that read back (as Go's and Python's repr), laid out as Go's
    strconv.FormatFloat(f, 'g', -1, 64), '.0' appended when it has no '.' or 'e'."""
    cdef double d
    cdef char *r
    cdef char digits[24]
    cdef Py_ssize_t nd = 0, lead = 0, whole = 0, i = 0, dp = 0, exp10 = 0, ed = 0
    cdef bint in_frac = False, seen = False, eneg = False, neg = False, any_digit = False
    if n == 4 and (memcmp(v, b"+Inf", 4) == 0 or memcmp(v, b"-Inf", 4) == 0):
        memcpy(out, v, 4)
        return 4
    # [+-]digits[.digits][e[+-]digits] read as digits and a decimal point, no conversion: up to
    # 15 significant digits (DBL_DIG) in the normal range, the digits as written (less leading
    # and trailing zeros) are the shortest that read back, since two such decimals are never
    # the same double.
    if n > 0 and (v[0] == 43 or v[0] == 45):
        neg = v[0] == 45
        i = 1
    while i < n and 48 <= v[i] <= 57:
        any_digit = True
        if nd > 0 or v[i] != 48:
            if nd < 24:
                digits[nd] = v[i]
            nd += 1
            dp += 1
        i += 1
    if i < n and v[i] == 46:
        i += 1
        while i < n and 48 <= v[i] <= 57:
            any_digit = True
            if nd > 0 or v[i] != 48:
                if nd < 24:
                    digits[nd] = v[i]
                nd += 1
            else:
                dp -= 1
            i += 1
    if any_digit and i < n and (v[i] == 101 or v[i] == 69):
        i += 1
        if i < n and (v[i] == 43 or v[i] == 45):
            eneg = v[i] == 45
            i += 1
        while i < n and 48 <= v[i] <= 57 and ed < 5:
            exp10 = exp10 * 10 + (v[i] - 48)
            ed += 1
            i += 1
        if ed == 0:
            any_digit = False
        dp += -exp10 if eneg else exp10
    if any_digit and i == n and nd <= 24:
        while nd > 0 and digits[nd - 1] == 48:
            nd -= 1
        if nd == 0:
            memcpy(out, b"0.0", 3)
            return 3
        if nd <= 15 and -300 < dp < 300:
            return go_layout(neg, digits, nd, dp, out)
    # the rest: more digits, far exponents: Python's repr gives the shortest digits
    if not rl_fast_float(v, v + n, &d):
        return -1
    if d == 0:
        memcpy(out, b"0.0", 3)
        return 3
    nd = 0
    exp10 = 0
    eneg = False
    r = PyOS_double_to_string(d if d > 0 else -d, b"r", 0, 0, NULL)
    try:
        i = 0
        while r[i] != 0 and r[i] != 101:  # up to 'e'
            if r[i] == 46:
                in_frac = True
            else:
                if not in_frac:
                    whole += 1
                if r[i] == 48 and not seen:
                    lead += 1
                else:
                    seen = True
                    if nd < 24:
                        digits[nd] = r[i]
                        nd += 1
            i += 1
        if r[i] == 101:
            i += 1
            if r[i] == 45:
                eneg = True
                i += 1
            elif r[i] == 43:
                i += 1
            while r[i] != 0:
                exp10 = exp10 * 10 + (r[i] - 48)
                i += 1
            if eneg:
                exp10 = -exp10
    finally:
        PyMem_Free(r)
    while nd > 0 and digits[nd - 1] == 48:
        nd -= 1
    return go_layout(d < 0, digits, nd, whole - lead + exp10, out)


cdef Py_ssize_t go_layout(bint neg, const char *digits, Py_ssize_t nd, Py_ssize_t dp,
                          unsigned char *out) noexcept:
    """Go's 'g' layout of ``0.digits * 10**dp`` (shortest digits), '.0' appended as Prometheus does."""
    cdef Py_ssize_t k = 0, i, exp10
    if neg:
        out[k] = 45
        k += 1
    if dp - 1 < -4 or dp - 1 >= 6:
        out[k] = digits[0]
        k += 1
        if nd > 1:
            out[k] = 46
            k += 1
            memcpy(out + k, digits + 1, nd - 1)
            k += nd - 1
        out[k] = 101
        k += 1
        exp10 = dp - 1
        out[k] = 45 if exp10 < 0 else 43
        k += 1
        if exp10 < 0:
            exp10 = -exp10
        if exp10 >= 100:
            out[k] = <unsigned char>(48 + exp10 // 100)
            k += 1
        out[k] = <unsigned char>(48 + (exp10 // 10) % 10)
        out[k + 1] = <unsigned char>(48 + exp10 % 10)
        return k + 2
    if dp <= 0:
        out[k] = 48
        out[k + 1] = 46
        k += 2
        for i in range(-dp):
            out[k] = 48
            k += 1
        memcpy(out + k, digits, nd)
        return k + nd
    if dp >= nd:
        memcpy(out + k, digits, nd)
        k += nd
        for i in range(dp - nd):
            out[k] = 48
            k += 1
        out[k] = 46
        out[k + 1] = 48
        return k + 2
    memcpy(out + k, digits, dp)
    k += dp
    out[k] = 46
    k += 1
    memcpy(out + k, digits + dp, nd - dp)
    return k + nd - dp
