"""Coverage-guided differential fuzzing of the exposition parser: the Cython twin against the Python one.

    nice -n 19 .venv/bin/python tests/fuzz/fuzz_parse.py --seconds 600      # atheris (libFuzzer)
    .venv/bin/python tests/fuzz/fuzz_parse.py --replay tests/fuzz/corpus     # run inputs once
    nice -n 19 .venv/bin/python tests/fuzz/fuzz_parse.py --merge             # keep the new finds

Without atheris (or with ``--random``) it runs a plain random mutation session instead.

An input is one byte of set-up, one byte of cut, and body bytes:

- byte 0, bit 0: the content type (OpenMetrics 1.0.0, else text 0.0.4); bits 1 up: the parser
  set-up, one of ``SETUPS`` (no hook; the target's ``LabelMerge``, also with honor_labels, with
  limits, with keep/drop metric_relabel_configs and with rewriting ones; a Python hook that drops
  and adds labels, with exemplars kept; limits);
- byte 1: where to cut the rest into a first and a second body (0: a single body);
- the rest: the body bytes, anything at all.

For every input each twin parses the first body cold, again warm (from a ``memoryview``), then, with
a cut, the second body warm and the first once more. After every step the two twins must have the
same outcome (the same samples with the exact bits of their values and timestamps, series ids,
exemplars, families, series count, dropped count; or the same ParseError line / ScrapeError reason)
and the same series table (encoded labels and hashes). Any other exception is a crash. A warm parse
must also give the same samples (or error) as a fresh parser given the same body.

Coverage comes from the Python twin (instrumented by atheris); the Cython twin is not instrumented,
but shares its structure, and every input runs through it. A crash in C is caught by libFuzzer.
Inputs that fail are written to ``--artifacts`` (default /tmp/relay-fuzz/artifacts/).
"""

from __future__ import annotations

import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]

if __name__ == "__main__":  # run as a script: make `relay` and `tests` importable, instrument the twin
    sys.path.insert(0, str(REPO))
    try:
        import atheris
    except ImportError:
        pass
    else:
        if "--replay" not in sys.argv and "--random" not in sys.argv:
            with atheris.instrument_imports(include=["relay"]):
                pass

import argparse  # noqa: E402
import importlib  # noqa: E402
import random  # noqa: E402
import time  # noqa: E402
from collections.abc import Callable, Iterable, Iterator  # noqa: E402
from typing import Any  # noqa: E402

from relay._ext import NO_EXTENSIONS  # noqa: E402
from relay.batch import Labels  # noqa: E402
from relay.labels import LabelMerge  # noqa: E402
from relay.relabel import Relabeler, parse_relabel_configs  # noqa: E402
from relay.textparse import _text_py  # noqa: E402
from tests.fuzz.twins import outcome, series_state  # noqa: E402

CORPUS = Path(__file__).resolve().parent / "corpus"
DATA = REPO / "tests" / "data"
OM = "application/openmetrics-text; version=1.0.0"
TEXT = "text/plain; version=0.0.4; charset=utf-8"


def drop_and_add(name: str, labels: Labels) -> tuple[str, Labels] | None:
    """A Python ``on_new_series`` hook: drops a family, adds a label to the rest."""
    if name.startswith("etcd_debugging") or name.startswith("b"):
        return None
    return name, (*labels, ("job", "x"))


def _label_merge() -> Any:
    return LabelMerge((("instance", "a:1"), ("job", "etcd")), False, (("cluster", "c"),))


# metric_relabel_configs: keep/drop rules only (the twins decide a series from the labels the rules
# read, the Cython one in C), and rules that rewrite (run per new series in Python).
FILTER_RULES = parse_relabel_configs([
    {"source_labels": ["__name__"], "regex": "b.*|go_.*|etcd_debugging.*", "action": "drop"},
    {"source_labels": ["a"], "regex": "1|x.*|\\\\.*", "action": "drop"},
    {"source_labels": ["job", "le"], "regex": "etcd;(|0.*|\\+Inf|1)", "action": "keep"},
], "metric_relabel_configs")
REWRITE_RULES = parse_relabel_configs([
    {"source_labels": ["__name__"], "regex": "b.*", "action": "drop"},
    {"source_labels": ["a"], "target_label": "copied", "regex": "(.+)", "replacement": "$1-$1"},
    {"regex": "le", "action": "labeldrop"},
], "metric_relabel_configs")


def _filtered_merge() -> Any:
    return LabelMerge((("instance", "a:1"), ("job", "etcd")), False, (("cluster", "c"),),
                                Relabeler(FILTER_RULES))


def _rewriting_merge() -> Any:
    return LabelMerge((("instance", "a:1"), ("job", "etcd")), False, (("cluster", "c"),),
                                Relabeler(REWRITE_RULES))


#: Parser set-ups, selected by byte 0 of an input; each call makes fresh keyword arguments
#: (a LabelMerge counts its calls, so each parser gets its own).
SETUPS: list[tuple[str, Callable[[], dict[str, Any]]]] = [
    ("plain", dict),
    ("label-merge", lambda: {"on_new_series": _label_merge()}),
    ("hook", lambda: {"on_new_series": drop_and_add, "keep_exemplars": True}),
    ("limits", lambda: {"sample_limit": 7, "label_limit": 4, "label_name_length_limit": 12,
                        "label_value_length_limit": 40, "honor_timestamps": False}),
    ("label-merge-honor", lambda: {"on_new_series": LabelMerge(
        (("instance", "a:1"), ("job", "etcd")), True, (("cluster", "c"), ("job", "ext"))), "keep_exemplars": True}),
    ("label-merge-limits", lambda: {"on_new_series": _label_merge(), "sample_limit": 50, "label_limit": 6}),
    ("label-merge-filter", lambda: {"on_new_series": _filtered_merge()}),
    ("label-merge-rewrite", lambda: {"on_new_series": _rewriting_merge(), "keep_exemplars": True}),
]


def twins() -> list[Callable[..., Any]]:
    """The Parser classes to compare: the Python twin, and the Cython one unless extensions are off."""
    if NO_EXTENSIONS:
        return [_text_py.Parser]
    return [_text_py.Parser, importlib.import_module("relay.textparse._text_c").Parser]  # a missing build fails


PARSERS = twins()


class Mismatch(AssertionError):
    """The twins disagreed, or a warm parser disagreed with a fresh one."""


def decode(data: bytes) -> tuple[str | None, int, bytes, bytes | None]:
    """An input as (content type, set-up index, first body, second body or None)."""
    if len(data) < 2:
        return TEXT, 0, data, None
    flags, cut, body = data[0], data[1], data[2:]
    content_type = OM if flags & 1 else TEXT
    setup = (flags >> 1) % len(SETUPS)
    if cut == 0:
        return content_type, setup, body, None
    at = len(body) * cut // 256
    return content_type, setup, body[:at], body[at:]


def encode(content_type: str | None, setup: int, first: bytes, second: bytes | None = None) -> bytes:
    """The input that `decode` reads back as these bodies (the cut is approximate for long bodies)."""
    flags = (1 if content_type == OM else 0) | (setup << 1)
    if second is None:
        return bytes([flags, 0]) + first
    total = len(first) + len(second)
    cut = max(1, min(255, (len(first) * 256 + total - 1) // total)) if total else 1
    return bytes([flags, cut]) + first + second


def _agree(step: str, results: list[Any], parsers: list[Any], data: bytes) -> Any:
    first = results[0]
    for other in results[1:]:
        if other != first:
            raise Mismatch(f"twins disagree at {step}: py={first!r:.400} c={other!r:.400} input={data!r:.300}")
    states = [series_state(p) for p in parsers]
    for other in states[1:]:
        if other != states[0]:
            raise Mismatch(f"twins' series tables differ at {step}: input={data!r:.300}")
    return first


def _samples_or_error(result: tuple[Any, ...]) -> tuple[Any, ...]:
    return result[:2]  # ("ok", rows) or (error kind, line / reason)


def check_input(data: bytes, parsers: list[Callable[..., Any]] | None = None) -> str:
    """Run one input through every twin; raise Mismatch on any disagreement. Returns the outcome kind."""
    impls = PARSERS if parsers is None else parsers
    content_type, setup, first, second = decode(data)
    make_kwargs = SETUPS[setup][1]
    live = [impl(**make_kwargs()) for impl in impls]
    steps: list[tuple[str, bytes]] = [("cold", first), ("warm", first)]
    if second is not None:
        steps += [("second body, warm", second), ("first body again", first)]
    kind = ""
    for i, (step, body) in enumerate(steps):
        view: bytes | memoryview = memoryview(bytearray(body)) if i % 2 else body
        got = _agree(step, [outcome(p, view, content_type) for p in live], live, data)
        kind = kind or got[0]
        if i:  # a warm parser reads a body as a fresh one does
            fresh = outcome(impls[0](**make_kwargs()), body, content_type)
            if _samples_or_error(fresh) != _samples_or_error(got):
                raise Mismatch(f"warm parse differs from a fresh one at {step}: warm={got[:2]!r:.400} "
                               f"fresh={fresh[:2]!r:.400} input={data!r:.300}")
    return kind


# -- seeds, mutations, corpus ------------------------------------------------------------------


def seeds() -> list[bytes]:
    """Starting inputs: slices of the real etcd bodies and every OpenMetrics conformance case,
    spread over the set-ups and content types, some cut into two bodies."""
    bodies: list[tuple[str, bytes]] = []
    for path in sorted((DATA / "etcd-metrics").glob("*.prom")):
        lines = path.read_bytes().split(b"\n")
        for start in range(0, len(lines), 61):
            bodies.append((TEXT, b"\n".join(lines[start : start + 16]) + b"\n"))
    for case in sorted(p for p in (DATA / "openmetrics-testdata" / "parsers").iterdir() if p.is_dir()):
        bodies.append((OM, (case / "metrics").read_bytes()[:4096]))
    out = []
    for i, (content_type, body) in enumerate(bodies):
        setup = i % len(SETUPS)
        out.append(encode(content_type, setup, body))
        lines = body.split(b"\n")
        half = b"\n".join(lines[: len(lines) // 2]) + b"\n"
        out.append(encode(OM if content_type == TEXT else TEXT, (setup + 1) % len(SETUPS), half, body))
    return out


def big_seeds() -> list[bytes]:
    """Whole etcd bodies (150 to 250 KB), under every set-up: for runs that need a whole body (cache
    and table growth, many series at once), too slow for libFuzzer's pace."""
    out = []
    for i, path in enumerate(sorted((DATA / "etcd-metrics").glob("*.prom"))):
        body = path.read_bytes()
        for setup in range(len(SETUPS)):
            out.append(encode(OM if (i + setup) % 4 == 0 else TEXT, setup, body))
    return out


TOKENS = [b" ", b"\t", b"\n", b"{", b"}", b'"', b"\\", b",", b"=", b"#", b"_", b".", b"e", b"E", b"+", b"-", b"0",
          b"9", b"NaN", b"Inf", b"\x00", b"\r", b"\x0b", "é".encode(), b"\xff", b"\xc3", b"# EOF\n", b"le", b'="',
          b"a", b" # {", b"_total", b"_bucket", b"_created", b"# TYPE ", b"# HELP ", b"# UNIT ", b" counter",
          b" histogram", b" gauge", b" summary", b" info", b" stateset", b" gaugehistogram", b'le="+Inf"',
          b'quantile="0.5"', b"job", b"instance", b"cluster", b"exported_job", b'job=""', b"9" * 20, b"1e309",
          b"0x1p3", b"1_000", b"-0", b"\\n", b'\\"', b"\\\\"]


def dictionary() -> list[bytes]:
    return TOKENS


def mutate(data: bytes, rng: random.Random, pool: list[bytes]) -> bytes:
    """A few random edits: token inserts, deletes, replaces, byte flips, splices from another input."""
    out = bytearray(data)
    for _ in range(rng.randint(1, 6)):
        pos = rng.randint(0, len(out))
        op = rng.randrange(6)
        if op == 0:
            out[pos:pos] = rng.choice(TOKENS)
        elif op == 1:
            del out[pos : pos + rng.randint(1, 16)]
        elif op == 2:
            token = rng.choice(TOKENS)
            out[pos : pos + len(token)] = token
        elif op == 3 and out:
            out[min(pos, len(out) - 1)] ^= 1 << rng.randrange(8)
        elif op == 4:
            other = rng.choice(pool)
            start = rng.randint(0, len(other))
            out[pos:pos] = other[start : start + rng.randint(1, 200)]
        elif op == 5 and len(out) > 2:
            line_start = out.rfind(b"\n", 2, pos) + 1 or 2
            line_end = out.find(b"\n", pos)
            if line_end > line_start:
                out[line_end + 1 : line_end + 1] = out[line_start : line_end + 1]  # repeat a line
    if out and rng.random() < 0.2:
        out[0] = rng.randrange(256)
    if len(out) > 1 and rng.random() < 0.2:
        out[1] = rng.choice([0, rng.randrange(256)])
    return bytes(out[: max(8192, 2 * len(data))])


def corpus_files(folder: Path = CORPUS) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.is_file() and not p.name.startswith(".")) if folder.exists() else []


def random_session(seconds: float, seed: int, pool: list[bytes] | None = None,
                   parsers: list[Callable[..., Any]] | None = None) -> Iterator[tuple[bytes, str]]:
    """Plain random mutation for `seconds` (no coverage feedback); yields each input and its outcome kind."""
    rng = random.Random(seed)
    base = pool if pool is not None else [*seeds(), *(p.read_bytes() for p in corpus_files())]
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        data = mutate(rng.choice(base), rng, base)
        yield data, check_input(data, parsers)


# -- command line --------------------------------------------------------------------------------


def _write_seeds(folder: Path) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for i, data in enumerate(seeds()):
        (folder / f"seed-{i:04d}").write_bytes(data)


def _write_dict(path: Path) -> None:
    lines = ['"' + "".join(f"\\x{b:02x}" for b in token) + '"' for token in dictionary()]
    path.write_text("\n".join(lines) + "\n")


def _replay(paths: Iterable[Path]) -> int:
    counts: dict[str, int] = {}
    for path in paths:
        files = corpus_files(path) if path.is_dir() else [path]
        for f in files:
            kind = check_input(f.read_bytes())
            counts[kind] = counts.get(kind, 0) + 1
    print(f"replayed {sum(counts.values())} inputs through {len(PARSERS)} twin(s): {counts}")
    return 0


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0] if __doc__ else None)
    ap.add_argument("--seconds", type=float, default=60.0, help="how long to fuzz (default 60)")
    ap.add_argument("--work", type=Path, default=Path("/tmp/relay-fuzz"),
                    help="folder of the growing corpus, seeds and artifacts (default /tmp/relay-fuzz)")
    ap.add_argument("--max-len", type=int, default=4096, help="longest input libFuzzer makes (default 4096)")
    ap.add_argument("--seed", type=int, default=0, help="random seed (0: libFuzzer picks; --random: time)")
    ap.add_argument("--random", action="store_true", help="plain random mutation, without atheris")
    ap.add_argument("--big", action="store_true",
                    help="with --random: mutate whole etcd bodies (slow inputs; cache and table growth)")
    ap.add_argument("--replay", nargs="+", type=Path, metavar="PATH", help="run these inputs (or folders) once")
    ap.add_argument("--merge", action="store_true",
                    help="merge the work corpus into tests/fuzz/corpus (only inputs that add coverage)")
    ap.add_argument("--merge-max-len", type=int, default=1024, help="longest input kept by --merge (default 1024)")
    args, extra = ap.parse_known_args(argv)
    if NO_EXTENSIONS:
        print("RELAY_NO_EXTENSIONS=1: only the Python twin runs (crashes and warm/fresh checks, no comparison)")
    if args.replay:
        return _replay(args.replay)
    try:
        import atheris
    except ImportError:
        atheris = None
    if args.random or atheris is None:
        seed = args.seed or int(time.time())
        started = time.monotonic()
        n = 0
        kinds: dict[str, int] = {}
        for _, kind in random_session(args.seconds, seed, big_seeds() if args.big else None):
            n += 1
            kinds[kind] = kinds.get(kind, 0) + 1
        print(f"random session{' (whole bodies)' if args.big else ''}: seed {seed}, {n} inputs in "
              f"{time.monotonic() - started:.0f}s, outcomes {kinds}, no crash, no disagreement")
        return 0
    work = args.work
    grown, seed_dir, artifacts = work / "corpus", work / "seeds", work / "artifacts"
    for folder in (grown, artifacts):
        folder.mkdir(parents=True, exist_ok=True)
    _write_seeds(seed_dir)
    _write_dict(work / "parse.dict")
    if args.merge:
        CORPUS.mkdir(exist_ok=True)
        flags = ["-merge=1", f"-max_len={args.merge_max_len}", str(CORPUS), str(grown), str(seed_dir)]
    else:
        flags = [f"-max_total_time={int(args.seconds)}", f"-max_len={args.max_len}", f"-dict={work / 'parse.dict'}",
                 f"-artifact_prefix={artifacts}/", "-print_final_stats=1", "-timeout=30", "-rss_limit_mb=4096",
                 str(grown), str(seed_dir), *([str(CORPUS)] if CORPUS.exists() else [])]
        if args.seed:
            flags.append(f"-seed={args.seed}")
    # libFuzzer runs argv[0] itself for -merge, -fork and -jobs: a wrapper that starts this script
    # with this interpreter.
    wrapper = work / "fuzz_parse.sh"
    wrapper.write_text(f'#!/bin/sh\nexec "{sys.executable}" "{Path(__file__).resolve()}" "$@"\n')
    wrapper.chmod(0o755)
    atheris.Setup([str(wrapper), *flags, *extra], lambda data: check_input(bytes(data)))
    atheris.Fuzz()
    return 0  # not reached: libFuzzer exits


if __name__ == "__main__":
    sys.exit(main())
