"""Prometheus relabeling (``relabel_configs`` / ``metric_relabel_configs``), as Prometheus does it.

Follows ``model/relabel/relabel.go`` of Prometheus 3.x:

* every regex is Go RE2 syntax, anchored as ``^(?s:<regex>)$`` (since Prometheus 3.0 ``.`` also matches
  a newline); it is translated once to an equivalent Python ``re`` pattern (see `_GoRegexTranslator`), and
  anything Go would reject is a `ConfigError` at load time;
* replacements and ``target_label`` use Go's ``Regexp.Expand`` rules: ``$1``, ``${1}``, ``$name``,
  ``${name}``, ``$$`` for a literal ``$``; a name is as long as possible, so ``$1x`` is the group named
  ``1x`` (which does not exist: it expands to nothing); a malformed ``$`` is kept literally;
* as in Prometheus' ``labels.Builder``, an input label whose value is ``""`` counts as absent from the
  start (``labelmap`` does not see it, it is not in the result), and a label set to ``""`` is removed;
* ``hashmod`` is ``uint64_be(md5(value)[8:16]) % modulus``.

Where this differs from Prometheus, on purpose or by necessity:

* label names are checked with the *legacy* scheme (``[a-zA-Z_][a-zA-Z0-9_]*``) unless
  ``name_validation="utf8"`` (Prometheus 3's default) is passed;
* Python's ``re`` backtracks: a pathological regex can take exponential time where RE2 is linear;
* ``\\p{Greek}`` and other Unicode *script* classes are rejected (general categories such as ``\\pL``
  work); Go's limit on the total size of nested repetitions (``(a{1000}){1000}``) is not enforced;
* YAML scalars that are not strings are refused for string keys (quote them), except integers;
* a ``labelmap`` whose replacement expands to ``""`` sets nothing (Prometheus would add a label with an
  empty name).

Usage::

    configs = parse_relabel_configs(yaml_list, "scrape_configs[0].metric_relabel_configs")
    relabeler = Relabeler(configs)          # compile once
    out = relabeler({"__name__": "up", "job": "etcd"})   # new dict, or None when dropped
"""

from __future__ import annotations

import functools
import hashlib
import re
import unicodedata
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Final, Literal

from ._exceptions import ConfigError

__all__ = [
    "ACTIONS",
    "RelabelConfig",
    "Relabeler",
    "compile_go_regex",
    "parse_relabel_configs",
    "relabel",
]

NameValidation = Literal["legacy", "utf8"]

ACTIONS: Final = frozenset(
    {
        "replace",
        "keep",
        "drop",
        "keepequal",
        "dropequal",
        "hashmod",
        "labelmap",
        "labeldrop",
        "labelkeep",
        "lowercase",
        "uppercase",
    }
)
_KEYS: Final = ("source_labels", "separator", "regex", "modulus", "target_label", "replacement", "action")
_DEFAULT_SEPARATOR: Final = ";"
_DEFAULT_REGEX: Final = "(.*)"
_DEFAULT_REPLACEMENT: Final = "$1"
_MAX_UINT64: Final = (1 << 64) - 1

_LEGACY_NAME: Final = re.compile(r"[a-zA-Z_][a-zA-Z0-9_]*\Z")
# Prometheus' relabelTargetLegacy: a legacy label name in which ``$var`` / ``${var}`` may appear.
_LEGACY_TARGET: Final = re.compile(
    r"(?:(?:[a-zA-Z_]|\$(?:\{[0-9A-Za-z_]+\}|[0-9A-Za-z_]+))+[0-9A-Za-z_]*)+\Z"
)


def _valid_name(name: str, scheme: NameValidation) -> bool:
    if scheme == "legacy":
        return _LEGACY_NAME.match(name) is not None
    return name != ""


def _valid_name_with_vars(name: str, scheme: NameValidation) -> bool:
    if scheme == "legacy":
        return _LEGACY_TARGET.match(name) is not None
    return name != ""


# --------------------------------------------------------------------------------------------------
# Go RE2 syntax -> Python re
# --------------------------------------------------------------------------------------------------

_MAX_RUNE: Final = 0x10FFFF
_Ranges = list[tuple[int, int]]

_FOLD, _MULTILINE, _DOTNL, _UNGREEDY = 1, 2, 4, 8

_PERL_CLASSES: Final[dict[str, _Ranges]] = {
    "d": [(0x30, 0x39)],
    "s": [(0x09, 0x0A), (0x0C, 0x0D), (0x20, 0x20)],
    "w": [(0x30, 0x39), (0x41, 0x5A), (0x5F, 0x5F), (0x61, 0x7A)],
}
_POSIX_CLASSES: Final[dict[str, _Ranges]] = {
    "alnum": [(0x30, 0x39), (0x41, 0x5A), (0x61, 0x7A)],
    "alpha": [(0x41, 0x5A), (0x61, 0x7A)],
    "ascii": [(0x00, 0x7F)],
    "blank": [(0x09, 0x09), (0x20, 0x20)],
    "cntrl": [(0x00, 0x1F), (0x7F, 0x7F)],
    "digit": [(0x30, 0x39)],
    "graph": [(0x21, 0x7E)],
    "lower": [(0x61, 0x7A)],
    "print": [(0x20, 0x7E)],
    "punct": [(0x21, 0x2F), (0x3A, 0x40), (0x5B, 0x60), (0x7B, 0x7E)],
    "space": [(0x09, 0x0D), (0x20, 0x20)],
    "upper": [(0x41, 0x5A)],
    "word": [(0x30, 0x39), (0x41, 0x5A), (0x5F, 0x5F), (0x61, 0x7A)],
    "xdigit": [(0x30, 0x39), (0x41, 0x46), (0x61, 0x66)],
}
# Go's unicode.Categories (no "Cn": Go has no table for unassigned code points).
_GO_CATEGORIES: Final = frozenset(
    [
        "C",
        "Cc",
        "Cf",
        "Co",
        "Cs",
        "L",
        "Ll",
        "Lm",
        "Lo",
        "Lt",
        "Lu",
        "M",
        "Mc",
        "Me",
        "Mn",
        "N",
        "Nd",
        "Nl",
        "No",
        "P",
        "Pc",
        "Pd",
        "Pe",
        "Pf",
        "Pi",
        "Po",
        "Ps",
        "S",
        "Sc",
        "Sk",
        "Sm",
        "So",
        "Z",
        "Zl",
        "Zp",
        "Zs",
    ]
)


_REPEAT_BRACES: Final = re.compile(r"\{([0-9]+)(?:(,)([0-9]*))?\}")


class _RegexError(Exception):
    """A regex Go would reject (or one this translation cannot reproduce faithfully)."""


def _normalize(ranges: _Ranges) -> _Ranges:
    out: _Ranges = []
    for lo, hi in sorted(ranges):
        if out and lo <= out[-1][1] + 1:
            if hi > out[-1][1]:
                out[-1] = (out[-1][0], hi)
        else:
            out.append((lo, hi))
    return out


def _negate(ranges: _Ranges) -> _Ranges:
    out: _Ranges = []
    nxt = 0
    for lo, hi in _normalize(ranges):
        if lo > nxt:
            out.append((nxt, lo - 1))
        nxt = hi + 1
    if nxt <= _MAX_RUNE:
        out.append((nxt, _MAX_RUNE))
    return out


@functools.lru_cache(maxsize=64)
def _category_ranges(name: str) -> tuple[tuple[int, int], ...]:
    """Code point ranges of a Unicode general category (one or two letters), from `unicodedata`."""
    out: _Ranges = []
    start = -1
    for cp in range(_MAX_RUNE + 2):
        cat = unicodedata.category(chr(cp)) if cp <= _MAX_RUNE else ""
        inside = cat != "Cn" and cat.startswith(name) if cat else False
        if inside and start < 0:
            start = cp
        elif not inside and start >= 0:
            out.append((start, cp - 1))
            start = -1
    return tuple(out)


def _esc(cp: int) -> str:
    """One code point as Python regex text, safe inside and outside a character class."""
    ch = chr(cp)
    if ch.isascii() and (ch.isalnum() or ch == "_"):
        return ch
    if 0x20 <= cp < 0x7F:
        return "\\" + ch  # backslash + ASCII punctuation is always a literal in Python re
    return f"\\x{cp:02x}" if cp < 0x100 else f"\\U{cp:08x}"


def _class_text(ranges: _Ranges, negated: bool, fold: bool) -> str:
    ranges = _normalize(ranges)
    if not ranges:
        return "(?s:.)" if negated else "(?!)"
    body = "".join(_esc(lo) if lo == hi else f"{_esc(lo)}-{_esc(hi)}" for lo, hi in ranges)
    text = f"[{'^' if negated else ''}{body}]"
    return f"(?i:{text})" if fold else text


@dataclass
class _Item:
    text: str
    simple: bool  # a quantifier may follow directly (else wrap it in (?:...) first)


@dataclass
class _Frame:
    flags: int
    capture: bool
    alts: list[list[_Item]] = field(default_factory=list)
    seq: list[_Item] = field(default_factory=list)


class _GoRegexTranslator:
    """Translates Go ``regexp/syntax`` (Perl flags) to Python ``re``, following Go's parser rules.

    Python gets no global flags: each atom carries the flags in force where it appears in the Go regex
    (``(?i:x)``, ``(?s:.)``, ``(?m:^)``), so Go's ``(?flags)`` that lasts to the end of the group and
    Go's ASCII-only ``\\d \\s \\w \\b`` and ``$`` (end of text, like ``\\z``) keep their meaning.
    Capturing groups are emitted unnamed; their Go names are returned in order.
    """

    def __init__(self, src: str, flags: int) -> None:
        self.src = src
        self.pos = 0
        self.names: list[str] = [""]
        self.stack: list[_Frame] = [_Frame(flags=flags, capture=False)]
        self.last_was_repeat = False

    # -- helpers -------------------------------------------------------------------------------
    def _peek(self, k: int = 0) -> str:
        i = self.pos + k
        return self.src[i] if i < len(self.src) else ""

    def _fail(self, problem: str) -> _RegexError:
        return _RegexError(problem)

    @property
    def _frame(self) -> _Frame:
        return self.stack[-1]

    def _push(self, text: str, simple: bool = True) -> None:
        self._frame.seq.append(_Item(text, simple))

    def _literal(self, cp: int) -> None:
        ch = chr(cp)
        text = _esc(cp)
        if self._frame.flags & _FOLD and ch.lower() != ch.upper():
            text = f"(?i:{text})"
        self._push(text)

    # -- main loop -----------------------------------------------------------------------------
    def translate(self) -> tuple[str, tuple[str, ...]]:
        src = self.src
        while self.pos < len(src):
            c = src[self.pos]
            repeat = False
            if c == "(":
                self._open_group()
            elif c == ")":
                self._close_group()
            elif c == "|":
                self.pos += 1
                self._frame.alts.append(self._frame.seq)
                self._frame.seq = []
            elif c in "*+?":
                self.pos += 1
                self._repeat(c, c)
                repeat = True
            elif c == "{":
                parsed = self._parse_repeat_braces()
                if parsed is None:
                    self.pos += 1
                    self._literal(ord("{"))
                else:
                    text, quant = parsed
                    self._repeat(text, quant)
                    repeat = True
            elif c == ".":
                self.pos += 1
                self._push("(?s:.)" if self._frame.flags & _DOTNL else ".")
            elif c == "^":
                self.pos += 1
                self._push("(?m:^)" if self._frame.flags & _MULTILINE else r"\A", simple=False)
            elif c == "$":
                self.pos += 1
                self._push("(?m:$)" if self._frame.flags & _MULTILINE else r"\Z", simple=False)
            elif c == "[":
                ranges, negated = self._parse_class()
                self._push(_class_text(ranges, negated, bool(self._frame.flags & _FOLD)))
            elif c == "\\":
                self._escape_outside_class()
            else:
                self.pos += 1
                self._literal(ord(c))
            self.last_was_repeat = repeat
        if len(self.stack) != 1:
            raise self._fail("missing closing )")
        root = self.stack[0]
        body = "|".join("".join(i.text for i in seq) for seq in [*root.alts, root.seq])
        return body, tuple(self.names)

    def _open_group(self) -> None:
        src, start = self.src, self.pos
        flags = self._frame.flags
        if not src.startswith("(?", start):
            self.pos += 1
            self.names.append("")
            self.stack.append(_Frame(flags=flags, capture=True))
            return
        if src.startswith("(?P<", start) or src.startswith("(?<", start):
            name_start = start + (4 if src[start + 2] == "P" else 3)
            end = src.find(">", name_start)
            if end < 0:
                raise self._fail(f"invalid named capture: {src[start:]!r}")
            name = src[name_start:end]
            if not name or not all(ch.isascii() and (ch.isalnum() or ch == "_") for ch in name):
                raise self._fail(f"invalid named capture: {src[start : end + 1]!r}")
            self.pos = end + 1
            self.names.append(name)
            self.stack.append(_Frame(flags=flags, capture=True))
            return
        # Flags, a non-capturing group, or both (Go's parsePerlFlags).
        i = start + 2
        new = flags
        sign = 1
        saw_flag = False
        while i < len(src):
            ch = src[i]
            i += 1
            bit = {"i": _FOLD, "m": _MULTILINE, "s": _DOTNL, "U": _UNGREEDY}.get(ch)
            if bit is not None:
                new = new | bit if sign > 0 else new & ~bit
                saw_flag = True
            elif ch == "-" and sign > 0:
                sign = -1
                saw_flag = False
            elif ch in ":)":
                if sign < 0 and not saw_flag:
                    break
                self.pos = i
                if ch == ":":
                    self.stack.append(_Frame(flags=new, capture=False))
                else:
                    self._frame.flags = new
                return
            else:
                break
        raise self._fail(f"invalid or unsupported Perl syntax: {src[start:i]!r}")

    def _close_group(self) -> None:
        if len(self.stack) == 1:
            raise self._fail("unexpected )")
        self.pos += 1
        frame = self.stack.pop()
        body = "|".join("".join(i.text for i in seq) for seq in [*frame.alts, frame.seq])
        self._push(f"({body})" if frame.capture else f"(?:{body})")

    def _parse_repeat_braces(self) -> tuple[str, str] | None:
        """Go's parseRepeat: ``{n}``, ``{n,}``, ``{n,m}``; anything else means ``{`` is a literal."""
        m = _REPEAT_BRACES.match(self.src, self.pos)
        if m is None:
            return None
        lo_s, comma, hi_s = m.group(1), m.group(2), m.group(3)
        for num in (lo_s, hi_s):
            if num and len(num) >= 2 and num[0] == "0":
                return None  # Go's parseInt refuses leading zeros: the brace is a literal
        lo = int(lo_s)
        hi = lo if not comma else (-1 if hi_s == "" else int(hi_s))
        text = m.group(0)
        if lo > 1000 or hi > 1000 or (hi >= 0 and lo > hi):
            raise self._fail(f"invalid repeat count: {text!r}")
        self.pos = m.end()
        quant = f"{{{lo}}}" if hi == lo else (f"{{{lo},}}" if hi < 0 else f"{{{lo},{hi}}}")
        return text, quant

    def _repeat(self, op_text: str, quant: str) -> None:
        lazy = False
        if self._peek() == "?":
            self.pos += 1
            op_text += "?"
            lazy = True
        if self.last_was_repeat:
            raise self._fail(f"invalid nested repetition operator: {op_text!r}")
        seq = self._frame.seq
        if not seq:
            raise self._fail(f"missing argument to repetition operator: {op_text!r}")
        if self._frame.flags & _UNGREEDY:
            lazy = not lazy
        item = seq[-1]
        base = item.text if item.simple else f"(?:{item.text})"
        seq[-1] = _Item(f"{base}{quant}{'?' if lazy else ''}", simple=False)

    # -- escapes -------------------------------------------------------------------------------
    def _escape_outside_class(self) -> None:
        src = self.src
        nxt = self._peek(1)
        if nxt == "":
            raise self._fail("trailing backslash at end of expression")
        if nxt in "AzbB":
            self.pos += 2
            self._push({"A": r"\A", "z": r"\Z", "b": r"(?a:\b)", "B": r"(?a:\B)"}[nxt], simple=False)
            return
        if nxt == "Q":
            end = src.find(r"\E", self.pos + 2)
            lit = src[self.pos + 2 :] if end < 0 else src[self.pos + 2 : end]
            self.pos = len(src) if end < 0 else end + 2
            for ch in lit:
                self._literal(ord(ch))
            return
        if nxt in "pP":
            ranges, negated = self._parse_unicode_class()
            self._push(_class_text(ranges, negated, bool(self._frame.flags & _FOLD)))
            return
        if nxt in "dswDSW":
            self.pos += 2
            self._push(_class_text(_PERL_CLASSES[nxt.lower()], nxt.isupper(), fold=False))
            return
        self._literal(self._parse_escape())

    def _parse_escape(self) -> int:
        """Go's parseEscape at a backslash: one code point, or an error."""
        src = self.src
        start = self.pos
        if start + 1 >= len(src):
            raise self._fail("trailing backslash at end of expression")
        c = src[start + 1]
        self.pos = start + 2
        if c in "1234567" and not ("0" <= self._peek() <= "7"):
            raise self._fail(
                f"invalid escape sequence: {src[start : start + 2]!r} (backreferences are not supported)"
            )
        if c in "01234567":
            value = ord(c) - 0x30
            for _ in range(2):
                d = self._peek()
                if not ("0" <= d <= "7"):
                    break
                value = value * 8 + ord(d) - 0x30
                self.pos += 1
            return value
        if c == "x":
            if self._peek() == "{":
                end = src.find("}", self.pos)
                digits = src[self.pos + 1 : end] if end >= 0 else ""
                if end < 0 or not digits or not all(d in "0123456789abcdefABCDEF" for d in digits):
                    raise self._fail(
                        f"invalid escape sequence: {src[start : end + 1 if end >= 0 else None]!r}"
                    )
                value = int(digits, 16)
                if value > _MAX_RUNE:
                    raise self._fail(f"invalid escape sequence: {src[start : end + 1]!r}")
                self.pos = end + 1
                return value
            digits = src[self.pos : self.pos + 2]
            if len(digits) != 2 or not all(d in "0123456789abcdefABCDEF" for d in digits):
                raise self._fail(f"invalid escape sequence: {src[start : self.pos + 2]!r}")
            self.pos += 2
            return int(digits, 16)
        simple = {"a": 7, "f": 12, "n": 10, "r": 13, "t": 9, "v": 11}
        if c in simple:
            return simple[c]
        if c.isascii() and not c.isalnum():
            return ord(c)
        raise self._fail(f"invalid escape sequence: {src[start : start + 2]!r}")

    def _parse_unicode_class(self) -> tuple[_Ranges, bool]:
        """``\\pL``, ``\\p{Lu}``, ``\\p{^L}``, ``\\PL``, ``\\p{Any}`` (general categories only)."""
        src, start = self.src, self.pos
        negated = src[start + 1] == "P"
        if self._peek(2) == "{":
            end = src.find("}", start + 3)
            if end < 0:
                raise self._fail(f"invalid character class range: {src[start:]!r}")
            name = src[start + 3 : end]
            self.pos = end + 1
        else:
            name = self._peek(2)
            if not name:
                raise self._fail(f"invalid character class range: {src[start:]!r}")
            self.pos = start + 3
        if name.startswith("^"):
            negated = not negated
            name = name[1:]
        if name == "Any":
            ranges: _Ranges = [(0, _MAX_RUNE)]
        elif name in _GO_CATEGORIES:
            ranges = list(_category_ranges(name))
        else:
            # Go also knows script names (\p{Greek}); Python's unicodedata has no script property.
            raise self._fail(
                f"unsupported Unicode class: {src[start : self.pos]!r} (only general categories and Any)"
            )
        return ranges, negated

    def _parse_class(self) -> tuple[_Ranges, bool]:
        """Go's parseClass, at ``[``: the class as code point ranges, and whether it is negated."""
        src = self.src
        start = self.pos
        self.pos += 1
        negated = False
        if self._peek() == "^":
            negated = True
            self.pos += 1
        ranges: _Ranges = []
        first = True
        while True:
            c = self._peek()
            if c == "":
                raise self._fail(f"missing closing ]: {src[start:]!r}")
            if c == "]" and not first:
                self.pos += 1
                return ranges, negated
            first = False
            if src.startswith("[:", self.pos):
                end = src.find(":]", self.pos + 2)
                if end >= 0:
                    name = src[self.pos + 2 : end]
                    neg = name.startswith("^")
                    table = _POSIX_CLASSES.get(name[1:] if neg else name)
                    if table is None:
                        raise self._fail(f"invalid character class range: {src[self.pos : end + 2]!r}")
                    ranges.extend(_negate(table) if neg else table)
                    self.pos = end + 2
                    continue
            if c == "\\" and self._peek(1) in ("p", "P") and self._peek(1) != "":
                cls, neg = self._parse_unicode_class()
                ranges.extend(_negate(cls) if neg else cls)
                continue
            if c == "\\" and self._peek(1) != "" and self._peek(1) in "dswDSW":
                letter = self._peek(1)
                table = _PERL_CLASSES[letter.lower()]
                ranges.extend(_negate(table) if letter.isupper() else table)
                self.pos += 2
                continue
            range_start = self.pos
            lo = self._class_char()
            hi = lo
            if self._peek() == "-" and self._peek(1) not in ("]", ""):
                self.pos += 1
                hi = self._class_char()
                if hi < lo:
                    raise self._fail(f"invalid character class range: {src[range_start : self.pos]!r}")
            ranges.append((lo, hi))

    def _class_char(self) -> int:
        c = self._peek()
        if c == "\\":
            return self._parse_escape()
        self.pos += 1
        return ord(c)


@functools.lru_cache(maxsize=1024)
def compile_go_regex(expr: str) -> tuple[re.Pattern[str], tuple[str, ...]]:
    """Compile a Prometheus relabel regex: Go RE2 syntax, anchored ``^(?s:expr)$``.

    Returns the Python pattern (use ``.match``; it is anchored at both ends) and the Go group names by
    group number (``""`` for unnamed; index 0 is the whole match). Raises ValueError when Go would refuse
    the regex (or it uses a Go feature this translation does not support, e.g. Unicode script classes).
    """
    try:
        body, names = _GoRegexTranslator(expr, _DOTNL).translate()
    except _RegexError as exc:
        raise ValueError(str(exc)) from None
    try:
        return re.compile(rf"\A(?:{body})\Z"), names
    except (re.error, RecursionError, OverflowError) as exc:  # pragma: no cover - translation bug guard
        raise ValueError(f"cannot be compiled: {exc}") from None


# --------------------------------------------------------------------------------------------------
# Go's Regexp.Expand
# --------------------------------------------------------------------------------------------------

# A template part: a literal, or the group numbers to try in order (the first that took part wins).
_Part = str | tuple[int, ...]


def _is_name_char(ch: str) -> bool:
    # Go: unicode.IsLetter || unicode.IsDigit (category Nd) || '_'
    return ch.isalpha() or ch.isdecimal() or ch == "_"


@functools.lru_cache(maxsize=1024)
def _compile_template(template: str, names: tuple[str, ...]) -> tuple[_Part, ...]:
    """Pre-resolve ``$`` references of `template` against a regex with group `names`."""
    parts: list[_Part] = []
    lit: list[str] = []
    i, n = 0, len(template)
    while i < n:
        j = template.find("$", i)
        if j < 0:
            lit.append(template[i:])
            break
        lit.append(template[i:j])
        i = j + 1
        if i < n and template[i] == "$":
            lit.append("$")
            i += 1
            continue
        brace = i < n and template[i] == "{"
        k = i + 1 if brace else i
        e = k
        while e < n and _is_name_char(template[e]):
            e += 1
        name = template[k:e]
        if not name or (brace and (e >= n or template[e] != "}")):
            lit.append("$")  # malformed: the $ is literal text, the rest is read again as text
            continue
        i = e + 1 if brace else e
        if name.isascii() and name.isdigit() and (name == "0" or name[0] != "0") and len(name) <= 9:
            num = int(name)
            groups: tuple[int, ...] = (num,) if num < len(names) else ()
        else:
            groups = tuple(g for g, gname in enumerate(names) if gname == name)
        if lit:
            parts.append("".join(lit))
            lit = []
        if groups:
            parts.append(groups)
    if lit and "".join(lit):
        parts.append("".join(lit))
    return tuple(p for p in parts if p != "")


def _expand(parts: tuple[_Part, ...], m: re.Match[str]) -> str:
    out: list[str] = []
    for part in parts:
        if isinstance(part, str):
            out.append(part)
            continue
        for g in part:
            value = m.group(g)
            if value is not None:
                out.append(value)
                break
    return "".join(out)


# --------------------------------------------------------------------------------------------------
# Config
# --------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class RelabelConfig:
    """One relabel rule, validated as Prometheus validates it. Build with `parse_relabel_configs`.

    `regex` is the compiled, anchored (``\\A(?:...)\\Z``) Python translation of the Go regex
    `regex_source`; `group_names` are its Go group names by number.
    """

    source_labels: tuple[str, ...]
    separator: str
    regex: re.Pattern[str]
    modulus: int
    target_label: str
    replacement: str
    action: str
    regex_source: str = _DEFAULT_REGEX
    group_names: tuple[str, ...] = ("", "")
    name_validation: NameValidation = "legacy"


def _as_str(value: object, where: str) -> str:
    if value is None:
        return ""  # like Go's yaml.v2: an explicit null sets the zero value
    if isinstance(value, bool) or not isinstance(value, str | int):
        raise ConfigError(where, f"must be a string (quote it in YAML), got {type(value).__name__} {value!r}")
    return str(value)


def _first_set(*fields: tuple[str, bool]) -> str:
    """The first key that is set, or ""."""
    return next((key for key, is_set in fields if is_set), "")


def _parse_one(raw: object, where: str, scheme: NameValidation) -> RelabelConfig:
    if not isinstance(raw, Mapping):
        raise ConfigError(where, f"must be a mapping with keys {', '.join(_KEYS)}, got {type(raw).__name__}")
    for key in raw:
        if key not in _KEYS:
            named = isinstance(key, str) and key.isprintable() and key != ""
            raise ConfigError(
                f"{where}.{key}" if named else where,
                f"unknown key{'' if named else f' {key!r}'} (expected one of {', '.join(_KEYS)})",
            )

    def at(key: str) -> str:
        return f"{where}.{key}"

    sources_raw = raw.get("source_labels")
    sources_given = sources_raw is not None
    if sources_raw is None:
        sources: tuple[str, ...] = ()
    elif isinstance(sources_raw, list | tuple):
        items = []
        for j, name in enumerate(sources_raw):
            if not isinstance(name, str):
                raise ConfigError(f"{at('source_labels')}[{j}]", f"must be a string, got {name!r}")
            if not _valid_name(name, scheme):
                raise ConfigError(f"{at('source_labels')}[{j}]", f"{name!r} is not a valid label name")
            items.append(name)
        sources = tuple(items)
    else:
        raise ConfigError(at("source_labels"), f"must be a list of label names, got {sources_raw!r}")

    separator = _as_str(raw["separator"], at("separator")) if "separator" in raw else _DEFAULT_SEPARATOR
    replacement = (
        _as_str(raw["replacement"], at("replacement")) if "replacement" in raw else _DEFAULT_REPLACEMENT
    )
    target = _as_str(raw.get("target_label"), at("target_label"))

    regex_given = "regex" in raw
    regex_source = _as_str(raw["regex"], at("regex")) if regex_given else _DEFAULT_REGEX
    try:
        regex, names = compile_go_regex(regex_source)
    except ValueError as exc:
        raise ConfigError(at("regex"), f"invalid regex {regex_source!r}: {exc}") from None

    modulus_raw = raw.get("modulus")
    if modulus_raw is None:
        modulus = 0
    elif isinstance(modulus_raw, bool) or not isinstance(modulus_raw, int):
        raise ConfigError(at("modulus"), f"must be a non-negative integer, got {modulus_raw!r}")
    elif not 0 <= modulus_raw <= _MAX_UINT64:
        raise ConfigError(at("modulus"), f"must be between 0 and 2^64-1, got {modulus_raw}")
    else:
        modulus = modulus_raw

    action_raw = raw.get("action", "replace")
    if action_raw is None or action_raw == "":
        raise ConfigError(at("action"), "relabel action cannot be empty")
    if not isinstance(action_raw, str) or action_raw.lower() not in ACTIONS:
        raise ConfigError(
            at("action"), f"unknown relabel action {action_raw!r} (one of {', '.join(sorted(ACTIONS))})"
        )
    action = action_raw.lower()

    # Prometheus' Config.Validate, in its order.
    if action == "hashmod" and modulus == 0:
        raise ConfigError(at("modulus"), "relabel configuration for hashmod requires non-zero modulus")
    if action in ("replace", "hashmod", "lowercase", "uppercase", "keepequal", "dropequal") and target == "":
        raise ConfigError(
            at("target_label"), f"relabel configuration for {action} action requires 'target_label' value"
        )
    if action == "replace":
        ok = _valid_name_with_vars(target, scheme) if "$" in target else _valid_name(target, scheme)
        if not ok:
            raise ConfigError(at("target_label"), f"{target!r} is invalid 'target_label' for {action} action")
    if action in ("lowercase", "uppercase", "keepequal", "dropequal", "hashmod") and not _valid_name(
        target, scheme
    ):
        raise ConfigError(at("target_label"), f"{target!r} is invalid 'target_label' for {action} action")
    if action in ("lowercase", "uppercase", "keepequal", "dropequal") and replacement != _DEFAULT_REPLACEMENT:
        raise ConfigError(at("replacement"), f"'replacement' can not be set for {action} action")
    if action == "labelmap" and not _valid_name_with_vars(replacement, scheme):
        raise ConfigError(at("replacement"), f"{replacement!r} is invalid 'replacement' for {action} action")
    if action in ("keepequal", "dropequal"):
        # Prometheus compares the regex by identity with the default: giving one at all is an error.
        extra = _first_set(
            ("regex", regex_given), ("modulus", modulus != 0), ("separator", separator != _DEFAULT_SEPARATOR)
        )
        if extra:
            raise ConfigError(
                at(extra),
                f"{action} action requires only 'source_labels' and 'target_label', and no other fields",
            )
    if action in ("labeldrop", "labelkeep"):
        extra = _first_set(
            ("source_labels", sources_given),
            ("target_label", target != ""),
            ("modulus", modulus != 0),
            ("separator", separator != _DEFAULT_SEPARATOR),
            ("replacement", replacement != _DEFAULT_REPLACEMENT),
        )
        if extra:
            raise ConfigError(at(extra), f"{action} action requires only 'regex', and no other fields")

    return RelabelConfig(
        source_labels=sources,
        separator=separator,
        regex=regex,
        modulus=modulus,
        target_label=target,
        replacement=replacement,
        action=action,
        regex_source=regex_source,
        group_names=names,
        name_validation=scheme,
    )


def parse_relabel_configs(
    raw: object, where: str, *, name_validation: NameValidation = "legacy"
) -> tuple[RelabelConfig, ...]:
    """Parse and validate a YAML list of relabel configs (``None`` is an empty list).

    Errors are `ConfigError` whose `where` names the key, e.g. ``<where>[2].regex``. `name_validation`
    is Prometheus' ``metric_name_validation_scheme``: ``"legacy"`` (``[a-zA-Z_][a-zA-Z0-9_]*``, the
    default here) or ``"utf8"`` (any non-empty name; Prometheus 3's default).
    """
    if name_validation not in ("legacy", "utf8"):
        raise ConfigError(where, f"unknown name validation scheme {name_validation!r}")
    if raw is None:
        return ()
    if not isinstance(raw, list | tuple):
        raise ConfigError(where, f"must be a list of relabel configs, got {type(raw).__name__}")
    return tuple(_parse_one(item, f"{where}[{i}]", name_validation) for i, item in enumerate(raw))


# --------------------------------------------------------------------------------------------------
# Applying rules
# --------------------------------------------------------------------------------------------------

_Labels = dict[str, str]


class _Builder:
    """Mirrors Prometheus' labels.Builder where it shows: an input label whose value is "" is deleted
    from the start, setting a label to "" deletes it, and iteration order is the untouched input labels
    sorted by name, then labels set by rules in the order first set."""

    __slots__ = ("added", "cur")

    def __init__(self, labels: Mapping[str, str]) -> None:
        self.cur: _Labels = {k: v for k, v in sorted(labels.items()) if v}
        self.added: set[str] = set()

    def set(self, name: str, value: str) -> None:
        if value == "":
            self.delete(name)
        elif name in self.added:
            self.cur[name] = value
        else:
            self.cur.pop(name, None)
            self.cur[name] = value
            self.added.add(name)

    def delete(self, name: str) -> None:
        self.cur.pop(name, None)
        self.added.discard(name)


_Step = Callable[[_Builder], bool]  # False: drop the series


def _simple_case(value: str, upper: bool) -> str:
    """Go's strings.ToUpper/ToLower: per code point *simple* case mapping (no 'ß' -> 'SS')."""
    if value.isascii():
        return value.upper() if upper else value.lower()
    out = []
    for ch in value:
        mapped = ch.upper() if upper else ch.lower()
        if len(mapped) != 1:
            alt = ch.title() if upper else ("i" if ch == "\u0130" else ch)
            mapped = alt if len(alt) == 1 else ch
        out.append(mapped)
    return "".join(out)


def _hashmod(value: str, modulus: int) -> str:
    digest = hashlib.md5(value.encode("utf-8", "surrogatepass"), usedforsecurity=False).digest()
    return str(int.from_bytes(digest[8:], "big") % modulus)


def _compile_step(cfg: RelabelConfig) -> _Step:
    sources, sep, regex, target, action = (
        cfg.source_labels,
        cfg.separator,
        cfg.regex,
        cfg.target_label,
        cfg.action,
    )
    match = regex.match

    def joined(b: _Builder) -> str:
        get = b.cur.get
        return sep.join([get(n, "") for n in sources])

    if action == "keep":
        return lambda b: match(joined(b)) is not None
    if action == "drop":
        return lambda b: match(joined(b)) is None
    if action == "keepequal":
        return lambda b: b.cur.get(target, "") == joined(b)
    if action == "dropequal":
        return lambda b: b.cur.get(target, "") != joined(b)
    if action in ("lowercase", "uppercase"):
        upper = action == "uppercase"

        def case(b: _Builder) -> bool:
            b.set(target, _simple_case(joined(b), upper))
            return True

        return case
    if action == "hashmod":
        modulus = cfg.modulus

        def hashmod(b: _Builder) -> bool:
            b.set(target, _hashmod(joined(b), modulus))
            return True

        return hashmod

    replacement = _compile_template(cfg.replacement, cfg.group_names)
    scheme = cfg.name_validation
    if action == "replace":
        target_parts = _compile_template(target, cfg.group_names)
        static_target = target if "$" not in target else None

        def replace(b: _Builder) -> bool:
            m = match(joined(b))
            if m is None:
                return True
            name = static_target if static_target is not None else _expand(target_parts, m)
            if static_target is None and not _valid_name(name, scheme):
                return True
            b.set(name, _expand(replacement, m))
            return True

        return replace
    if action == "labelmap":

        def labelmap(b: _Builder) -> bool:
            for name, value in list(b.cur.items()):
                m = match(name)
                if m is not None:
                    new = _expand(replacement, m)
                    if new:  # Prometheus would set a label with an empty name; we never do
                        b.set(new, value)
            return True

        return labelmap
    if action in ("labeldrop", "labelkeep"):
        keep = action == "labelkeep"

        def labelfilter(b: _Builder) -> bool:
            for name in list(b.cur):
                if (match(name) is not None) != keep:
                    b.delete(name)
            return True

        return labelfilter
    raise ValueError(f"unknown relabel action {action!r}")  # pragma: no cover - parse rejects it


class Relabeler:
    """A rule list compiled once; call it per new series.

    >>> r = Relabeler(parse_relabel_configs([{"regex": "go_.*", "source_labels": ["__name__"],
    ...                                       "action": "drop"}], "metric_relabel_configs"))
    >>> r({"__name__": "go_goroutines"}) is None
    True

    Returns a new dict, or None when a rule drops the series. With no rules the input dict itself is
    returned (unless it holds a label whose value is ""): treat results as read-only.
    """

    __slots__ = ("_decisions", "_steps", "configs", "filter_sources")

    _DECISIONS_MAX = 1 << 16

    def __init__(self, configs: Sequence[RelabelConfig]) -> None:
        self.configs: tuple[RelabelConfig, ...] = tuple(configs)
        self._steps: tuple[_Step, ...] = tuple(_compile_step(c) for c in self.configs)
        self.filter_sources: tuple[str, ...] | None = _filter_sources(self.configs)
        """When every rule only keeps or drops (keep, drop, keepequal, dropequal): the labels the
        rules read, in a fixed order. Whether a series is kept then depends on their values alone
        (see :meth:`keeps`), and a kept series is unchanged. None otherwise."""
        self._decisions: dict[tuple[str, ...], bool] = {}

    def __bool__(self) -> bool:
        return bool(self._steps)

    @property
    def decisions(self) -> dict[tuple[str, ...], bool]:
        """What :meth:`keeps` decided so far, ``{values: kept}`` (bounded; cleared when full): the
        Cython parser looks a series up here before calling :meth:`keeps`. Read only."""
        return self._decisions

    def keeps(self, values: tuple[str, ...]) -> bool:
        """For a filter-only rule list: is a series whose ``filter_sources`` have these values
        (``""`` for absent) kept? Decided once per distinct tuple and remembered (bounded)."""
        decided = self._decisions.get(values)
        if decided is None:
            assert self.filter_sources is not None, "keeps() needs a filter-only rule list"
            decided = self(dict(zip(self.filter_sources, values, strict=True))) is not None
            if len(self._decisions) >= self._DECISIONS_MAX:
                self._decisions.clear()
            self._decisions[values] = decided
        return decided

    def __call__(self, labels: Mapping[str, str]) -> dict[str, str] | None:
        if not self._steps:
            if "" not in labels.values() and isinstance(labels, dict):
                return labels
            return {k: v for k, v in labels.items() if v != ""}
        b = _Builder(labels)
        for step in self._steps:
            if not step(b):
                return None
        return b.cur


def _filter_sources(configs: Sequence[RelabelConfig]) -> tuple[str, ...] | None:
    """The labels a keep/drop-only rule list reads (sources, and keepequal's target), or None."""
    names: dict[str, None] = {}
    for c in configs:
        if c.action not in ("keep", "drop", "keepequal", "dropequal"):
            return None
        names.update(dict.fromkeys(c.source_labels))
        if c.action in ("keepequal", "dropequal"):
            names[c.target_label] = None
    return tuple(names)


def relabel(labels: Mapping[str, str], configs: Sequence[RelabelConfig]) -> dict[str, str] | None:
    """Apply `configs` in order to `labels`: a new dict, or None if the series is dropped."""
    return Relabeler(configs)(labels)
