# The C interface of the Cython SeriesTable (relay/_series_c.pyx), the C twin of
# relay.batch.SeriesTablePy. The parser (relay/textparse/_text_c.pyx) and the remote-write encoder
# (relay/remote/_encode_c.pyx) cimport it and use its typed columns and cdef methods from C.
#
# Layout (relay/batch.py documents it; both twins hold the same columns):
#   pairs         bytearray   each distinct encoded Label field, back to back
#   pair_offsets  array('I')  n_labels + 1 offsets into pairs
#   pair_hashes   array('Q')  label_hash (BLAKE2b-64) of each distinct label
#   label_ids     array('H')  the label ids of every series, back to back; array('I') once the
#                             table has 0xFFFF distinct labels (widened by add_encoded_c)
#   starts        array('I')  n + 1 offsets into label_ids
#   hashes        array('Q')  series_hash of each series
#   _index        array('H') (0xFFFF empty) up to 0xFFFF slots, else array('i') (-1 empty):
#                             series ids by hash % len, linear probing, load <= 1/2
#   _pair_index   the same for label ids, by Python's hash of the label bytes
#
# The fields are readonly from Python; only this class's methods replace or grow them, so C code
# that holds pointers into them must read them again after calling one of its methods.

from cpython.array cimport array
from libc.stdint cimport int32_t, uint32_t


cdef class SeriesTable:
    cdef readonly bytearray pairs
    cdef readonly array pair_offsets
    cdef readonly array pair_hashes
    cdef readonly array label_ids
    cdef readonly array starts
    cdef readonly array hashes
    cdef readonly array _index
    cdef readonly array _pair_index
    cdef public object shard_key
    cdef uint32_t *_found          # scratch: the label ids of the series being added
    cdef Py_ssize_t _found_cap
    cdef object __weakref__

    # The id of the series whose encode_labels bytes are enc[0:size] (well formed: a run of
    # Label fields, as the parser writes them); added if new. As SeriesTablePy.add_encoded.
    cdef int32_t add_encoded_c(self, const unsigned char *enc, Py_ssize_t size) except -1
    # The id of the encoded label p[0:n] (one Label field); added if new.
    cdef Py_ssize_t label_id(self, const unsigned char *p, Py_ssize_t n) except -1
    # Size the series index for ``count`` series in all.
    cdef int reserve_c(self, Py_ssize_t count) except -1
    cdef int grow_index(self, size_t cap) except -1
    cdef int grow_pair_index(self, size_t cap) except -1
