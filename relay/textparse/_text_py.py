"""The pure-Python exposition parser: the readable reference twin of ``relay/textparse/_text_c.pyx``.

Two formats, chosen by :func:`relay.textparse.is_openmetrics` from the content type:

* Prometheus text 0.0.4 (lax, like Prometheus): blank lines and lines of blanks are skipped,
  leading blanks and blanks (spaces, tabs) between tokens and at the end are allowed, label sets
  may have blanks and a trailing comma; ``# HELP`` / ``# TYPE`` are metadata, any other ``#`` line
  is a comment. Timestamps are integer milliseconds.
* OpenMetrics 1.0 (strict, validated like prometheus-client's parser): single spaces, no blank
  lines, ``# EOF`` last, metadata before the samples of its family, family/group ordering,
  histogram and summary rules, exemplars. Timestamps are float seconds.

Everything a line needs beyond the hot loop (parsing a new series' labels, metadata, exemplars,
OpenMetrics family checks, error messages) lives here as small shared helpers; the Cython twin
imports and calls the very same ones, so both twins decide alike.

The series cache maps the raw bytes of a series text (``name{labels}`` exactly as written) to a
series id in the :class:`~relay.batch.SeriesTable`, or to :data:`DROPPED`. (The Cython twin keys
the same cache, and its set of comment lines seen, by a 128-bit hash of those bytes and keeps no
key bytes; the behaviour is the same.)
"""

from __future__ import annotations

import math
import re
import time
from array import array
from collections.abc import Callable

from .._exceptions import ParseError, ScrapeError
from ..batch import Batch, Family, Labels, SeriesTable

__all__ = [
    "DROPPED",
    "OpenMetricsChecker",
    "Parser",
    "SeriesResolver",
    "check_utf8",
    "default_timestamp",
    "describe_bad_line",
    "is_openmetrics",
    "parse_om_rest",
    "parse_series",
    "parse_value",
    "text_comment",
]

OnNewSeries = Callable[[str, Labels], "tuple[str, Labels] | None"]
Exemplar = tuple[Labels, float, "int | None"]

DROPPED = -1
"""Cache value of a series that ``on_new_series`` dropped."""

_INT64_MIN = -(1 << 63)
_INT64_MAX = (1 << 63) - 1

# One series text: a metric name and an optional label block whose first unquoted '}' ends it.
# (Loops are written unrolled, x*(?:y x*)*, which the re engine runs much faster than (?:x|y)*.)
_QUOTED = rb'"[^"\\]*(?:\\.[^"\\]*)*"'
_SERIES = rb'[a-zA-Z_:][a-zA-Z0-9_:]*(?:\{[^"}]*(?:' + _QUOTED + rb'[^"}]*)*\})?'
# A value or timestamp token: anything but blanks and '_' (float() would take '_' and strip blanks).
_TOKEN = rb"[^\s_]+"
_TEXT_LINE = re.compile(rb"[ \t]*(" + _SERIES + rb")[ \t]+(" + _TOKEN + rb")(?:[ \t]+(" + _TOKEN + rb"))?[ \t]*", re.S)
_OM_LINE = re.compile(rb"(" + _SERIES + rb") (" + _TOKEN + rb")(?: (.*))?", re.S)
_METRIC_NAME = re.compile(rb"[a-zA-Z_:][a-zA-Z0-9_:]*")
_VALUE = rb'"([^"\\]*(?:\\.[^"\\]*)*)"'
_TEXT_LABEL = re.compile(rb"[ \t]*([a-zA-Z_][a-zA-Z0-9_]*)[ \t]*=[ \t]*" + _VALUE + rb"[ \t]*", re.S)
_OM_LABEL = re.compile(rb"([a-zA-Z_][a-zA-Z0-9_]*)=" + _VALUE, re.S)
# A whole label block (between the braces). Text: blanks allowed around everything, trailing comma
# allowed. OpenMetrics: name="value" joined by single commas, nothing else.
_TEXT_BLOCK = re.compile(rb"[ \t]*(?:" + _TEXT_LABEL.pattern + rb"(?:," + _TEXT_LABEL.pattern + rb")*(?:,[ \t]*)?)?", re.S)
_OM_BLOCK = re.compile(rb"(?:" + _OM_LABEL.pattern + rb"(?:," + _OM_LABEL.pattern + rb")*)?", re.S)
_ESCAPE = re.compile(r"\\(.)", re.S)
_TEXT_INT = re.compile(rb"[+-]?[0-9]+")
_OM_DECIMAL_TS = re.compile(rb"([+-]?)([0-9]+)(?:\.([0-9]*))?")
_OM_COMMENT = re.compile(rb"# (HELP|TYPE|UNIT) ([a-zA-Z_:][a-zA-Z0-9_:]*) (.*)", re.S)
_TEXT_COMMENT = re.compile(rb"#[ \t]+(HELP|TYPE)(?:[ \t]+(.*))?", re.S)
_TEXT_NAME_REST = re.compile(rb"([^ \t]*)[ \t]*(.*)", re.S)

_TEXT_TYPES = {"counter": "counter", "gauge": "gauge", "histogram": "histogram", "summary": "summary",
               "untyped": "unknown"}
_OM_TYPES = frozenset(("counter", "gauge", "histogram", "gaugehistogram", "stateset", "info", "summary",
                       "unknown"))
_OM_SUFFIXES: dict[str, tuple[str, ...]] = {
    "counter": ("_total", "_created"),
    "summary": ("", "_count", "_sum", "_created"),
    "histogram": ("_count", "_sum", "_bucket", "_created"),
    "gaugehistogram": ("_gcount", "_gsum", "_bucket"),
    "info": ("_info",),
}
_LABEL_ESCAPES = {"\\": "\\", "n": "\n", '"': '"'}
_TEXT_HELP_ESCAPES = {"\\": "\\", "n": "\n"}


def is_openmetrics(content_type: str | None) -> bool:
    """True for ``application/openmetrics-text`` (any version/parameters), as Prometheus chooses."""
    if not content_type:
        return False
    return content_type.split(";", 1)[0].strip().lower() == "application/openmetrics-text"


def default_timestamp(timestamp_ms: int | None) -> int:
    """The timestamp given to samples without one: ``timestamp_ms``, else now in milliseconds."""
    return timestamp_ms if timestamp_ms is not None else time.time_ns() // 1_000_000


def check_utf8(body: bytes | bytearray | memoryview) -> None:
    """Raise :class:`ParseError` at the line of the first byte that is not valid UTF-8."""
    try:
        str(body, "utf-8")
    except UnicodeDecodeError as exc:
        line = bytes(body[: exc.start]).count(b"\n") + 1
        raise ParseError(line, f"invalid UTF-8 at byte {exc.start}") from None


def _unescape(text: bytes, table: dict[str, str]) -> str:
    s = text.decode()
    if "\\" not in s:
        return s
    return _ESCAPE.sub(lambda m: table.get(m.group(1), m.group(0)), s)


def parse_series(key: bytes, openmetrics: bool) -> tuple[str, Labels]:
    """``(name, labels sorted by name)`` of a series text ``name{labels}``; ValueError if invalid."""
    brace = key.find(b"{")
    raw_name = key if brace < 0 else key[:brace]
    if not _METRIC_NAME.fullmatch(raw_name):
        raise ValueError(f"invalid metric name {raw_name.decode(errors='replace')!r}")
    if brace < 0:
        return raw_name.decode(), ()
    if key[-1:] != b"}":
        raise ValueError("label set not closed with '}'")
    block = key[brace + 1 : -1]
    if not (_OM_BLOCK if openmetrics else _TEXT_BLOCK).fullmatch(block):
        raise ValueError(_describe_block(block, openmetrics))
    pairs = (_OM_LABEL if openmetrics else _TEXT_LABEL).findall(block)
    labels: dict[str, str] = {}
    if b"\\" in block:
        for k, v in pairs:
            _add_label(labels, k.decode(), _unescape(v, _LABEL_ESCAPES))
    else:
        for k, v in pairs:
            _add_label(labels, k.decode(), v.decode())
    return raw_name.decode(), tuple(sorted(labels.items()))


def _describe_block(block: bytes, openmetrics: bool) -> str:
    """What is wrong with a label block that does not match the grammar."""
    label = _OM_LABEL if openmetrics else _TEXT_LABEL
    pos = 0
    end = len(block)
    while True:
        if not openmetrics:
            while pos < end and block[pos] in b" \t":
                pos += 1
        if pos == end:
            return "trailing ',' in label set" if openmetrics and end else "invalid label set"
        m = label.match(block, pos)
        if m is None:
            return f"invalid label at {block[pos:pos + 20].decode(errors='replace')!r}"
        pos = m.end()
        if pos == end:
            return "invalid label set"
        if block[pos] != 0x2C:
            return "expected ',' between labels"
        pos += 1


def _add_label(labels: dict[str, str], name: str, value: str) -> None:
    if name == "__name__":
        raise ValueError("label __name__ in a label set (the metric name goes before '{')")
    if name in labels:
        raise ValueError(f"duplicate label {name!r}")
    labels[name] = value


def parse_value(token: bytes) -> float:
    """A sample value: what ``float()`` reads, minus blanks and '_'; ValueError if invalid."""
    return float(token)


def parse_text_timestamp(token: bytes) -> int:
    """Text-format timestamp: integer milliseconds that fit an int64."""
    if not _TEXT_INT.fullmatch(token):
        raise ValueError(f"invalid timestamp {token.decode(errors='replace')!r}")
    ts = int(token)
    if not _INT64_MIN <= ts <= _INT64_MAX:
        raise ValueError(f"timestamp out of range {token.decode()!r}")
    return ts


def parse_om_timestamp(token: bytes) -> int:
    """OpenMetrics timestamp: float seconds, returned as int milliseconds (truncated, saturated to int64)."""
    if not token or re.search(rb"[\s_]", token):
        raise ValueError(f"invalid timestamp {token.decode(errors='replace')!r}")
    m = _OM_DECIMAL_TS.fullmatch(token)
    if m is not None:
        sign, whole, frac = m.groups()
        ms = int(whole) * 1000 + int((frac or b"")[:3].ljust(3, b"0"))
        ts = -ms if sign == b"-" else ms
    else:
        try:
            seconds = float(token)
        except ValueError:
            raise ValueError(f"invalid timestamp {token.decode(errors='replace')!r}") from None
        if math.isnan(seconds) or math.isinf(seconds):
            raise ValueError(f"invalid timestamp {token.decode(errors='replace')!r}")
        ts = int(seconds * 1000)
    return min(max(ts, _INT64_MIN), _INT64_MAX)  # saturate, as the spec allows any float seconds


def _block_end(text: bytes, start: int) -> int:
    """Index just past the '}' closing the label block that opens at ``text[start] == '{'``; -1 if none."""
    pos = start + 1
    end = len(text)
    quoted = False
    while pos < end:
        c = text[pos]
        if quoted:
            if c == 0x5C:  # backslash
                pos += 1
            elif c == 0x22:
                quoted = False
        elif c == 0x22:
            quoted = True
        elif c == 0x7D:
            return pos + 1
        pos += 1
    return -1


def parse_om_rest(rest: bytes) -> tuple[int | None, Exemplar | None]:
    """What follows ``value `` on an OpenMetrics sample line: ``[timestamp] [# {labels} value [ts]]``."""
    if rest.startswith(b"# "):
        ts_token, exemplar_text = b"", rest[2:]
        timestamp = None
    else:
        ts_token, sep, tail = rest.partition(b" ")
        timestamp = parse_om_timestamp(ts_token)
        if not sep:
            return timestamp, None
        if not tail.startswith(b"# "):
            raise ValueError("expected '# ' before an exemplar")
        exemplar_text = tail[2:]
    if exemplar_text[:1] != b"{":
        raise ValueError("exemplar must start with '{'")
    stop = _block_end(exemplar_text, 0)
    if stop < 0:
        raise ValueError("exemplar label set not closed")
    _, labels = parse_series(b"x" + exemplar_text[:stop], True)
    if sum(len(k) + len(v) for k, v in labels) > 128:
        raise ValueError("exemplar labels longer than 128 characters")
    after = exemplar_text[stop:]
    if after[:1] != b" ":
        raise ValueError("expected ' ' before the exemplar value")
    value_token, sep, ts_tok = after[1:].partition(b" ")
    if not re.fullmatch(_TOKEN, value_token):
        raise ValueError(f"invalid exemplar value {value_token.decode(errors='replace')!r}")
    value = parse_value(value_token)
    ex_ts = parse_om_timestamp(ts_tok) if sep else None
    return timestamp, (labels, value, ex_ts)


def describe_bad_line(line: bytes, openmetrics: bool) -> str:
    """One line saying what is wrong with a sample line that did not parse."""
    text = line if openmetrics else line.lstrip(b" \t")
    m = re.match(rb"[a-zA-Z_:][a-zA-Z0-9_:]*", text)
    if m is None:
        return f"invalid metric name at {text[:40].decode(errors='replace')!r}"
    pos = m.end()
    if text[pos : pos + 1] == b"{":
        stop = _block_end(text, pos)
        if stop < 0:
            return "label set not closed with '}'"
        pos = stop
    rest = text[pos:]
    if not rest or rest[:1] not in (b" ", b"\t"):
        return "expected a blank and a value after the series"
    if openmetrics and not rest.startswith(b" "):
        return "expected a single space after the series"
    tokens = re.split(rb"[ \t]+", rest.strip(b" \t")) if not openmetrics else rest[1:].split(b" ", 1)
    value = tokens[0] if tokens else b""
    if not value or not re.fullmatch(_TOKEN, value):
        return f"invalid value {value.decode(errors='replace')!r}"
    return f"invalid line {text[:60].decode(errors='replace')!r}"


def text_comment(line: bytes, families: dict[str, Family]) -> bool:
    """Apply a text-format ``#`` line (blanks already stripped) to ``families``.

    Returns True when it changed metadata that was already set to something else (the caller's
    cache of comment lines is then stale). Raises ValueError for a malformed HELP/TYPE line.
    """
    m = _TEXT_COMMENT.fullmatch(line)
    if m is None:
        return False  # a plain comment
    kind = m.group(1)
    name_b, rest = _TEXT_NAME_REST.fullmatch(m.group(2) or b"").groups()  # type: ignore[union-attr]
    if not _METRIC_NAME.fullmatch(name_b):
        raise ValueError(f"{kind.decode()} line without a valid metric name")
    name = name_b.decode()
    old = families.get(name)
    if kind == b"HELP":
        help_text = _unescape(rest, _TEXT_HELP_ESCAPES)
        if old is None:
            families[name] = Family(name, "unknown", help_text)
            return False
        families[name] = Family(name, old.type, help_text, old.unit)
        return old.help not in ("", help_text)
    typ = _TEXT_TYPES.get(rest.rstrip(b" \t").decode())
    if typ is None:
        raise ValueError(f"invalid metric type {rest.decode()!r}")
    if old is None:
        families[name] = Family(name, typ)
        return False
    families[name] = Family(name, typ, old.help, old.unit)
    return old.type not in ("unknown", typ)


class SeriesResolver:
    """The slow path of a cache miss, shared by both twins: parse, check limits, hook, add."""

    __slots__ = ("label_limit", "name_limit", "on_new_series", "series", "value_limit")

    def __init__(self, series: SeriesTable, on_new_series: OnNewSeries | None, label_limit: int,
                 label_name_length_limit: int, label_value_length_limit: int) -> None:
        self.series = series
        self.on_new_series = on_new_series
        self.label_limit = label_limit
        self.name_limit = label_name_length_limit
        self.value_limit = label_value_length_limit

    def resolve(self, key: bytes, openmetrics: bool, line: int) -> tuple[int, tuple[str, Labels]]:
        """``(series id or DROPPED, (name, labels as parsed))`` of a new series text."""
        try:
            name, labels = parse_series(key, openmetrics)
        except ValueError as exc:
            raise ParseError(line, str(exc)) from None
        self.check_limits(name, labels)
        final: tuple[str, Labels] | None = (name, labels)
        if self.on_new_series is not None:
            final = self.on_new_series(name, labels)
        if final is None:
            return DROPPED, (name, labels)
        return self.series.add(final[0], final[1]), (name, labels)

    def check_limits(self, name: str, labels: Labels) -> None:
        """Raise :class:`ScrapeError` if the series breaks a label limit (``__name__`` counts)."""
        if self.label_limit > 0 and len(labels) + 1 > self.label_limit:
            raise ScrapeError("label_limit", f"series {name} has {len(labels) + 1} labels, "
                                             f"more than label_limit {self.label_limit}")
        if self.name_limit > 0:
            for k, _ in labels:
                if len(k.encode()) > self.name_limit:
                    raise ScrapeError("label_name_length_limit", f"label name {k!r} of series {name} "
                                      f"is longer than label_name_length_limit {self.name_limit}")
        if self.value_limit > 0:
            for k, v in (("__name__", name), *labels):
                if len(v.encode()) > self.value_limit:
                    raise ScrapeError("label_value_length_limit", f"value of label {k!r} of series "
                                      f"{name} is longer than label_value_length_limit {self.value_limit}")


def _parsed_om(key: bytes, parsed: dict[bytes, tuple[str, Labels]], line: int) -> tuple[str, Labels]:
    """``(name, labels)`` of a cached key first seen in a text-format body, checked as OpenMetrics."""
    try:
        info = parsed[key] = parse_series(key, True)
    except ValueError as exc:
        raise ParseError(line, str(exc)) from None
    return info


def _sample_value(token: bytes, lineno: int) -> float:
    """A sample line's value token as a float; ParseError naming the line and the token if invalid."""
    try:
        return float(token)
    except ValueError:
        raise ParseError(lineno, f"invalid value {token.decode(errors='replace')!r}") from None


def _sample_limit_error(limit: int) -> ScrapeError:
    return ScrapeError("sample_limit", f"more than sample_limit {limit} samples")


_HistSample = tuple[str, dict[str, str], float, "int | None"]


class OpenMetricsChecker:
    """OpenMetrics family rules, fed line by line (metadata, samples); shared by both twins."""

    def __init__(self, families: dict[str, Family]) -> None:
        self.families = families
        self.seen_names: set[str] = set()
        self.eof = False
        self.name: str | None = None
        self._start(None, None)

    def _start(self, name: str | None, typ: str | None) -> None:
        self.name = name
        self.typ = typ
        self.help: str | None = None
        self.unit: str | None = None
        self.allowed: tuple[str, ...] = (name,) if name is not None else ()
        self.samples: list[_HistSample] = []
        self.nsamples = 0
        self.group: tuple[tuple[str, str], ...] | None = None
        self.seen_groups: set[tuple[tuple[str, str], ...]] = set()
        self.group_ts: int | None = None
        self.group_series: set[tuple[str, Labels]] = set()

    def comment(self, line: bytes, lineno: int) -> None:
        """A ``#`` line other than ``# EOF``."""
        m = _OM_COMMENT.fullmatch(line)
        if m is None:
            raise ParseError(lineno, f"invalid metadata line {line[:60].decode(errors='replace')!r}")
        kind = m.group(1)
        name = m.group(2).decode()
        text = m.group(3)
        if name == self.name and self.nsamples:
            raise ParseError(lineno, f"metadata for {name} after its samples")
        if name != self.name:
            self._finish(lineno)
            self._start(name, None)
        if kind == b"HELP":
            if self.help is not None:
                raise ParseError(lineno, f"second HELP for {name}")
            self.help = _unescape(text, _LABEL_ESCAPES)
        elif kind == b"TYPE":
            if self.typ is not None:
                raise ParseError(lineno, f"second TYPE for {name}")
            typ = text.decode()
            if typ not in _OM_TYPES:
                raise ParseError(lineno, f"invalid metric type {typ!r}")
            self.typ = typ
            self.allowed = tuple(name + s for s in _OM_SUFFIXES.get(typ, ("",)))
        else:
            if self.unit is not None:
                raise ParseError(lineno, f"second UNIT for {name}")
            self.unit = text.decode()

    def sample(self, sname: str, labels: Labels, value: float, ts: int | None, exemplar: bool,
               lineno: int) -> None:
        """One sample line, after its syntax was checked."""
        try:
            self._sample(sname, labels, value, ts, exemplar, lineno)
        except ValueError as exc:
            raise ParseError(lineno, str(exc)) from None

    def _sample(self, sname: str, labels: Labels, value: float, ts: int | None, exemplar: bool,
                lineno: int) -> None:
        if sname not in self.allowed:
            self._finish(lineno)
            self._start(sname, "unknown")
        name = self.name
        assert name is not None
        typ = self.typ or "unknown"
        d = dict(labels)
        suffix = sname[len(name):]
        if typ == "stateset" and name not in d:
            raise ValueError(f"stateset sample without label {name!r}")
        if suffix == "_bucket":
            le = d.get("le", "NaN")
            if le == "NaN" or _uncanonical(le):
                raise ValueError(f"invalid le label {le!r}")
            if not value.is_integer():
                raise ValueError("bucket value must be an integer")
        if suffix in ("_count", "_gcount") and not value.is_integer():
            raise ValueError("count value must be an integer")
        if typ == "summary" and suffix == "":
            q = d.get("quantile", "-1")
            if not 0 <= float(q) <= 1 or _uncanonical(q):
                raise ValueError(f"invalid quantile label {q!r}")
        g = _group(sname, d, name, typ)
        if self.group is not None and g != self.group and g in self.seen_groups:
            raise ValueError("samples of a group are not together")
        if self.group is not None and g == self.group:
            if (ts is None) != (self.group_ts is None):
                raise ValueError("mix of samples with and without timestamp in a group")
            if self.group_ts is not None and ts is not None and self.group_ts > ts and typ != "info":
                raise ValueError("timestamps went backwards within a group")
        else:
            self.group_series = set()
        series_id = (sname, labels)
        if ts != self.group_ts or series_id not in self.group_series:
            self.samples.append((sname, d, value, ts))
        self.nsamples += 1
        self.group_series.add(series_id)
        self.group = g
        self.group_ts = ts
        self.seen_groups.add(g)
        if typ == "stateset" and value not in (0, 1):
            raise ValueError("stateset values must be 0 or 1")
        if typ == "info" and value != 1:
            raise ValueError("info values must be 1")
        if typ == "summary" and suffix == "" and value < 0:
            raise ValueError("quantile values cannot be negative")
        if suffix in ("_total", "_sum", "_count", "_bucket", "_gcount", "_gsum") and math.isnan(value):
            raise ValueError(f"{suffix} samples cannot be NaN")
        if suffix in ("_total", "_sum", "_count", "_bucket", "_gcount") and value < 0:
            raise ValueError(f"{suffix} samples cannot be negative")
        if exemplar and not ((typ in ("histogram", "gaugehistogram") and sname.endswith("_bucket"))
                             or (typ == "counter" and sname.endswith("_total"))):
            raise ValueError("only histogram buckets and counter totals can have exemplars")

    def _finish(self, lineno: int) -> None:
        name = self.name
        if name is None:
            return
        typ = self.typ or "unknown"
        for suffix in {*_OM_SUFFIXES.get(typ, ()), ""}:
            if name + suffix in self.seen_names:
                raise ParseError(lineno, f"clashing name {name + suffix}")
            self.seen_names.add(name + suffix)
        unit = self.unit or ""
        if unit and not name.endswith("_" + unit):
            raise ParseError(lineno, f"unit {unit!r} does not match metric name {name}")
        if unit and typ in ("info", "stateset"):
            raise ParseError(lineno, f"{typ} {name} cannot have a unit")
        if typ in ("histogram", "gaugehistogram"):
            try:
                _check_histogram(self.samples, name)
            except ValueError as exc:
                raise ParseError(lineno, str(exc)) from None
        if self.typ is not None or self.help is not None or self.unit is not None:
            self.families[name] = Family(name, typ, self.help or "", unit)
        self.name = None

    def end(self, lineno: int) -> None:
        """The body ended (after the last line, numbered ``lineno``)."""
        self._finish(lineno)
        if not self.eof:
            raise ParseError(lineno, "missing # EOF at the end")


def _uncanonical(number: str) -> bool:
    f = float(number)
    return f == math.inf and number != "+Inf"


def _group(sname: str, d: dict[str, str], name: str, typ: str) -> tuple[tuple[str, str], ...]:
    if typ == "info":
        return ()
    drop = None
    if typ == "summary" and sname == name:
        drop = "quantile"
    elif typ == "stateset":
        drop = name
    elif typ in ("histogram", "gaugehistogram") and sname == name + "_bucket":
        drop = "le"
    return tuple(sorted((k, v) for k, v in d.items() if k != drop))


def _check_histogram(samples: list[_HistSample], name: str) -> None:
    group: tuple[tuple[str, str], ...] | None = None
    timestamp: int | None = None
    count: float | None = None
    bucket: float | None = None
    last = 0.0
    neg_buckets = has_sum = has_gsum = neg_gsum = False

    def check() -> None:
        if bucket != math.inf:
            raise ValueError(f"+Inf bucket missing: {name}")
        if count is not None and last != count:
            raise ValueError(f"count does not match +Inf bucket: {name}")
        if has_sum and count is None:
            raise ValueError(f"_count must be present if _sum is present: {name}")
        if has_gsum and count is None:
            raise ValueError(f"_gcount must be present if _gsum is present: {name}")
        if not (has_sum or has_gsum) and count is not None:
            raise ValueError(f"_sum/_gsum must be present if _count is present: {name}")
        if neg_buckets and has_sum:
            raise ValueError(f"cannot have _sum with negative buckets: {name}")
        if not neg_buckets and neg_gsum:
            raise ValueError(f"cannot have negative _gsum with non-negative buckets: {name}")

    for sname, d, value, ts in samples:
        suffix = sname[len(name):]
        if not suffix:
            continue
        g = _group(sname, d, name, "histogram")
        if g != group or ts != timestamp:
            if group is not None:
                check()
            count = bucket = None
            neg_buckets = has_sum = has_gsum = neg_gsum = False
            last = 0.0
        group = g
        timestamp = ts
        if suffix == "_bucket":
            b = float(d["le"])
            if b < 0:
                neg_buckets = True
            if bucket is not None and b <= bucket:
                raise ValueError(f"buckets out of order: {name}")
            if value < last:
                raise ValueError(f"bucket values out of order: {name}")
            bucket = b
            last = value
        elif suffix in ("_count", "_gcount"):
            count = value
        elif suffix == "_sum":
            has_sum = True
        elif suffix == "_gsum":
            has_gsum = True
            if value < 0:
                neg_gsum = True
    if group is not None:
        check()


class Parser:
    """Parses exposition bodies of one target into :class:`~relay.batch.Batch` es (pure Python).

    Keep one per target: its cache turns the raw series text into a series id without re-parsing
    labels on later scrapes.

        >>> p = Parser()
        >>> batch = p.parse(b'up{job="etcd"} 1\\n', timestamp_ms=1000)
        >>> list(batch.samples())
        [('up', (('job', 'etcd'),), 1.0, 1000)]
    """

    def __init__(self, *, series: SeriesTable | None = None, on_new_series: OnNewSeries | None = None,
                 keep_exemplars: bool = False, honor_timestamps: bool = True, sample_limit: int = 0,
                 label_limit: int = 0, label_name_length_limit: int = 0,
                 label_value_length_limit: int = 0) -> None:
        self.series: SeriesTable = series if series is not None else SeriesTable()
        self.families: dict[str, Family] = {}
        self.keep_exemplars = keep_exemplars
        self.honor_timestamps = honor_timestamps
        self.sample_limit = sample_limit
        self.last_dropped = 0
        """Samples of the last parse whose series ``on_new_series`` dropped."""
        self._resolver = SeriesResolver(self.series, on_new_series, label_limit, label_name_length_limit,
                                        label_value_length_limit)
        self._cache: dict[bytes, int] = {}
        self._parsed: dict[bytes, tuple[str, Labels]] = {}  # (name, labels) per key, OpenMetrics only
        self._comments: set[bytes] = set()

    def __len__(self) -> int:
        return len(self._cache)

    def forget(self) -> None:
        """Drop the series cache (the series table and its ids stay)."""
        self._cache.clear()
        self._parsed.clear()
        self._comments.clear()

    def parse(self, body: bytes | bytearray | memoryview, content_type: str | None = None,
              timestamp_ms: int | None = None) -> Batch:
        """Parse one body; raises :class:`ParseError` (bad body) or :class:`ScrapeError` (limits)."""
        data = body if isinstance(body, bytes) else bytes(body)
        if not data.isascii():
            check_utf8(data)
        default_ts = default_timestamp(timestamp_ms)
        self.last_dropped = 0
        ids: list[int] = []
        values: list[float] = []
        stamps: list[int] = []
        exemplars: list[tuple[int, Labels, float, int | None]] = []
        before = len(self.series)
        if not self._cache:  # a cold parse: size the table's index for the body's sample lines
            self.series.reserve(before + data.count(b"\n") + 1 - data.count(b"\n#") - data.startswith(b"#"))
        if is_openmetrics(content_type):
            self._parse_om(data, default_ts, ids, values, stamps, exemplars)
        else:
            self._parse_text(data, default_ts, ids, values, stamps)
        added = len(self.series) - before
        if added and added * 8 >= len(self.series):
            self.series.compact()
        batch = Batch(self.series, array("I", ids), array("d", values), array("q", stamps), dict(self.families))
        batch.exemplars = exemplars
        return batch

    def _parse_text(self, data: bytes, default_ts: int, ids: list[int], values: list[float],
                    stamps: list[int]) -> None:
        match = _TEXT_LINE.fullmatch
        cache = self._cache
        honor = self.honor_timestamps
        limit = self.sample_limit
        for lineno, line in enumerate(data.split(b"\n"), 1):
            m = match(line)
            if m is None:
                s = line.lstrip(b" \t")
                if not s:
                    continue
                if s[0] == 0x23:  # '#'
                    if s not in self._comments:
                        try:
                            stale = text_comment(s, self.families)
                        except ValueError as exc:
                            raise ParseError(lineno, str(exc)) from None
                        if stale:
                            self._comments.clear()
                        self._comments.add(s)
                    continue
                raise ParseError(lineno, describe_bad_line(line, False))
            key, vtok, ttok = m.groups()
            value = _sample_value(vtok, lineno)
            ts = default_ts
            if ttok is not None:
                try:
                    parsed_ts = parse_text_timestamp(ttok)
                except ValueError as exc:
                    raise ParseError(lineno, str(exc)) from None
                if honor:
                    ts = parsed_ts
            sid = cache.get(key)
            if sid is None:
                sid = cache[key] = self._resolver.resolve(key, False, lineno)[0]
            if sid < 0:
                self.last_dropped += 1
                continue
            ids.append(sid)
            values.append(value)
            stamps.append(ts)
            if limit and len(ids) > limit:
                raise _sample_limit_error(limit)

    def _parse_om(self, data: bytes, default_ts: int, ids: list[int], values: list[float],
                  stamps: list[int], exemplars: list[tuple[int, Labels, float, int | None]]) -> None:
        lines = data.split(b"\n")
        if lines[-1] == b"":
            lines.pop()
        checker = OpenMetricsChecker(self.families)
        cache = self._cache
        parsed = self._parsed
        honor = self.honor_timestamps
        limit = self.sample_limit
        lineno = 0
        for lineno, line in enumerate(lines, 1):
            if checker.eof:
                raise ParseError(lineno, "text after # EOF")
            if line == b"# EOF":
                checker.eof = True
                continue
            if not line:
                raise ParseError(lineno, "blank line")
            if line[0] == 0x23:
                checker.comment(line, lineno)
                continue
            m = _OM_LINE.fullmatch(line)
            if m is None:
                raise ParseError(lineno, describe_bad_line(line, True))
            key, vtok, rest = m.groups()
            value = _sample_value(vtok, lineno)
            ts: int | None = None
            exemplar: Exemplar | None = None
            if rest is not None:
                try:
                    ts, exemplar = parse_om_rest(rest)
                except ValueError as exc:
                    raise ParseError(lineno, str(exc)) from None
            sid = cache.get(key)
            if sid is None:
                sid, info = self._resolver.resolve(key, True, lineno)
                cache[key] = sid
                parsed[key] = info
            else:
                info = parsed.get(key) or _parsed_om(key, parsed, lineno)
            checker.sample(info[0], info[1], value, ts, exemplar is not None, lineno)
            if sid < 0:
                self.last_dropped += 1
                continue
            if exemplar is not None and self.keep_exemplars:
                exemplars.append((len(ids), *exemplar))
            ids.append(sid)
            values.append(value)
            stamps.append(ts if ts is not None and honor else default_ts)
            if limit and len(ids) > limit:
                raise _sample_limit_error(limit)
        checker.end(lineno)
