"""Prometheus remote-write 1.0: a :class:`~relay.batch.Batch` as protobuf ``WriteRequest`` bytes.

The messages (``prompb/remote.proto`` and ``prompb/types.proto`` of Prometheus)::

    WriteRequest { repeated TimeSeries timeseries = 1; }
    TimeSeries   { repeated Label labels = 1; repeated Sample samples = 2; }
    Label        { string name = 1; string value = 2; }
    Sample       { double value = 1; int64 timestamp = 2; }

A :class:`~relay.batch.SeriesTable` already holds each series as its ``labels`` fields
(``SeriesTable.encoded[sid]``), so one TimeSeries on the wire is::

    0x0a varint(len)            WriteRequest.timeseries (field 1, length-delimited)
      encoded[sid]              the labels, copied as they are
      0x12 varint(len)          TimeSeries.samples (field 2), once per sample of the run:
        0x09 value              Sample.value (field 1, fixed64): the float's exact 8 bytes, little endian
        0x10 varint(timestamp)  Sample.timestamp (field 2): int64 as varint (negatives take 10 bytes)

The value is always written, even 0.0 (so a staleness marker, the NaN with bits
:data:`~relay.batch.STALE_NAN_BITS`, goes through bit for bit, like every other NaN).

Grouping rule (both twins follow it, so their output is byte-identical): within one
:meth:`WriteRequestEncoder.add` call, a run of consecutive taken samples with the same series id
becomes one TimeSeries with several samples; every other sample gets its own TimeSeries. Runs do not
merge across ``add()`` calls. Samples keep the order in which they were taken, so the order of
each series is preserved.

Two twins offer the same names: the Cython ``relay.remote._encode_c`` (used when built, unless
``RELAY_NO_EXTENSIONS=1``) and the pure-Python ``WriteRequestEncoderPy`` / ``split_by_shard_py``
here, which are the readable reference. ``WriteRequestEncoder`` and ``split_by_shard`` are the
chosen ones. The columns must have the Batch's types (``ids`` ``array('I')``, ``values``
``array('d')``, ``timestamps`` ``array('q')``, or buffers of the same item types).

A sender keeps one encoder per shard, or makes one per request (the C twin then reuses the buffer
of the last one that went away), and ends each request with :meth:`WriteRequestEncoder.finish` or,
for the POST body, ``finish_compressed()`` (snappy straight from the encoder's buffer, one copy less).

    >>> from relay.batch import Batch, SeriesTable
    >>> table = SeriesTable()
    >>> batch = Batch(table)
    >>> batch.append(table.add("up", (("job", "etcd"),)), 1.0, 1700000000000)
    >>> body = encode_and_compress(batch)        # what a remote-write POST carries
    >>> decompress(body) == encode_write_request(batch)
    True
"""

from __future__ import annotations

import sys
from array import array
from collections.abc import Callable, Iterable, Sequence
from typing import TYPE_CHECKING, Any

import cramjam

from .._ext import load
from ..batch import _varint
from ._wire import exemplar_series

if TYPE_CHECKING:
    from ..batch import Batch

__all__ = [
    "USING_EXTENSION",
    "WriteRequestEncoder",
    "WriteRequestEncoderPy",
    "compress",
    "decompress",
    "drop_older_than",
    "encode_and_compress",
    "encode_write_request",
    "max_timestamp",
    "max_timestamp_py",
    "split_by_shard",
    "split_by_shard_py",
]

_U64 = (1 << 64) - 1
_BIG_ENDIAN = sys.byteorder == "big"


def _as_index(index: Iterable[int]) -> array[int]:
    """``index`` as an ``array('I')`` (as given when it already is one)."""
    if isinstance(index, array) and index.typecode == "I":
        return index
    return array("I", index)


def _labels_of(series: Any) -> tuple[Callable[[int], bytes], int]:
    """``(label bytes of series sid, number of series)`` of a SeriesTable; for any other table,
    the same from its ``encoded`` sequence."""
    label_bytes = getattr(series, "label_bytes", None)
    hashes = getattr(series, "hashes", None)
    if label_bytes is not None and hashes is not None:
        return label_bytes, len(hashes)
    encoded = list(series.encoded)
    for sid, item in enumerate(encoded):
        if not isinstance(item, bytes):
            raise TypeError(f"SeriesTable.encoded[{sid}] is not bytes")
    return encoded.__getitem__, len(encoded)


def _check_columns(batch: Batch) -> int:
    """Number of samples of ``batch``, after checking its columns agree."""
    n = len(batch.ids)
    if len(batch.values) != n or len(batch.timestamps) != n:
        raise ValueError(
            f"Batch columns differ in length: {n} ids, {len(batch.values)} values, "
            f"{len(batch.timestamps)} timestamps"
        )
    return n


class WriteRequestEncoderPy:
    """Accumulates samples from one or more Batches (possibly different SeriesTables) into one WriteRequest.

    The pure-Python twin of ``relay.remote._encode_c.WriteRequestEncoder`` (same output, byte for byte).

        >>> from relay.batch import Batch, SeriesTable
        >>> table = SeriesTable()
        >>> batch = Batch(table)
        >>> batch.append(table.add("up", ()), 1.0, 1000)
        >>> encoder = WriteRequestEncoderPy()
        >>> encoder.add(batch)
        >>> len(encoder)
        1
        >>> encoder.finish().hex()
        '0a1e0a0e0a085f5f6e616d655f5f12027570120c09000000000000f03f10e807'
    """

    __slots__ = ("_buf", "_count", "_exemplars", "_high", "_low")

    def __init__(self, *, exemplars: bool = False) -> None:
        self._buf = bytearray()
        self._count = 0
        self._exemplars = exemplars  # also encode the batches' exemplars (see relay.remote._wire)
        self._low = self._high = 0

    def __len__(self) -> int:
        """Samples added since the last :meth:`finish`."""
        return self._count

    def timestamp_range(self) -> tuple[int, int] | None:
        """Lowest and highest timestamp (samples and exemplars) added since the last finish()."""
        return (self._low, self._high) if self._count else None

    def add(self, batch: Batch, index: Iterable[int] | None = None) -> None:
        """Append samples of ``batch``: those at positions ``index``, in that order, or all of them
        when ``index`` is None. ``index`` is an ``array('I')`` (other iterables of ints are converted).
        With ``exemplars=True``, the batch's exemplars of those samples follow them.

        Raises IndexError for a position or a series id out of range; the encoder is then unchanged.
        """
        n = _check_columns(batch)
        ids = batch.ids
        timestamps = batch.timestamps
        label_bytes, nseries = _labels_of(batch.series)
        raw = array("d", batch.values)
        if _BIG_ENDIAN:
            raw.byteswap()
        value_bytes = raw.tobytes()
        positions: Sequence[int] = range(n) if index is None else _as_index(index)

        pieces: list[bytes] = []
        append = pieces.append
        run: list[bytes] = []
        run_sid = -1
        last_ts: int | None = None
        ts_field = b""
        low, high = self._low, self._high
        fresh = self._count == 0
        for pos in positions:
            if pos >= n:
                raise IndexError(f"sample position {pos} out of range for a batch of {n} samples")
            sid = ids[pos]
            ts = timestamps[pos]
            if ts != last_ts:
                last_ts = ts
                ts_field = b"\x10" + _varint(ts & _U64)
                if fresh:
                    low = high = ts
                    fresh = False
                elif ts < low:
                    low = ts
                elif ts > high:
                    high = ts
            off = pos * 8
            sample = b"\x09" + value_bytes[off : off + 8] + ts_field
            field = b"\x12" + bytes((len(sample),)) + sample  # a Sample is at most 20 bytes
            if sid == run_sid:
                run.append(field)
                continue
            if run:
                body = label_bytes(run_sid) + b"".join(run)
                append(b"\x0a" + _varint(len(body)) + body)
            if sid >= nseries:
                raise IndexError(
                    f"series id {sid} of sample {pos} not in the batch's SeriesTable ({nseries} series)"
                )
            run_sid = sid
            run = [field]
        if run:
            body = label_bytes(run_sid) + b"".join(run)
            append(b"\x0a" + _varint(len(body)) + body)
        if self._exemplars and batch.exemplars and len(positions):
            data, count, ex_low, ex_high = exemplar_series(batch, index, label_bytes)
            if count:
                append(data)
                if fresh:
                    low, high = ex_low, ex_high
                else:
                    low, high = min(low, ex_low), max(high, ex_high)
        self._buf += b"".join(pieces)
        self._count += len(positions)
        self._low, self._high = low, high

    def finish(self) -> bytes:
        """The WriteRequest bytes of everything added; the encoder is then empty, ready for reuse."""
        data = bytes(self._buf)
        self._buf = bytearray()
        self._count = 0
        self._low = self._high = 0
        return data

    def finish_compressed(self) -> bytes:
        """``compress(finish())``: the body of a remote-write POST (the C twin skips the copy)."""
        return compress(self.finish())


def split_by_shard_py(batch: Batch, n: int) -> list[array[int]]:
    """Sample positions of ``batch`` per shard (``array('I')`` each, ascending): a sample goes to shard
    ``SeriesTable.hashes[sid] % n``, so a series always lands in the same shard, in order.

    The pure-Python twin of ``relay.remote._encode_c.split_by_shard``.
    """
    if n < 1:
        raise ValueError(f"shard count must be at least 1, got {n}")
    shard_of = [h % n for h in batch.series.hashes]
    shards = [array("I") for _ in range(n)]
    appends = [shard.append for shard in shards]
    pos = sid = 0
    try:
        for pos, sid in enumerate(batch.ids):
            appends[shard_of[sid]](pos)
    except IndexError:
        raise IndexError(
            f"series id {sid} of sample {pos} not in the batch's SeriesTable ({len(shard_of)} series)"
        ) from None
    return shards


def max_timestamp_py(batch: Batch) -> int | None:
    """The newest sample timestamp of ``batch`` (milliseconds), None when it is empty.

    The pure-Python twin of ``relay.remote._encode_c.max_timestamp``.
    """
    return max(batch.timestamps) if len(batch.timestamps) else None


_c = load("relay.remote._encode_c")

USING_EXTENSION: bool = _c is not None
"""True when the Cython twin is in use."""

if TYPE_CHECKING:
    WriteRequestEncoder = WriteRequestEncoderPy
    split_by_shard = split_by_shard_py
    max_timestamp = max_timestamp_py
elif _c is not None:
    WriteRequestEncoder = _c.WriteRequestEncoder
    split_by_shard = _c.split_by_shard
    max_timestamp = _c.max_timestamp
else:
    WriteRequestEncoder = WriteRequestEncoderPy
    split_by_shard = split_by_shard_py
    max_timestamp = max_timestamp_py


def _read_varint(data: bytes, pos: int) -> tuple[int, int]:
    result = shift = 0
    while True:
        if pos >= len(data):
            raise ValueError("truncated varint")
        b = data[pos]
        pos += 1
        result |= (b & 0x7F) << shift
        if b < 0x80:
            return result, pos
        shift += 7
        if shift >= 70:
            raise ValueError("varint longer than 10 bytes")


def _fields(data: bytes) -> Iterable[tuple[int, int, int, int, int]]:
    """``(field number, wire type, field start, start, end)`` of each field of one message; for a
    varint or a fixed field, [start, end) is the value's bytes, for a length-delimited one, its
    payload; the field (key and length too) is [field start, end)."""
    pos = 0
    n = len(data)
    while pos < n:
        at = pos
        key, pos = _read_varint(data, pos)
        number, wire = key >> 3, key & 7
        if wire == 0:
            _, end = _read_varint(data, pos)
        elif wire == 1:
            end = pos + 8
        elif wire == 2:
            size, pos = _read_varint(data, pos)
            end = pos + size
        elif wire == 5:
            end = pos + 4
        else:
            raise ValueError(f"unsupported wire type {wire}")
        if end > n:
            raise ValueError("truncated field")
        yield number, wire, at, pos, end
        pos = end


def _timestamp_of(message: bytes, number: int) -> int:
    """The int64 varint field ``number`` of a Sample or an Exemplar (0 when absent, as proto3)."""
    ts = 0
    for num, wire, _, start, _end in _fields(message):
        if num == number and wire == 0:
            ts = _read_varint(message, start)[0]
    return ts - (1 << 64) if ts >= 1 << 63 else ts


def drop_older_than(data: bytes, cutoff_ms: int) -> tuple[bytes, int, int, int]:
    """The WriteRequest ``data`` without samples and exemplars timestamped before ``cutoff_ms``
    (``sample_age_limit``; a TimeSeries left with neither goes): ``(bytes, samples kept, samples
    dropped, exemplars dropped)``. Other fields (labels, metadata) stay as they are. Raises
    ValueError for bytes that are not a WriteRequest."""
    out = bytearray()
    kept = dropped = ex_dropped = 0
    for number, wire, at, start, end in _fields(data):
        if number != 1 or wire != 2:
            out += data[at:end]
            continue
        series = data[start:end]
        labels = bytearray()
        body = bytearray()
        any_kept = False
        for num, w, a, s, e in _fields(series):
            if num in (2, 3) and w == 2:
                item = series[s:e]
                if _timestamp_of(item, 2 if num == 2 else 3) < cutoff_ms:
                    if num == 2:
                        dropped += 1
                    else:
                        ex_dropped += 1
                    continue
                kept += num == 2
                any_kept = True
                body += series[a:e]
            else:
                labels += series[a:e]
        if any_kept:
            ts_body = bytes(labels) + bytes(body)
            out += b"\x0a" + _varint(len(ts_body)) + ts_body
    return bytes(out), kept, dropped, ex_dropped


def encode_write_request(batch: Batch, index: Iterable[int] | None = None) -> bytes:
    """WriteRequest bytes of the samples of ``batch`` at ``index`` (all when None)."""
    encoder = WriteRequestEncoder()
    encoder.add(batch, index)
    return encoder.finish()


def compress(data: bytes) -> bytes:
    """Snappy block format (not the framed format), as remote write requires."""
    return bytes(cramjam.snappy.compress_raw(data))


def decompress(data: bytes) -> bytes:
    """Inverse of :func:`compress`."""
    return bytes(cramjam.snappy.decompress_raw(data))


def encode_and_compress(batch: Batch, index: Iterable[int] | None = None) -> bytes:
    """The body of a remote-write POST: :func:`compress` of :func:`encode_write_request`."""
    encoder = WriteRequestEncoder()
    encoder.add(batch, index)
    return encoder.finish_compressed()
