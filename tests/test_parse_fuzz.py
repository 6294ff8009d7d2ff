"""Differential fuzzing: the Cython parser against the pure-Python one on random and mutated bodies.

Both must agree on everything: valid or not, the ParseError line, samples (value bits), series ids,
exemplars, metadata; neither may crash. Short by default; crank it up with
``RELAY_PARSE_FUZZ_EXAMPLES=20000 pytest tests/test_parse_fuzz.py``.
"""

from __future__ import annotations

import ctypes
import importlib
import mmap
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from relay._ext import NO_EXTENSIONS
from relay.batch import Labels
from relay.textparse import _text_py
from tests.fuzz.twins import outcome

if NO_EXTENSIONS:
    pytest.skip("RELAY_NO_EXTENSIONS=1: nothing to compare", allow_module_level=True)

C_PARSER: Callable[..., Any] = importlib.import_module("relay.textparse._text_c").Parser  # a missing build fails
PY_PARSER: Callable[..., Any] = _text_py.Parser

SHARED = Path(__file__).resolve().parent / "data"  # copies of ../shared: etcd bodies, OpenMetrics suite
OM = "application/openmetrics-text; version=1.0.0"
EXAMPLES = int(os.environ.get("RELAY_PARSE_FUZZ_EXAMPLES", "250"))
FUZZ = settings(max_examples=EXAMPLES, deadline=None, derandomize=EXAMPLES <= 250,
                suppress_health_check=list(HealthCheck))


def _seeds() -> list[bytes]:
    seeds = []
    etcd = (SHARED / "etcd-metrics" / "etcd-3.5.1-member-3381.prom").read_bytes().split(b"\n")
    for start in range(0, len(etcd), 97):
        seeds.append(b"\n".join(etcd[start : start + 12]) + b"\n")
    for case in sorted((SHARED / "openmetrics-testdata" / "parsers").iterdir()):
        seeds.append((case / "metrics").read_bytes())
    seeds += [
        b'a{x="1 2",y="\\"}\\\\"} 1 5\na{x="1 2",y="\\"}\\\\"}\t2\n',
        b'# TYPE a counter\na_total{l="v"} 1 # {t="x"} 2 3.5\n# EOF\n',
        b"a 1e5\nb -0\nc NaN\nd +Inf 9223372036854775807\ne 0.1 -9223372036854775808\n",
    ]
    return seeds


SEEDS = _seeds()
TRICKY = st.sampled_from([b" ", b"\t", b"\n", b"{", b"}", b'"', b"\\", b",", b"=", b"#", b"_", b".", b"e", b"E",
                          b"+", b"-", b"0", b"9", b"NaN", b"Inf", b"\x00", b"\r", b"\x0b", "é".encode(), b"\xff",
                          b"\xc3", b"# EOF", b"le", b'="', b"a", b" # {", b"_total", b"_bucket"])
EDITS = st.lists(st.tuples(st.integers(0, 10**6), st.sampled_from(["insert", "delete", "replace"]), TRICKY),
                 min_size=1, max_size=4)


def mutate(body: bytes, edits: list[tuple[int, str, bytes]]) -> bytes:
    out = bytearray(body)
    for where, op, chunk in edits:
        pos = where % (len(out) + 1)
        if op == "insert":
            out[pos:pos] = chunk
        elif op == "delete":
            del out[pos : pos + len(chunk)]
        else:
            out[pos : pos + len(chunk)] = chunk
    return bytes(out)


def hook(name: str, labels: Labels) -> tuple[str, Labels] | None:
    if name.startswith("etcd_debugging"):
        return None
    return name, (*labels, ("job", "x"))


SCENARIOS: dict[str, dict[str, Any]] = {
    "plain": {},
    "hook": {"on_new_series": hook, "keep_exemplars": True},
    "limits": {"sample_limit": 7, "label_limit": 4, "label_name_length_limit": 12,
               "label_value_length_limit": 40, "honor_timestamps": False},
}


def compare(body: bytes, content_type: str | None, scenario: str, warm_with: bytes | None) -> None:
    kwargs = SCENARIOS[scenario]
    py, c = PY_PARSER(**kwargs), C_PARSER(**kwargs)
    if warm_with is not None:
        assert outcome(py, warm_with, content_type) == outcome(c, warm_with, content_type)
    assert outcome(py, body, content_type) == outcome(c, body, content_type), body
    assert py.series.encoded == c.series.encoded
    assert py.series.hashes == c.series.hashes
    assert outcome(py, body, content_type) == outcome(c, body, content_type), body  # warm again


@FUZZ
@given(seed=st.sampled_from(SEEDS), edits=EDITS, om=st.booleans(), scenario=st.sampled_from(sorted(SCENARIOS)),
       warm=st.booleans())
def test_mutated_bodies_agree(seed: bytes, edits: list[tuple[int, str, bytes]], om: bool, scenario: str,
                              warm: bool) -> None:
    compare(mutate(seed, edits), OM if om else None, scenario, seed if warm else None)


_LINE_PARTS = st.sampled_from([b"a", b"b_total", b"c_bucket", b"{", b"}", b'x="', b'"', b'le="+Inf"', b",", b" ",
                               b"\t", b"1", b"-2.5e3", b"NaN", b"# TYPE a counter", b"# HELP a h", b"# EOF",
                               b" # {", b"\\", b"\\n", b"\n", b"1.5", b"_", b"=", b"0x1", b"9" * 25])


@FUZZ
@given(parts=st.lists(_LINE_PARTS, max_size=30), om=st.booleans(), scenario=st.sampled_from(sorted(SCENARIOS)))
def test_random_bodies_agree(parts: list[bytes], om: bool, scenario: str) -> None:
    compare(b"".join(parts), OM if om else None, scenario, None)


@FUZZ
@given(data=st.binary(max_size=200), om=st.booleans())
def test_random_bytes_agree(data: bytes, om: bool) -> None:
    compare(data, OM if om else None, "plain", None)


def _guarded_page() -> mmap.mmap | None:
    """Two pages of memory whose second page faults on any access (Linux), or None."""
    try:
        memory = mmap.mmap(-1, 2 * mmap.PAGESIZE)
        addr = ctypes.addressof(ctypes.c_char.from_buffer(memory))
        libc = ctypes.CDLL(None, use_errno=True)
        if libc.mprotect(ctypes.c_void_p(addr + mmap.PAGESIZE), mmap.PAGESIZE, 0) != 0:
            return None
    except (OSError, AttributeError, ValueError):
        return None
    return memory


GUARDED = _guarded_page()


@FUZZ
@given(seed=st.sampled_from(SEEDS), edits=EDITS, cut=st.integers(0, 4096), om=st.booleans(),
       scenario=st.sampled_from(sorted(SCENARIOS)))
def test_never_reads_past_the_end_of_the_body(seed: bytes, edits: list[tuple[int, str, bytes]], cut: int,
                                              om: bool, scenario: str) -> None:
    """The body ends right before a page that faults: a read past its end crashes the test run."""
    if GUARDED is None:
        pytest.skip("no mprotect here")
    body = mutate(seed, edits)[: min(cut, mmap.PAGESIZE)]
    start = mmap.PAGESIZE - len(body)
    GUARDED[start : mmap.PAGESIZE] = body
    view = memoryview(GUARDED)[start : mmap.PAGESIZE]
    try:
        kwargs = SCENARIOS[scenario]
        c = C_PARSER(**kwargs)
        got = outcome(c, view, OM if om else None)
        assert got == outcome(PY_PARSER(**kwargs), body, OM if om else None)
        assert outcome(c, view, OM if om else None) == got  # warm, from the same guarded bytes
    finally:
        view.release()
