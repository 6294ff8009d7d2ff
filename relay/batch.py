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
from array import array
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import overload

__all__ = [
    "STALE_NAN",
    "STALE_NAN_BITS",
    "Batch",
    "EncodedView",
    "Family",
    "Labels",
    "SeriesTable",
    "decode_labels",
    "encode_labels",
    "is_stale_nan",
]

Labels = tuple[tuple[str, str], ...]
"""A label set without ``__name__``, sorted by label name."""

STALE_NAN_BITS = 0x7FF0000000000002
"""Prometheus' staleness marker: a NaN with this exact bit pattern."""
STALE_NAN: float = struct.unpack("<d", struct.pack("<Q", STALE_NAN_BITS))[0]

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


def series_hash(encoded: bytes) -> int:
    """A stable 64-bit hash of a series (same in every process and every run)."""
    return int.from_bytes(hashlib.blake2b(encoded, digest_size=8).digest(), "little")


class EncodedView(Sequence[bytes]):
    """``SeriesTable.encoded``: the label bytes of each series, as a read-only sequence of bytes.

    ``view[sid]`` copies the bytes out of the table's arena; ``len(view)`` is the number of series.
    Two views (or a view and a list of bytes) are equal when they hold the same bytes in order.
    """

    __slots__ = ("_table",)

    def __init__(self, table: SeriesTable) -> None:
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
        offsets = self._table.offsets
        return bytes(self._table.arena[offsets[index] : offsets[index + 1]])

    def __iter__(self) -> Iterator[bytes]:
        table = self._table
        arena = table.arena
        offsets = table.offsets
        for sid in range(len(table.hashes)):
            yield bytes(arena[offsets[sid] : offsets[sid + 1]])

    def __eq__(self, other: object) -> bool:
        if isinstance(other, EncodedView):
            a, b = self._table, other._table
            return a.offsets == b.offsets and a.arena == b.arena
        if isinstance(other, (list, tuple)):
            return list(self) == list(other)
        return NotImplemented

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        return f"<EncodedView of {len(self)} series>"


_SMALL_INDEX = 0xFFFF  # an index of at most this many slots is array('H'), 0xFFFF empty


def _new_index(cap: int) -> array[int]:
    """An empty index of ``cap`` slots: array('H') (empty 0xFFFF) while ``cap`` <= 0xFFFF, so
    that every sid (at most cap / 2) fits below 0xFFFF; array('i') (empty -1) above."""
    if cap <= _SMALL_INDEX:
        return array("H", (_SMALL_INDEX,)) * cap
    return array("i", (-1,)) * cap


def _empty_slot(index: array[int]) -> int:
    return _SMALL_INDEX if index.typecode == "H" else -1


_MAX_ARENA = 0xFFFFFFFF


class SeriesTable:
    """Every series of one target (or one parse), stored once as remote-write label bytes.

    Ids are dense, start at 0 and never change; adding the same series twice gives the same id.

    Layout (no Python object per series):

        arena    bytearray    the encoded label sets of all series, back to back
        offsets  array('I')   n + 1 entries: series ``sid`` is ``arena[offsets[sid]:offsets[sid + 1]]``
        hashes   array('Q')   :func:`series_hash` of each series (sharding)
        _index   array('H')   sids, open addressing by ``hash % len(_index)``, linear probing;
                 or ('i')     grown (doubled and rebuilt) when more than half full; 2-byte slots
                              (0xFFFF empty) up to 0xFFFF slots, then 4-byte ones (-1 empty)

    ``encoded`` is a read-only sequence view (``encoded[sid] -> bytes``, copies). The arena and
    columns change only when a series is added or :meth:`compact` is called, so a pointer into the
    arena taken by C code (the remote-write encoder, once per ``add()``) stays valid while no Python
    code runs. The Cython parser adds series to these arrays itself, by exactly the rules of
    :meth:`add_encoded` (it checks that at import, else it calls the method).
    """

    __slots__ = ("__weakref__", "_index", "arena", "hashes", "offsets")

    def __init__(self) -> None:
        self.arena = bytearray()
        self.offsets: array[int] = array("I", (0,))
        self.hashes: array[int] = array("Q")
        self._index: array[int] = _new_index(8)

    def __len__(self) -> int:
        return len(self.hashes)

    def __repr__(self) -> str:
        return f"<SeriesTable {len(self)} series, {len(self.arena)} label bytes>"

    @property
    def encoded(self) -> EncodedView:
        """The label bytes of each series: ``encoded[sid] -> bytes``, ``len(encoded)``."""
        return EncodedView(self)

    def add(self, name: str, labels: Iterable[tuple[str, str]]) -> int:
        """Id of the series ``name{labels}``; added if new."""
        return self.add_encoded(encode_labels(name, labels))

    def add_encoded(self, encoded: bytes) -> int:
        """Id of the series given as :func:`encode_labels` bytes; added if new."""
        h = series_hash(encoded)
        index = self._index
        hashes = self.hashes
        offsets = self.offsets
        arena = self.arena
        cap = len(index)
        empty = _empty_slot(index)
        i = h % cap
        while True:
            sid = index[i]
            if sid == empty:
                break
            if hashes[sid] == h:
                start = offsets[sid]
                end = offsets[sid + 1]
                if end - start == len(encoded) and arena[start:end] == encoded:
                    return sid
            i += 1
            if i == cap:
                i = 0
        sid = len(hashes)
        if len(arena) + len(encoded) > _MAX_ARENA:
            raise MemoryError("series table arena is full (4 GiB)")
        arena += encoded
        offsets.append(len(arena))
        hashes.append(h)
        index[i] = sid
        if (sid + 1) * 2 > cap:
            self._grow_index(cap * 2)
        return sid

    def compact(self) -> None:
        """Give back the spare capacity of the arena and columns (one copy of each).

        The parsers call it after a parse that grew the table by an eighth or more (a target's first
        scrape), so that a table that no longer grows holds no growth slack.
        """
        self.arena = self.arena[:]
        self.offsets = self.offsets[:]
        self.hashes = self.hashes[:]

    def reserve(self, count: int) -> None:
        """Size the dedup index for ``count`` series in all (a parser knows its body's size)."""
        cap = 2 * count + count // 16 + 8  # load just under 1/2: a little room to grow
        if cap > len(self._index):
            self._grow_index(cap)

    def _grow_index(self, cap: int) -> None:
        """Rebuild the index with ``cap`` slots (series in id order: deterministic)."""
        index = _new_index(cap)
        empty = _empty_slot(index)
        for sid, h in enumerate(self.hashes):
            i = h % cap
            while index[i] != empty:
                i += 1
                if i == cap:
                    i = 0
            index[i] = sid
        self._index = index

    def resolve(self, sid: int) -> tuple[str, Labels]:
        """``(metric name, sorted labels without __name__)`` of series ``sid``."""
        return decode_labels(self.encoded[sid])

    def labels_dict(self, sid: int) -> dict[str, str]:
        """All labels of series ``sid``, ``__name__`` included."""
        name, labels = self.resolve(sid)
        return {"__name__": name, **dict(labels)}


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
