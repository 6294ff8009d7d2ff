"""Remote-write 1.0 messages off the hot path, shared by both encoder twins (so their bytes agree).

Exemplars and metadata (``prompb/types.proto`` of Prometheus)::

    TimeSeries     { ...; repeated Exemplar exemplars = 3; }
    Exemplar       { repeated Label labels = 1; double value = 2; int64 timestamp = 3; }
    WriteRequest   { ...; repeated MetricMetadata metadata = 3; }
    MetricMetadata { MetricType type = 1; string metric_family_name = 2; string help = 4; string unit = 5; }
    MetricType     UNKNOWN 0, COUNTER 1, GAUGE 2, HISTOGRAM 3, GAUGEHISTOGRAM 4, SUMMARY 5, INFO 6, STATESET 7

An exemplar goes in a TimeSeries of its own (the labels of its sample's series, no samples), as
Prometheus' queue manager sends them; the exemplars of one ``add()`` come after its samples, in the
order of their samples in the batch. An exemplar without a timestamp takes its sample's, as
Prometheus' scraper gives it. Value and timestamp are always written (as a Sample's).

A MetricMetadata leaves out what proto3 leaves out: type UNKNOWN and empty strings.
"""

from __future__ import annotations

import struct
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING

from ..batch import Labels, _varint

if TYPE_CHECKING:
    from ..batch import Batch, Family

__all__ = ["METRIC_TYPES", "exemplar_series", "metadata_entry"]

_U64 = (1 << 64) - 1
_DOUBLE = struct.Struct("<d")

METRIC_TYPES = {"unknown": 0, "counter": 1, "gauge": 2, "histogram": 3, "gaugehistogram": 4, "summary": 5,
                "info": 6, "stateset": 7}
"""Family.type -> MetricMetadata.MetricType (Prometheus: the upper-cased name, UNKNOWN otherwise)."""


def _field(tag: int, payload: bytes) -> bytes:
    return bytes((tag,)) + _varint(len(payload)) + payload


def _labels(labels: Labels) -> bytes:
    return b"".join(_field(0x0A, _field(0x0A, k.encode()) + _field(0x12, v.encode())) for k, v in sorted(labels))


def exemplar_series(batch: Batch, index: Iterable[int] | None,
                    label_bytes: Callable[[int], bytes]) -> tuple[bytes, int, int, int]:
    """TimeSeries fields (WriteRequest field 1) carrying the exemplars of ``batch`` whose sample
    positions are in ``index`` (all when None): ``(bytes, count, lowest, highest timestamp)``."""
    wanted = None if index is None else set(index)
    ids, stamps = batch.ids, batch.timestamps
    out: list[bytes] = []
    low = high = 0
    for pos, labels, value, ts in batch.exemplars:
        if wanted is not None and pos not in wanted:
            continue
        if ts is None:
            ts = stamps[pos]
        body = _labels(labels) + b"\x11" + _DOUBLE.pack(value) + b"\x18" + _varint(ts & _U64)
        out.append(_field(0x0A, label_bytes(ids[pos]) + _field(0x1A, body)))
        if len(out) == 1:
            low = high = ts
        else:
            low, high = min(low, ts), max(high, ts)
    return b"".join(out), len(out), low, high


def metadata_entry(family: Family) -> bytes:
    """One WriteRequest.metadata field (field 3) for ``family``."""
    body = bytearray()
    typ = METRIC_TYPES.get(family.type, 0)
    if typ:
        body += b"\x08" + bytes((typ,))
    if family.name:
        body += _field(0x12, family.name.encode())
    if family.help:
        body += _field(0x22, family.help.encode())
    if family.unit:
        body += _field(0x2A, family.unit.encode())
    return _field(0x1A, bytes(body))
