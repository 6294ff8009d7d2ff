"""relay.batch.SeriesTable: distinct encoded labels once, series as lists of label ids, hashes and
array indexes."""

from __future__ import annotations

import importlib
import random
from array import array

import pytest

from relay._ext import NO_EXTENSIONS
from relay.batch import (
    EncodedView,
    SeriesTable,
    decode_labels,
    encode_labels,
    label_hash,
    series_hash,
    split_labels,
)


def labels_of(k: int) -> tuple[tuple[str, str], ...]:
    return (("instance", f"10.0.{k % 7}.{k % 250}:2379"), ("job", "etcd"), ("le", str(k)))


def check_index(index: array[int], n: int) -> None:
    # 2-byte slots (0xFFFF empty) while the index has at most 0xFFFF slots, else 4-byte (-1 empty)
    assert index.typecode == ("H" if len(index) <= 0xFFFF else "i")
    empty = 0xFFFF if index.typecode == "H" else -1
    assert 2 * n <= len(index)  # load at most 1/2
    assert sorted(s for s in index if s != empty) == list(range(n))


def check_layout(table: SeriesTable) -> None:
    """The invariants the Cython parser and encoder rely on."""
    n = len(table)
    npairs = len(table.pair_offsets) - 1
    off = table.pair_offsets
    assert off.typecode == "I" and off[0] == 0 and off[npairs] == len(table.pairs)
    assert all(off[q] < off[q + 1] for q in range(npairs))
    assert table.pair_hashes.typecode == "Q" and len(table.pair_hashes) == npairs
    pairs = [bytes(table.pairs[off[q] : off[q + 1]]) for q in range(npairs)]
    assert len(set(pairs)) == npairs  # each label once
    assert table.pair_hashes.tolist() == [label_hash(p) for p in pairs]
    assert table.label_ids.typecode == ("H" if npairs <= 0xFFFF else "I")
    assert all(q < npairs for q in table.label_ids)
    assert len(table.starts) == n + 1 and table.starts[0] == 0 and table.starts[n] == len(table.label_ids)
    assert all(table.starts[i] <= table.starts[i + 1] for i in range(n))
    assert len(table.hashes) == n
    assert table.starts.typecode == "I" and table.hashes.typecode == "Q"
    check_index(table._index, n)
    check_index(table._pair_index, npairs)
    for sid in range(n):
        assert table.hashes[sid] == series_hash(table.encoded[sid])
    assert len(set(table.encoded)) == n  # each series once


def test_add_dedups_and_resolves() -> None:
    table = SeriesTable()
    a = table.add("up", (("job", "etcd"), ("instance", "a:2379")))
    b = table.add("up", (("instance", "a:2379"), ("job", "etcd")))  # other order: same series
    c = table.add("up", (("instance", "b:2379"), ("job", "etcd")))
    d = table.add("up", (("instance", "a:2379"), ("job", "etcd"), ("x", "")))  # empty value: no label
    assert (a, b, c, d) == (0, 0, 1, 0)
    assert len(table) == 2
    assert table.resolve(0) == ("up", (("instance", "a:2379"), ("job", "etcd")))
    assert table.labels_dict(1) == {"__name__": "up", "instance": "b:2379", "job": "etcd"}
    assert table.add_encoded(encode_labels("up", (("job", "etcd"), ("instance", "b:2379")))) == 1
    check_layout(table)


def test_encoded_view() -> None:
    table = SeriesTable()
    items = [encode_labels(f"m{k}", labels_of(k)) for k in range(5)]
    for item in items:
        table.add_encoded(item)
    view = table.encoded
    assert isinstance(view, EncodedView)
    assert len(view) == 5
    assert view[0] == items[0] and view[4] == items[4] and view[-1] == items[4]
    assert isinstance(view[2], bytes)
    assert list(view) == items
    assert view[1:3] == items[1:3]
    assert view == items and view == table.encoded
    other = SeriesTable()
    other.add_encoded(items[0])
    assert view != other.encoded
    with pytest.raises(IndexError):
        view[5]
    with pytest.raises(IndexError):
        view[-6]
    labels = {item[a:b] for item in items for a, b in split_labels(item)}
    assert len(table.pairs) == sum(map(len, labels)) < sum(map(len, view))  # job="etcd" kept once
    assert decode_labels(view[3]) == ("m3", labels_of(3))


def test_growth_across_reallocation() -> None:
    """Ids, bytes and the indexes stay right while the columns and indexes are reallocated; bytes
    read before a reallocation are copies, so they stay valid."""
    table = SeriesTable()
    first = table.encoded[table.add("first", ())]
    index_sizes = set()
    pair_index_sizes = set()
    arena_allocs = set()
    for k in range(3000):
        assert table.add(f"m{k % 13}", labels_of(k)) == k + 1
        index_sizes.add(len(table._index))
        pair_index_sizes.add(len(table._pair_index))
        arena_allocs.add(table.pairs.__alloc__())
    assert len(index_sizes) >= 8 and len(pair_index_sizes) >= 8 and len(arena_allocs) >= 8  # it did grow
    assert first == table.encoded[0] == encode_labels("first", ())
    for k in range(3000):  # all found again, none added
        assert table.add(f"m{k % 13}", labels_of(k)) == k + 1
    assert len(table) == 3001
    check_layout(table)


def test_many_series_and_hash_collisions_in_the_index() -> None:
    """Many series in a small index: probing walks past other series' slots (and wraps around)."""
    rng = random.Random(7)
    table = SeriesTable()
    expected: dict[bytes, int] = {}
    for _ in range(20000):
        k = rng.randrange(5000)
        enc = encode_labels("x", (("k", str(k)),))
        sid = table.add_encoded(enc)
        assert expected.setdefault(enc, sid) == sid
    assert len(table) == len(expected) <= 5000
    for enc, sid in expected.items():
        assert table.encoded[sid] == enc
    check_layout(table)


def test_reserve_and_compact_keep_contents() -> None:
    table = SeriesTable()
    table.reserve(1000)
    size = len(table._index)
    assert size >= 2000
    for k in range(1000):
        table.add("m", labels_of(k))
    assert len(table._index) == size  # reserved: no growth on the way
    before = list(table.encoded)
    hashes = array("Q", table.hashes)
    table.compact()
    assert table.pairs.__alloc__() <= len(table.pairs) + 1
    assert list(table.encoded) == before and table.hashes == hashes
    assert table.add("m", labels_of(5)) == 5 and table.add("m", labels_of(1000)) == 1000
    check_layout(table)


@pytest.mark.skipif(NO_EXTENSIONS, reason="RELAY_NO_EXTENSIONS=1")
def test_cython_parser_writes_the_columns_as_add_encoded_does() -> None:
    """The Cython parser's own table writer passed its import-time self-test, and a table it filled
    is the same, column for column, as one filled by SeriesTable.add in the same order."""
    parse = importlib.import_module("relay.textparse._text_c")
    assert parse.DIRECT_ARENA_WRITES
    body = b"".join(b'm_%d{i="%d",le="+Inf"} 1\n' % (k % 5, k) for k in range(3000))
    body += b'm_0{le="+Inf",i="0"} 2\n'  # the same series as line 1, written otherwise
    parser = parse.Parser()
    batch = parser.parse(body, None, 0)
    assert batch.ids[-1] == 0 and len(parser.series) == 3000
    ref = SeriesTable()
    for k in range(3000):
        ref.add(f"m_{k % 5}", (("i", str(k)), ("le", "+Inf")))
    table = parser.series
    assert table.columns() == ref.columns()
    check_layout(table)


@pytest.fixture(scope="module")
def big_body() -> bytes:
    """Enough series (40,000) for the index to pass 0xFFFF slots: 2-byte slots become 4-byte."""
    return b"".join(b'big_%d{i="%d"} 1\n' % (k % 3, k) for k in range(40000))


def test_index_goes_from_2_to_4_byte_slots() -> None:
    table = SeriesTable()
    typecodes = set()
    for k in range(40000):
        assert table.add("big", (("i", str(k)),)) == k
        typecodes.add(table._index.typecode)
    assert typecodes == {"H", "i"}
    for k in range(0, 40000, 97):  # all still found
        assert table.add("big", (("i", str(k)),)) == k
    assert len(table) == 40000
    check_layout(table)


@pytest.mark.skipif(NO_EXTENSIONS, reason="RELAY_NO_EXTENSIONS=1")
def test_cython_parser_across_the_index_width_change(big_body: bytes) -> None:
    parse = importlib.import_module("relay.textparse._text_c")
    parser = parse.Parser()
    parser.parse(b"a 1\n", None, 0)  # so that the big parse is warm: no reserve, the index grows
    batch = parser.parse(big_body, None, 0)
    assert list(batch.ids) == list(range(1, 40001))
    assert parser.series._index.typecode == "i"
    ref = SeriesTable()
    ref.reserve(1)  # as the parser did, for its first (cold) body of one line
    ref.add("a", ())
    for k in range(40000):
        ref.add(f"big_{k % 3}", (("i", str(k)),))
    table = parser.series
    assert table.columns() == ref.columns()
    assert table._index == ref._index and table._pair_index == ref._pair_index
    assert table._pair_index.typecode == "i"  # 40,000 distinct i="..." labels: 4-byte slots there too
    check_layout(table)
    assert list(parser.parse(big_body, None, 0).ids) == list(range(1, 40001))


@pytest.fixture(scope="module")
def wide_body() -> bytes:
    """More than 0xFFFF distinct labels: label ids go from array('H') to array('I')."""
    return b"".join(b'w{i="%d"} 1\n' % k for k in range(70000))


def test_label_ids_widen_past_0xffff_labels() -> None:
    table = SeriesTable()
    for k in range(70000):
        assert table.add("w", (("i", str(k)),)) == k
    assert table.label_ids.typecode == "I" and len(table.pair_offsets) - 1 == 70001
    for k in range(0, 70000, 101):
        assert table.add("w", (("i", str(k)),)) == k
        assert table.resolve(k) == ("w", (("i", str(k)),))
    check_layout(table)


@pytest.mark.skipif(NO_EXTENSIONS, reason="RELAY_NO_EXTENSIONS=1")
def test_cython_parser_across_the_label_id_widening(wide_body: bytes) -> None:
    parse = importlib.import_module("relay.textparse._text_c")
    parser = parse.Parser()
    batch = parser.parse(wide_body, None, 0)
    assert list(batch.ids) == list(range(70000))
    ref = SeriesTable()
    ref.reserve(70000)
    for k in range(70000):
        ref.add("w", (("i", str(k)),))
    assert parser.series.label_ids.typecode == "I"
    assert parser.series.columns() == ref.columns()
    check_layout(parser.series)
    assert list(parser.parse(wide_body + b'w{i="70000"} 2\n', None, 0).ids) == list(range(70001))
