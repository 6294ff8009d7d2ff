"""The parser fuzz harness in the test suite: the kept corpus replayed through both twins, a short
random session, and a few seconds of the atheris harness itself (tests/fuzz/fuzz_parse.py).

With ``RELAY_NO_EXTENSIONS=1`` only the Python twin runs (crash and warm-versus-fresh checks); the
comparisons with the Cython twin skip.
"""

from __future__ import annotations

import os
import struct
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from relay.textparse import _text_py
from tests.fuzz import fuzz_parse
from tests.fuzz.fuzz_parse import (
    CORPUS,
    OM,
    SETUPS,
    TEXT,
    Mismatch,
    check_input,
    corpus_files,
    decode,
    encode,
)
from tests.test_parse import load_impl


def test_corpus_is_kept_small_and_replays_identically() -> None:
    files = corpus_files()
    assert len(files) >= 100, f"the kept corpus {CORPUS} is missing"
    assert sum(f.stat().st_size for f in files) < 400_000
    kinds: dict[str, int] = {}
    for f in files:
        kind = check_input(f.read_bytes())
        kinds[kind] = kinds.get(kind, 0) + 1
    assert set(kinds) <= {"ok", "ParseError", "ScrapeError"}
    assert kinds.get("ok", 0) > len(files) // 10, kinds  # not only broken bodies


@pytest.mark.parametrize("setup", range(len(SETUPS)), ids=[name for name, _ in SETUPS])
@pytest.mark.parametrize("content_type", [TEXT, OM], ids=["text", "om"])
def test_corpus_bodies_under_every_setup(setup: int, content_type: str) -> None:
    """Each kept body again with every content type and parser set-up (a sample, to stay quick)."""
    for f in corpus_files()[::7]:
        _, _, first, second = decode(f.read_bytes())
        check_input(encode(content_type, setup, first, second))


def test_short_random_session() -> None:
    seed = int(os.environ.get("RELAY_FUZZ_SEED", "0")) or int(time.time())
    n = 0
    try:
        for _ in fuzz_parse.random_session(float(os.environ.get("RELAY_FUZZ_SECONDS", "3")), seed):
            n += 1
    except Mismatch as exc:
        raise AssertionError(f"random session with RELAY_FUZZ_SEED={seed}: {exc}") from None
    assert n > 100


def test_both_twins_are_compared() -> None:
    c_parser = load_impl("c")  # skips with RELAY_NO_EXTENSIONS=1
    assert [_text_py.Parser, c_parser] == fuzz_parse.PARSERS


class _OffByOneBit:
    """A Python twin whose values differ in their last bit: the harness must notice."""

    def __init__(self, **kwargs: Any) -> None:
        self.inner = _text_py.Parser(**kwargs)
        self.series = self.inner.series
        self.last_dropped = 0

    def __len__(self) -> int:
        return len(self.inner)

    def parse(self, body: Any, content_type: str | None, ts: int) -> Any:
        batch = self.inner.parse(body, content_type, ts)
        self.last_dropped = self.inner.last_dropped
        for i, v in enumerate(batch.values):
            (bits,) = struct.unpack("<Q", struct.pack("<d", v))
            (batch.values[i],) = struct.unpack("<d", struct.pack("<Q", bits ^ 1))
        return batch


def test_the_harness_sees_a_disagreement() -> None:
    data = encode(TEXT, 1, b'a{b="c"} 1.5\n')
    assert check_input(data, [_text_py.Parser, _text_py.Parser]) == "ok"
    with pytest.raises(Mismatch, match="twins disagree at cold"):
        check_input(data, [_text_py.Parser, _OffByOneBit])


def test_fuzz_script_runs_under_atheris(tmp_path: Path) -> None:
    pytest.importorskip("atheris")  # in the test extra; the random session above runs without it
    proc = subprocess.run(
        ["nice", "-n", "19", sys.executable, str(Path(fuzz_parse.__file__)), "--seconds", "3",
         "--work", str(tmp_path)],
        capture_output=True, text=True, timeout=120,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    runs = [line for line in proc.stderr.splitlines() if line.startswith("stat::number_of_executed_units:")]
    assert runs and int(runs[0].split()[-1]) > len(fuzz_parse.seeds()), proc.stderr[-3000:]
    assert not any((tmp_path / "artifacts").iterdir())
