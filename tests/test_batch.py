"""relay.batch.SeriesTable: distinct encoded labels once, series as lists of label ids, hashes and
array indexes. Every behaviour runs on both twins (SeriesTablePy, and the C twin when built), and
the twins must hold the same columns for the same adds."""

from __future__ import annotations

import importlib
import random
from array import array

import pytest

from relay._ext import NO_EXTENSIONS, load
from relay.batch import (
    EncodedView,
    SeriesTable,
    SeriesTablePy,
    decode_labels,
    encode_labels,
    label_hash,
    series_hash,
    split_labels,
)

_C = load("relay._series_c")
TWINS: list[type[SeriesTablePy]] = [SeriesTablePy] + ([] if _C is None else [_C.SeriesTable])


@pytest.fixture(params=TWINS, ids=lambda t: "c" if t is not SeriesTablePy else "py")
def twin(request: pytest.FixtureRequest) -> type[SeriesTablePy]:
    cls: type[SeriesTablePy] = request.param
    return cls


def test_the_c_twin_is_picked_when_built() -> None:
    """No silent fallback: with extensions on, the C twin is built and it is the one in use."""
    if NO_EXTENSIONS:
        assert SeriesTable is SeriesTablePy
    else:
        assert _C is not None, "relay._series_c is not built"
        assert SeriesTable is _C.SeriesTable


def labels_of(k: int) -> tuple[tuple[str, str], ...]:
    return (("instance", f"10.0.{k % 7}.{k % 250}:2379"), ("job", "etcd"), ("le", str(k)))


def check_index(index: array[int], n: int) -> None:
    # 2-byte slots (0xFFFF empty) while the index has at most 0xFFFF slots, else 4-byte (-1 empty)
    assert index.typecode == ("H" if len(index) <= 0xFFFF else "i")
    empty = 0xFFFF if index.typecode == "H" else -1
    assert 2 * n <= len(index)  # load at most 1/2
    assert sorted(s for s in index if s != empty) == list(range(n))


def check_layout(table: SeriesTablePy) -> None:
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


def test_add_dedups_and_resolves(twin: type[SeriesTablePy]) -> None:
    table = twin()
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


def test_encoded_view(twin: type[SeriesTablePy]) -> None:
    table = twin()
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
    other = twin()
    other.add_encoded(items[0])
    assert view != other.encoded
    with pytest.raises(IndexError):
        view[5]
    with pytest.raises(IndexError):
        view[-6]
    labels = {item[a:b] for item in items for a, b in split_labels(item)}
    assert len(table.pairs) == sum(map(len, labels)) < sum(map(len, view))  # job="etcd" kept once
    assert decode_labels(view[3]) == ("m3", labels_of(3))


def test_growth_across_reallocation(twin: type[SeriesTablePy]) -> None:
    """Ids, bytes and the indexes stay right while the columns and indexes are reallocated; bytes
    read before a reallocation are copies, so they stay valid."""
    table = twin()
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


def test_many_series_and_hash_collisions_in_the_index(twin: type[SeriesTablePy]) -> None:
    """Many series in a small index: probing walks past other series' slots (and wraps around)."""
    rng = random.Random(7)
    table = twin()
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


def test_reserve_and_compact_keep_contents(twin: type[SeriesTablePy]) -> None:
    table = twin()
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
    """A table the Cython parser filled (through the C table's C interface) is the same, column for
    column, as the reference twin filled by SeriesTablePy.add in the same order."""
    parse = importlib.import_module("relay.textparse._text_c")
    body = b"".join(b'm_%d{i="%d",le="+Inf"} 1\n' % (k % 5, k) for k in range(3000))
    body += b'm_0{le="+Inf",i="0"} 2\n'  # the same series as line 1, written otherwise
    parser = parse.Parser()
    batch = parser.parse(body, None, 0)
    assert batch.ids[-1] == 0 and len(parser.series) == 3000
    ref = SeriesTablePy()
    for k in range(3000):
        ref.add(f"m_{k % 5}", (("i", str(k)), ("le", "+Inf")))
    table = parser.series
    assert table.columns() == ref.columns()
    check_layout(table)


@pytest.fixture(scope="module")
def big_body() -> bytes:
    """Enough series (40,000) for the index to pass 0xFFFF slots: 2-byte slots become 4-byte."""
    return b"".join(b'big_%d{i="%d"} 1\n' % (k % 3, k) for k in range(40000))


def test_index_goes_from_2_to_4_byte_slots(twin: type[SeriesTablePy]) -> None:
    table = twin()
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
    ref = SeriesTablePy()
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


def test_label_ids_widen_past_0xffff_labels(twin: type[SeriesTablePy]) -> None:
    table = twin()
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
    ref = SeriesTablePy()
    ref.reserve(70000)
    for k in range(70000):
        ref.add("w", (("i", str(k)),))
    assert parser.series.label_ids.typecode == "I"
    assert parser.series.columns() == ref.columns()
    check_layout(parser.series)
    assert list(parser.parse(wide_body + b'w{i="70000"} 2\n', None, 0).ids) == list(range(70001))


# ---------------------------------------------------------------- twin equality (C twin built only)

needs_c = pytest.mark.skipif(_C is None or NO_EXTENSIONS, reason="the C SeriesTable is not in use")


def both() -> tuple[SeriesTablePy, SeriesTablePy]:
    assert _C is not None
    return SeriesTablePy(), _C.SeriesTable()


def same(py: SeriesTablePy, c: SeriesTablePy) -> None:
    assert c.columns() == py.columns()
    assert c._index == py._index and c._pair_index == py._pair_index  # same probing, same growth
    assert len(c) == len(py) and list(c.encoded) == list(py.encoded)
    for sid in range(0, len(py), max(1, len(py) // 50)):
        assert c.resolve(sid) == py.resolve(sid) and c.labels_dict(sid) == py.labels_dict(sid)
        assert c.label_bytes(sid) == py.label_bytes(sid)
    check_layout(c)


@needs_c
def test_twins_same_columns_for_random_adds() -> None:
    """Shared labels, duplicates, label order, empty values, escapes and UTF-8: the same ids and
    columns, through the growth of both indexes."""
    rng = random.Random(15)
    py, c = both()
    values = ["", "a", "etcd", 'q"uo\\te', "ünï", "x" * 200, "\n"]
    for _ in range(6000):
        name = f"m_{rng.randrange(40)}"
        labels = [(f"l{rng.randrange(6)}", rng.choice(values) + str(rng.randrange(30))) for _ in range(rng.randrange(5))]
        labels.append(("e", rng.choice(values)))
        rng.shuffle(labels)
        labels = list(dict(labels).items())
        assert c.add(name, labels) == py.add(name, labels)
    assert len(py) > 2000
    same(py, c)
    enc = py.encoded[17]
    assert c.add_encoded(enc) == py.add_encoded(enc) == 17


@needs_c
def test_twins_same_across_label_id_widening_and_index_width() -> None:
    """Past 0xFFFF distinct labels (label ids array('H') -> array('I')) and past 0xFFFF index slots
    (array('H') -> array('i')) the twins still agree, and old series are still found."""
    py, c = both()
    for k in range(70000):
        labels = (("i", str(k)), ("job", "etcd"))
        assert c.add("w", labels) == py.add("w", labels) == k
    assert c.label_ids.typecode == py.label_ids.typecode == "I"
    assert c._index.typecode == c._pair_index.typecode == "i"
    for k in range(0, 70000, 997):
        assert c.add("w", (("job", "etcd"), ("i", str(k)))) == k
    same(py, c)


@needs_c
def test_twins_same_after_reserve_and_compact() -> None:
    py, c = both()
    for t in (py, c):
        t.reserve(3000)
        for k in range(1000):
            t.add(f"m{k % 7}", labels_of(k))
        t.compact()
        assert t.pairs.__alloc__() <= len(t.pairs) + 1 and len(t._index) >= 6000  # reserved
        t.add("after", ())
    same(py, c)
    c.shard_key = 7
    assert c.shard_key == 7 and c.nbytes() > len(c.pairs)
    assert repr(c) == repr(py)


@needs_c
def test_twins_same_errors_for_bad_encoded_bytes() -> None:
    py, c = both()
    good = encode_labels("up", (("job", "etcd"),))
    for bad in (b"\x12\x00", good + b"\x0a\x05ab", b"\x0a\xff"):
        with pytest.raises((ValueError, IndexError)):
            py.add_encoded(bad)
        with pytest.raises(ValueError, match="encoded labels"):
            c.add_encoded(bad)
    assert c.add_encoded(good) == py.add_encoded(good) == 0
    with pytest.raises(IndexError):
        c.encoded[1]
    with pytest.raises(TypeError):
        c.add_encoded(bytearray(good))  # type: ignore[arg-type]
    with pytest.raises(AttributeError):
        c.pairs = bytearray()  # the C columns are read-only from Python
    same(py, c)


@needs_c
def test_encoder_reads_the_c_table_as_the_python_one() -> None:
    """The Cython encoder reads the C table's columns from C; the bytes equal those of the Python
    twin's table (read through ``encoded``) and of the pure-Python encoder."""
    from relay.batch import Batch
    from relay.remote.encode import WriteRequestEncoderPy, encode_write_request

    py, c = both()
    out = []
    for table in (py, c):
        batch = Batch(table)
        for k in range(500):
            batch.append(table.add(f"m{k % 9}", labels_of(k)), float(k), 1000 + k)
        batch.append(0, 2.0, 5000)
        out.append(encode_write_request(batch))
        ref = WriteRequestEncoderPy()
        ref.add(batch)
        out.append(ref.finish())
    assert len(set(out)) == 1
