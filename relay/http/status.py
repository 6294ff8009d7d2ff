"""The status endpoints, in the JSON shapes of Prometheus' ``web/api/v1/api.go``.

    /config                      the loaded config file as YAML, every secret shown as <secret>
    /api/v1/status/config        {"yaml": the same}
    /api/v1/status/flags         {flag name: value as a string}
    /api/v1/status/buildinfo     version, revision, branch, buildUser, buildDate, goVersion (+ python, C)
    /api/v1/status/runtimeinfo   startTime, CWD, hostname, serverTime, reloadConfigSuccess, lastConfigTime, ...
    /api/v1/targets/metadata     [{target, metric, type, help, unit}] for ?match_target=&metric=&limit=

Each answers ``{"status": "success", "data": ...}``; a bad parameter is a 400
``{"status": "error", "errorType": "bad_data", "error": "parameter NAME: ..."}``.
"""

from __future__ import annotations

import datetime
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import orjson
import yaml

from ..remote.writer import redact_url
from .server import Response

__all__ = [
    "SECRET_KEYS",
    "api_error",
    "api_ok",
    "build_info_json",
    "parse_selector",
    "redact_config",
    "rfc3339",
    "targets_metadata",
]

#: config keys whose values are secrets (Prometheus' config.Secret fields and ours): shown as <secret>
SECRET_KEYS = frozenset({
    "password", "bearer_token", "credentials", "client_secret", "secret_key", "access_key_secret",
    "proxy_connect_header", "token", "api_key", "session_token", "secrets",
})
#: in a ``headers`` map, a header whose name has one of these is a credential: its value is hidden
_SECRET_HEADER_PARTS = ("auth", "token", "key", "cookie", "secret", "password")
SECRET = "<secret>"


def api_ok(data: Any) -> Response:
    return Response(200, orjson.dumps({"status": "success", "data": data}), "application/json")


def api_error(message: str, status: int = 400, error_type: str = "bad_data") -> Response:
    return Response(status, orjson.dumps({"status": "error", "errorType": error_type, "error": message}),
                    "application/json")


def rfc3339(seconds: float) -> str:
    """As Go marshals a time.Time: ``2026-12-01T23:21:45.123Z`` (UTC)."""
    if seconds <= 0:
        return "0001-01-01T00:00:00Z"  # Go's zero time
    t = datetime.datetime.fromtimestamp(seconds, datetime.UTC)
    return t.strftime("%Y-%m-%dT%H:%M:%S.") + f"{t.microsecond // 1000:03d}Z"


def _redact(value: Any, key: str | None = None) -> Any:
    if key is not None and key.lower() in SECRET_KEYS and value not in (None, ""):
        return SECRET
    if isinstance(value, dict):
        if key == "headers":
            return {k: SECRET if any(p in str(k).lower() for p in _SECRET_HEADER_PARTS) else _redact(v)
                    for k, v in value.items()}
        return {k: _redact(v, str(k)) for k, v in value.items()}
    if isinstance(value, list):
        return [_redact(v) for v in value]
    if isinstance(value, str) and "://" in value and "@" in value:
        return redact_url(value)
    return value


def redact_config(text: str) -> str:
    """The config file's YAML with every secret value (and URL userinfo) shown as ``<secret>``."""
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError:  # it was loaded, so it parses; still, never show it raw
        return "# the config file no longer parses\n"
    if data is None:
        return ""
    return yaml.safe_dump(_redact(data), sort_keys=False, allow_unicode=True, default_flow_style=False)


def build_info_json(info: Mapping[str, str]) -> dict[str, str]:
    """``/api/v1/status/buildinfo``: Prometheus' fields (goVersion empty: this is Python), and ours."""
    return {
        "version": info["version"],
        "revision": info["revision"],
        "branch": "",
        "buildUser": "",
        "buildDate": "",
        "goVersion": "",
        "pythonVersion": info["python_version"],
        "cExtensions": info["c_extensions"],
    }


# -- /api/v1/targets/metadata ----------------------------------------------------------------

@dataclass(frozen=True)
class Matcher:
    name: str
    op: str  # = != =~ !~
    value: str
    regex: re.Pattern[str] | None = None

    def matches(self, labels: Mapping[str, str]) -> bool:
        v = labels.get(self.name, "")
        if self.op == "=":
            return v == self.value
        if self.op == "!=":
            return v != self.value
        assert self.regex is not None
        hit = self.regex.fullmatch(v) is not None
        return hit if self.op == "=~" else not hit


_MATCHER = re.compile(r'\s*([A-Za-z_][A-Za-z0-9_]*)\s*(=~|!~|!=|=)\s*("(?:[^"\\]|\\.)*"|\'(?:[^\'\\]|\\.)*\')\s*(,|$)')
_NAME = re.compile(r"[A-Za-z_:][A-Za-z0-9_:]*")


def _unquote(s: str) -> str:
    body = s[1:-1]
    return re.sub(r"\\(.)", lambda m: {"n": "\n", "t": "\t"}.get(m.group(1), m.group(1)), body)


def parse_selector(text: str) -> list[Matcher]:
    """A series selector (``up{job="etcd",instance=~"a.*"}``, ``{job!="x"}``) as label matchers;
    ValueError (a one-line reason) when it is not one."""
    text = text.strip()
    matchers: list[Matcher] = []
    m = _NAME.match(text)
    if m:
        matchers.append(Matcher("__name__", "=", m.group(0)))
        text = text[m.end():].strip()
    if not text:
        if not matchers:
            raise ValueError("empty selector")
        return matchers
    if not (text.startswith("{") and text.endswith("}")):
        raise ValueError(f"{text[:64]!r} is not a series selector like {{job=\"etcd\"}}")
    body = text[1:-1].strip()
    pos = 0
    while pos < len(body):
        mm = _MATCHER.match(body, pos)
        if not mm or mm.end() == pos:
            raise ValueError(f"cannot parse label matcher at {body[pos:pos + 32]!r}")
        name, op, quoted = mm.group(1), mm.group(2), mm.group(3)
        value = _unquote(quoted)
        regex = None
        if op in ("=~", "!~"):
            try:
                regex = re.compile(value)
            except re.error as exc:
                raise ValueError(f"{name}{op}{quoted}: bad regex: {exc}") from None
        matchers.append(Matcher(name, op, value, regex))
        pos = mm.end()
    if not matchers:
        raise ValueError("a selector needs at least one label matcher")
    return matchers


def targets_metadata(targets: Iterable[tuple[Mapping[str, str], Mapping[str, Any]]],
                     query: Mapping[str, list[str]]) -> Response:
    """``/api/v1/targets/metadata`` over (target labels, {metric: Family}) pairs."""
    limit = -1
    raw = query.get("limit", [""])[0]
    if raw:
        try:
            limit = int(raw)
        except ValueError:
            return api_error(f"parameter limit: {raw[:64]!r} is not a number")
    matchers: list[Matcher] = []
    selector = query.get("match_target", [""])[0]
    if selector:
        try:
            matchers = parse_selector(selector)
        except ValueError as exc:
            return api_error(f"parameter match_target: {exc}")
    metric = query.get("metric", [""])[0]
    out: list[dict[str, Any]] = []
    for labels, metadata in targets:
        if 0 <= limit <= len(out):
            break
        if not all(m.matches(labels) for m in matchers):
            continue
        families = metadata.values() if not metric else [f for f in (metadata.get(metric),) if f is not None]
        for f in families:
            entry: dict[str, Any] = {"target": dict(labels)}
            if not metric:
                entry["metric"] = f.name
            entry.update(type=f.type, help=f.help, unit=f.unit)
            out.append(entry)
    return api_ok(out)

