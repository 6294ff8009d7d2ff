# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True, initializedcheck=False
"""The C twin of relay.batch.SeriesTablePy: the same series table, with its columns typed and its
lookups in C, declared in relay/_series_c.pxd so that the parser and the remote-write encoder use
it from C (``cimport``). relay.batch documents the layout and picks the twin (``SeriesTable``).

Both twins hold the same columns for the same adds (tests compare them): labels found or added
through the label index (Python's hash of the label bytes), the series hash mixed from the labels'
BLAKE2b-64 hashes, series found through the series index by that hash and their label ids.
"""

from cpython.array cimport array, clone, resize, resize_smart
from cpython.bytearray cimport PyByteArray_AS_STRING, PyByteArray_GET_SIZE, PyByteArray_Resize
from cpython.bytes cimport PyBytes_AS_STRING, PyBytes_FromStringAndSize, PyBytes_GET_SIZE
from cpython.mem cimport PyMem_Free, PyMem_Malloc, PyMem_Realloc
from libc.stdint cimport int32_t, uint32_t, uint64_t
from libc.string cimport memcmp, memcpy, memset

import sys

from relay.batch import EncodedView, decode_labels, encode_labels

cdef extern from "Python.h":
    Py_ssize_t _Py_HashBytes(const void *src, Py_ssize_t n)

cdef extern from *:
    """
    #include <stdint.h>
    #include <string.h>
    static inline uint64_t rs_r64(const unsigned char *p) { uint64_t v; memcpy(&v, p, 8); return v; }
    /* BLAKE2b (RFC 7693) with an 8-byte digest, unkeyed: the same number as
       int.from_bytes(hashlib.blake2b(data, digest_size=8).digest(), "little"). */
    static const uint64_t rs_b2_iv[8] = {
        0x6a09e667f3bcc908ULL, 0xbb67ae8584caa73bULL, 0x3c6ef372fe94f82bULL, 0xa54ff53a5f1d36f1ULL,
        0x510e527fade682d1ULL, 0x9b05688c2b3e6c1fULL, 0x1f83d9abfb41bd6bULL, 0x5be0cd19137e2179ULL};
    static const unsigned char rs_b2_sigma[12][16] = {
        {0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15},
        {14, 10, 4, 8, 9, 15, 13, 6, 1, 12, 0, 2, 11, 7, 5, 3},
        {11, 8, 12, 0, 5, 2, 15, 13, 10, 14, 3, 6, 7, 1, 9, 4},
        {7, 9, 3, 1, 13, 12, 11, 14, 2, 6, 5, 10, 4, 0, 15, 8},
        {9, 0, 5, 7, 2, 4, 10, 15, 14, 1, 11, 12, 6, 8, 3, 13},
        {2, 12, 6, 10, 0, 11, 8, 3, 4, 13, 7, 5, 15, 14, 1, 9},
        {12, 5, 1, 15, 14, 13, 4, 10, 0, 7, 6, 3, 9, 2, 8, 11},
        {13, 11, 7, 14, 12, 1, 3, 9, 5, 0, 15, 4, 8, 6, 2, 10},
        {6, 15, 14, 9, 11, 3, 0, 8, 12, 2, 13, 7, 1, 4, 10, 5},
        {10, 2, 8, 4, 7, 6, 1, 5, 15, 11, 9, 14, 3, 12, 13, 0},
        {0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15},
        {14, 10, 4, 8, 9, 15, 13, 6, 1, 12, 0, 2, 11, 7, 5, 3}};
    #define RS_ROTR(x, n) (((x) >> (n)) | ((x) << (64 - (n))))
    #define RS_G(a, b, c, d, x, y) do { \
        a = a + b + (x); d = RS_ROTR(d ^ a, 32); c = c + d; b = RS_ROTR(b ^ c, 24); \
        a = a + b + (y); d = RS_ROTR(d ^ a, 16); c = c + d; b = RS_ROTR(b ^ c, 63); } while (0)
    static void rs_b2_compress(uint64_t h[8], const unsigned char *block, uint64_t t, int last) {
        uint64_t v[16], m[16];
        int i;
        for (i = 0; i < 16; i++) m[i] = rs_r64(block + 8 * i);
        for (i = 0; i < 8; i++) { v[i] = h[i]; v[i + 8] = rs_b2_iv[i]; }
        v[12] ^= t;
        if (last) v[14] = ~v[14];
        /* rounds unrolled with constant message indices, so m[] stays in registers */
        #define RS_ROUND(r) do { \
            RS_G(v[0], v[4], v[8], v[12], m[rs_b2_sigma[r][0]], m[rs_b2_sigma[r][1]]); \
            RS_G(v[1], v[5], v[9], v[13], m[rs_b2_sigma[r][2]], m[rs_b2_sigma[r][3]]); \
            RS_G(v[2], v[6], v[10], v[14], m[rs_b2_sigma[r][4]], m[rs_b2_sigma[r][5]]); \
            RS_G(v[3], v[7], v[11], v[15], m[rs_b2_sigma[r][6]], m[rs_b2_sigma[r][7]]); \
            RS_G(v[0], v[5], v[10], v[15], m[rs_b2_sigma[r][8]], m[rs_b2_sigma[r][9]]); \
            RS_G(v[1], v[6], v[11], v[12], m[rs_b2_sigma[r][10]], m[rs_b2_sigma[r][11]]); \
            RS_G(v[2], v[7], v[8], v[13], m[rs_b2_sigma[r][12]], m[rs_b2_sigma[r][13]]); \
            RS_G(v[3], v[4], v[9], v[14], m[rs_b2_sigma[r][14]], m[rs_b2_sigma[r][15]]); } while (0)
        RS_ROUND(0); RS_ROUND(1); RS_ROUND(2); RS_ROUND(3); RS_ROUND(4); RS_ROUND(5);
        RS_ROUND(6); RS_ROUND(7); RS_ROUND(8); RS_ROUND(9); RS_ROUND(10); RS_ROUND(11);
        #undef RS_ROUND
        for (i = 0; i < 8; i++) h[i] ^= v[i] ^ v[i + 8];
    }
    static uint64_t rs_blake2b_64(const unsigned char *p, size_t n) {
        uint64_t h[8];
        unsigned char block[128];
        size_t off = 0;
        int i;
        for (i = 0; i < 8; i++) h[i] = rs_b2_iv[i];
        h[0] ^= 0x01010000ULL ^ 8;
        while (n - off > 128) { rs_b2_compress(h, p + off, off + 128, 0); off += 128; }
        memset(block, 0, 128);
        memcpy(block, p + off, n - off);
        rs_b2_compress(h, block, n, 1);
        return h[0];
    }
    """
    uint64_t rs_blake2b_64(const unsigned char *p, size_t n) nogil


cdef enum:
    SMALL_INDEX = 0xFFFF     # an index of at most this many slots is array('H'), 0xFFFF empty
    WIDE_LABEL_ID = 0xFFFF   # label ids from this one on need array('I')

cdef uint64_t MAX_ARENA = 0xFFFFFFFFULL
cdef uint64_t MIX_SEED = 0x243F6A8885A308D3ULL

cdef array _H = array("H")
cdef array _I32 = array("i")
cdef array _U32 = array("I")
cdef array _U64 = array("Q")


cdef inline Py_ssize_t Py_SIZE_of(object a) noexcept:
    return (<array>a).ob_size


cdef inline uint64_t mix_step(uint64_t h, uint64_t label) noexcept nogil:
    """relay.batch.mix_label_hashes, one label folded in."""
    h = (h ^ label) * <uint64_t>0x9E3779B97F4A7C15ULL
    return h ^ (h >> 32)


cdef inline uint64_t mix_final(uint64_t h) noexcept nogil:
    h = (h ^ (h >> 30)) * <uint64_t>0xBF58476D1CE4E5B9ULL
    h = (h ^ (h >> 27)) * <uint64_t>0x94D049BB133111EBULL
    return h ^ (h >> 31)


cdef inline uint64_t pair_hash(const unsigned char *p, Py_ssize_t n) noexcept:
    """relay.batch.pair_hash: Python's hash of the label bytes, as unsigned."""
    return <uint64_t>_Py_HashBytes(p, n)


cdef inline bint is_small(array index) noexcept:
    return index.ob_descr.typecode == b"H"


cdef inline Py_ssize_t slot_at(array index, bint small, size_t i) noexcept:
    """The id in slot i, or -1 for an empty slot."""
    cdef unsigned short v
    if small:
        v = index.data.as_ushorts[i]
        return -1 if v == SMALL_INDEX else <Py_ssize_t>v
    return index.data.as_ints[i]


cdef inline void set_slot(array index, bint small, size_t i, Py_ssize_t ident) noexcept:
    if small:
        index.data.as_ushorts[i] = <unsigned short>ident
    else:
        index.data.as_ints[i] = <int>ident


cdef inline void put_new(array index, bint small, size_t cap, uint64_t h, Py_ssize_t ident) noexcept:
    """Put ``ident`` (not in the index yet) in the first empty slot from ``h % cap`` on."""
    cdef size_t i = <size_t>(h % cap)
    while slot_at(index, small, i) >= 0:
        i += 1
        if i == cap:
            i = 0
    set_slot(index, small, i, ident)


cdef array new_index(size_t cap):
    """An empty index of ``cap`` slots (relay.batch._new_index)."""
    cdef array index
    if cap <= SMALL_INDEX:
        index = clone(_H, <Py_ssize_t>cap, False)
        memset(index.data.as_chars, 0xFF, cap * sizeof(unsigned short))
    else:
        index = clone(_I32, <Py_ssize_t>cap, False)
        memset(index.data.as_chars, 0xFF, cap * sizeof(int))
    return index


cdef inline uint32_t label_at(array ids, Py_ssize_t k) noexcept:
    if ids.ob_descr.typecode == b"H":
        return ids.data.as_ushorts[k]
    return ids.data.as_uints[k]


cdef class SeriesTable:
    """Every series of one target (or one parse), stored once, as remote-write label bytes: the C
    twin of relay.batch.SeriesTablePy (the same methods, columns and behaviour; read that class)."""

    def __cinit__(self):
        self.pairs = bytearray()
        self.pair_offsets = clone(_U32, 1, True)
        self.pair_hashes = clone(_U64, 0, False)
        self.label_ids = clone(_H, 0, False)
        self.starts = clone(_U32, 1, True)
        self.hashes = clone(_U64, 0, False)
        self._index = new_index(8)
        self._pair_index = new_index(8)
        self.shard_key = None
        self._found = NULL
        self._found_cap = 0

    def __dealloc__(self):
        PyMem_Free(self._found)

    def __len__(self):
        return Py_SIZE_of(self.hashes)

    def __repr__(self):
        return (f"<SeriesTable {len(self)} series, {len(self.pair_offsets) - 1} distinct labels "
                f"({len(self.pairs)} bytes)>")

    @property
    def encoded(self):
        """The label bytes of each series: ``encoded[sid] -> bytes``, ``len(encoded)``."""
        return EncodedView(self)

    def label_bytes(self, Py_ssize_t sid):
        """The encode_labels bytes of series ``sid``."""
        cdef Py_ssize_t n = Py_SIZE_of(self.hashes), k, s0, s1, total = 0
        cdef uint32_t q
        cdef const uint32_t *off = self.pair_offsets.data.as_uints
        cdef const unsigned char *base = <const unsigned char *>PyByteArray_AS_STRING(self.pairs)
        cdef unsigned char *o
        if sid < 0 or sid >= n:
            raise IndexError(f"series id {sid} out of range ({n} series)")
        s0 = self.starts.data.as_uints[sid]
        s1 = self.starts.data.as_uints[sid + 1]
        for k in range(s0, s1):
            q = label_at(self.label_ids, k)
            total += off[q + 1] - off[q]
        out = PyBytes_FromStringAndSize(NULL, total)
        o = <unsigned char *>PyBytes_AS_STRING(out)
        for k in range(s0, s1):
            q = label_at(self.label_ids, k)
            memcpy(o, base + off[q], off[q + 1] - off[q])
            o += off[q + 1] - off[q]
        return out

    def columns(self):
        """The content of every data column, for comparing two tables exactly (not the indexes)."""
        return (bytes(self.pairs), self.pair_offsets.tolist(), self.pair_hashes.tolist(),
                self.label_ids.typecode, self.label_ids.tolist(), self.starts.tolist(), self.hashes.tolist())

    def nbytes(self):
        """Memory the table holds: its columns and indexes (allocated sizes)."""
        return (sum(sys.getsizeof(c) for c in (self.pairs, self.pair_offsets, self.pair_hashes, self.label_ids,
                                                self.starts, self.hashes, self._index, self._pair_index))
                + self._found_cap * sizeof(uint32_t))

    def add(self, name, labels):
        """Id of the series ``name{labels}``; added if new."""
        return self.add_encoded(encode_labels(name, labels))

    def add_encoded(self, bytes encoded not None):
        """Id of the series given as encode_labels bytes; added if new. ValueError when the bytes
        are not a run of Label fields (as relay.batch.split_labels)."""
        cdef const unsigned char *p = <const unsigned char *>PyBytes_AS_STRING(encoded)
        cdef Py_ssize_t end = PyBytes_GET_SIZE(encoded), pos = 0, stop
        cdef size_t size
        cdef int shift
        while pos < end:
            if p[pos] != 0x0A:
                raise ValueError(f"encoded labels: byte {pos} is not a Label field")
            size = 0
            shift = 0
            stop = pos + 1
            while True:
                if stop >= end or shift > 63:
                    raise ValueError(f"encoded labels: the Label field at byte {pos} runs past the end")
                size |= <size_t>(p[stop] & 0x7F) << shift
                shift += 7
                stop += 1
                if p[stop - 1] < 0x80:
                    break
            if size > <size_t>(end - stop):
                raise ValueError(f"encoded labels: the Label field at byte {pos} runs past the end")
            pos = stop + <Py_ssize_t>size
        return self.add_encoded_c(p, end)

    cdef int32_t add_encoded_c(self, const unsigned char *enc, Py_ssize_t size) except -1:
        cdef Py_ssize_t pos = 0, stop, count = 0, k, m, q, sid, n
        cdef size_t length
        cdef int shift
        cdef uint64_t h = MIX_SEED
        cdef uint32_t *grown
        while pos < size:  # each Label field: 0x0A, varint length, message
            length = 0
            shift = 0
            stop = pos + 1
            while True:
                length |= <size_t>(enc[stop] & 0x7F) << shift
                shift += 7
                stop += 1
                if enc[stop - 1] < 0x80:
                    break
            stop += <Py_ssize_t>length
            q = self.label_id(enc + pos, stop - pos)
            if count == self._found_cap:
                grown = <uint32_t *>PyMem_Realloc(self._found, (self._found_cap * 2 + 16) * sizeof(uint32_t))
                if grown == NULL:
                    raise MemoryError()
                self._found = grown
                self._found_cap = self._found_cap * 2 + 16
            self._found[count] = <uint32_t>q
            h = mix_step(h, self.pair_hashes.data.as_ulonglongs[q])
            count += 1
            pos = stop
        h = mix_final(h)
        cdef array index = self._index, ids = self.label_ids
        cdef const uint32_t *starts = self.starts.data.as_uints
        cdef const unsigned long long *hashes = self.hashes.data.as_ulonglongs
        cdef size_t cap = <size_t>Py_SIZE_of(index)
        cdef size_t i = <size_t>(h % cap)
        cdef bint small = is_small(index)
        cdef bint same
        while True:
            sid = slot_at(index, small, i)
            if sid < 0:
                break
            if hashes[sid] == h and <Py_ssize_t>(starts[sid + 1] - starts[sid]) == count:
                same = True
                for k in range(count):
                    if label_at(ids, starts[sid] + k) != self._found[k]:
                        same = False
                        break
                if same:
                    return <int32_t>sid
            i += 1
            if i == cap:
                i = 0
        n = Py_SIZE_of(self.hashes)
        m = Py_SIZE_of(ids)
        if <uint64_t>m + <uint64_t>count > MAX_ARENA:
            raise MemoryError("series table is full (4 G label ids)")
        resize_smart(ids, m + count)
        try:
            resize_smart(self.starts, n + 2)
            resize_smart(self.hashes, n + 1)
        except BaseException:  # out of memory: leave the series out (its labels stay, unused)
            resize(ids, m)
            resize(self.starts, n + 1)
            raise
        if ids.ob_descr.typecode == b"H":
            for k in range(count):
                ids.data.as_ushorts[m + k] = <unsigned short>self._found[k]
        else:
            for k in range(count):
                ids.data.as_uints[m + k] = self._found[k]
        self.starts.data.as_uints[n + 1] = <uint32_t>(m + count)
        self.hashes.data.as_ulonglongs[n] = h
        set_slot(index, small, i, n)
        if <size_t>(n + 1) * 2 > cap:
            self.grow_index(cap * 2)
        return <int32_t>n

    cdef Py_ssize_t label_id(self, const unsigned char *p, Py_ssize_t n) except -1:
        cdef array index = self._pair_index, off_a = self.pair_offsets
        cdef const unsigned char *base = <const unsigned char *>PyByteArray_AS_STRING(self.pairs)
        cdef const uint32_t *off = off_a.data.as_uints
        cdef size_t cap = <size_t>Py_SIZE_of(index)
        cdef size_t i = <size_t>(pair_hash(p, n) % cap)
        cdef bint small = is_small(index)
        cdef Py_ssize_t q, start
        while True:
            q = slot_at(index, small, i)
            if q < 0:
                break
            if <Py_ssize_t>(off[q + 1] - off[q]) == n and memcmp(base + off[q], p, <size_t>n) == 0:
                return q
            i += 1
            if i == cap:
                i = 0
        q = Py_SIZE_of(off_a) - 1
        start = PyByteArray_GET_SIZE(self.pairs)
        if <uint64_t>start + <uint64_t>n > MAX_ARENA:
            raise MemoryError("series table is full (4 GiB of labels)")
        if q >= WIDE_LABEL_ID and self.label_ids.ob_descr.typecode == b"H":
            self.label_ids = array("I", self.label_ids)
        resize_smart(off_a, q + 2)
        try:
            resize_smart(self.pair_hashes, q + 1)
            PyByteArray_Resize(self.pairs, start + n)
        except BaseException:
            resize(off_a, q + 1)
            resize(self.pair_hashes, q)
            raise
        memcpy(<unsigned char *>PyByteArray_AS_STRING(self.pairs) + start, p, <size_t>n)
        off_a.data.as_uints[q + 1] = <uint32_t>(start + n)
        self.pair_hashes.data.as_ulonglongs[q] = rs_blake2b_64(p, <size_t>n)
        set_slot(index, small, i, q)
        if <size_t>(q + 1) * 2 > cap:
            self.grow_pair_index(cap * 2)
        return q

    def compact(self):
        """Give back the spare capacity of every column (one copy of each)."""
        self.pairs = self.pairs[:]
        self.pair_offsets = self.pair_offsets[:]
        self.pair_hashes = self.pair_hashes[:]
        self.label_ids = self.label_ids[:]
        self.starts = self.starts[:]
        self.hashes = self.hashes[:]

    def subset(self, ids):
        """A new table of only the series ``ids`` (an iterable of ints; those outside the table
        ignored), added in id order, and ``remap``: array('i') over this table's ids, each one's id
        in the new table or -1. ``shard_key`` is kept. As relay.batch.SeriesTablePy.subset."""
        cdef Py_ssize_t n = Py_SIZE_of(self.hashes), sid, k, s0, s1, total, count = 0
        cdef array remap = clone(_I32, n, False)
        cdef int *rm = remap.data.as_ints
        cdef array id_arr
        cdef const uint32_t *off = self.pair_offsets.data.as_uints
        cdef const unsigned char *base
        cdef unsigned char *buf = NULL
        cdef unsigned char *o
        cdef size_t cap = 0
        cdef uint32_t q
        cdef SeriesTable new = SeriesTable()
        memset(rm, 0xFF, n * sizeof(int))
        if isinstance(ids, array) and (<array>ids).ob_descr.typecode == b"I":
            id_arr = ids
            for k in range(Py_SIZE_of(id_arr)):
                sid = id_arr.data.as_uints[k]
                if sid < n and rm[sid] == -1:
                    rm[sid] = -2
                    count += 1
        else:
            for x in ids:
                sid = x
                if 0 <= sid < n and rm[sid] == -1:
                    rm[sid] = -2
                    count += 1
        new.reserve_c(count)
        base = <const unsigned char *>PyByteArray_AS_STRING(self.pairs)
        try:
            for sid in range(n):
                if rm[sid] != -2:
                    continue
                s0 = self.starts.data.as_uints[sid]
                s1 = self.starts.data.as_uints[sid + 1]
                total = 0
                for k in range(s0, s1):
                    q = label_at(self.label_ids, k)
                    total += off[q + 1] - off[q]
                if <size_t>total > cap:
                    PyMem_Free(buf)
                    cap = <size_t>total * 2 + 64
                    buf = <unsigned char *>PyMem_Malloc(cap)
                    if buf == NULL:
                        raise MemoryError()
                o = buf
                for k in range(s0, s1):
                    q = label_at(self.label_ids, k)
                    memcpy(o, base + off[q], off[q + 1] - off[q])
                    o += off[q + 1] - off[q]
                rm[sid] = new.add_encoded_c(buf, total)
        finally:
            PyMem_Free(buf)
        new.shard_key = self.shard_key
        return new, remap

    def reserve(self, Py_ssize_t count):
        """Size the dedup index for ``count`` series in all."""
        self.reserve_c(count)

    cdef int reserve_c(self, Py_ssize_t count) except -1:
        cdef size_t cap = <size_t>(2 * count + count // 16 + 8)  # load just under 1/2
        if cap > <size_t>Py_SIZE_of(self._index):
            self.grow_index(cap)
        return 0

    cdef int grow_index(self, size_t cap) except -1:
        """Rebuild the series index with ``cap`` slots (series in id order: deterministic)."""
        cdef array index = new_index(cap)
        cdef bint small = is_small(index)
        cdef const unsigned long long *hashes = self.hashes.data.as_ulonglongs
        cdef Py_ssize_t sid
        for sid in range(Py_SIZE_of(self.hashes)):
            put_new(index, small, cap, hashes[sid], sid)
        self._index = index
        return 0

    cdef int grow_pair_index(self, size_t cap) except -1:
        """Rebuild the label index with ``cap`` slots (labels in id order)."""
        cdef array index = new_index(cap)
        cdef bint small = is_small(index)
        cdef const uint32_t *off = self.pair_offsets.data.as_uints
        cdef const unsigned char *base = <const unsigned char *>PyByteArray_AS_STRING(self.pairs)
        cdef Py_ssize_t q
        for q in range(Py_SIZE_of(self.pair_offsets) - 1):
            put_new(index, small, cap, pair_hash(base + off[q], off[q + 1] - off[q]), q)
        self._pair_index = index
        return 0

    def resolve(self, Py_ssize_t sid):
        """``(metric name, sorted labels without __name__)`` of series ``sid``."""
        return decode_labels(self.label_bytes(sid if sid >= 0 else sid + len(self)))

    def labels_dict(self, Py_ssize_t sid):
        """All labels of series ``sid``, ``__name__`` included."""
        name, labels = self.resolve(sid)
        return {"__name__": name, **dict(labels)}
