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

if TYPE_CHECKING:
    from ..batch import Batch

__all__ = [
    "USING_EXTENSION",
    "WriteRequestEncoder",
    "WriteRequestEncoderPy",
    "compress",
    "decompress",
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

    __slots__ = ("_buf", "_count")

    def __init__(self) -> None:
        self._buf = bytearray()
        self._count = 0

    def __len__(self) -> int:
        """Samples added since the last :meth:`finish`."""
        return self._count

    def add(self, batch: Batch, index: Iterable[int] | None = None) -> None:
        """Append samples of ``batch``: those at positions ``index``, in that order, or all of them
        when ``index`` is None. ``index`` is an ``array('I')`` (other iterables of ints are converted).

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
        for pos in positions:
            if pos >= n:
                raise IndexError(f"sample position {pos} out of range for a batch of {n} samples")
            sid = ids[pos]
            ts = timestamps[pos]
            if ts != last_ts:
                last_ts = ts
                ts_field = b"\x10" + _varint(ts & _U64)
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
        self._buf += b"".join(pieces)
        self._count += len(positions)

    def finish(self) -> bytes:
        """The WriteRequest bytes of everything added; the encoder is then empty, ready for reuse."""
        data = bytes(self._buf)
        self._buf = bytearray()
        self._count = 0
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
