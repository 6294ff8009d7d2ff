"""YAML as Prometheus (Go's yaml.v2) reads a config: scalars keep their text, keys their lines.

``load(text, source)`` is ``yaml.safe_load`` with these differences, each there because Prometheus
reads its config with yaml.v2 into typed fields:

* a mapping is a :class:`YamlMap` (a dict) that remembers the line of each key (``lines``) and the
  source text of each value that YAML 1.1 made a bool, number, date or null (``texts``): a key that
  takes a string (``regex: true``, ``replacement: 1``, a label value ``on``) reads the text as
  written, as yaml.v2 does, not Python's ``str(True)``; a list is a :class:`YamlList` alike;
* mapping keys are their source text (``1: x`` has the key ``"1"``), as yaml.v2 decodes keys into
  strings; a key given twice in one mapping is an error naming both lines (yaml.v2's strict mode);
* :func:`line_of` finds the line of a key path such as ``scrape_configs[2].tls_config.ca_file``.

Environment variables (:func:`expand_percent`, :func:`expand_dollar`):

* ``%{NAME}`` anywhere in the file text, before YAML (vmagent's syntax; NAME is
  ``[a-zA-Z_][a-zA-Z0-9_.-]*``, other ``%{...}`` stay as they are); lines that are whole comments
  are left alone;
* ``$NAME`` / ``${NAME}`` in ``external_labels`` values, as Prometheus expands them (Go's
  ``os.Expand``; ``$$`` is a ``$``).

An unset variable is an error naming it and where (Prometheus would use ``""``).
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from typing import Any

import yaml

from ._exceptions import ConfigError

__all__ = ["YamlList", "YamlMap", "expand_dollar", "expand_percent", "line_of", "load", "source_text"]


class YamlMap(dict[str, Any]):
    """A YAML mapping that knows the line of each key and the source text of non-string scalars."""

    __slots__ = ("line", "lines", "texts")

    def __init__(self) -> None:
        super().__init__()
        self.line = 0
        self.lines: dict[str, int] = {}
        self.texts: dict[str, str] = {}


class YamlList(list[Any]):
    """A YAML sequence that knows the line of each item and the source text of non-string scalars."""

    __slots__ = ("line", "lines", "texts")

    def __init__(self) -> None:
        super().__init__()
        self.line = 0
        self.lines: list[int] = []
        self.texts: dict[int, str] = {}


def source_text(container: object, key: str | int) -> str | None:
    """The text as written of the non-string scalar at ``container[key]`` (None if none recorded)."""
    texts = getattr(container, "texts", None)
    return texts.get(key) if texts is not None else None


_STR_TAG = "tag:yaml.org,2002:str"


class _Loader(yaml.SafeLoader):
    pass


def _construct_map(loader: _Loader, node: yaml.MappingNode) -> YamlMap:
    out = YamlMap()
    out.line = node.start_mark.line + 1
    seen: dict[str, int] = {}
    for key_node, _ in node.value:  # duplicates among the mapping's own keys (merged ones may be overridden)
        if key_node.tag == "tag:yaml.org,2002:merge":
            continue
        if not isinstance(key_node, yaml.ScalarNode):
            raise ConfigError(f"line {key_node.start_mark.line + 1}", "a mapping key must be a string")
        line = key_node.start_mark.line + 1
        if key_node.value in seen:
            raise ConfigError(f"line {line}", f"key {key_node.value!r} is given twice in one mapping "
                              f"(first at line {seen[key_node.value]})")
        seen[key_node.value] = line
    loader.flatten_mapping(node)
    for key_node, value_node in node.value:
        if not isinstance(key_node, yaml.ScalarNode):
            raise ConfigError(f"line {key_node.start_mark.line + 1}", "a mapping key must be a string")
        key = key_node.value
        value = loader.construct_object(value_node, deep=True)
        out[key] = value
        out.lines[key] = key_node.start_mark.line + 1
        if isinstance(value_node, yaml.ScalarNode) and not isinstance(value, str):
            out.texts[key] = value_node.value
    return out


def _construct_seq(loader: _Loader, node: yaml.SequenceNode) -> YamlList:
    out = YamlList()
    out.line = node.start_mark.line + 1
    for i, item in enumerate(node.value):
        value = loader.construct_object(item, deep=True)
        out.append(value)
        out.lines.append(item.start_mark.line + 1)
        if isinstance(item, yaml.ScalarNode) and not isinstance(value, str):
            out.texts[i] = item.value
    return out


_Loader.add_constructor("tag:yaml.org,2002:map", _construct_map)
_Loader.add_constructor("tag:yaml.org,2002:seq", _construct_seq)


def load(text: str, source: str) -> Any:
    """Parse YAML ``text``; a syntax error is a ConfigError at ``source:line:column``."""
    try:
        return yaml.load(text, Loader=_Loader)  # a SafeLoader
    except ConfigError as exc:  # a duplicate or non-string key: exc.where is "line N"
        raise ConfigError(f"{source}:{exc.where[5:]}", exc.problem) from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"{source}:{mark.line + 1}:{mark.column + 1}" if mark is not None else source
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise ConfigError(where, f"invalid YAML: {problem}") from None


_PATH_INDEX = re.compile(r"^\[(\d+)\]")


def line_of(root: object, where: str) -> int:
    """The line of the deepest key of path ``where`` (``a.b[2].c``) found in ``root``; 0 if none.

    A key may itself hold dots (a header or label name): the longest key that fits is taken."""
    node, rest, line = root, where, 0
    while rest:
        if isinstance(node, YamlList):
            m = _PATH_INDEX.match(rest)
            if m is None or int(m.group(1)) >= len(node):
                break
            i = int(m.group(1))
            line, node, rest = node.lines[i], node[i], rest[m.end():].removeprefix(".")
        elif isinstance(node, YamlMap):
            best = ""
            for key in node:
                if len(key) > len(best) and (rest == key or rest.startswith((key + ".", key + "["))):
                    best = key
            if not best:
                break
            line, node, rest = node.lines[best], node[best], rest[len(best):].removeprefix(".")
        else:
            break
    return line


# -- environment variables ------------------------------------------------------------------------

_PERCENT = re.compile(r"%\{([^}]*)\}")
_ENV_NAME = re.compile(r"^[a-zA-Z_][a-zA-Z0-9_.\-]*$")


def expand_percent(text: str, source: str, env: Mapping[str, str] | None = None) -> str:
    """``%{NAME}`` replaced by the environment variable NAME in ``text`` (vmagent's syntax).

    Every unset variable is reported (one ConfigError per occurrence, raised together by the
    caller): ``errors`` collects them as ``(line, name)``."""
    if "%{" not in text:
        return text
    environ = os.environ if env is None else env
    missing: list[ConfigError] = []
    lines = text.split("\n")
    for n, line in enumerate(lines):
        if "%{" not in line or line.lstrip().startswith("#"):
            continue

        def sub(m: re.Match[str], n: int = n) -> str:
            name = m.group(1)
            if not _ENV_NAME.match(name):
                return m.group(0)
            value = environ.get(name)
            if value is None:
                missing.append(ConfigError(f"%{{{name}}}", f"environment variable {name} is not set",
                                           file=source, line=n + 1))
                return m.group(0)
            return value

        lines[n] = _PERCENT.sub(sub, line)
    if missing:
        raise ConfigError.group(missing)
    return "\n".join(lines)


_SPECIAL = frozenset("*#$@!?-0123456789")


def expand_dollar(value: str, where: str, env: Mapping[str, str] | None = None) -> str:
    """``$NAME``, ``${NAME}`` replaced as Go's ``os.Expand`` does (Prometheus' external labels);
    ``$$`` is a literal ``$``; an unset variable is a ConfigError at ``where``."""
    if "$" not in value:
        return value
    environ = os.environ if env is None else env
    out: list[str] = []
    i, n = 0, len(value)
    while i < n:
        c = value[i]
        if c != "$" or i + 1 == n:
            out.append(c)
            i += 1
            continue
        rest = value[i + 1:]
        if rest[0] == "{":
            close = rest.find("}")
            if close <= 1:  # "${}" or "${" without "}": Go drops them; a mistake worth naming
                raise ConfigError(where, f"{value!r}: '${{' without a variable name and '}}' "
                                  "(write $$ for a literal $)")
            name, width = rest[1:close], close + 1
        elif rest[0] in _SPECIAL:
            name, width = rest[0], 1
        else:
            m = re.match(r"[A-Za-z0-9_]*", rest)
            name = m.group(0) if m else ""
            width = len(name)
            if not name:  # "$" before a character that starts no name: kept, as Go keeps it
                out.append("$")
                i += 1
                continue
        if name == "$":
            out.append("$")
        else:
            got = environ.get(name)
            if got is None:
                raise ConfigError(where, f"{value!r}: environment variable {name} is not set "
                                  "(write $$ for a literal $)")
            out.append(got)
        i += 1 + width
    return "".join(out)
