"""relay.remote.encode: remote-write WriteRequest encoding, snappy, shard splitting; both twins.

Every behaviour runs against the pure-Python twin (id ``py``) and the Cython twin (id ``c``). With
``RELAY_NO_EXTENSIONS=1`` the ``c`` runs are skipped; otherwise a missing build fails them. What
the encoder wrote is read back with an independent schema (tests/remote_write_pb.py, the protobuf
package) and compared with what prometheus-client's parser read from real etcd bodies.
"""

from __future__ import annotations

import importlib
import random
import struct
import threading
import time
from array import array
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from prometheus_client.parser import text_string_to_metric_families

from relay._ext import NO_EXTENSIONS
from relay.batch import STALE_NAN, STALE_NAN_BITS, Batch, SeriesTable
from relay.devtools.localenv import PrometheusReceiver
from relay.remote import encode as rwencode
from tests.remote_write_pb import WriteRequest

SHARED = Path(__file__).resolve().parent / "data"  # copies of ../shared: etcd bodies, OpenMetrics suite
ETCD_BODIES = sorted((SHARED / "etcd-metrics").glob("*.prom"))
T0 = 1_700_000_000_000

LabelSet = tuple[tuple[str, str], ...]
Expected = list[tuple[LabelSet, int, int]]  # (labels incl. __name__, value bits, timestamp)


# -- the two twins -------------------------------------------------------------------------------


@dataclass(frozen=True)
class Twin:
    """One implementation: ``module`` None is the pure-Python twin, else the extension's name."""

    name: str
    module: str | None

    def _ext(self) -> Any:
        # Imported here, not in the fixture, so that a missing build fails each test (not an error).
        assert self.module is not None
        return importlib.import_module(self.module)

    @property
    def encoder(self) -> Callable[[], Any]:
        return rwencode.WriteRequestEncoderPy if self.module is None else self._ext().WriteRequestEncoder

    @property
    def split_by_shard(self) -> Callable[[Batch, int], list[array[int]]]:
        return rwencode.split_by_shard_py if self.module is None else self._ext().split_by_shard

    def encode(self, batch: Batch, index: Iterable[int] | None = None) -> bytes:
        return self.encode_many([(batch, index)])

    def encode_many(self, parts: Iterable[tuple[Batch, Iterable[int] | None]]) -> bytes:
        encoder = self.encoder()
        for batch, index in parts:
            encoder.add(batch, index)
        return bytes(encoder.finish())


PY = Twin("py", None)
C = Twin("c", "relay.remote._encode_c")


@pytest.fixture(scope="module", params=[PY, C], ids=["py", "c"])
def twin(request: pytest.FixtureRequest) -> Twin:
    if request.param is C and NO_EXTENSIONS:
        pytest.skip("RELAY_NO_EXTENSIONS=1: the Cython twin is disabled")
    return request.param


def both_twins() -> tuple[Twin, Twin]:
    if NO_EXTENSIONS:
        pytest.skip("RELAY_NO_EXTENSIONS=1: the Cython twin is disabled")
    return PY, C


# -- helpers -------------------------------------------------------------------------------------


def bits(value: float) -> int:
    return int(struct.unpack("<Q", struct.pack("<d", value))[0])


def from_bits(b: int) -> float:
    return float(struct.unpack("<d", struct.pack("<Q", b))[0])


def label_set(name: str, labels: Iterable[tuple[str, str]]) -> LabelSet:
    """What a TimeSeries must carry: ``__name__`` plus the non-empty labels, sorted by name."""
    return tuple(sorted([("__name__", name), *((k, v) for k, v in labels if v != "")]))


class Built:
    """A Batch plus, independently of the encoder, what each of its samples must decode to."""

    def __init__(self, table: SeriesTable | None = None) -> None:
        self.batch = Batch(table if table is not None else SeriesTable())
        self.expected: Expected = []

    def add(self, name: str, labels: Sequence[tuple[str, str]], value: float, ts: int) -> int:
        sid = self.batch.series.add(name, labels)
        self.batch.append(sid, value, ts)
        self.expected.append((label_set(name, labels), bits(value), ts))
        return sid

    def take(self, index: Iterable[int] | None) -> Expected:
        if index is None:
            return list(self.expected)
        return [self.expected[i] for i in index]


def from_exposition(
    text: str, ts: int = T0, target: Sequence[tuple[str, str]] = (), table: SeriesTable | None = None
) -> Built:
    """A Batch of every sample prometheus-client's parser reads in ``text`` (not the relay parser)."""
    built = Built(table)
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            built.add(sample.name, [*sample.labels.items(), *target], sample.value, ts)
    return built


def decode(data: bytes) -> tuple[Expected, int]:
    """``(samples, number of TimeSeries)`` of WriteRequest bytes, read with the protobuf package."""
    request = WriteRequest.FromString(data)
    samples: Expected = []
    for series in request.timeseries:
        labels = tuple((label.name, label.value) for label in series.labels)
        assert series.samples, "a TimeSeries without samples"
        samples.extend((labels, bits(s.value), s.timestamp) for s in series.samples)
    return samples, len(request.timeseries)


def runs(index: Sequence[int], ids: Sequence[int]) -> int:
    """Number of runs of consecutive equal series ids among the taken samples."""
    taken = [ids[i] for i in index]
    return sum(1 for k, sid in enumerate(taken) if k == 0 or taken[k - 1] != sid)


@pytest.fixture(scope="module")
def etcd() -> list[Built]:
    """The three etcd 3.5.1 bodies, each in its own SeriesTable, with target labels as the relay adds."""
    paths = [p for p in ETCD_BODIES if p.name.startswith("etcd-3.5.1")]
    assert len(paths) == 3, f"etcd 3.5.1 bodies missing in {SHARED}"
    return [
        from_exposition(p.read_text(), T0 + k, (("instance", f"10.0.0.{k}:2379"), ("job", "etcd")))
        for k, p in enumerate(paths)
    ]


# -- encoding, checked against protobuf ---------------------------------------------------------


@pytest.mark.parametrize("path", ETCD_BODIES, ids=[p.stem for p in ETCD_BODIES])
def test_etcd_body_decodes_to_what_was_parsed(twin: Twin, path: Path) -> None:
    built = from_exposition(path.read_text())
    assert len(built.batch) > 1000
    samples, n_series = decode(twin.encode(built.batch))
    assert samples == built.expected
    assert n_series == runs(range(len(built.batch)), built.batch.ids)


def test_canonical_protobuf(twin: Twin, etcd: list[Built]) -> None:
    """Where proto3 writes every field (no zero value, no zero timestamp), protobuf re-encodes the
    decoded message to exactly our bytes: the encoding is the canonical one (minimal varints)."""
    built = etcd[0]
    index = array("I", (i for i, (_, b, ts) in enumerate(built.expected) if b != 0 and ts != 0))
    assert len(index) > 100
    data = twin.encode(built.batch, index)
    assert WriteRequest.FromString(data).SerializeToString() == data


def test_label_values_unicode_quotes_newlines(twin: Twin) -> None:
    text = (
        'weird{quote="say \\"hi\\"",newline="one\\ntwo",backslash="C:\\\\etcd",'
        'unicode="ünïcødé – 日本語 – 🚀",empty=""} 1.5\n'
        "weird_total 2\n"
    )
    built = from_exposition(text)
    built.add("direct", [("nl", "a\nb\r\n"), ("q", "\"'`"), ("tab", "\t"), ("nul", "\x00")], 3.0, T0)
    built.add("long", [("big", "x" * 200), ("bigger", "y" * 20000)], 4.0, T0)  # 2- and 3-byte lengths
    samples, _ = decode(twin.encode(built.batch))
    assert samples == built.expected
    assert samples[0][0] == (
        ("__name__", "weird"),
        ("backslash", "C:\\etcd"),
        ("newline", "one\ntwo"),
        ("quote", 'say "hi"'),
        ("unicode", "ünïcødé – 日本語 – 🚀"),
    )


SPECIAL_VALUE_BITS = [
    0x0000000000000000,  # 0.0: still written
    0x8000000000000000,  # -0.0
    bits(1.0),
    bits(-2.5),
    0x0000000000000001,  # smallest subnormal
    0x7FEFFFFFFFFFFFFF,  # largest finite
    0x7FF0000000000000,  # +Inf
    0xFFF0000000000000,  # -Inf
    0x7FF8000000000000,  # the usual quiet NaN
    STALE_NAN_BITS,  # Prometheus' staleness marker (a signalling NaN)
    0x7FF0000000000001,
    0xFFF8000000000123,  # negative NaN with a payload
]


def test_values_are_bit_exact(twin: Twin) -> None:
    built = Built()
    for k, b in enumerate(SPECIAL_VALUE_BITS):
        built.add("v", [("k", str(k))], from_bits(b), T0)
    built.add("stale", [], STALE_NAN, T0)
    samples, _ = decode(twin.encode(built.batch))
    assert [b for _, b, _ in samples] == [*SPECIAL_VALUE_BITS, STALE_NAN_BITS]


TIMESTAMPS = [0, 1, 127, 128, 16383, 16384, T0, 2**35, 2**62, 2**63 - 1, -1, -128, -T0, -(2**63)]


def test_timestamps_negative_and_huge(twin: Twin) -> None:
    built = Built()
    for ts in TIMESTAMPS:
        built.add("t", [("ts", str(ts))], 1.0, ts)
    data = twin.encode(built.batch)
    samples, _ = decode(data)
    assert [ts for _, _, ts in samples] == TIMESTAMPS


def test_negative_timestamp_is_ten_byte_varint(twin: Twin) -> None:
    built = Built()
    built.add("t", [], 1.0, -1)
    data = twin.encode(built.batch)
    assert data.endswith(b"\x10" + b"\xff" * 9 + b"\x01")
    labels = built.batch.series.encoded[0]
    assert (
        data
        == b"\x0a"
        + bytes([len(labels) + 22])
        + labels
        + b"\x12\x14\x09"
        + struct.pack("<d", 1.0)
        + data[-11:]
    )


def test_empty(twin: Twin) -> None:
    encoder = twin.encoder()
    assert len(encoder) == 0
    assert encoder.finish() == b""
    empty = Batch(SeriesTable())
    encoder.add(empty)
    encoder.add(empty, array("I"))
    assert len(encoder) == 0
    assert encoder.finish() == b""
    assert twin.encode(empty) == b""
    built = Built()
    built.add("up", [], 1.0, T0)
    assert twin.encode(built.batch, array("I")) == b""
    assert decode(b"") == ([], 0)


def test_several_batches_from_different_tables_in_one_request(twin: Twin, etcd: list[Built]) -> None:
    encoder = twin.encoder()
    expected: Expected = []
    rng = random.Random(5)
    for built in etcd:
        encoder.add(built.batch)
        expected += built.expected
        subset = array("I", sorted(rng.sample(range(len(built.batch)), 300)))
        encoder.add(built.batch, subset)
        expected += built.take(subset)
    assert len(encoder) == len(expected)
    samples, _ = decode(encoder.finish())
    assert samples == expected
    assert len(encoder) == 0


@pytest.mark.parametrize(
    "make_index",
    [
        lambda n: array("I", range(0, n, 3)),
        lambda n: array("I", reversed(range(n))),
        lambda n: array("I", [7, 7, 7, 0, 7]),  # repeated positions: repeated samples
        lambda n: [n - 1, 0, 5],  # any iterable of ints is accepted
        lambda n: array("I", random.Random(1).choices(range(n), k=2 * n)),
    ],
    ids=["every-third", "reversed", "repeats", "list", "random"],
)
def test_index_subsets(twin: Twin, etcd: list[Built], make_index: Callable[[int], Iterable[int]]) -> None:
    built = etcd[1]
    index = list(make_index(len(built.batch)))
    encoder = twin.encoder()
    encoder.add(built.batch, index)
    assert len(encoder) == len(index)
    samples, n_series = decode(encoder.finish())
    assert samples == built.take(index)
    assert n_series == runs(index, built.batch.ids)


def test_consecutive_samples_of_a_series_share_a_timeseries(twin: Twin) -> None:
    built = Built()
    for step in range(4):
        built.add("a", [("x", "1")], float(step), T0 + step)
    for step in range(3):
        built.add("b", [], float(step), T0 + step)
    built.add("a", [("x", "1")], 9.0, T0 + 9)
    data = twin.encode(built.batch)
    request = WriteRequest.FromString(data)
    assert [len(ts.samples) for ts in request.timeseries] == [4, 3, 1]
    assert decode(data)[0] == built.expected


def test_runs_do_not_merge_across_add_calls(twin: Twin) -> None:
    built = Built()
    built.add("a", [], 1.0, T0)
    built.add("a", [], 2.0, T0 + 1)
    encoder = twin.encoder()
    encoder.add(built.batch, array("I", [0]))
    encoder.add(built.batch, array("I", [1]))
    request = WriteRequest.FromString(encoder.finish())
    assert [len(ts.samples) for ts in request.timeseries] == [1, 1]


def test_finish_resets_for_reuse(twin: Twin, etcd: list[Built]) -> None:
    encoder = twin.encoder()
    encoder.add(etcd[0].batch)
    first = encoder.finish()
    assert len(encoder) == 0
    assert encoder.finish() == b""
    encoder.add(etcd[0].batch)
    assert encoder.finish() == first
    encoder.add(etcd[2].batch)
    assert decode(encoder.finish())[0] == etcd[2].expected


def test_large_request_then_reuse(twin: Twin) -> None:
    """A request past the C twin's buffer-keeping limit (16 MiB), then a small one on the same encoder."""
    built = Built()
    for k in range(20_000):
        built.add("big", [("pad", "x" * 1000), ("k", str(k % 2))], float(k), T0 + k)
    encoder = twin.encoder()
    encoder.add(built.batch)
    data = encoder.finish()
    assert len(data) > 20_000_000
    assert decode(data)[0] == built.expected
    small = Built()
    small.add("up", [], 1.0, T0)
    encoder.add(small.batch)
    assert decode(encoder.finish())[0] == small.expected


def test_position_out_of_range_leaves_encoder_unchanged(twin: Twin, etcd: list[Built]) -> None:
    batch = etcd[0].batch
    encoder = twin.encoder()
    encoder.add(batch, array("I", [0, 1]))
    before = len(encoder)
    with pytest.raises(IndexError, match=f"sample position {len(batch)} out of range"):
        encoder.add(batch, array("I", [2, 3, len(batch), 4]))
    with pytest.raises(IndexError, match="out of range for a batch of 0 samples"):
        encoder.add(Batch(SeriesTable()), array("I", [0]))
    assert len(encoder) == before
    assert decode(encoder.finish())[0] == etcd[0].take([0, 1])


def test_series_id_out_of_range(twin: Twin) -> None:
    built = Built()
    built.add("up", [], 1.0, T0)
    built.batch.append(5, 2.0, T0)
    encoder = twin.encoder()
    with pytest.raises(
        IndexError, match=r"series id 5 of sample 1 not in the batch's SeriesTable \(1 series\)"
    ):
        encoder.add(built.batch)
    assert len(encoder) == 0
    assert encoder.finish() == b""
    with pytest.raises(IndexError, match="series id 5 of sample 1"):
        twin.split_by_shard(built.batch, 2)


def test_columns_of_different_lengths(twin: Twin) -> None:
    built = Built()
    built.add("up", [], 1.0, T0)
    built.batch.values.append(2.0)
    with pytest.raises(ValueError, match="Batch columns differ in length: 1 ids, 2 values, 1 timestamps"):
        twin.encode(built.batch)


# -- both twins, byte for byte -------------------------------------------------------------------


def test_twins_are_byte_identical_on_etcd_bodies() -> None:
    py, c = both_twins()
    for path in ETCD_BODIES:
        built = from_exposition(path.read_text())
        assert py.encode(built.batch) == c.encode(built.batch), path.name
        index = array("I", random.Random(path.name).choices(range(len(built.batch)), k=500))
        assert py.encode(built.batch, index) == c.encode(built.batch, index), path.name


def test_module_uses_the_extension_unless_disabled() -> None:
    if NO_EXTENSIONS:
        assert rwencode.WriteRequestEncoder is rwencode.WriteRequestEncoderPy
        assert rwencode.split_by_shard is rwencode.split_by_shard_py
        assert not rwencode.USING_EXTENSION
    else:
        ext = importlib.import_module("relay.remote._encode_c")
        assert rwencode.WriteRequestEncoder is ext.WriteRequestEncoder
        assert rwencode.split_by_shard is ext.split_by_shard
        assert rwencode.USING_EXTENSION


def test_module_level_functions(etcd: list[Built]) -> None:
    batch = etcd[0].batch
    data = rwencode.encode_write_request(batch)
    assert decode(data)[0] == etcd[0].expected
    assert rwencode.decompress(rwencode.encode_and_compress(batch)) == data
    index = array("I", [3, 1])
    assert decode(rwencode.encode_write_request(batch, index))[0] == etcd[0].take(index)


# -- snappy --------------------------------------------------------------------------------------


def test_snappy_block_round_trip(twin: Twin, etcd: list[Built]) -> None:
    data = twin.encode(etcd[0].batch)
    packed = rwencode.compress(data)
    assert isinstance(packed, bytes)
    assert len(packed) < len(data) / 4
    # Block format: starts with the uncompressed length as a varint (no stream identifier chunk).
    assert packed.startswith(rwencode._varint(len(data)))
    assert rwencode.decompress(packed) == data
    assert rwencode.compress(b"") == b"\x00"
    assert rwencode.decompress(b"\x00") == b""


def test_finish_compressed(twin: Twin, etcd: list[Built]) -> None:
    encoder = twin.encoder()
    assert encoder.finish_compressed() == rwencode.compress(b"")
    for built in etcd:
        encoder.add(built.batch, array("I", range(0, len(built.batch), 2)))
    expected = rwencode.compress(
        twin.encode_many([(b.batch, array("I", range(0, len(b.batch), 2))) for b in etcd])
    )
    packed = encoder.finish_compressed()
    assert isinstance(packed, bytes)
    assert packed == expected
    assert len(encoder) == 0
    assert encoder.finish() == b""
    encoder.add(etcd[0].batch)
    assert decode(rwencode.decompress(encoder.finish_compressed()))[0] == etcd[0].expected


def test_finish_compressed_sizes_in_turn(twin: Twin, etcd: list[Built]) -> None:
    """Large, small, empty and large again: the C twin compresses into one kept output buffer,
    which must never leak bytes of an earlier, larger request into a later one."""
    big = [(built.batch, None) for built in etcd] * 3
    small = [(etcd[0].batch, array("I", [0, 1, 2]))]
    for parts in (big, small, [], big, small):
        encoder = twin.encoder()
        for batch, index in parts:
            encoder.add(batch, index)
        packed = encoder.finish_compressed()
        assert packed == rwencode.compress(twin.encode_many(parts))
        assert rwencode.decompress(packed) == twin.encode_many(parts)


def test_finish_compressed_from_threads(twin: Twin, etcd: list[Built]) -> None:
    """Encoders in several threads at once (snappy may run without the GIL): each gets its own
    output, whole and right."""
    expected = [rwencode.compress(twin.encode(built.batch)) for built in etcd]
    errors: list[str] = []

    def work(k: int) -> None:
        for i in range(30):
            built = etcd[(k + i) % len(etcd)]
            encoder = twin.encoder()
            encoder.add(built.batch)
            if encoder.finish_compressed() != expected[(k + i) % len(etcd)]:
                errors.append(f"thread {k}, round {i}")

    threads = [threading.Thread(target=work, args=(k,)) for k in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    assert not any(thread.is_alive() for thread in threads)
    assert errors == []


# -- property tests ------------------------------------------------------------------------------

NAMES = st.from_regex(r"[a-zA-Z_:][a-zA-Z0-9_:]{0,12}", fullmatch=True)
LABEL_NAMES = st.from_regex(r"[a-zA-Z_][a-zA-Z0-9_]{0,12}", fullmatch=True).filter(lambda s: s != "__name__")


@st.composite
def batches(draw: st.DrawFn) -> tuple[Built, list[int] | None]:
    """Two tables' worth of series, samples of any bits and timestamp, and maybe an index."""
    built = Built()
    series = draw(
        st.lists(
            st.tuples(NAMES, st.dictionaries(LABEL_NAMES, st.text(max_size=40), max_size=4)),
            min_size=1,
            max_size=8,
        )
    )
    picks = draw(
        st.lists(
            st.tuples(
                st.integers(0, len(series) - 1),
                st.integers(0, 2**64 - 1) | st.sampled_from(SPECIAL_VALUE_BITS),
                st.integers(-(2**63), 2**63 - 1) | st.sampled_from(TIMESTAMPS),
            ),
            max_size=40,
        )
    )
    for k, b, ts in picks:
        name, labels = series[k]
        built.add(name, sorted(labels.items()), from_bits(b), ts)
    n = len(built.batch)
    index = draw(st.none() | st.lists(st.integers(0, n - 1), max_size=60)) if n else None
    return built, index


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(case=batches())
def test_property_decodes_to_what_was_added(twin: Twin, case: tuple[Built, list[int] | None]) -> None:
    built, index = case
    data = twin.encode(built.batch, index)
    samples, n_series = decode(data)
    assert samples == built.take(index)
    assert n_series == runs(index if index is not None else range(len(built.batch)), built.batch.ids)
    assert rwencode.decompress(rwencode.compress(data)) == data


@settings(max_examples=300, deadline=None)
@given(first=batches(), second=batches())
def test_property_twins_identical(
    first: tuple[Built, list[int] | None], second: tuple[Built, list[int] | None]
) -> None:
    py, c = both_twins()
    outputs = []
    for twin in (py, c):
        encoder = twin.encoder()
        for built, index in (first, second):
            encoder.add(built.batch, index)
        outputs.append(encoder.finish())
    assert outputs[0] == outputs[1]


# -- split_by_shard ------------------------------------------------------------------------------


@pytest.mark.parametrize("n", [1, 2, 3, 7, 64])
def test_split_by_shard(twin: Twin, etcd: list[Built], n: int) -> None:
    batch = etcd[0].batch
    hashes = batch.series.hashes
    shards = twin.split_by_shard(batch, n)
    assert len(shards) == n
    assert all(isinstance(s, array) and s.typecode == "I" for s in shards)
    # every sample in exactly one shard, order kept, shard chosen by the series hash
    assert sorted(p for s in shards for p in s) == list(range(len(batch)))
    for k, shard in enumerate(shards):
        assert list(shard) == sorted(shard)
        assert all(hashes[batch.ids[p]] % n == k for p in shard)
    # the same series lands in the same shard, whatever batch it comes in
    shard_of_series = {batch.ids[p]: k for k, s in enumerate(shards) for p in s}
    later = Batch(batch.series)
    for sid in reversed(range(len(batch.series))):
        later.append(sid, 0.0, T0)
    for k, shard in enumerate(twin.split_by_shard(later, n)):
        assert all(shard_of_series.get(later.ids[p], k) == k for p in shard)
    if n == 1:
        assert list(shards[0]) == list(range(len(batch)))


def test_split_by_shard_then_encode(twin: Twin, etcd: list[Built]) -> None:
    built = etcd[2]
    shards = twin.split_by_shard(built.batch, 4)
    got: Expected = []
    for shard in shards:
        got += decode(twin.encode(built.batch, shard))[0]
    assert sorted(got) == sorted(built.expected)


def test_split_by_shard_edge_cases(twin: Twin) -> None:
    assert [list(s) for s in twin.split_by_shard(Batch(SeriesTable()), 3)] == [[], [], []]
    for bad in (0, -1):
        with pytest.raises(ValueError, match="shard count must be at least 1"):
            twin.split_by_shard(Batch(SeriesTable()), bad)


# -- a real receiver -----------------------------------------------------------------------------


@pytest.mark.services
def test_prometheus_accepts_and_stores_what_was_encoded(
    twin: Twin, prometheus_receiver: PrometheusReceiver
) -> None:
    """A real Prometheus (remote-write receiver) takes an etcd body, odd label values and a
    staleness marker, and gives them back as written."""
    job = f"rwencode-{twin.name}"
    now_ms = (int(time.time()) - 120) * 1000
    target = (("instance", "10.0.0.1:2379"), ("job", job))
    built = from_exposition((ETCD_BODIES[-1]).read_text(), now_ms, target)
    odd = 'ünï "q" \n 🚀'
    built.add("rwencode_probe", [("odd", odd), *target], 1.0, now_ms)
    built.add("rwencode_probe", [("odd", odd), *target], STALE_NAN, now_ms + 1000)
    encoder = twin.encoder()
    encoder.add(built.batch)
    response = httpx.post(
        prometheus_receiver.write_url,
        content=encoder.finish_compressed(),
        headers={
            "Content-Encoding": "snappy",
            "Content-Type": "application/x-protobuf",
            "X-Prometheus-Remote-Write-Version": "0.1.0",
        },
        timeout=30,
    )
    assert response.status_code == 204, response.text
    at = now_ms / 1000
    n_series = len({labels for labels, _, _ in built.expected})
    (count,) = prometheus_receiver.query(f'count({{job="{job}"}})', time_s=at)
    assert int(count["value"][1]) == n_series
    (probe,) = prometheus_receiver.query(f'rwencode_probe{{job="{job}"}}', time_s=at)
    assert probe["metric"]["odd"] == odd
    assert probe["value"][1] == "1"
    # The staleness marker arrived as such: the series is gone right after it, not NaN.
    assert prometheus_receiver.query(f'rwencode_probe{{job="{job}"}}', time_s=at + 2) == []


# -- the SeriesTable arena -----------------------------------------------------------------------


def test_label_bytes_come_from_the_arena_after_it_grew() -> None:
    """The encoder reads label bytes from the table's arena per add(): series added (and the arena
    reallocated) between two add() calls are found, and both twins still agree byte for byte."""
    py, c = both_twins()
    table = SeriesTable()
    encoders = [py.encoder(), c.encoder()]
    for round_ in range(4):
        batch = Batch(table)
        for k in range(1500 * round_, 1500 * (round_ + 1)):
            batch.append(table.add("m", (("k", str(k)), ("job", "etcd"))), float(k), T0 + k)
        batch.append(0, 0.5, T0)  # an old series: its bytes moved with the arena
        for encoder in encoders:
            encoder.add(batch)
    out_py, out_c = (bytes(e.finish()) for e in encoders)
    assert out_py == out_c
    series = WriteRequest.FromString(out_py).timeseries
    assert len(series) == 4 * 1501
    assert [(lab.name, lab.value) for lab in series[-1].labels] == [("__name__", "m"), ("job", "etcd"), ("k", "0")]


def test_a_table_without_an_arena_is_encoded_from_its_encoded_sequence(twin: Twin) -> None:
    """Any object with ``encoded`` (a sequence of label bytes) and ``hashes`` serves as the table."""
    real = SeriesTable()
    batch = Batch(real)
    for k in range(5):
        batch.append(real.add("up", (("k", str(k)),)), float(k), T0)

    class Plain:
        def __init__(self) -> None:
            self.encoded = list(real.encoded)
            self.hashes = real.hashes

        def __len__(self) -> int:
            return len(self.encoded)

    plain = Batch(Plain(), batch.ids, batch.values, batch.timestamps)  # type: ignore[arg-type]
    assert twin.encode(plain) == twin.encode(batch)


@given(st.lists(st.integers(min_value=-(2**63), max_value=2**63 - 1), max_size=50))
@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
def test_max_timestamp_twins(stamps: list[int]) -> None:
    """The newest timestamp of a batch (remote write's lag metrics): both twins, None when empty."""
    table = SeriesTable()
    sid = table.add("up", ())
    batch = Batch(table)
    for ts in stamps:
        batch.append(sid, 1.0, ts)
    want = max(stamps) if stamps else None
    assert rwencode.max_timestamp_py(batch) == want
    if not NO_EXTENSIONS:
        assert importlib.import_module("relay.remote._encode_c").max_timestamp(batch) == want
    assert rwencode.max_timestamp(batch) == want
