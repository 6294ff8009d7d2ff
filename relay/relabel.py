"""Prometheus relabeling (``relabel_configs`` / ``metric_relabel_configs``), as Prometheus does it.

Follows ``model/relabel/relabel.go`` of Prometheus 3.x:

* every regex is compiled once by RE2 (the ``google-re2`` binding: the engine whose syntax and matching
  rules Go's ``regexp`` follows), matching as ``^(?s:<regex>)$`` (since Prometheus 3.0 ``.`` also matches
  a newline); matching is linear in the input (no backtracking: ``(a+)+b`` cannot stall the event loop),
  and an invalid regex is a one-line `ConfigError` at load time with RE2's reason;
* replacements and ``target_label`` use Go's ``Regexp.Expand`` rules: ``$1``, ``${1}``, ``$name``,
  ``${name}``, ``$$`` for a literal ``$``; a name is as long as possible, so ``$1x`` is the group named
  ``1x`` (which does not exist: it expands to nothing); a malformed ``$`` is kept literally;
* as in Prometheus' ``labels.Builder``, an input label whose value is ``""`` counts as absent from the
  start (``labelmap`` does not see it, it is not in the result), and a label set to ``""`` is removed;
* ``hashmod`` is ``uint64_be(md5(value)[8:16]) % modulus``.

Where this differs from Prometheus, on purpose or by necessity:

* label names are checked with the *legacy* scheme (``[a-zA-Z_][a-zA-Z0-9_]*``) unless
  ``name_validation="utf8"`` (Prometheus 3's default) is passed;
* the regex must be valid on its own: Prometheus pastes it into ``^(?s:...)$``, so it would take
  ``a)|(b`` (as ``^(?s:a)|(b)$``); here that is an error;
* RE2 (C++) differs from Go's ``regexp`` in a few corners: ``\\C`` and non-ASCII group names, which RE2
  takes, are refused as Go refuses them; a regex whose compiled program exceeds RE2's 8 MiB memory budget
  (``\\pL{1000}``) is refused, where Go would compile it; Unicode tables follow RE2's Unicode version;
* YAML scalars that are not strings are taken as written for string keys when the config reader
  kept their text (``regex: true`` is ``"true"``, as yaml.v2 reads it); else refused, except numbers;
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
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Final, Literal

import re2

from ._exceptions import ConfigError

__all__ = [
    "ACTIONS",
    "Match",
    "Regex",
    "RelabelConfig",
    "Relabeler",
    "compile_regex",
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

# One quantifier after a fixed first character: linear in Python's re too (and faster there than RE2
# for a check that runs per expanded target_label).
_LEGACY_NAME: Final = re.compile(r"[a-zA-Z_][a-zA-Z0-9_]*\Z")


def _valid_name(name: str, scheme: NameValidation) -> bool:
    if scheme == "legacy":
        return _LEGACY_NAME.match(name) is not None
    return name != ""


def _valid_name_with_vars(name: str, scheme: NameValidation) -> bool:
    if scheme == "legacy":
        return _LEGACY_TARGET.matches(name)
    return name != ""


# --------------------------------------------------------------------------------------------------
# Regexes: RE2, as in Prometheus
# --------------------------------------------------------------------------------------------------

_RE2_OPTIONS: Final = re2.Options()
_RE2_OPTIONS.dot_nl = True  # Prometheus wraps every regex as ^(?s:...)$; (?-s) inside still turns it off
_RE2_OPTIONS.log_errors = False  # RE2 would also print each syntax error to stderr
_RE2_FILTER_OPTIONS: Final = re2.Options()
_RE2_FILTER_OPTIONS.dot_nl = True
_RE2_FILTER_OPTIONS.log_errors = False
_RE2_FILTER_OPTIONS.never_capture = True  # keep/drop/labeldrop/labelkeep only ask "does it match"
# The binding's compiled object and its Match(anchor, bytes, pos, endpos) -> [(start, end)] per group,
# in bytes. re2's Python-level fullmatch wraps the same call in a generator and offset maps: ~5x slower.
_ANCHOR_BOTH: Final = re2._re2.RE2.Anchor.ANCHOR_BOTH
_NO_SPAN: Final = (-1, -1)
_SURROGATE: Final = re.compile("[\ud800-\udfff]")
_GO_GROUP_NAME: Final = re.compile(r"[A-Za-z0-9_]+\Z")
_PLAIN_LITERAL: Final = re.compile(r"[A-Za-z0-9_:]*\Z")  # no RE2 metacharacter: matches itself only


def _utf8(text: str) -> bytes:
    try:
        return text.encode()
    except UnicodeEncodeError:
        # A lone surrogate (e.g. from a JSON "\ud800" escape): Go strings hold U+FFFD there instead.
        return _SURROGATE.sub("\ufffd", text).encode()


def _re2_problem(exc: Exception) -> str:
    arg = exc.args[0] if exc.args else ""
    text = arg.decode("utf-8", "replace") if isinstance(arg, bytes) else str(arg)
    if text.startswith("pattern too large"):
        text += " (RE2's memory budget is 8 MiB per regex)"
    return " ".join(text.split())


def _capture_names(src: str) -> list[str] | None:
    """Names of the capturing groups of `src` (valid RE2 syntax), by group number from 1, or None when
    this lexical scan cannot tell (the caller then falls back to RE2's name -> first group map).

    Only needed for a name used twice, ``(?P<x>a)|(?P<x>b)``: Go's Expand takes the first group of that
    name that took part, and RE2's binding only reports the first group of each name.
    """
    names: list[str] = []
    i, n = 0, len(src)
    while i < n:
        c = src[i]
        if c == "\\":
            if src.startswith("\\Q", i):
                end = src.find("\\E", i + 2)
                i = n if end < 0 else end + 2
            else:
                i += 2
        elif c == "[":
            i += 1
            if i < n and src[i] == "^":
                i += 1
            if i < n and src[i] == "]":
                i += 1  # a ] first in a class is a literal
            while i < n and src[i] != "]":
                if src[i] == "\\":
                    i += 2
                elif src.startswith("[:", i) and src.find(":]", i + 2) >= 0:
                    i = src.find(":]", i + 2) + 2
                else:
                    i += 1
            i += 1
        elif c == "(":
            if src.startswith("(?P<", i) or src.startswith("(?<", i):
                start = i + (4 if src[i + 2] == "P" else 3)
                end = src.find(">", start)
                if end < 0:
                    return None
                names.append(src[start:end])
                i = end + 1
            else:
                if not src.startswith("(?", i):
                    names.append("")
                i += 1
        else:
            i += 1
    return names


class Regex:
    """A relabel regex compiled by RE2, anchored at both ends as Prometheus' ``^(?s:<source>)$``.

    RE2 runs in time linear in the input (no backtracking), and it is the engine Go's ``regexp`` follows:
    the syntax and matching rules are Prometheus'. Equal when the sources are equal.

    ``match(text)`` is the `Match` of all of `text`, or None; ``matches(text)`` is whether there is one
    (cheaper: no groups). Two sources skip RE2, for the same answers: ``(.*)`` and ``.*`` (every text:
    the default regex) and a plain literal such as ``up`` or ``etcd_server_has_leader`` (equality).
    """

    __slots__ = ("_capture", "_filter", "groups", "match", "matches", "names", "source")

    def __init__(self, source: str) -> None:
        """Compile `source`; raises ValueError with RE2's one-line reason when it is not a valid regex."""
        # \C (any byte) is RE2-only: Go refuses it, and it could split a UTF-8 sequence.
        if "\\C" in source and "C" in _escaped_letters(source):
            raise ValueError("invalid escape sequence: \\C")
        if _SURROGATE.search(source):  # e.g. a YAML "\ud800" escape; Go: ErrInvalidUTF8
            raise ValueError("invalid UTF-8 (a lone surrogate code point)")
        try:
            capture = re2.compile(source, _RE2_OPTIONS)
            filt = re2.compile(source, _RE2_FILTER_OPTIONS)
        except re2.error as exc:
            raise ValueError(_re2_problem(exc)) from None
        index = capture.groupindex
        for name in index:
            if _GO_GROUP_NAME.match(name) is None:  # RE2 accepts Unicode letters too; Go only [A-Za-z0-9_]
                raise ValueError(f"invalid named capture: (?P<{name}>")
        count = capture.groups
        scanned = _capture_names(source) if index else [""] * count
        if scanned is None or not _agrees(scanned, count, index):
            scanned = [""] * count  # cannot tell: each name is its first group (RE2's map)
            for name, group in index.items():
                scanned[group - 1] = name
        self.source: Final = source
        self.groups: Final = count
        self.names: Final[tuple[str, ...]] = ("", *scanned)
        """Group names by group number (``""`` for unnamed; index 0 is the whole match)."""
        self._capture: Callable[[object, bytes, int, int], list[tuple[int, int]]] = capture._regexp.Match
        self._filter: Callable[[object, bytes, int, int], list[tuple[int, int]]] = filt._regexp.Match
        self.match: Callable[[str], Match | None]
        self.matches: Callable[[str], bool]
        if source in ("(.*)", ".*"):
            self.match, self.matches = _match_everything, _always
        elif _PLAIN_LITERAL.match(source) is not None:
            self.match, self.matches = self._literal(source), source.__eq__
        else:
            self.match, self.matches = self._run_match, self._run_matches

    def __repr__(self) -> str:
        return f"Regex({self.source!r})"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Regex) and other.source == self.source

    def __hash__(self) -> int:
        return hash((Regex, self.source))

    def __reduce__(self) -> tuple[type[Regex], tuple[str]]:
        return Regex, (self.source,)

    def _run_matches(self, text: str) -> bool:
        b = _utf8(text)
        return self._filter(_ANCHOR_BOTH, b, 0, len(b))[0] != _NO_SPAN

    def _run_match(self, text: str) -> Match | None:
        b = _utf8(text)
        spans = self._capture(_ANCHOR_BOTH, b, 0, len(b))
        return None if spans[0] == _NO_SPAN else Match(b, spans)

    @staticmethod
    def _literal(literal: str) -> Callable[[str], Match | None]:
        return lambda text: _WholeMatch(text) if text == literal else None


def _always(_: str) -> bool:
    return True


def _match_everything(text: str) -> Match | None:
    return _WholeMatch(text if text.isascii() else _SURROGATE.sub("\ufffd", text))


def _agrees(names: list[str], count: int, index: Mapping[str, int]) -> bool:
    """Does a scan's group names agree with RE2's group count and name -> first group map?"""
    return (
        len(names) == count
        and {n for n in names if n} == set(index)
        and all(names.index(name) == group - 1 for name, group in index.items())
    )


def _escaped_letters(source: str) -> set[str]:
    """The characters that follow an escaping backslash in `source` (outside ``\\Q...\\E``)."""
    out: set[str] = set()
    i, n = 0, len(source)
    while i < n:
        if source[i] != "\\":
            i += 1
        elif source.startswith("\\Q", i):
            end = source.find("\\E", i + 2)
            i = n if end < 0 else end + 2
        else:
            out.add(source[i + 1 : i + 2])
            i += 2
    return out


class Match:
    """A successful `Regex.match`: group texts by number, decoded on demand."""

    __slots__ = ("_b", "_spans")

    def __init__(self, b: bytes, spans: list[tuple[int, int]]) -> None:
        self._b = b
        self._spans = spans

    def group(self, g: int = 0) -> str | None:
        """Text of group `g`, or None when the group took no part in the match."""
        start, end = self._spans[g]
        return None if start < 0 else self._b[start:end].decode()


class _WholeMatch(Match):
    """A match in which every group (there are at most two: ``(.*)``) is the whole text."""

    __slots__ = ("_text",)

    def __init__(self, text: str) -> None:  # no super().__init__: group() is all it needs
        self._text = text

    def group(self, g: int = 0) -> str | None:
        return self._text


# Prometheus' relabelTargetLegacy: a legacy label name in which ``$var`` / ``${var}`` may appear. Its
# nested + would backtrack exponentially in Python's re (a 20-character name ending in "-": 11 s).
_LEGACY_TARGET: Final = Regex(r"(?:(?:[a-zA-Z_]|\$(?:\{[0-9A-Za-z_]+\}|[0-9A-Za-z_]+))+[0-9A-Za-z_]*)+")


@functools.lru_cache(maxsize=1024)
def compile_regex(source: str) -> Regex:
    """A relabel regex, compiled once per distinct source (see `Regex`); raises ValueError if invalid."""
    return Regex(source)


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


def _expand(parts: tuple[_Part, ...], m: Match) -> str:
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

    `regex` is `regex_source` compiled by RE2 (anchored at both ends, as Prometheus does);
    `group_names` are its group names by number.
    """

    source_labels: tuple[str, ...]
    separator: str
    regex: Regex
    modulus: int
    target_label: str
    replacement: str
    action: str
    regex_source: str = _DEFAULT_REGEX
    group_names: tuple[str, ...] = ("", "")
    name_validation: NameValidation = "legacy"


def _as_str(value: object, where: str, written: str | None = None) -> str:
    """A string key's value; a YAML bool or number is taken as written (``written``, the source
    text the config reader kept), as Go's yaml.v2 does: ``regex: true`` is ``"true"``."""
    if value is None:
        return ""  # like Go's yaml.v2: an explicit null sets the zero value
    if isinstance(value, str):
        return value
    if written is not None:
        return written
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ConfigError(where, f"must be a string (quote it in YAML), got {type(value).__name__} {value!r}")
    return str(value)


def _written(raw: Mapping[object, object], key: str) -> str | None:
    texts = getattr(raw, "texts", None)  # relay._yaml.YamlMap: the source text of non-string scalars
    return texts.get(key) if isinstance(texts, dict) else None


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

    separator = _as_str(raw["separator"], at("separator"), _written(raw, "separator")) if "separator" in raw else _DEFAULT_SEPARATOR
    replacement = (
        _as_str(raw["replacement"], at("replacement"), _written(raw, "replacement")) if "replacement" in raw else _DEFAULT_REPLACEMENT
    )
    target = _as_str(raw.get("target_label"), at("target_label"), _written(raw, "target_label"))

    regex_given = "regex" in raw
    regex_source = _as_str(raw["regex"], at("regex"), _written(raw, "regex")) if regex_given else _DEFAULT_REGEX
    try:
        regex = compile_regex(regex_source)
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
        group_names=regex.names,
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
_NAME_MEMO_MAX: Final = 1 << 12  # labelmap / labeldrop / labelkeep: remembered answers per label name


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
    match, matches = regex.match, regex.matches

    def joined(b: _Builder) -> str:
        get = b.cur.get
        return sep.join([get(n, "") for n in sources])

    if action == "keep":
        return lambda b: matches(joined(b))
    if action == "drop":
        return lambda b: not matches(joined(b))
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

        mapped: dict[str, str] = {}  # label name -> its new name ("" when none): names repeat

        def labelmap(b: _Builder) -> bool:
            for name, value in list(b.cur.items()):
                new = mapped.get(name)
                if new is None:
                    m = match(name)
                    new = "" if m is None else _expand(replacement, m)
                    if len(mapped) >= _NAME_MEMO_MAX:
                        mapped.clear()
                    mapped[name] = new
                if new:  # Prometheus would set a label with an empty name; we never do
                    b.set(new, value)
            return True

        return labelmap
    if action in ("labeldrop", "labelkeep"):
        keep = action == "labelkeep"

        kept: dict[str, bool] = {}  # label name -> kept: names repeat, series after series

        def labelfilter(b: _Builder) -> bool:
            for name in list(b.cur):
                k = kept.get(name)
                if k is None:
                    k = matches(name) == keep
                    if len(kept) >= _NAME_MEMO_MAX:
                        kept.clear()
                    kept[name] = k
                if not k:
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
