"""The columnar batch: what the parser produces, the scraper decorates and remote write encodes.

A :class:`Batch` is three parallel columns (``array.array``, so they expose the buffer protocol and
go zero-copy into numpy) plus the :class:`SeriesTable` their series ids point into:

    ids         array('I')  series id of each sample, an index into ``series``
    values      array('d')  float64 value (staleness markers are the NaN with bits STALE_NAN_BITS)
    timestamps  array('q')  int64 milliseconds since the epoch

The series table stores each series once, as its remote-write label bytes: the ``labels`` fields of
a protobuf ``TimeSeries`` (``__name__`` included, sorted by label name, no empty values). That is
the most compact form of a label set that is still ready to send, and it is decoded back to
``(name, labels)`` only when asked (:meth:`SeriesTable.resolve`). A stable 64-bit hash of each
series is kept beside it for sharding.

    >>> table = SeriesTable()
    >>> sid = table.add("up", (("instance", "a:2381"), ("job", "etcd")))
    >>> batch = Batch(table)
    >>> batch.append(sid, 1.0, 1700000000000)
    >>> list(batch.samples())
    [('up', (('instance', 'a:2381'), ('job', 'etcd')), 1.0, 1700000000000)]
"""

from __future__ import annotations

import hashlib
import math
import struct
import sys
from array import array
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, overload

from . import _ext

__all__ = [
    "STALE_NAN",
    "STALE_NAN_BITS",
    "Batch",
    "EncodedView",
    "Family",
    "Labels",
    "SeriesTable",
    "SeriesTablePy",
    "decode_labels",
    "encode_labels",
    "is_stale_nan",
    "label_hash",
    "mix_label_hashes",
    "pair_hash",
    "split_labels",
]

Labels = tuple[tuple[str, str], ...]
"""A label set without ``__name__``, sorted by label name."""

STALE_NAN_BITS = 0x7FF0000000000002
"""Prometheus' staleness marker: a NaN with this exact bit pattern."""
STALE_NAN: float = struct.unpack("<d", struct.pack("<Q", STALE_NAN_BITS))[0]

_U64 = (1 << 64) - 1
_PACK_D = struct.Struct("<d")
_PACK_Q = struct.Struct("<Q")


def is_stale_nan(value: float) -> bool:
    """True if ``value`` is the staleness-marker NaN (not just any NaN)."""
    return math.isnan(value) and _PACK_Q.unpack(_PACK_D.pack(value))[0] == STALE_NAN_BITS


@dataclass(frozen=True, slots=True)
class Family:
    """Metadata of one metric family, from ``# TYPE``, ``# HELP`` and ``# UNIT`` lines."""

    name: str
    type: str = "unknown"
    help: str = ""
    unit: str = ""


def _varint(n: int) -> bytes:
    """``n`` (0 <= n < 2**64) as a protobuf base-128 varint."""
    out = bytearray()
    while n >= 0x80:
        out.append((n & 0x7F) | 0x80)
        n >>= 7
    out.append(n)
    return bytes(out)


def encode_labels(name: str, labels: Iterable[tuple[str, str]]) -> bytes:
    """Encode a series as the ``repeated Label labels = 1`` fields of a remote-write TimeSeries.

    ``__name__`` is added, labels are sorted by name (byte order, as the spec requires), and empty
    values are left out (an empty label value means "no such label" in Prometheus).
    """
    pairs = sorted([("__name__", name), *((k, v) for k, v in labels if v != "")])
    out = bytearray()
    for key, value in pairs:
        kb = key.encode()
        vb = value.encode()
        label = b"\x0a" + _varint(len(kb)) + kb + b"\x12" + _varint(len(vb)) + vb
        out += b"\x0a" + _varint(len(label)) + label
    return bytes(out)


def _read_varint(buf: bytes, pos: int) -> tuple[int, int]:
    result = shift = 0
    while True:
        b = buf[pos]
        pos += 1
        result |= (b & 0x7F) << shift
        if b < 0x80:
            return result, pos
        shift += 7


def decode_labels(encoded: bytes) -> tuple[str, Labels]:
    """Inverse of :func:`encode_labels`: ``(name, labels without __name__)``."""
    name = ""
    labels: list[tuple[str, str]] = []
    pos = 0
    end = len(encoded)
    while pos < end:
        pos += 1  # tag of field 1 (Label), wire type 2
        size, pos = _read_varint(encoded, pos)
        stop = pos + size
        key = value = ""
        while pos < stop:
            tag = encoded[pos]
            n, pos = _read_varint(encoded, pos + 1)
            text = encoded[pos : pos + n].decode()
            pos += n
            if tag == 0x0A:
                key = text
            else:
                value = text
        if key == "__name__":
            name = value
        else:
            labels.append((key, value))
    return name, tuple(labels)


def split_labels(encoded: bytes) -> list[tuple[int, int]]:
    """``(start, end)`` of each ``Label`` field (tag, length, message) in :func:`encode_labels` bytes."""
    out = []
    pos = 0
    end = len(encoded)
    while pos < end:
        if encoded[pos] != 0x0A:
            raise ValueError(f"encoded labels: byte {pos} is not a Label field")
        size, body = _read_varint(encoded, pos + 1)
        stop = body + size
        if stop > end:
            raise ValueError(f"encoded labels: the Label field at byte {pos} runs past the end")
        out.append((pos, stop))
        pos = stop
    return out


def label_hash(label: bytes) -> int:
    """A stable 64-bit hash of one encoded ``Label`` field: BLAKE2b-64, little endian."""
    return int.from_bytes(hashlib.blake2b(label, digest_size=8).digest(), "little")


_MIX_SEED = 0x243F6A8885A308D3
_MIX_K = 0x9E3779B97F4A7C15


def mix_label_hashes(hashes: Iterable[int]) -> int:
    """The series hash from its labels' :func:`label_hash` es, in encoded order: each folded in by
    an xor, a multiply and a shift, then the splitmix64 finalizer."""
    h = _MIX_SEED
    for lh in hashes:
        h = ((h ^ lh) * _MIX_K) & _U64
        h ^= h >> 32
    h = ((h ^ (h >> 30)) * 0xBF58476D1CE4E5B9) & _U64
    h = ((h ^ (h >> 27)) * 0x94D049BB133111EB) & _U64
    return h ^ (h >> 31)


def series_hash(encoded: bytes) -> int:
    """A stable 64-bit hash of a series (same in every process and every run), from its
    :func:`encode_labels` bytes: :func:`mix_label_hashes` of each label's :func:`label_hash`, so
    that a table, which keeps each distinct label's hash, computes it without hashing the whole
    encoding again."""
    return mix_label_hashes(label_hash(encoded[a:b]) for a, b in split_labels(encoded))


class EncodedView(Sequence[bytes]):
    """``SeriesTable.encoded``: the label bytes of each series, as a read-only sequence of bytes.

    ``view[sid]`` joins the series' labels into new bytes; ``len(view)`` is the number of series.
    Two views (or a view and a list of bytes) are equal when they hold the same bytes in order.
    """

    __slots__ = ("_table",)

    def __init__(self, table: SeriesTablePy) -> None:
        self._table = table

    def __len__(self) -> int:
        return len(self._table.hashes)

    @overload
    def __getitem__(self, index: int) -> bytes: ...

    @overload
    def __getitem__(self, index: slice) -> list[bytes]: ...

    def __getitem__(self, index: int | slice) -> bytes | list[bytes]:
        if isinstance(index, slice):
            return [self[i] for i in range(*index.indices(len(self)))]
        n = len(self._table.hashes)
        if index < 0:
            index += n
        if not 0 <= index < n:
            raise IndexError(f"series id {index} out of range ({n} series)")
        return self._table.label_bytes(index)

    def __iter__(self) -> Iterator[bytes]:
        table = self._table
        for sid in range(len(table.hashes)):
            yield table.label_bytes(sid)

    def __eq__(self, other: object) -> bool:
        if isinstance(other, EncodedView):
            return list(self) == list(other)
        if isinstance(other, (list, tuple)):
            return list(self) == list(other)
        return NotImplemented

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        return f"<EncodedView of {len(self)} series>"


_SMALL_INDEX = 0xFFFF  # an index of at most this many slots is array('H'), 0xFFFF empty


def _new_index(cap: int) -> array[int]:
    """An empty index of ``cap`` slots: array('H') (empty 0xFFFF) while ``cap`` <= 0xFFFF, so
    that every id it holds (at most cap / 2) fits below 0xFFFF; array('i') (empty -1) above."""
    if cap <= _SMALL_INDEX:
        return array("H", (_SMALL_INDEX,)) * cap
    return array("i", (-1,)) * cap


def _empty_slot(index: array[int]) -> int:
    return _SMALL_INDEX if index.typecode == "H" else -1


def pair_hash(pair: bytes) -> int:
    """Slot hash of one encoded label in a SeriesTable's label index: Python's own hash of the
    bytes as an unsigned 64-bit number (the Cython parser computes the same with _Py_HashBytes).
    Per process (PYTHONHASHSEED), which is all an in-memory index needs."""
    return hash(pair) & _U64


_MAX_ARENA = 0xFFFFFFFF
_WIDE_LABEL_ID = 0xFFFF  # label ids from this one on need array('I')


class SeriesTablePy:
    """Every series of one target (or one parse), stored once, as remote-write label bytes.

    Ids are dense, start at 0 and never change; adding the same series twice gives the same id.

    Each distinct label (one ``Label`` field of the encoding: tag, length, name and value) is kept
    once per table; a series is the list of its labels' ids. The series of one target share most
    of their labels (``__name__`` across histogram buckets, ``le``, ``instance``, ``job``): an etcd
    member's 1,400 series have about 370 distinct labels, so a series costs about 12 bytes of ids
    instead of 160 bytes of label text. Layout (no Python object per series or label):

        pairs         bytearray   each distinct Label field, back to back
        pair_offsets  array('I')  n_labels + 1: label ``q`` is ``pairs[pair_offsets[q]:pair_offsets[q + 1]]``
        pair_hashes   array('Q')  :func:`label_hash` of each distinct label
        label_ids     array('H')  the label ids of every series, back to back (array('I') once a
                                  table has 0xFFFF distinct labels)
        starts        array('I')  n + 1: series ``sid`` is ``label_ids[starts[sid]:starts[sid + 1]]``,
                                  its labels in encoded (sorted) order
        hashes        array('Q')  :func:`series_hash` of each series (sharding): mixed from its
                                  labels' pair_hashes
        _index        array('H')  series ids, open addressing by ``hash % len(_index)``, linear
                      or ('i')    probing; doubled and rebuilt when more than half full; 2-byte slots
                                  (0xFFFF empty) up to 0xFFFF slots, then 4-byte ones (-1 empty)
        _pair_index   the same for label ids, by :func:`pair_hash` of the label's bytes

    ``encoded`` is a read-only sequence view (``encoded[sid] -> bytes``, joined from the labels).
    The columns change only when a series is added or :meth:`compact` is called, so pointers into
    them taken by C code (the remote-write encoder, once per ``add()``) stay valid while no Python
    code runs.

    This is the readable reference twin. The C twin, ``relay._series_c.SeriesTable`` (declared in
    ``relay/_series_c.pxd``: the Cython parser and encoder use its typed columns from C), has the
    same methods and, for the same adds, the same columns; :data:`SeriesTable` is the one in use.
    """

    __slots__ = ("__weakref__", "_index", "_pair_index", "hashes", "label_ids", "pair_hashes", "pair_offsets",
                 "pairs", "shard_key", "starts")

    def __init__(self) -> None:
        self.pairs = bytearray()
        self.pair_offsets: array[int] = array("I", (0,))
        self.pair_hashes: array[int] = array("Q")
        self.label_ids: array[int] = array("H")
        self.starts: array[int] = array("I", (0,))
        self.hashes: array[int] = array("Q")
        self._index: array[int] = _new_index(8)
        self._pair_index: array[int] = _new_index(8)
        self.shard_key: int | None = None
        """Set by the owner of a table whose series all belong to one source (a scrape target):
        remote write then keeps each of its batches whole, in shard ``shard_key % shards``
        (per-series order holds: a series has one source), instead of splitting it by series hash."""

    def __len__(self) -> int:
        return len(self.hashes)

    def __repr__(self) -> str:
        return (f"<SeriesTable {len(self)} series, {len(self.pair_offsets) - 1} distinct labels "
                f"({len(self.pairs)} bytes)>")

    @property
    def encoded(self) -> EncodedView:
        """The label bytes of each series: ``encoded[sid] -> bytes``, ``len(encoded)``."""
        return EncodedView(self)

    def label_bytes(self, sid: int) -> bytes:
        """The :func:`encode_labels` bytes of series ``sid`` (no bounds check beyond the arrays')."""
        off = self.pair_offsets
        pairs = self.pairs
        ids = self.label_ids
        return b"".join([pairs[off[q] : off[q + 1]] for q in ids[self.starts[sid] : self.starts[sid + 1]]])

    def columns(self) -> tuple[object, ...]:
        """The content of every data column, for comparing two tables exactly (tests, self-checks);
        not the indexes, whose size depends on :meth:`reserve`."""
        return (bytes(self.pairs), self.pair_offsets.tolist(), self.pair_hashes.tolist(), self.label_ids.typecode,
                self.label_ids.tolist(), self.starts.tolist(), self.hashes.tolist())

    def nbytes(self) -> int:
        """Memory the table holds: its columns and indexes (allocated sizes)."""
        return sum(sys.getsizeof(c) for c in (self.pairs, self.pair_offsets, self.pair_hashes, self.label_ids,
                                              self.starts, self.hashes, self._index, self._pair_index))

    def add(self, name: str, labels: Iterable[tuple[str, str]]) -> int:
        """Id of the series ``name{labels}``; added if new."""
        return self.add_encoded(encode_labels(name, labels))

    def add_encoded(self, encoded: bytes) -> int:
        """Id of the series given as :func:`encode_labels` bytes; added if new.

        Its labels are looked up first (and added if new: then the series is new too), its hash is
        mixed from theirs, and an existing series is found by that hash and its label ids.
        """
        found = [self._label_id(encoded[a:b]) for a, b in split_labels(encoded)]
        label_ids = self.label_ids  # after _label_id: it may have widened the array
        ids = array(label_ids.typecode, found)
        pair_hashes = self.pair_hashes
        h = mix_label_hashes(pair_hashes[q] for q in ids)
        index = self._index
        hashes = self.hashes
        starts = self.starts
        cap = len(index)
        empty = _empty_slot(index)
        i = h % cap
        while True:
            sid = index[i]
            if sid == empty:
                break
            if hashes[sid] == h and label_ids[starts[sid] : starts[sid + 1]] == ids:
                return sid
            i += 1
            if i == cap:
                i = 0
        if len(label_ids) + len(ids) > _MAX_ARENA:
            raise MemoryError("series table is full (4 G label ids)")
        sid = len(hashes)
        label_ids.extend(ids)
        starts.append(len(label_ids))
        hashes.append(h)
        index[i] = sid
        if (sid + 1) * 2 > cap:
            self._grow_index(cap * 2)
        return sid

    def _label_id(self, pair: bytes) -> int:
        """Id of one encoded label; added if new."""
        index = self._pair_index
        off = self.pair_offsets
        pairs = self.pairs
        cap = len(index)
        empty = _empty_slot(index)
        i = pair_hash(pair) % cap
        while True:
            q = index[i]
            if q == empty:
                break
            if pairs[off[q] : off[q + 1]] == pair:
                return q
            i += 1
            if i == cap:
                i = 0
        q = len(off) - 1
        if len(pairs) + len(pair) > _MAX_ARENA:
            raise MemoryError("series table is full (4 GiB of labels)")
        if q >= _WIDE_LABEL_ID:
            self._widen_label_ids()
        pairs += pair
        off.append(len(pairs))
        self.pair_hashes.append(label_hash(pair))
        index[i] = q
        if (q + 1) * 2 > cap:
            self._grow_pair_index(cap * 2)
        return q

    def _widen_label_ids(self) -> None:
        """Label ids as array('I'), for a table with 0xFFFF distinct labels or more."""
        if self.label_ids.typecode == "H":
            self.label_ids = array("I", self.label_ids)

    def compact(self) -> None:
        """Give back the spare capacity of every column (one copy of each).

        The parsers call it after a parse that grew the table by an eighth or more (a target's first
        scrape), so that a table that no longer grows holds no growth slack.
        """
        self.pairs = self.pairs[:]
        self.pair_offsets = self.pair_offsets[:]
        self.pair_hashes = self.pair_hashes[:]
        self.label_ids = self.label_ids[:]
        self.starts = self.starts[:]
        self.hashes = self.hashes[:]

    def subset(self, ids: Iterable[int]) -> tuple[SeriesTablePy, array[int]]:
        """A new table of only the series ``ids`` (ids outside the table ignored), added in id order,
        and ``remap``: array('i') over this table's ids, each one's id in the new table or -1.
        ``shard_key`` is kept. The scrape loop's way to forget a churning target's old series: the
        batches already out keep this table, unchanged."""
        n = len(self.hashes)
        remap = array("i", (-1,)) * n
        keep = sorted({sid for sid in ids if 0 <= sid < n})
        new = type(self)()
        new.reserve(len(keep))
        for sid in keep:
            remap[sid] = new.add_encoded(self.label_bytes(sid))
        new.shard_key = self.shard_key
        return new, remap

    def reserve(self, count: int) -> None:
        """Size the dedup index for ``count`` series in all (a parser knows its body's size)."""
        cap = 2 * count + count // 16 + 8  # load just under 1/2: a little room to grow
        if cap > len(self._index):
            self._grow_index(cap)

    def _grow_index(self, cap: int) -> None:
        """Rebuild the series index with ``cap`` slots (series in id order: deterministic)."""
        self._index = _rebuild(cap, self.hashes)

    def _grow_pair_index(self, cap: int) -> None:
        """Rebuild the label index with ``cap`` slots (labels in id order)."""
        off = self.pair_offsets
        pairs = self.pairs
        self._pair_index = _rebuild(cap, [pair_hash(bytes(pairs[off[q] : off[q + 1]])) for q in range(len(off) - 1)])

    def resolve(self, sid: int) -> tuple[str, Labels]:
        """``(metric name, sorted labels without __name__)`` of series ``sid``."""
        return decode_labels(self.encoded[sid])

    def labels_dict(self, sid: int) -> dict[str, str]:
        """All labels of series ``sid``, ``__name__`` included."""
        name, labels = self.resolve(sid)
        return {"__name__": name, **dict(labels)}


def _rebuild(cap: int, hashes: Iterable[int]) -> array[int]:
    """An index of ``cap`` slots holding ids 0, 1, ... with these hashes, probed linearly."""
    index = _new_index(cap)
    empty = _empty_slot(index)
    for ident, h in enumerate(hashes):
        i = h % cap
        while index[i] != empty:
            i += 1
            if i == cap:
                i = 0
        index[i] = ident
    return index


class Batch:
    """Samples in columns; see the module docstring. Columns are ``array.array``: buffer protocol.

    ``families`` maps a metric family name to its :class:`Family` (type, help, unit);
    ``exemplars`` holds ``(sample index, labels, value, timestamp_ms or None)`` when kept.
    """

    __slots__ = ("exemplars", "families", "ids", "series", "timestamps", "values")

    def __init__(
        self,
        series: SeriesTable,
        ids: array[int] | None = None,
        values: array[float] | None = None,
        timestamps: array[int] | None = None,
        families: dict[str, Family] | None = None,
    ) -> None:
        self.series = series
        self.ids: array[int] = ids if ids is not None else array("I")
        self.values: array[float] = values if values is not None else array("d")
        self.timestamps: array[int] = timestamps if timestamps is not None else array("q")
        self.families: dict[str, Family] = families if families is not None else {}
        self.exemplars: list[tuple[int, Labels, float, int | None]] = []
        if not (len(self.ids) == len(self.values) == len(self.timestamps)):
            raise ValueError("Batch columns must have the same length")

    def __len__(self) -> int:
        return len(self.ids)

    def __repr__(self) -> str:
        return f"<Batch {len(self)} samples, {len(self.series)} series>"

    def append(self, sid: int, value: float, timestamp_ms: int) -> None:
        """Add one sample (the slow path: for synthetic series and staleness markers)."""
        self.ids.append(sid)
        self.values.append(value)
        self.timestamps.append(timestamp_ms)

    def samples(self) -> Iterator[tuple[str, Labels, float, int]]:
        """Yield ``(name, labels, value, timestamp_ms)`` for every sample, resolving each series."""
        resolve = self.series.resolve
        for sid, value, ts in zip(self.ids, self.values, self.timestamps, strict=True):
            name, labels = resolve(sid)
            yield name, labels, value, ts


if TYPE_CHECKING:
    SeriesTable = SeriesTablePy
else:
    # The twin pick, in one place (at the bottom: the C twin imports helpers from above).
    _c = _ext.load("relay._series_c")
    SeriesTable = _c.SeriesTable if _c is not None else SeriesTablePy
    del _c
