"""relay.textparse: the exposition parser, both twins (ids ``py`` and ``c``).

With ``RELAY_NO_EXTENSIONS=1`` the ``c`` runs are skipped; otherwise a missing build fails them.
References: the OpenMetrics conformance cases and prometheus-client's two parsers (text 0.0.4 and
OpenMetrics), on real etcd bodies and on generated bodies with hard escapes.
"""

from __future__ import annotations

import importlib
import io
import json
import math
import struct
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from prometheus_client.openmetrics.parser import text_string_to_metric_families as om_families
from prometheus_client.parser import text_string_to_metric_families as text_families

from relay._exceptions import ParseError, ScrapeError
from relay._ext import NO_EXTENSIONS
from relay.batch import Batch, Family, Labels, SeriesTable, encode_labels
from relay.labels import LabelMerge
from relay.textparse import Parser as PublicParser
from relay.textparse import _text_py, cli_parse, is_openmetrics
from relay.textparse import parse as public_parse

SHARED = Path(__file__).resolve().parent / "data"  # copies of ../shared: etcd bodies, OpenMetrics suite
ETCD_BODIES = sorted((SHARED / "etcd-metrics").glob("*.prom"))
CASES = sorted(p for p in (SHARED / "openmetrics-testdata" / "parsers").iterdir() if p.is_dir())
OM = "application/openmetrics-text; version=1.0.0"
TEXT = "text/plain; version=0.0.4; charset=utf-8"
T0 = 1_700_000_000_000

Row = tuple[str, Labels, bytes, int]
ParserFactory = Callable[..., Any]


def load_impl(name: str) -> ParserFactory:
    """The Parser class of one twin (skip ``c`` only when extensions are disabled)."""
    if name == "py":
        return _text_py.Parser
    if NO_EXTENSIONS:
        pytest.skip("RELAY_NO_EXTENSIONS=1")
    module = importlib.import_module("relay.textparse._text_c")  # a missing build fails here
    return module.Parser


@pytest.fixture(params=["py", "c"])
def impl(request: pytest.FixtureRequest) -> ParserFactory:
    return load_impl(request.param)


def rows(batch: Batch) -> list[Row]:
    """Samples with values as their exact bits (so NaN payloads compare)."""
    return [(n, lab, struct.pack("<d", v), ts) for n, lab, v, ts in batch.samples()]


def bits(value: float) -> bytes:
    return struct.pack("<d", value)


# -- conformance ------------------------------------------------------------------------------------


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_openmetrics_conformance(impl: ParserFactory, case: Path) -> None:
    spec = json.loads((case / "test.json").read_text())
    assert spec["type"] == "text"
    body = (case / spec["file"]).read_bytes()
    if spec["shouldParse"]:
        impl().parse(body, OM, T0)
    else:
        with pytest.raises(ParseError):
            impl().parse(body, OM, T0)


def test_conformance_cases_present() -> None:
    assert len(CASES) == 211
    assert len(ETCD_BODIES) == 7


# -- prometheus-client as the reference -------------------------------------------------------------


def nonempty(labels: dict[str, str]) -> Labels:
    """A label set as the series table keeps it: sorted, empty values left out (as in Prometheus)."""
    return tuple(sorted((k, v) for k, v in labels.items() if v))


def reference_text(body: bytes, default_ts: int) -> list[Row]:
    """What prometheus-client's text 0.0.4 parser reads, as rows.

    prometheus-client renames the samples of a counter whose name lacks ``_total`` (its internal
    OpenMetrics form); that renaming is undone here from the body's own TYPE lines.
    """
    renamed = set()
    for line in body.decode().splitlines():
        parts = line.split()
        if len(parts) == 4 and parts[:2] == ["#", "TYPE"] and parts[3] == "counter" and not parts[2].endswith("_total"):
            renamed.add(parts[2])
    out = []
    for family in text_families(body.decode()):
        for s in family.samples:
            name = s.name
            if name.endswith("_total") and name[:-6] in renamed:
                name = name[:-6]
            ts = default_ts if s.timestamp is None else round(float(s.timestamp) * 1000)
            out.append((name, nonempty(s.labels), bits(float(s.value)), ts))
    return out


def _om_ms(ts: Any) -> int:
    if hasattr(ts, "sec"):
        return int(ts.sec * 1000 + ts.nsec // 1_000_000)
    return int(ts * 1000)


def reference_om(body: bytes, default_ts: int) -> tuple[list[Row], list[tuple[int, Labels, bytes, int | None]]]:
    """What prometheus-client's OpenMetrics parser reads: rows and exemplars."""
    out: list[Row] = []
    exemplars = []
    for family in om_families(body.decode()):
        for s in family.samples:
            ts = default_ts if s.timestamp is None else _om_ms(s.timestamp)
            if s.exemplar is not None:
                ex = s.exemplar
                ex_ts = None if ex.timestamp is None else _om_ms(ex.timestamp)
                exemplars.append((len(out), tuple(sorted(ex.labels.items())), bits(float(ex.value)), ex_ts))
            out.append((s.name, nonempty(s.labels), bits(float(s.value)), ts))
    return out, exemplars


@pytest.mark.parametrize("path", ETCD_BODIES, ids=[p.stem for p in ETCD_BODIES])
def test_etcd_bodies_match_prometheus_client(impl: ParserFactory, path: Path) -> None:
    body = path.read_bytes()
    parser = impl()
    cold = parser.parse(body, TEXT, T0)
    assert rows(cold) == reference_text(body, T0)
    warm = parser.parse(body, TEXT, T0)
    assert rows(warm) == rows(cold)
    assert list(warm.ids) == list(cold.ids)
    assert cold.families["etcd_server_has_leader"] == Family("etcd_server_has_leader", "gauge",
                                                             "Whether or not a leader exists. 1 is existence, 0 is not.")


@pytest.mark.parametrize("path", ETCD_BODIES, ids=[p.stem for p in ETCD_BODIES])
def test_etcd_bodies_twins_identical(path: Path) -> None:
    py, c = load_impl("py")(), load_impl("c")()
    body = path.read_bytes()
    for _ in range(2):  # cold, then warm
        a, b = py.parse(body, TEXT, T0), c.parse(body, TEXT, T0)
        assert rows(a) == rows(b)
        assert list(a.ids) == list(b.ids)
        assert a.families == b.families
        assert py.series.encoded == c.series.encoded
        assert py.series.hashes == c.series.hashes
        assert len(py) == len(c)


# hard label values: escapes, braces, quotes, commas, '#', blanks, non-ASCII, unknown escapes
_CHARS = st.sampled_from([*'ab\\"\n{},= #\t}é€😀_', "\\q"])
LABEL_VALUES = st.lists(_CHARS, max_size=8).map("".join)
# prometheus-client's exemplar reader toggles quoting on escaped quotes too: no '"' there
EXEMPLAR_VALUES = st.lists(_CHARS.filter(lambda c: c != '"'), max_size=8).map("".join)
LABEL_NAMES = st.sampled_from(["a", "b", "le_x", "job", "instance", "Z", "_x", "quantile_", "c:d"[:1]])
FLOATS = st.one_of(
    st.floats(allow_nan=True, allow_infinity=True),
    st.integers(-(10**20), 10**20).map(float),
    st.sampled_from([0.0, -0.0, 1.5, 0.1, 1e-7, 123456.789, 2.0**53, 1e22, 1e23]),
)


def escape_value(value: str) -> str:
    """Escape a label value; the raw token ``\\q`` (an unknown escape) is written as is."""
    out = []
    i = 0
    while i < len(value):
        if value.startswith("\\q", i):
            out.append("\\q")
            i += 2
            continue
        ch = value[i]
        out.append({"\\": "\\\\", '"': '\\"', "\n": "\\n"}.get(ch, ch))
        i += 1
    return "".join(out)


def unescape_expected(value: str) -> str:
    return value  # label values are given to the generator already in their unescaped form


def fmt_value(value: float, openmetrics: bool) -> str:
    if math.isnan(value):
        return "NaN"
    if math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    if value.is_integer() and abs(value) < 1e20:
        return str(int(value))
    return repr(value)


def draw_new_label_set(draw: st.DrawFn, seen: set[tuple[tuple[str, str], ...]]) -> str | None:
    """A label set not in ``seen`` as its ``{...}`` text (``{}`` or "" when empty); None if drawn before."""
    labels = draw(st.dictionaries(LABEL_NAMES, LABEL_VALUES, max_size=3))
    key = tuple(sorted(labels.items()))
    if key in seen:
        return None
    seen.add(key)
    block = ",".join(f'{k}="{escape_value(v)}"' for k, v in labels.items())
    with_braces = bool(labels) or draw(st.booleans())
    return f"{{{block}}}" if with_braces else ""


@st.composite
def text_bodies(draw: st.DrawFn) -> bytes:
    lines = []
    for i in range(draw(st.integers(1, 6))):
        kind = draw(st.sampled_from(["gauge", "counter", "untyped", "none"]))
        name = f"m{i}_total" if kind == "counter" else f"m{i}"
        if kind != "none":
            lines.append(f"# HELP {name} help \\\\ text\\n {i}")
            lines.append(f"# TYPE {name} {kind}")
        seen: set[tuple[tuple[str, str], ...]] = set()
        for _ in range(draw(st.integers(0, 4))):
            braces = draw_new_label_set(draw, seen)
            if braces is None:
                continue
            series = name + braces
            value = draw(FLOATS)
            ts = draw(st.one_of(st.none(), st.integers(-(2**50), 2**50)))
            blank = draw(st.sampled_from([" ", "\t", "  "]))
            lines.append(f"{series}{blank}{fmt_value(value, False)}" + ("" if ts is None else f" {ts}"))
        if draw(st.booleans()):
            lines.append("")
    return ("\n".join(lines) + "\n").encode()


@st.composite
def om_bodies(draw: st.DrawFn) -> bytes:
    lines = []
    for i in range(draw(st.integers(1, 5))):
        kind = draw(st.sampled_from(["gauge", "counter", "unknown", "none"]))
        name = f"m{i}"
        if kind != "none":
            lines.append(f"# TYPE {name} {kind}")
            lines.append(f'# HELP {name} help \\" {i}')
        if kind == "gauge" and draw(st.booleans()):
            name = f"m{i}_seconds"
            lines[-2:] = [f"# TYPE {name} gauge", f"# UNIT {name} seconds"]
        seen: set[tuple[tuple[str, str], ...]] = set()
        for _ in range(draw(st.integers(0 if kind != "none" else 1, 3))):
            braces = draw_new_label_set(draw, seen)
            if braces is None:
                continue
            ts = draw(st.one_of(st.none(), st.integers(0, 2**40).map(lambda n: f"{n // 1000}.{n % 1000:03d}"),
                                st.integers(0, 2**31).map(str)))
            tail = "" if ts is None else f" {ts}"
            if kind == "counter":
                value = abs(draw(FLOATS.filter(lambda v: not math.isnan(v))))
                exemplar = ""
                if draw(st.booleans()):
                    ex_labels = draw(st.dictionaries(LABEL_NAMES, EXEMPLAR_VALUES, max_size=2))
                    ex_block = ",".join(f'{k}="{escape_value(v)}"' for k, v in ex_labels.items())
                    ex_ts = draw(st.one_of(st.none(), st.integers(0, 2**31).map(lambda n: f" {n}.5")))
                    exemplar = f" # {{{ex_block}}} {fmt_value(draw(FLOATS), True)}{ex_ts or ''}"
                lines.append(f"{name}_total{braces} {fmt_value(value, True)}{tail}{exemplar}")
            else:
                lines.append(f"{name}{braces} {fmt_value(draw(FLOATS), True)}{tail}")
    lines.append("# EOF")
    return ("\n".join(lines) + draw(st.sampled_from(["\n", ""]))).encode()


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(body=text_bodies())
def test_generated_text_matches_prometheus_client(body: bytes) -> None:
    expected = reference_text(body, T0)
    for name in ("py", "c"):
        if name == "c" and NO_EXTENSIONS:
            continue
        parser = load_impl(name)()
        assert rows(parser.parse(body, TEXT, T0)) == expected, name
        assert rows(parser.parse(body, TEXT, T0)) == expected, name  # warm


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(body=om_bodies())
def test_generated_openmetrics_matches_prometheus_client(body: bytes) -> None:
    expected, expected_ex = reference_om(body, T0)
    for name in ("py", "c"):
        if name == "c" and NO_EXTENSIONS:
            continue
        parser = load_impl(name)(keep_exemplars=True)
        for _ in range(2):
            batch = parser.parse(body, OM, T0)
            assert rows(batch) == expected, name
            got_ex = [(i, lab, bits(v), ts) for i, lab, v, ts in batch.exemplars]
            assert got_ex == expected_ex, name


# -- behaviour ----------------------------------------------------------------------------------------


def test_chooser_follows_content_type() -> None:
    assert is_openmetrics("application/openmetrics-text; version=1.0.0; charset=utf-8")
    assert is_openmetrics("Application/OpenMetrics-Text")
    assert not is_openmetrics("text/plain; version=0.0.4")
    assert not is_openmetrics(None)
    assert not is_openmetrics("application/json")
    # a text body parses as text without content type; as OpenMetrics it lacks # EOF
    public_parse(b"a 1\n")
    with pytest.raises(ParseError, match="EOF"):
        public_parse(b"a 1\n", OM)


def test_public_parse_and_parser_is_a_twin() -> None:
    batch = public_parse(b'up{job="etcd"} 1\n', timestamp_ms=5)
    assert list(batch.samples()) == [("up", (("job", "etcd"),), 1.0, 5)]
    expected = "relay.textparse._text_py" if NO_EXTENSIONS else "relay.textparse._text_c"
    assert PublicParser.__module__ == expected


def test_special_values_and_timestamps(impl: ParserFactory) -> None:
    body = b"a NaN\nb +Inf 123\nc -Inf -5\nd 1e3\ne -0\nf 0x1p3\n" if False else (
        b"a NaN\nb +Inf 123\nc -Inf -5\nd 1e3\ne -0\nf .5\ng 1.\nh 9007199254740993\ni 1e-400\n")
    got = rows(impl().parse(body, None, T0))
    assert got == [
        ("a", (), bits(float("nan")), T0),
        ("b", (), bits(math.inf), 123),
        ("c", (), bits(-math.inf), -5),
        ("d", (), bits(1000.0), T0),
        ("e", (), bits(-0.0), T0),
        ("f", (), bits(0.5), T0),
        ("g", (), bits(1.0), T0),
        ("h", (), bits(9007199254740992.0), T0),
        ("i", (), bits(0.0), T0),
    ]


@pytest.mark.parametrize("token", ["1.7976931348623157e308", "123456789012345678901234", "4.9e-324",
                                   "0.1", "0.30000000000000004", "1e22", "1e23", "-2.5e-3", "+7",
                                   "00012.500", "infinity", "-nan", "Inf", "8.98846567431158e307"])
def test_values_are_bit_exact_with_float(impl: ParserFactory, token: str) -> None:
    batch = impl().parse(f"a {token}\n".encode(), None, T0)
    assert bits(batch.values[0]) == bits(float(token))


@pytest.mark.parametrize("line", [b"a 1_0", b"a 0x10", b"a 1\x0b", b"a 1 2 3", b"a", b"a{b=\"c\"}1",
                                  b"a 1 1.5", b"a 1 99999999999999999999", b"0a 1", b"a{b=c} 1",
                                  b'a{b="c} 1', b"a{b=\"c\",,d=\"e\"} 1", b'a{__name__="x"} 1',
                                  b'a{b="1",b="2"} 1', b'a{c="1",b="2",c="3"} 1', b"a 1\r", b"# TYPE a bogus", b"# HELP",
                                  b'a{b="c\\'])
def test_invalid_text_lines(impl: ParserFactory, line: bytes) -> None:
    with pytest.raises(ParseError) as info:
        impl().parse(b"ok 1\n" + line + b"\nok 2\n", None, T0)
    assert info.value.line == 2


def test_text_is_lax_like_prometheus(impl: ParserFactory) -> None:
    body = (b'  a{ x = "1" , y="2", } \t 3 \t 17  \n\n   \n# any comment\n#HELP not metadata\n'
            b'# TYPE b untyped\nb 1\n')
    batch = impl().parse(body, None, T0)
    assert rows(batch) == [("a", (("x", "1"), ("y", "2")), bits(3.0), 17), ("b", (), bits(1.0), T0)]
    assert batch.families == {"b": Family("b", "unknown")}


def test_labels_are_sorted_as_remote_write_wants(impl: ParserFactory) -> None:
    parser = impl()
    batch = parser.parse(b'a{c="1",B="2",a="3",_x="4",c2=""} 1\n', None, T0)
    expected = (("B", "2"), ("_x", "4"), ("a", "3"), ("c", "1"))  # byte order; empty values left out
    assert rows(batch)[0][1] == expected
    assert parser.series.encoded[0] == encode_labels("a", expected)


def test_label_escaping(impl: ParserFactory) -> None:
    body = b'a{x="q\\"u\\\\o\\nte",y="\\t{},=#"} 1\n'
    (row,) = rows(impl().parse(body, None, T0))
    assert row[1] == (("x", 'q"u\\o\nte'), ("y", "\\t{},=#"))


def test_invalid_utf8_is_a_parse_error(impl: ParserFactory) -> None:
    with pytest.raises(ParseError) as info:
        impl().parse(b'a 1\nb{x="\xff"} 1\n', None, T0)
    assert info.value.line == 2
    assert rows(impl().parse('a{x="é"} 1\n'.encode(), None, T0))[0][1] == (("x", "é"),)


def test_buffer_types(impl: ParserFactory) -> None:
    body = b"a 1\nb 2\n"
    for given_body in (body, bytearray(body), memoryview(body)):
        assert rows(impl().parse(given_body, None, T0)) == rows(impl().parse(body, None, T0))


def test_honor_timestamps_false_and_default_now(impl: ParserFactory) -> None:
    batch = impl(honor_timestamps=False).parse(b"a 1 5\n", None, T0)
    assert list(batch.timestamps) == [T0]
    import time

    before = time.time_ns() // 1_000_000
    batch = impl().parse(b"a 1\n")
    assert before <= batch.timestamps[0] <= time.time_ns() // 1_000_000


def test_openmetrics_types_timestamps_and_created(impl: ParserFactory) -> None:
    body = b"""# TYPE c counter
# HELP c a "counter"
c_total 3 1.5
c_created 1700000000.25 1.5
# TYPE h histogram
h_bucket{le="1"} 1
h_bucket{le="+Inf"} 2
h_sum 3
h_count 2
# TYPE i info
i_info{v="1"} 1
# TYPE s stateset
s{s="a"} 1
s{s="b"} 0
# TYPE g gaugehistogram
g_bucket{le="+Inf"} 1
g_gcount 1
g_gsum 1
# TYPE q summary
q{quantile="0.5"} NaN
q_count 1
q_sum 2
# EOF
"""
    batch = impl().parse(body, OM, T0)
    names = [r[0] for r in rows(batch)]
    assert names == ["c_total", "c_created", "h_bucket", "h_bucket", "h_sum", "h_count", "i_info", "s", "s",
                     "g_bucket", "g_gcount", "g_gsum", "q", "q_count", "q_sum"]
    assert list(batch.timestamps)[:3] == [1500, 1500, T0]
    assert batch.values[1] == 1700000000.25
    assert batch.families["c"] == Family("c", "counter", 'a "counter"')
    assert batch.families["q"].type == "summary"


def test_exemplars_kept_or_dropped(impl: ParserFactory) -> None:
    body = b'# TYPE a counter\na_total 1 # {trace="x"} 0.5 12.5\nb 2\n# EOF\n'
    assert impl().parse(body, OM, T0).exemplars == []
    batch = impl(keep_exemplars=True).parse(body, OM, T0)
    assert batch.exemplars == [(0, (("trace", "x"),), 0.5, 12500)]
    assert public_parse(body, OM, T0, keep_exemplars=True).exemplars == batch.exemplars


@pytest.mark.parametrize("body", [b"# EOF\na 1\n", b"a 1\n# EOF\n\n", b"a 1\n", b"a 1\n\n# EOF\n", b"a  1\n# EOF",
                                  b"a 1 \n# EOF", b"# EOF extra\n", b'a{b="c",} 1\n# EOF'])
def test_openmetrics_structure_errors(impl: ParserFactory, body: bytes) -> None:
    with pytest.raises(ParseError):
        impl().parse(body, OM, T0)


def test_parse_error_lines_agree() -> None:
    for body, om in [(b"a 1\nb 2\n\nc x\n", False), (b"a 1\n# TYPE a gauge\n# EOF\n", True),
                     (b"# TYPE a gauge\na 1\nb 1\na 2\n# EOF\n", True), (b"a 1\n", True)]:
        lines = []
        for name in ("py", "c"):
            if name == "c" and NO_EXTENSIONS:
                continue
            with pytest.raises(ParseError) as info:
                load_impl(name)().parse(body, OM if om else None, T0)
            lines.append(info.value.line)
        assert len(set(lines)) == 1, (body, lines)


# -- the series cache ---------------------------------------------------------------------------------


BODY = b'# HELP a x\n# TYPE a gauge\na{k="1"} 1\na{k="2"} 2\nb 3\na{k="1"} 4\n'


def test_warm_parse_is_identical(impl: ParserFactory) -> None:
    parser = impl()
    first = parser.parse(BODY, None, T0)
    second = parser.parse(BODY, None, T0)
    assert rows(first) == rows(second)
    assert (list(first.ids), list(first.values)) == (list(second.ids), list(second.values))
    assert list(first.ids) == [0, 1, 2, 0]
    assert len(parser) == 3
    assert len(parser.series) == 3
    assert second.families == {"a": Family("a", "gauge", "x")}


def test_changed_metadata_is_picked_up(impl: ParserFactory) -> None:
    parser = impl()
    parser.parse(b"# HELP a one\na 1\n", None, T0)
    parser.parse(b"# HELP a two\na 1\n", None, T0)
    assert parser.families["a"].help == "two"
    assert parser.parse(b"# HELP a one\na 1\n", None, T0).families["a"].help == "one"


def test_on_new_series_called_once_per_new_series(impl: ParserFactory) -> None:
    calls: list[tuple[str, Labels]] = []

    def hook(name: str, labels: Labels) -> tuple[str, Labels] | None:
        calls.append((name, labels))
        if name == "b":
            return None
        return name, (*labels, ("job", "etcd"))

    parser = impl(on_new_series=hook)
    for _ in range(3):
        batch = parser.parse(BODY, None, T0)
        assert [(n, lab) for n, lab, _, _ in batch.samples()] == [
            ("a", (("job", "etcd"), ("k", "1"))), ("a", (("job", "etcd"), ("k", "2"))),
            ("a", (("job", "etcd"), ("k", "1")))]
    assert calls == [("a", (("k", "1"),)), ("a", (("k", "2"),)), ("b", ())]
    assert len(parser) == 3  # the dropped series is cached too
    parser.forget()
    assert len(parser) == 0
    parser.parse(BODY, None, T0)
    assert len(calls) == 6


def test_shared_series_table_and_relabel_merge(impl: ParserFactory) -> None:
    table = SeriesTable()
    sid = table.add("up", (("job", "etcd"),))
    parser = impl(series=table, on_new_series=lambda n, lab: ("up", (("job", "etcd"),)))
    batch = parser.parse(b"x 1\ny 2\n", None, T0)
    assert parser.series is table
    assert list(batch.ids) == [sid, sid]


def test_series_table_subclass_gets_the_same_ids(impl: ParserFactory) -> None:
    class Table(SeriesTable):
        pass

    plain, sub = impl(), impl(series=Table())
    body = (SHARED / "etcd-metrics" / "etcd-3.5.1-member-3381.prom").read_bytes()
    assert list(plain.parse(body, None, T0).ids) == list(sub.parse(body, None, T0).ids)
    assert plain.series.encoded == sub.series.encoded
    assert plain.series.hashes == sub.series.hashes


def test_openmetrics_cache_hits_still_validate(impl: ParserFactory) -> None:
    parser = impl()
    parser.parse(b"# TYPE a counter\na_total 1\n# EOF\n", OM, T0)
    with pytest.raises(ParseError, match="negative"):
        parser.parse(b"# TYPE a counter\na_total -1\n# EOF\n", OM, T0)
    parser.parse(b'a{x="1",y="2"} 1\n', None, T0)  # cached from text ...
    with pytest.raises(ParseError):  # ... but a text-only form is still invalid OpenMetrics
        parser.parse(b'a{x="1", y="2"} 1\n# EOF\n', OM, T0)


@pytest.mark.parametrize(("kwargs", "reason"), [
    ({"sample_limit": 2}, "sample_limit"),
    ({"label_limit": 2}, "label_limit"),
    ({"label_name_length_limit": 3}, "label_name_length_limit"),
    ({"label_value_length_limit": 4}, "label_value_length_limit"),
])
def test_limits(impl: ParserFactory, kwargs: dict[str, int], reason: str) -> None:
    body = b'a{kk="1"} 1\nb{kk="1",l="x"} 1\nc 1\nlongname 1\nlongername{long="x"} 1\n'
    with pytest.raises(ScrapeError) as info:
        impl(**kwargs).parse(body, None, T0)
    assert info.value.reason == reason


def test_limits_not_hit(impl: ParserFactory) -> None:
    body = b'a{kk="1"} 1\nb 2\n'
    parser = impl(sample_limit=2, label_limit=2, label_name_length_limit=2, label_value_length_limit=8)
    assert len(parser.parse(body, None, T0)) == 2
    dropped = impl(sample_limit=1, on_new_series=lambda n, lab: None if n == "a" else (n, lab))
    assert len(dropped.parse(body, None, T0)) == 1  # dropped samples do not count


# -- CLI ------------------------------------------------------------------------------------------------


def test_cli_parse(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "m.prom"
    path.write_bytes(b'a{x="y"} NaN 5\n')
    out = io.StringIO()
    assert cli_parse(str(path), out) == 0
    assert json.loads(out.getvalue()) == {"name": "a", "labels": {"x": "y"}, "value": "NaN", "timestamp_ms": 5}
    path.write_bytes(b"a 1\n# EOF\n")
    out = io.StringIO()
    assert cli_parse(str(path), out) == 0
    path.write_bytes(b"a 1 x\n")
    assert cli_parse(str(path), io.StringIO()) == 1
    assert "line 1" in capsys.readouterr().err
    assert cli_parse(str(tmp_path / "missing"), io.StringIO()) == 2


def test_last_dropped_counts_samples_of_dropped_series(impl: ParserFactory) -> None:
    p = impl(on_new_series=lambda name, labels: None if name.startswith("go_") else (name, labels))
    body = b"go_a 1\ngo_b 2\nkeep 3\n"
    for _ in range(2):  # cold, then warm (cached as dropped)
        batch = p.parse(body)
        assert len(batch) == 1 and p.last_dropped == 2
    p.parse(b"keep 4\n")
    assert p.last_dropped == 0


def test_columns_go_zero_copy_into_numpy(impl: ParserFactory) -> None:
    import numpy as np

    batch = impl().parse(b'a 1\nb{x="y"} 2.5\nc NaN\n', None, T0)
    values = np.frombuffer(batch.values, dtype=np.float64)
    ids = np.frombuffer(batch.ids, dtype=np.uint32)
    stamps = np.frombuffer(batch.timestamps, dtype=np.int64)
    assert values[:2].tolist() == [1.0, 2.5] and np.isnan(values[2])
    assert ids.tolist() == list(batch.ids) and stamps.tolist() == [T0] * 3
    batch.values[0] = 7.0  # the array and numpy share one buffer: no copy was made
    assert values[0] == 7.0
    assert [batch.series.resolve(i)[0] for i in ids] == ["a", "b", "c"]


# ---------------------------------------------------------------- the series cache keyed by hashes
# (the Cython twin keeps no key bytes: a series text or a comment line is its 128-bit hash)


def target_hook(name: str, labels: Labels) -> tuple[str, Labels]:
    return name, (*labels, ("instance", "10.0.0.1:2379"), ("job", "etcd"))


@pytest.mark.parametrize("path", ETCD_BODIES, ids=[p.stem for p in ETCD_BODIES])
def test_warm_scrape_matches_cold(impl: ParserFactory, path: Path) -> None:
    body = path.read_bytes()
    warm = impl(on_new_series=target_hook)
    cold_batch = warm.parse(body, None, T0)
    for _ in range(2):
        warm_batch = warm.parse(body, None, T0)
        assert rows(warm_batch) == rows(cold_batch)
        assert list(warm_batch.ids) == list(cold_batch.ids)
        assert warm_batch.families == cold_batch.families
    fresh = impl(on_new_series=target_hook).parse(body, None, T0)
    assert rows(fresh) == rows(cold_batch)


def test_warm_scrape_with_changes_matches_a_fresh_parser(impl: ParserFactory) -> None:
    """Values, timestamps, blanks and new or gone series change between scrapes: the warm cache
    (backward split, hits and misses) gives what a fresh parser gives, ids aside."""
    lines = [b'a{k="%d"} %d' % (k, k) for k in range(500)]
    body1 = b"\n".join(lines) + b"\n"
    changed = [b'a{k="%d"} %d.5 %d' % (k, k, T0 + k) if k % 3 == 0 else b'a{k="%d"}  \t%d  ' % (k, -k)
               for k in range(0, 900, 2)]
    body2 = b"# HELP a h\n" + b"\n".join(changed) + b"\n"
    warm = impl()
    warm.parse(body1, None, T0)
    got = warm.parse(body2, None, T0)
    want = impl().parse(body2, None, T0)
    assert [(n, lab, v, t) for n, lab, v, t in got.samples()] == [(n, lab, v, t) for n, lab, v, t in want.samples()]
    assert len(warm) == 500 + 200  # 0..498 (even) were cached; 500..898 are new
    assert len(warm.series) == 700
    again = warm.parse(body2, None, T0)
    assert list(again.ids) == list(got.ids)


def test_cache_grows_past_its_first_size(impl: ParserFactory) -> None:
    parser = impl()
    parser.parse(b"a 1\n", None, T0)  # sized for one series
    body = b"".join(b"s%d 1\n" % k for k in range(5000))
    first = parser.parse(body, None, T0)
    second = parser.parse(body, None, T0)
    assert list(first.ids) == list(second.ids) == list(range(1, 5001))
    assert len(parser) == 5001


def test_changed_comment_lines_update_families(impl: ParserFactory) -> None:
    parser = impl()
    body = b"# HELP a one\n# TYPE a gauge\n# HELP b bee\n# TYPE b counter\n# plain comment\na 1\nb 2\n"
    assert parser.parse(body, None, T0).families == {
        "a": Family("a", "gauge", "one"), "b": Family("b", "counter", "bee")}
    assert parser.parse(body, None, T0).families["a"] == Family("a", "gauge", "one")  # all skipped
    body2 = body.replace(b"# TYPE a gauge", b"# TYPE a counter").replace(b"# HELP b bee", b"# HELP b wasp")
    assert parser.parse(body2, None, T0).families == {
        "a": Family("a", "counter", "one"), "b": Family("b", "counter", "wasp")}
    # back to the first body: its lines were seen before, but the metadata changed since
    assert parser.parse(body, None, T0).families == {
        "a": Family("a", "gauge", "one"), "b": Family("b", "counter", "bee")}
    # a comment line that only differs in blanks is another line, with the same meaning
    assert parser.parse(body.replace(b"# HELP a one", b"#  HELP a one"), None, T0).families["a"].help == "one"
    parser.forget()
    assert parser.parse(body2, None, T0).families["b"] == Family("b", "counter", "wasp")


def test_families_are_equal_across_parsers_and_twins() -> None:
    body = (SHARED / "etcd-metrics" / "etcd-3.5.1-member-3381.prom").read_bytes()
    py = _text_py.Parser().parse(body, None, T0).families
    for impl_ in ([] if NO_EXTENSIONS else [load_impl("c")]):
        a = impl_().parse(body, None, T0).families
        b = impl_().parse(body, None, T0).families
        assert a == b == py


@pytest.mark.skipif(NO_EXTENSIONS, reason="RELAY_NO_EXTENSIONS=1")
def test_cython_cache_keeps_no_key_bytes() -> None:
    parser = load_impl("c")()
    body = (SHARED / "etcd-metrics" / "etcd-3.5.1-member-3381.prom").read_bytes()
    parser.parse(body, None, T0)
    slots, key_bytes, key_capacity, _ = parser.cache_bytes()
    assert (key_bytes, key_capacity) == (0, 0)
    series, comments = len(parser), body.count(b"\n#") + body.startswith(b"#")
    assert slots <= 24 * (series * 4 // 3 + 1) + 16 * (comments * 4 // 3 + 1)  # load <= 3/4, no more


# ---------------------------------------------------------------- LabelMerge: target labels in C
# (the Cython twin merges a LabelMerge's labels itself; both twins must give the same series table)

MERGE_CASES = [
    # (target labels, honor_labels, extra labels)
    ((("instance", "10.0.0.1:2381"), ("job", "etcd")), False, ()),
    ((("instance", "10.0.0.1:2381"), ("job", "etcd")), True, ()),
    ((("instance", "m1"), ("job", "etcd"), ("zone", "a")), False, (("cluster", "prod"), ("job", "ext"))),
    ((("A", "upper"), ("instance", "m1"), ("job", "etcd")), True, (("__replica", "1"), ("cluster", "c"))),
    ((("instance", "m1"), ("job", "")), False, ()),  # an empty target value: Python does it all
    ((), False, (("cluster", "only-external"),)),
]

MERGE_BODY = (
    b'plain 1\n'
    b'with_labels{a="1",b="2"} 2\n'
    b'unsorted{z="1",a="2",m="3"} 3\n'
    b'conflict{job="inner"} 4\n'
    b'conflict2{job="x",exported_job="y"} 5\n'
    b'empty_job{job=""} 6\n'
    b'cluster_set{cluster="mine"} 7\n'
    b'escaped{v="a\\\\b\\"c\\nd"} 8\n'
    b'instance_set{instance="i"} 9\n'
    b'upper{A="scraped",zone=""} 10\n'
)


@pytest.mark.parametrize("case", range(len(MERGE_CASES)))
@pytest.mark.parametrize("path", [None, *ETCD_BODIES[:2]], ids=["hard", *(p.stem for p in ETCD_BODIES[:2])])
def test_label_merge_twins_agree(case: int, path: Path | None) -> None:
    target, honor, extra = MERGE_CASES[case]
    body = MERGE_BODY if path is None else path.read_bytes()
    ref_merge = LabelMerge(target, honor, extra)
    ref = _text_py.Parser(on_new_series=ref_merge)
    ref_rows = rows(ref.parse(body, None, T0))
    for _, labels, _, _ in ref_rows:  # every series got what the rules give, sorted
        assert list(labels) == sorted(labels) and all(v != "" for _, v in labels)
    c_merge = LabelMerge(target, honor, extra)
    fast = load_impl("c")(on_new_series=c_merge)
    assert rows(fast.parse(body, None, T0)) == ref_rows
    assert fast.series.columns() == ref.series.columns()
    assert ref_merge.calls == len(ref.series)
    if path is not None and c_merge.fast is not None:  # etcd bodies: no conflict, no Python call
        assert c_merge.calls == 0
    if path is None and c_merge.fast is not None:
        overrides = {k for k, _, fill in c_merge.fast if not fill}
        if b"job" in overrides:  # conflict{job=...}: exported_job, made in Python; the rest in C
            assert 0 < c_merge.calls < ref_merge.calls
        else:
            assert c_merge.calls == 0


def test_label_merge_semantics() -> None:
    merge = LabelMerge((("instance", "m1"), ("job", "etcd")), False, (("cluster", "c"), ("job", "x")))
    assert merge("up", (("job", "inner"), ("cluster", "mine"))) == (
        "up", (("cluster", "mine"), ("exported_job", "inner"), ("instance", "m1"), ("job", "etcd")))
    assert merge.fast == ((b"cluster", b"c", True), (b"instance", b"m1", False), (b"job", b"etcd", False))
    honor = LabelMerge((("job", "etcd"),), True)
    assert honor("up", (("job", "inner"),)) == ("up", (("job", "inner"),))
    assert honor("up", (("job", ""),)) == ("up", (("job", "etcd"),))
    dropping = LabelMerge((("job", "etcd"),), False, relabel=lambda lbls: None)
    assert dropping.fast is None and dropping("up", ()) is None


@given(st.lists(st.tuples(st.sampled_from(["job", "instance", "a", "cluster", "exported_job", "Z"]),
                          st.sampled_from(["", "v", "etcd", 'q"\\'])), max_size=5),
       st.integers(min_value=0, max_value=len(MERGE_CASES) - 1))
@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
def test_label_merge_twins_agree_generated(labels: list[tuple[str, str]], case: int) -> None:
    target, honor, extra = MERGE_CASES[case]
    seen: dict[str, str] = {}
    for k, v in labels:
        seen.setdefault(k, v)
    block = ",".join(f'{k}="{v.replace(chr(92), chr(92) * 2).replace(chr(34), chr(92) + chr(34))}"'
                     for k, v in seen.items())
    body = f"m{{{block}}} 1\nm2 2\n".encode()
    ref = _text_py.Parser(on_new_series=LabelMerge(target, honor, extra))
    fast = load_impl("c")(on_new_series=LabelMerge(target, honor, extra))
    assert rows(fast.parse(body, None, T0)) == rows(ref.parse(body, None, T0))
    assert fast.series.columns() == ref.series.columns()


FILTER_RULES: list[dict[str, Any]] = [
    {"regex": "go_.*|process_.*|conflict.*", "source_labels": ["__name__"], "action": "drop"},
    {"regex": "etcd;.*|.*;escaped", "source_labels": ["job", "__name__"], "action": "keep"},
    {"source_labels": ["v"], "regex": 'a\\\\b"c\nd', "action": "drop"},
]


class FullRelabel:
    """A relabel hook without filter_sources: LabelMerge then runs it per series (the reference)."""

    def __init__(self, relabeler: Any) -> None:
        self.relabeler = relabeler

    def __call__(self, labels: dict[str, str]) -> Any:
        return self.relabeler(labels)


@pytest.mark.parametrize("extra", [(), (("cluster", "c"),), (("v", "hidden"),)], ids=["none", "cluster", "v"])
@pytest.mark.parametrize("path", [None, *ETCD_BODIES[:2]], ids=["hard", *(p.stem for p in ETCD_BODIES[:2])])
def test_label_merge_with_a_keep_drop_filter(impl: ParserFactory, path: Path | None, extra: Labels) -> None:
    """metric_relabel_configs of keep/drop rules: decided from a few labels, once per distinct
    values, in C for the Cython twin; the same series and samples as running the rules per series."""
    from relay.relabel import Relabeler, parse_relabel_configs

    configs = parse_relabel_configs(FILTER_RULES, "metric_relabel_configs")
    body = MERGE_BODY if path is None else path.read_bytes()
    target = (("instance", "10.0.0.1:2381"), ("job", "etcd"))
    ref = _text_py.Parser(on_new_series=LabelMerge(target, False, extra, FullRelabel(Relabeler(configs))))
    ref_rows = rows(ref.parse(body, None, T0))
    relabeler = Relabeler(configs)
    assert relabeler.filter_sources == ("__name__", "job", "v")
    merge = LabelMerge(target, False, extra, relabeler)
    parser = impl(on_new_series=merge)
    assert rows(parser.parse(body, None, T0)) == ref_rows
    assert parser.series.columns() == ref.series.columns() and parser.last_dropped == ref.last_dropped
    assert ref.last_dropped > 0 and len(ref_rows) > 0
    assert (merge.fast is None) == (extra == (("v", "hidden"),))  # an extra label a rule reads: Python
    if path is not None and merge.fast is not None and impl is not _text_py.Parser:
        assert merge.calls == 0  # all in C
    assert len(relabeler.decisions) <= len({n for n, *_ in ref_rows}) + ref.last_dropped
    assert merge.decisions is relabeler.decisions and len(relabeler.decisions) > 0  # the public interface


def test_label_merge_interface_the_cython_parser_reads() -> None:
    """relay.labels documents what the Cython parser reads from a LabelMerge; its C limit on added
    labels is relay.labels.MAX_FAST_ADDED."""
    from relay import labels
    from relay.relabel import Relabeler, parse_relabel_configs

    relabeler = Relabeler(parse_relabel_configs(FILTER_RULES, "metric_relabel_configs"))
    merge = LabelMerge((("job", "etcd"),), False, (), relabeler)
    assert merge.fast == ((b"job", b"etcd", False),)
    assert merge.filter_names == tuple(n.encode() for n in relabeler.filter_sources or ())
    assert merge.keeps == relabeler.keeps and merge.decisions is relabeler.decisions
    plain = LabelMerge((("job", "etcd"),), True)
    assert plain.filter_names is None and plain.decisions is None and plain.fast == ((b"job", b"etcd", True),)
    many = LabelMerge(tuple((f"l{k}", "v") for k in range(labels.MAX_FAST_ADDED + 1)), False)
    assert many.fast is None
    if not NO_EXTENSIONS:
        assert importlib.import_module("relay.textparse._text_c").MAX_FAST_ADDED == labels.MAX_FAST_ADDED
