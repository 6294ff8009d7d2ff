"""An independent schema of Prometheus remote write 1.0, for checking relay.remote.encode with the protobuf package.

Built at run time from a ``FileDescriptorProto`` (protoc is not needed), in a private descriptor
pool so it clashes with nothing. It mirrors ``prompb/remote.proto`` and ``prompb/types.proto``::

    message WriteRequest   { repeated TimeSeries timeseries = 1; repeated MetricMetadata metadata = 3; }
    message TimeSeries     { repeated Label labels = 1; repeated Sample samples = 2; repeated Exemplar exemplars = 3; }
    message Label          { string name = 1; string value = 2; }
    message Sample         { double value = 1; int64 timestamp = 2; }
    message Exemplar       { repeated Label labels = 1; double value = 2; int64 timestamp = 3; }
    message MetricMetadata { MetricType type = 1; string metric_family_name = 2; string help = 4; string unit = 5; }
    enum MetricType        { UNKNOWN = 0; COUNTER = 1; GAUGE = 2; HISTOGRAM = 3; GAUGEHISTOGRAM = 4;
                             SUMMARY = 5; INFO = 6; STATESET = 7; }

    >>> request = WriteRequest.FromString(body)
    >>> [(label.name, label.value) for label in request.timeseries[0].labels]
"""

from __future__ import annotations

from typing import Any

from google.protobuf import descriptor_pb2, descriptor_pool, message_factory

PACKAGE = "relay_tests.prometheus"

_F = descriptor_pb2.FieldDescriptorProto

METRIC_TYPES = ("UNKNOWN", "COUNTER", "GAUGE", "HISTOGRAM", "GAUGEHISTOGRAM", "SUMMARY", "INFO", "STATESET")


def _message(
    file: descriptor_pb2.FileDescriptorProto, name: str, fields: list[tuple[str, int, int, int, str]]
) -> None:
    message = file.message_type.add(name=name)
    for field_name, number, ftype, label, type_name in fields:
        field = message.field.add(name=field_name, number=number, type=ftype, label=label)
        if type_name:
            field.type_name = f".{PACKAGE}.{type_name}"


def _build() -> dict[str, Any]:
    file = descriptor_pb2.FileDescriptorProto(
        name="relay_tests/remote_write.proto", package=PACKAGE, syntax="proto3"
    )
    optional, repeated = _F.LABEL_OPTIONAL, _F.LABEL_REPEATED
    _message(
        file, "Label", [("name", 1, _F.TYPE_STRING, optional, ""), ("value", 2, _F.TYPE_STRING, optional, "")]
    )
    _message(
        file,
        "Sample",
        [("value", 1, _F.TYPE_DOUBLE, optional, ""), ("timestamp", 2, _F.TYPE_INT64, optional, "")],
    )
    _message(
        file,
        "Exemplar",
        [
            ("labels", 1, _F.TYPE_MESSAGE, repeated, "Label"),
            ("value", 2, _F.TYPE_DOUBLE, optional, ""),
            ("timestamp", 3, _F.TYPE_INT64, optional, ""),
        ],
    )
    _message(
        file,
        "TimeSeries",
        [
            ("labels", 1, _F.TYPE_MESSAGE, repeated, "Label"),
            ("samples", 2, _F.TYPE_MESSAGE, repeated, "Sample"),
            ("exemplars", 3, _F.TYPE_MESSAGE, repeated, "Exemplar"),
        ],
    )
    enum = file.enum_type.add(name="MetricType")
    for i, name in enumerate(METRIC_TYPES):
        enum.value.add(name=name, number=i)
    meta = file.message_type.add(name="MetricMetadata")
    meta.field.add(name="type", number=1, type=_F.TYPE_ENUM, label=optional, type_name=f".{PACKAGE}.MetricType")
    for field_name, number in (("metric_family_name", 2), ("help", 4), ("unit", 5)):
        meta.field.add(name=field_name, number=number, type=_F.TYPE_STRING, label=optional)
    _message(
        file,
        "WriteRequest",
        [
            ("timeseries", 1, _F.TYPE_MESSAGE, repeated, "TimeSeries"),
            ("metadata", 3, _F.TYPE_MESSAGE, repeated, "MetricMetadata"),
        ],
    )
    pool = descriptor_pool.DescriptorPool()
    pool.AddSerializedFile(file.SerializeToString())
    return {
        name: message_factory.GetMessageClass(pool.FindMessageTypeByName(f"{PACKAGE}.{name}"))
        for name in ("Label", "Sample", "Exemplar", "TimeSeries", "MetricMetadata", "WriteRequest")
    }


_classes = _build()
Label: Any = _classes["Label"]
Sample: Any = _classes["Sample"]
Exemplar: Any = _classes["Exemplar"]
MetricMetadata: Any = _classes["MetricMetadata"]
TimeSeries: Any = _classes["TimeSeries"]
WriteRequest: Any = _classes["WriteRequest"]

__all__ = ["METRIC_TYPES", "Exemplar", "Label", "MetricMetadata", "Sample", "TimeSeries", "WriteRequest"]
