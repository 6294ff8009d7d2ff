"""The pure-Python exposition parser: the readable reference twin of ``relay/textparse/_text_c.pyx``.

Two formats, chosen by :func:`relay.textparse.is_openmetrics` from the content type:

* Prometheus text 0.0.4 (lax, like Prometheus 3): blank lines and lines of blanks are skipped,
  leading blanks and blanks (spaces, tabs) between tokens and at the end are allowed, also between
  the metric name and ``{``, and none is needed between ``}`` and the value; label sets may have
  blanks and a trailing comma; ``# HELP`` / ``# TYPE`` are metadata, any other ``#`` line is a
  comment. Timestamps are integer milliseconds.
* In both: metric and label names may be quoted UTF-8 (``{"my.metric", "label.name"="v"}``), the
  metric name then an item of the label set alone; ``# HELP``/``# TYPE`` names too.
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

import functools
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

# One series text: a metric name and an optional label block whose first unquoted '}' ends it, or a
# label block alone (a quoted metric name inside: `{"my.metric", a="b"}`). The text format allows
# blanks between the name and '{'. (Loops are written unrolled, x*(?:y x*)*, which the re engine runs
# much faster than (?:x|y)*.)
_NAME = rb"[a-zA-Z_:][a-zA-Z0-9_:]*"
_QUOTED = rb'"[^"\\]*(?:\\.[^"\\]*)*"'
_BLOCK = rb'\{[^"}]*(?:' + _QUOTED + rb'[^"}]*)*\}'
_TEXT_SERIES = rb"(?:" + _NAME + rb"(?:[ \t]*" + _BLOCK + rb")?|" + _BLOCK + rb")"
_OM_SERIES = rb"(?:" + _NAME + rb"(?:" + _BLOCK + rb")?|" + _BLOCK + rb")"
# A value or timestamp token: anything but blanks, '_' (float() would take '_' and strip blanks)
# and '{' (which Prometheus' lexer never puts in a value).
_TOKEN = rb"[^\s_{]+"
# Text: after a label block the value may follow without a blank (`a{b="c"}1`), after a bare name not.
_TEXT_LINE = re.compile(rb"[ \t]*(" + _TEXT_SERIES + rb")(?:(?<=\})[ \t]*|[ \t]+)(" + _TOKEN + rb")(?:[ \t]+("
                        + _TOKEN + rb"))?[ \t]*", re.S)
_OM_LINE = re.compile(rb"(" + _OM_SERIES + rb") (" + _TOKEN + rb")(?: (.*))?", re.S)
_METRIC_NAME = re.compile(_NAME)
_LABEL_NAME_STR = re.compile(r"[a-zA-Z_][a-zA-Z0-9_]*")
_METRIC_NAME_STR = re.compile(r"[a-zA-Z_:][a-zA-Z0-9_:]*")
_VALUE = rb'"([^"\\]*(?:\\.[^"\\]*)*)"'
_TEXT_LABEL = re.compile(rb"[ \t]*([a-zA-Z_][a-zA-Z0-9_]*)[ \t]*=[ \t]*" + _VALUE + rb"[ \t]*", re.S)
_OM_LABEL = re.compile(rb"([a-zA-Z_][a-zA-Z0-9_]*)=" + _VALUE, re.S)
_LABEL_NAME = re.compile(rb"[a-zA-Z_][a-zA-Z0-9_]*")
# A whole label block (between the braces) of unquoted names: the usual case, one regex. Text: blanks
# allowed around everything, trailing comma allowed. OpenMetrics: name="value" joined by single
# commas, nothing else. Anything else (quoted names, errors) goes through _scan_block.
_TEXT_BLOCK = re.compile(rb"[ \t]*(?:" + _TEXT_LABEL.pattern + rb"(?:," + _TEXT_LABEL.pattern + rb")*(?:,[ \t]*)?)?", re.S)
_OM_BLOCK = re.compile(rb"(?:" + _OM_LABEL.pattern + rb"(?:," + _OM_LABEL.pattern + rb")*)?", re.S)
_ESCAPE = re.compile(r"\\(.)", re.S)
_TEXT_INT = re.compile(rb"[+-]?[0-9]+")
_OM_DECIMAL_TS = re.compile(rb"([+-]?)([0-9]+)(?:\.([0-9]*))?")
_OM_COMMENT = re.compile(rb"# (HELP|TYPE|UNIT) (" + _NAME + rb"|" + _QUOTED + rb") (.*)", re.S)
_TEXT_COMMENT = re.compile(rb"#[ \t]+(HELP|TYPE)(?:[ \t]+(.*))?", re.S)
_TEXT_NAME_REST = re.compile(rb"(" + _QUOTED + rb"|[^ \t]*)[ \t]*(.*)", re.S)

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


def parse_series(key: bytes, openmetrics: bool, *, exemplar: bool = False) -> tuple[str, Labels]:
    """``(name, labels sorted by name)`` of a series text ``name{labels}``; ValueError if invalid.

    The metric name is either before the block or, quoted, an item of the block alone
    (``{"my.metric", "label.name"="v"}``); label names may be quoted too. Escapes in quoted names
    are undone as in values. ``exemplar``: the labels of an exemplar, where no metric name may be.
    """
    brace = key.find(b"{")
    raw_name = key if brace < 0 else key[:brace]
    if brace >= 0 and not openmetrics:
        raw_name = raw_name.rstrip(b" \t")
    if raw_name and not _METRIC_NAME.fullmatch(raw_name):
        raise ValueError(f"invalid metric name {raw_name.decode(errors='replace')!r}")
    if brace < 0:
        if not raw_name:
            raise ValueError("invalid metric name ''")
        return raw_name.decode(), ()
    if key[-1:] != b"}":
        raise ValueError("label set not closed with '}'")
    block = key[brace + 1 : -1]
    if raw_name and (_OM_BLOCK if openmetrics else _TEXT_BLOCK).fullmatch(block):
        pairs = (_OM_LABEL if openmetrics else _TEXT_LABEL).findall(block)
        labels: dict[str, str] = {}
        if b"\\" in block:
            for k, v in pairs:
                _add_label(labels, k.decode(), _unescape(v, _LABEL_ESCAPES))
        else:
            for k, v in pairs:
                _add_label(labels, k.decode(), v.decode())
        return raw_name.decode(), tuple(sorted(labels.items()))
    quoted_name, items = _scan_block(block, openmetrics, exemplar)
    if quoted_name is not None:
        if raw_name:
            raise ValueError("metric name given twice (before '{' and quoted inside)")
        name = quoted_name
    elif raw_name:
        name = raw_name.decode()
    else:
        raise ValueError("no metric name (neither before '{' nor quoted inside)")
    if not name:
        raise ValueError("empty metric name")
    labels = {}
    for k, v in items:
        _add_label(labels, k, v)
    return name, tuple(sorted(labels.items()))


def _quoted_end(block: bytes, pos: int) -> int:
    """Index just past the '"' closing the quoted string opening at ``block[pos]``; -1 if none."""
    end = len(block)
    pos += 1
    while pos < end:
        c = block[pos]
        if c == 0x5C:
            pos += 2
            continue
        if c == 0x22:
            return pos + 1
        pos += 1
    return -1


def _scan_block(block: bytes, openmetrics: bool, exemplar: bool) -> tuple[str | None, list[tuple[str, str]]]:
    """``(quoted metric name or None, [(label name, value)])`` of a label block (between the braces),
    item by item as Prometheus' lexer reads it; ValueError saying what is wrong where."""
    name: str | None = None
    items: list[tuple[str, str]] = []
    pos = 0
    end = len(block)
    first = True
    while True:
        if not openmetrics:
            while pos < end and block[pos] in b" \t":
                pos += 1
        if pos == end:
            if openmetrics and not first:
                raise ValueError("trailing ',' in label set")
            return name, items
        start = pos
        bad = f"invalid label at {block[start:start + 20].decode(errors='replace')!r}"
        if block[pos] == 0x22:
            stop = _quoted_end(block, pos)
            if stop < 0:
                raise ValueError(bad)
            text = _unescape(block[pos + 1 : stop - 1], _LABEL_ESCAPES)
            pos = stop
            if not openmetrics:
                while pos < end and block[pos] in b" \t":
                    pos += 1
            if pos == end or block[pos] == 0x2C:  # a quoted string alone: the metric name
                if exemplar:
                    raise ValueError("exemplar labels cannot hold a metric name")
                if name is not None:
                    raise ValueError("metric name given twice in the label set")
                name = text
                label = None
            else:
                label = text
                if not label:
                    raise ValueError("empty label name")
        else:
            m = _LABEL_NAME.match(block, pos)
            if m is None:
                raise ValueError(bad)
            label = m.group().decode()
            pos = m.end()
        if label is not None:
            if not openmetrics:
                while pos < end and block[pos] in b" \t":
                    pos += 1
            if pos == end or block[pos] != 0x3D:  # '='
                raise ValueError(bad)
            pos += 1
            if not openmetrics:
                while pos < end and block[pos] in b" \t":
                    pos += 1
            if pos == end or block[pos] != 0x22:
                raise ValueError(bad)
            stop = _quoted_end(block, pos)
            if stop < 0:
                raise ValueError(bad)
            items.append((label, _unescape(block[pos + 1 : stop - 1], _LABEL_ESCAPES)))
            pos = stop
            if not openmetrics:
                while pos < end and block[pos] in b" \t":
                    pos += 1
        first = False
        if pos == end:
            return name, items
        if block[pos] != 0x2C:
            raise ValueError("expected ',' between labels")
        pos += 1


def _add_label(labels: dict[str, str], name: str, value: str) -> None:
    if name == "__name__":
        raise ValueError("label __name__ in a label set (the metric name goes before '{')")
    if name in labels:
        raise ValueError(f"duplicate label {name!r}")
    labels[name] = value


def is_legacy_name(name: str, metric: bool) -> bool:
    """True for a name of the legacy Prometheus character set (``metric_name_validation_scheme: legacy``)."""
    return (_METRIC_NAME_STR if metric else _LABEL_NAME_STR).fullmatch(name) is not None


# -- le and quantile values, as Prometheus 3 stores them ------------------------------------------------

_GO_SPECIAL = re.compile(r"([+-]?)(inf|infinity)|(nan)", re.I)
_GO_DECIMAL = re.compile(r"[+-]?(?:[0-9_]+\.?[0-9_]*|\.[0-9_]+)(?:[eE][+-]?[0-9][0-9_]*)?")
_GO_HEX = re.compile(r"[+-]?0[xX](?:[0-9a-fA-F_]+\.?[0-9a-fA-F_]*|\.[0-9a-fA-F_]+)[pP][+-]?[0-9][0-9_]*")


def _go_underscores_ok(s: str) -> bool:
    """Go's strconv rule: '_' only between digits (or after a base prefix)."""
    if s[:1] in ("+", "-"):
        s = s[1:]
    saw = "^"
    i = 0
    hexa = False
    if len(s) >= 2 and s[0] == "0" and s[1] in "bBoOxX":
        i = 2
        saw = "0"
        hexa = s[1] in "xX"
    while i < len(s):
        c = s[i]
        if c.isdigit() or (hexa and c in "abcdefABCDEF"):
            saw = "0"
        elif c == "_":
            if saw != "0":
                return False
            saw = "_"
        elif saw == "_":
            return False
        else:
            saw = "!"
        i += 1
    return saw != "_"


def go_parse_float(text: str) -> float | None:
    """The float Go's ``strconv.ParseFloat(text, 64)`` returns, or None where it returns an error
    (syntax, or out of range: ``1e400``)."""
    if not text.isascii():
        return None
    m = _GO_SPECIAL.fullmatch(text)
    if m is not None:
        if m.group(3):
            return math.nan
        return -math.inf if m.group(1) == "-" else math.inf
    if "_" in text and not _go_underscores_ok(text):
        return None
    digits = text.replace("_", "")
    if _GO_HEX.fullmatch(text):
        try:
            return float.fromhex(digits)
        except OverflowError:
            return None
    if not _GO_DECIMAL.fullmatch(text) or not any(c.isdigit() for c in digits.split("e")[0].split("E")[0]):
        return None
    f = float(digits)
    return None if math.isinf(f) else f


def go_format_float(f: float) -> str:
    """Prometheus' ``labels.FormatOpenMetricsFloat``: Go's ``strconv.FormatFloat(f, 'g', -1, 64)``
    (shortest digits; exponent form below 1e-4 and from 1e6 on, ``1e+06``), with ``.0`` appended
    when it has neither '.' nor 'e'; ``+Inf``, ``-Inf``, ``NaN``, ``0.0`` for both zeros."""
    if math.isnan(f):
        return "NaN"
    if math.isinf(f):
        return "+Inf" if f > 0 else "-Inf"
    if f == 0:
        return "0.0"
    digits, dp = _shortest_digits(f)
    sign = "-" if f < 0 else ""
    exp = dp - 1
    if exp < -4 or exp >= 6:
        mant = digits[0] + ("." + digits[1:] if len(digits) > 1 else "")
        e = abs(exp)
        return f"{sign}{mant}e{'-' if exp < 0 else '+'}{e:02d}"
    if dp <= 0:
        out = "0." + "0" * -dp + digits
    elif dp >= len(digits):
        out = digits + "0" * (dp - len(digits))
    else:
        out = digits[:dp] + "." + digits[dp:]
    if "." not in out:
        out += ".0"
    return sign + out


def _shortest_digits(f: float) -> tuple[str, int]:
    """``(digits, dp)`` with ``|f| == 0.digits * 10**dp``, digits the shortest that read back as f
    (Python's repr, the same digits as Go's shortest formatting), no leading or trailing zeros."""
    r = repr(abs(f))
    mant, _, e = r.partition("e")
    exp10 = int(e) if e else 0
    whole, _, frac = mant.partition(".")
    digits = (whole + frac).lstrip("0")
    lead = len(whole + frac) - len(digits)  # leading zeros taken off
    dp = len(whole) - lead + exp10
    return digits.rstrip("0"), dp


@functools.lru_cache(maxsize=4096)  # a fleet's buckets use few distinct bounds
def normalize_float_label(value: str) -> str:
    """An ``le`` or ``quantile`` value as Prometheus 3 stores it: parsed as Go does, formatted by
    :func:`go_format_float`; a value Go cannot parse stays as it is."""
    f = go_parse_float(value)
    return value if f is None else go_format_float(f)


def normalize_labels(labels: Labels, mtype: str | None) -> Labels:
    """Labels with ``le`` (histogram) or ``quantile`` (summary) normalised, as Prometheus 3's parsers
    do for the type of the last ``# TYPE`` line (``normalizeFloatsInLabelValues``)."""
    target = "le" if mtype == "histogram" else "quantile" if mtype == "summary" else None
    if target is None:
        return labels
    for i, (k, v) in enumerate(labels):
        if k == target:
            nv = normalize_float_label(v)
            if nv != v:
                return (*labels[:i], (k, nv), *labels[i + 1 :])
            break
    return labels


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
    _, labels = parse_series(b"x" + exemplar_text[:stop], True, exemplar=True)
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


def _is_float(token: bytes) -> bool:
    try:
        float(token)
    except ValueError:
        return False
    return True


def describe_bad_line(line: bytes, openmetrics: bool) -> str:
    """One line saying what is wrong with a sample line that did not parse."""
    text = line if openmetrics else line.lstrip(b" \t")
    m = _METRIC_NAME.match(text)
    if m is None and text[:1] != b"{":
        return f"invalid metric name at {text[:40].decode(errors='replace')!r}"
    pos = m.end() if m is not None else 0
    if not openmetrics and m is not None:
        blank = pos
        while blank < len(text) and text[blank] in b" \t":
            blank += 1
        if text[blank : blank + 1] == b"{":
            pos = blank
    if text[pos : pos + 1] == b"{":
        stop = _block_end(text, pos)
        if stop < 0:
            return "label set not closed with '}'"
        pos = stop
    rest = text[pos:]
    glued = not openmetrics and text[pos - 1 : pos] == b"}" and rest[:1] not in (b"", b" ", b"\t")
    if not glued and (not rest or rest[:1] not in (b" ", b"\t")):
        return "expected a blank and a value after the series"
    if openmetrics and not rest.startswith(b" "):
        return "expected a single space after the series"
    tokens = re.split(rb"[ \t]+", rest.strip(b" \t")) if not openmetrics else rest[1:].split(b" ", 1)
    value = tokens[0] if tokens else b""
    if not value or not re.fullmatch(_TOKEN, value) or not _is_float(value):
        return f"invalid value {value.decode(errors='replace')!r}"
    if not openmetrics and len(tokens) > 1:
        try:
            parse_text_timestamp(tokens[1])
        except ValueError as exc:
            return str(exc)
    return f"invalid line {text[:60].decode(errors='replace')!r}"


def _metadata_name(kind: bytes, name_b: bytes) -> str:
    """The metric name of a HELP/TYPE/UNIT line: a legacy name or a quoted one (escapes undone)."""
    if name_b[:1] == b'"' and len(name_b) >= 2 and name_b[-1:] == b'"':
        name = _unescape(name_b[1:-1], _LABEL_ESCAPES)
        if name:
            return name
    elif _METRIC_NAME.fullmatch(name_b):
        return name_b.decode()
    raise ValueError(f"{kind.decode()} line without a valid metric name")


def text_comment(line: bytes, families: dict[str, Family]) -> bool:
    """Apply a text-format ``#`` line (blanks already stripped) to ``families``.

    Returns True when it changed metadata that was already set to something else (the caller's
    cache of comment lines is then stale). Raises ValueError for a malformed HELP/TYPE line.
    The metric name may be quoted (``# TYPE "my.metric" gauge``).
    """
    m = _TEXT_COMMENT.fullmatch(line)
    if m is None:
        return False  # a plain comment
    kind = m.group(1)
    name_b, rest = _TEXT_NAME_REST.fullmatch(m.group(2) or b"").groups()  # type: ignore[union-attr]
    name = _metadata_name(kind, name_b)
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


def comment_type(line: bytes) -> str | None:
    """The type of a text-format ``# TYPE`` line that :func:`text_comment` took (blanks stripped);
    None for any other comment line. Prometheus normalises ``le``/``quantile`` by the last one."""
    m = _TEXT_COMMENT.fullmatch(line)
    if m is None or m.group(1) != b"TYPE":
        return None
    return _TEXT_TYPES.get(_TEXT_NAME_REST.fullmatch(m.group(2) or b"").group(2).rstrip(b" \t").decode())  # type: ignore[union-attr]


class SeriesResolver:
    """The slow path of a cache miss, shared by both twins: parse, check limits, hook, add."""

    __slots__ = ("label_limit", "legacy", "name_limit", "normalize", "on_new_series", "series", "value_limit")

    def __init__(self, series: SeriesTable, on_new_series: OnNewSeries | None, label_limit: int,
                 label_name_length_limit: int, label_value_length_limit: int, *, normalize_le: bool = True,
                 name_validation: str = "utf8") -> None:
        self.series = series
        self.on_new_series = on_new_series
        self.label_limit = label_limit
        self.name_limit = label_name_length_limit
        self.value_limit = label_value_length_limit
        self.normalize = normalize_le
        self.legacy = check_name_validation(name_validation) == "legacy"

    def resolve(self, key: bytes, openmetrics: bool, line: int,
                mtype: str | None = None) -> tuple[int, tuple[str, Labels]]:
        """``(series id or DROPPED, (name, labels as parsed))`` of a new series text; ``mtype`` is
        the type of the last ``# TYPE`` line before it (``le``/``quantile`` normalisation)."""
        try:
            name, labels = parse_series(key, openmetrics)
        except ValueError as exc:
            raise ParseError(line, str(exc)) from None
        parsed = labels
        if self.normalize and mtype is not None:
            labels = normalize_labels(labels, mtype)
        self.check_limits(name, labels)
        final: tuple[str, Labels] | None = (name, labels)
        if self.on_new_series is not None:
            final = self.on_new_series(name, labels)
        if final is None:
            return DROPPED, (name, parsed)
        if self.legacy:
            self.check_legacy(final[0], final[1], line)
        return self.series.add(final[0], final[1]), (name, parsed)

    @staticmethod
    def check_legacy(name: str, labels: Labels, line: int) -> None:
        """ParseError unless every name is of the legacy character set (as Prometheus checks the
        final labels of a new series with ``metric_name_validation_scheme: legacy``)."""
        if not is_legacy_name(name, True):
            raise ParseError(line, f"metric name {name!r} is not a legacy Prometheus name "
                                   "(name_validation='legacy' allows [a-zA-Z_:][a-zA-Z0-9_:]*)")
        for k, _ in labels:
            if not is_legacy_name(k, False):
                raise ParseError(line, f"label name {k!r} of series {name} is not a legacy Prometheus name "
                                       "(name_validation='legacy' allows [a-zA-Z_][a-zA-Z0-9_]*)")

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


NAME_VALIDATION_SCHEMES = ("utf8", "legacy")
"""Values of the Parser's ``name_validation`` (Prometheus' ``metric_name_validation_scheme``)."""


def check_name_validation(scheme: str) -> str:
    """``scheme`` if it is one of :data:`NAME_VALIDATION_SCHEMES`, else ValueError."""
    if scheme not in NAME_VALIDATION_SCHEMES:
        raise ValueError(f"name_validation must be 'utf8' or 'legacy', not {scheme!r}")
    return scheme


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
    """OpenMetrics family rules, fed line by line (metadata, samples); shared by both twins.

    ``strict``: every rule of OpenMetrics 1.0 (its conformance suite). Not strict (the Parser's
    default, as Prometheus 3, which does not check these): a histogram or summary may have a
    negative ``_sum``, a histogram with negative buckets a ``_sum``, a summary negative quantile
    values (client_golang writes all three for negative observations).
    """

    def __init__(self, families: dict[str, Family], strict: bool = False) -> None:
        self.families = families
        self.strict = strict
        self.seen_names: set[str] = set()
        self.eof = False
        self.name: str | None = None
        self.last_type: str | None = None
        """The type of the last ``# TYPE`` line (``le``/``quantile`` normalisation follows it)."""
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
        try:
            name = _metadata_name(kind, m.group(2))
        except ValueError as exc:
            raise ParseError(lineno, str(exc)) from None
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
            self.typ = self.last_type = typ
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
        if typ == "summary" and suffix == "" and value < 0 and self.strict:
            raise ValueError("quantile values cannot be negative")
        if suffix in ("_total", "_sum", "_count", "_bucket", "_gcount", "_gsum") and math.isnan(value):
            raise ValueError(f"{suffix} samples cannot be NaN")
        if (suffix in ("_total", "_sum", "_count", "_bucket", "_gcount") and value < 0
                and (self.strict or suffix != "_sum" or typ not in ("histogram", "summary"))):
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
                _check_histogram(self.samples, name, self.strict)
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


def _check_histogram(samples: list[_HistSample], name: str, strict: bool) -> None:
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
        if neg_buckets and has_sum and strict:
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

    Options that follow Prometheus 3 (each default is what Prometheus 3 does):

    * ``name_validation``: ``"utf8"`` (default; Prometheus 3's ``metric_name_validation_scheme``)
      accepts quoted UTF-8 metric and label names (``{"my.metric", "label.name"="v"} 1``);
      ``"legacy"`` makes a new series whose final names (after ``on_new_series``) are outside
      the legacy character set a ParseError at its line.
    * ``normalize_le``: True (default) stores ``le`` of a histogram and ``quantile`` of a summary
      (by the last ``# TYPE`` line before the sample) as Prometheus 3 does, ``le="1"`` as
      ``le="1.0"``, ``1e3`` as ``1000.0``, ``1000000`` as ``1e+06`` (:func:`go_format_float`); False
      keeps them as exposed (Prometheus 2 and vmagent). Done once per new series, not per sample.
    * ``openmetrics_strict``: False (default) accepts a negative ``_sum`` of histograms and summaries,
      a ``_sum`` beside negative buckets and negative quantile values, as Prometheus 3 does
      (client_golang writes them for negative observations);
      True checks every rule of OpenMetrics 1.0.
    """

    def __init__(self, *, series: SeriesTable | None = None, on_new_series: OnNewSeries | None = None,
                 keep_exemplars: bool = False, honor_timestamps: bool = True, sample_limit: int = 0,
                 label_limit: int = 0, label_name_length_limit: int = 0,
                 label_value_length_limit: int = 0, name_validation: str = "utf8", normalize_le: bool = True,
                 openmetrics_strict: bool = False) -> None:
        self.series: SeriesTable = series if series is not None else SeriesTable()
        self.families: dict[str, Family] = {}
        self.keep_exemplars = keep_exemplars
        self.honor_timestamps = honor_timestamps
        self.sample_limit = sample_limit
        self.name_validation = check_name_validation(name_validation)
        self.normalize_le = normalize_le
        self.openmetrics_strict = openmetrics_strict
        self.last_dropped = 0
        """Samples of the last parse whose series ``on_new_series`` dropped."""
        self._resolver = SeriesResolver(self.series, on_new_series, label_limit, label_name_length_limit,
                                        label_value_length_limit, normalize_le=normalize_le,
                                        name_validation=name_validation)
        self._cache: dict[bytes, int] = {}
        self._parsed: dict[bytes, tuple[str, Labels]] = {}  # (name, labels) per key, OpenMetrics only
        self._comments: dict[bytes, str | None] = {}  # comment line seen -> its TYPE's type, else None

    def __len__(self) -> int:
        return len(self._cache)

    def forget(self) -> None:
        """Drop the series cache (the series table and its ids stay)."""
        self._cache.clear()
        self._parsed.clear()
        self._comments.clear()

    def retain(self, remap: array[int], series: SeriesTable | None = None) -> None:
        """Forget the cache entries of series that ``remap`` (an array('i') over the table's ids)
        maps to -1, and of dropped series; renumber the others to ``remap[sid]``. The comment lines
        seen and the families are forgotten too (the next parse reads them again). With ``series``,
        new series go to that table from now on (``remap`` maps the old table's ids into it).

        The scrape loop calls it when a target's series churn (see ScrapeLoop._forget), so that
        the cache holds about two scrapes' series, not every series the target ever sent."""
        n = len(remap)
        self._cache = {k: remap[v] for k, v in self._cache.items() if 0 <= v < n and remap[v] >= 0}
        self._parsed = {k: v for k, v in self._parsed.items() if k in self._cache}
        self._comments.clear()
        self.families = {}
        if series is not None:
            self.series = series
            self._resolver.series = series

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
        comments = self._comments
        mtype: str | None = None  # the type of the last # TYPE line
        for lineno, line in enumerate(data.split(b"\n"), 1):
            m = match(line)
            if m is None:
                s = line.lstrip(b" \t")
                if not s:
                    continue
                if s[0] == 0x23:  # '#'
                    if s in comments:
                        typ = comments[s]
                    else:
                        try:
                            stale = text_comment(s, self.families)
                        except ValueError as exc:
                            raise ParseError(lineno, str(exc)) from None
                        if stale:
                            comments.clear()
                        typ = comments[s] = comment_type(s)
                    if typ is not None:
                        mtype = typ
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
                sid = cache[key] = self._resolver.resolve(key, False, lineno, mtype)[0]
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
        checker = OpenMetricsChecker(self.families, self.openmetrics_strict)
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
                sid, info = self._resolver.resolve(key, True, lineno, checker.last_type)
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
