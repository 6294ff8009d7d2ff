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
from collections.abc import Iterable, Iterator
from dataclasses import dataclass

__all__ = [
    "STALE_NAN",
    "STALE_NAN_BITS",
    "Batch",
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


class SeriesTable:
    """Every series of one target (or one parse), stored once as remote-write label bytes.

    Ids are dense, start at 0 and never change; adding the same series twice gives the same id.
    """

    __slots__ = ("__weakref__", "_index", "encoded", "hashes")

    def __init__(self) -> None:
        self.encoded: list[bytes] = []
        self.hashes: array[int] = array("Q")
        self._index: dict[bytes, int] = {}

    def __len__(self) -> int:
        return len(self.encoded)

    def add(self, name: str, labels: Iterable[tuple[str, str]]) -> int:
        """Id of the series ``name{labels}``; added if new."""
        return self.add_encoded(encode_labels(name, labels))

    def add_encoded(self, encoded: bytes) -> int:
        """Id of the series given as :func:`encode_labels` bytes; added if new."""
        sid = self._index.get(encoded)
        if sid is None:
            sid = len(self.encoded)
            self._index[encoded] = sid
            self.encoded.append(encoded)
            self.hashes.append(series_hash(encoded))
        return sid

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
