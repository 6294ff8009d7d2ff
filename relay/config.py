"""The configuration file: Prometheus-compatible YAML, read into frozen dataclasses.

Supported (a Prometheus config that scrapes etcd and remote-writes works unchanged if it uses
only these): ``global`` (scrape_interval, scrape_timeout, evaluation_interval (etcd_health),
external_labels, the limits), ``scrape_configs`` (job_name, scrape_interval, scrape_timeout,
metrics_path, scheme, params, honor_labels, honor_timestamps, sample_limit, body_size_limit,
label_limit, label_name_length_limit, label_value_length_limit, keep_dropped_targets, relabel_configs,
metric_relabel_configs, static_configs, file_sd_configs, dns_sd_configs (plus our nameservers),
http_sd_configs, kubernetes_sd_configs, our etcd_sd_configs, tls_config, basic_auth, authorization),
``scrape_config_files`` (globs of files holding more ``scrape_configs``), ``remote_write`` (url, name,
remote_timeout, headers,
write_relabel_configs, queue_config, tls_config, basic_auth, authorization), our ``cluster`` and our
``etcd_health`` (enabled, group_by, evaluation_interval (default: global.evaluation_interval, 15s),
overrides of the etcd mixin's rules, alertmanagers).

Every error is a :class:`ConfigError` whose message names the key path and the problem, e.g.
``scrape_configs[0].scrape_timeout: "5x" is not a duration (like 15s, 1m, 500ms)``.
Relative file paths are resolved against the config file's folder, as Prometheus does.
"""

from __future__ import annotations

import enum
import re
from collections.abc import Iterator, Mapping
from dataclasses import MISSING, dataclass, field, fields, replace
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import yaml

from ._exceptions import ConfigError
from .relabel import RelabelConfig, parse_relabel_configs

__all__ = [
    "AlertmanagerConfig",
    "Authorization",
    "BasicAuth",
    "ClusterConfig",
    "Config",
    "DNSSDConfig",
    "EtcdHealthConfig",
    "EtcdSDConfig",
    "FileSDConfig",
    "GlobalConfig",
    "HTTPClientConfig",
    "HTTPSDConfig",
    "KubernetesSDConfig",
    "QueueConfig",
    "RemoteWriteConfig",
    "ScrapeConfig",
    "Secret",
    "StaticConfig",
    "TLSConfig",
    "load_config",
    "parse_config",
    "parse_duration",
    "parse_size",
]


class Secret(str):
    """A string that never shows itself in repr() or str() of the config objects holding it."""

    __slots__ = ()

    def __repr__(self) -> str:
        return "<secret>"

    def reveal(self) -> str:
        return str.__str__(self)


_DURATION_RE = re.compile(r"^((\d+)y)?((\d+)w)?((\d+)d)?((\d+)h)?((\d+)m)?((\d+)s)?((\d+)ms)?$")
_DURATION_UNITS = (365 * 86400.0, 7 * 86400.0, 86400.0, 3600.0, 60.0, 1.0, 0.001)


def parse_duration(text: object, where: str) -> float:
    """A Prometheus duration (``1h30m``, ``15s``, ``500ms``) in seconds."""
    if isinstance(text, bool) or not isinstance(text, str | int):
        raise ConfigError(where, f"{text!r} is not a duration (like 15s, 1m, 500ms)")
    s = str(text).strip()
    if s == "0":
        return 0.0
    m = _DURATION_RE.match(s)
    if not s or m is None:
        raise ConfigError(where, f"{s!r} is not a duration (like 15s, 1m, 500ms)")
    groups = m.groups()[1::2]
    return sum(int(g) * unit for g, unit in zip(groups, _DURATION_UNITS, strict=True) if g)


DEFAULT_BODY_SIZE_LIMIT = 16 << 20  # body_size_limit when none is set (vmagent's -promscrape.maxScrapeSize)
_SIZE_RE = re.compile(r"^(\d+(?:\.\d+)?)\s*([KMGTPE]?i?B)?$", re.IGNORECASE)
_SIZE_UNITS = {"": 1, "B": 1, "K": 1024, "M": 1024**2, "G": 1024**3, "T": 1024**4, "P": 1024**5, "E": 1024**6}


def parse_size(text: object, where: str) -> int:
    """A Prometheus byte size (``10MB``, ``512KiB``, ``0``); units are powers of 1024 as in Prometheus."""
    if isinstance(text, int) and not isinstance(text, bool):
        return text
    m = _SIZE_RE.match(str(text).strip()) if isinstance(text, str) else None
    if m is None:
        raise ConfigError(where, f"{text!r} is not a size (like 10MB, 512KiB, 0)")
    unit = (m.group(2) or "B").upper()[0]
    return int(float(m.group(1)) * _SIZE_UNITS[unit if unit != "B" else "B"])


_LABEL_NAME_RE = re.compile(r"^[a-zA-Z_][a-zA-Z0-9_]*$")


class _Unset(enum.Enum):
    UNSET = 0


_UNSET = _Unset.UNSET  # "no default given": the reader takes the dataclass field's default


def field_default(cls: type, name: str) -> Any:
    """The default of dataclass ``cls``'s field ``name``: the one place each config default is written."""
    for f in fields(cls):
        if f.name == name:
            if f.default is not MISSING:
                return f.default
            if f.default_factory is not MISSING:
                return f.default_factory()
            raise TypeError(f"{cls.__name__}.{name} has no default")
    raise TypeError(f"{cls.__name__} has no field {name!r}")


class _Section:
    """Reads one mapping of the YAML, tracking which keys were used so unknown keys are errors.

    ``of`` is the dataclass the section becomes: a key that is absent takes the default of the
    field of the same name, so each default is written once, in the dataclass. A reader is given
    an explicit ``default`` only where the value comes from elsewhere (inherited from ``global``).
    """

    def __init__(self, raw: object, where: str, *, base: Path, of: type | None = None) -> None:
        if raw is None:
            raw = {}
        if not isinstance(raw, Mapping):
            raise ConfigError(where, f"must be a mapping, got {type(raw).__name__}")
        self.raw: Mapping[str, Any] = raw
        self.where = where
        self.base = base
        self.of = of
        self.used: set[str] = set()

    def view(self, of: type) -> _Section:
        """The same mapping read into another dataclass (keys used by either count as used)."""
        other = _Section(self.raw, self.where, base=self.base, of=of)
        other.used = self.used
        return other

    def default(self, key: str, given: Any = _UNSET) -> Any:
        if given is not _UNSET:
            return given
        if self.of is None:
            raise TypeError(f"{self.where or 'top level'}: no dataclass to take the default of {key!r} from")
        return field_default(self.of, key)

    def at(self, key: str) -> str:
        return f"{self.where}.{key}" if self.where else key

    def get(self, key: str) -> Any:
        self.used.add(key)
        return self.raw.get(key)

    def has(self, key: str) -> bool:
        return key in self.raw and self.raw[key] is not None

    def text(self, key: str, default: str | _Unset = _UNSET) -> str:
        v = self.get(key)
        if v is None:
            return self.default(key, default)
        if not isinstance(v, str | int | float) or isinstance(v, bool):
            raise ConfigError(self.at(key), f"must be a string, got {type(v).__name__}")
        return str(v)

    def optional_text(self, key: str) -> str | None:
        """A string, or the field's default (None) when absent; an empty string counts as absent."""
        if self.get(key) is None:
            return self.default(key)
        return self.text(key) or None

    def secret(self, key: str, default: _Unset | None = _UNSET) -> Secret | None:
        v = self.get(key)
        if v is None:
            return self.default(key, default)
        if not isinstance(v, str):
            raise ConfigError(self.at(key), "must be a string")
        return Secret(v)

    def path(self, key: str, default: _Unset | None = _UNSET) -> str | None:
        if self.get(key) is None:
            return self.default(key, default)
        v = self.text(key)
        if not v:
            return None
        p = Path(v)
        return str(p if p.is_absolute() else self.base / p)

    def flag(self, key: str, default: bool | _Unset = _UNSET) -> bool:
        v = self.get(key)
        if v is None:
            return self.default(key, default)
        if not isinstance(v, bool):
            raise ConfigError(self.at(key), f"must be true or false, got {v!r}")
        return v

    def integer(self, key: str, default: int | _Unset = _UNSET, *, minimum: int = 0) -> int:
        v = self.get(key)
        if v is None:
            return self.default(key, default)
        if isinstance(v, bool) or not isinstance(v, int):
            raise ConfigError(self.at(key), f"must be an integer, got {v!r}")
        if v < minimum:
            raise ConfigError(self.at(key), f"must be at least {minimum}, got {v}")
        return v

    def duration(self, key: str, default: float | _Unset = _UNSET) -> float:
        v = self.get(key)
        return self.default(key, default) if v is None else parse_duration(v, self.at(key))

    def size(self, key: str, default: int | _Unset = _UNSET) -> int:
        v = self.get(key)
        return self.default(key, default) if v is None else parse_size(v, self.at(key))

    def seq(self, key: str) -> list[Any]:
        v = self.get(key)
        if v is None:
            return []
        if not isinstance(v, list):
            raise ConfigError(self.at(key), f"must be a list, got {type(v).__name__}")
        return v

    def str_map(self, key: str, *, label_names: bool = False) -> dict[str, str]:
        v = self.get(key)
        if v is None:
            return {}
        if not isinstance(v, Mapping):
            raise ConfigError(self.at(key), f"must be a mapping, got {type(v).__name__}")
        out: dict[str, str] = {}
        for k, val in v.items():
            if label_names and not _LABEL_NAME_RE.match(str(k)):
                raise ConfigError(f"{self.at(key)}.{k}", "is not a valid label name")
            if val is None or isinstance(val, Mapping | list):
                raise ConfigError(f"{self.at(key)}.{k}", "must be a string")
            out[str(k)] = str(val)
        return out

    def relabel_configs(self, key: str) -> tuple[RelabelConfig, ...]:
        return parse_relabel_configs(self.get(key) or [], self.at(key))

    def section(self, key: str, of: type | None = None) -> _Section:
        return _Section(self.get(key), self.at(key), base=self.base, of=of)

    def sections(self, key: str, of: type) -> Iterator[_Section]:
        """The mappings of list ``key`` one by one (each read before the next is checked), into ``of``."""
        for i, s in enumerate(self.seq(key)):
            yield _Section(s, f"{self.at(key)}[{i}]", base=self.base, of=of)

    def done(self, ignored: tuple[str, ...] = ()) -> None:
        for key in self.raw:
            if key not in self.used and key not in ignored:
                raise ConfigError(self.at(str(key)), "unknown key")


@dataclass(frozen=True)
class TLSConfig:
    ca_file: str | None = None
    cert_file: str | None = None
    key_file: str | None = None
    server_name: str | None = None
    insecure_skip_verify: bool = False
    min_version: str | None = None


@dataclass(frozen=True)
class BasicAuth:
    username: str = ""
    password: Secret | None = field(default=None, repr=False)
    password_file: str | None = None


@dataclass(frozen=True)
class Authorization:
    type: str = "Bearer"
    credentials: Secret | None = field(default=None, repr=False)
    credentials_file: str | None = None


@dataclass(frozen=True)
class HTTPClientConfig:
    """The TLS and auth settings of an HTTP client; equal settings share one client."""

    tls_config: TLSConfig = TLSConfig()
    basic_auth: BasicAuth | None = None
    authorization: Authorization | None = None
    follow_redirects: bool = True


@dataclass(frozen=True)
class StaticConfig:
    targets: tuple[str, ...]
    labels: tuple[tuple[str, str], ...] = ()


@dataclass(frozen=True)
class FileSDConfig:
    files: tuple[str, ...]
    refresh_interval: float = 300.0


@dataclass(frozen=True)
class EtcdSDConfig:
    """Discover every member of a running etcd cluster from its member list.

    ``endpoints`` are client URLs of one cluster (``https://10.0.0.1:2379``); each member becomes a
    target at its client URL's host, with ``metrics_port`` (when set) instead of the client port.
    """

    endpoints: tuple[str, ...]
    refresh_interval: float = 30.0
    metrics_port: int = 0
    http: HTTPClientConfig = HTTPClientConfig()


@dataclass(frozen=True)
class DNSSDConfig:
    """DNS service discovery, as Prometheus' ``dns_sd_configs``; ``nameservers`` is ours.

    ``nameservers`` (``(ip, port)`` pairs) replaces the system resolver (/etc/resolv.conf); names
    are then asked for as written, without the search list.
    """

    names: tuple[str, ...]
    type: str = "SRV"  # SRV, A, AAAA, MX or NS
    port: int = 0  # the target port for every type but SRV (required there)
    refresh_interval: float = 30.0
    nameservers: tuple[tuple[str, int], ...] = ()


@dataclass(frozen=True)
class HTTPSDConfig:
    """HTTP service discovery, as Prometheus' ``http_sd_configs``: target groups as JSON from ``url``."""

    url: str
    refresh_interval: float = 60.0
    http: HTTPClientConfig = HTTPClientConfig()


@dataclass(frozen=True)
class ScrapeConfig:
    job_name: str
    scrape_interval: float
    scrape_timeout: float
    metrics_path: str = "/metrics"
    scheme: str = "http"
    params: tuple[tuple[str, tuple[str, ...]], ...] = ()
    honor_labels: bool = False
    honor_timestamps: bool = True
    sample_limit: int = 0
    body_size_limit: int = DEFAULT_BODY_SIZE_LIMIT  # 0: no limit, as Prometheus
    label_limit: int = 0
    label_name_length_limit: int = 0
    label_value_length_limit: int = 0
    keep_dropped_targets: int = 1000  # per job, for /api/v1/targets (0 = all, as Prometheus' default)
    relabel_configs: tuple[RelabelConfig, ...] = ()
    metric_relabel_configs: tuple[RelabelConfig, ...] = ()
    static_configs: tuple[StaticConfig, ...] = ()
    file_sd_configs: tuple[FileSDConfig, ...] = ()
    etcd_sd_configs: tuple[EtcdSDConfig, ...] = ()
    dns_sd_configs: tuple[DNSSDConfig, ...] = ()
    http_sd_configs: tuple[HTTPSDConfig, ...] = ()
    kubernetes_sd_configs: tuple[KubernetesSDConfig, ...] = ()
    http: HTTPClientConfig = HTTPClientConfig()


@dataclass(frozen=True)
class QueueConfig:
    capacity: int = 10000
    min_shards: int = 1
    max_shards: int = 50
    max_samples_per_send: int = 10000  # Prometheus: 2000; fewer, larger sends cost 15-30% less CPU here
    batch_send_deadline: float = 5.0
    min_backoff: float = 0.03
    max_backoff: float = 5.0
    retry_on_http_429: bool = True


@dataclass(frozen=True)
class RemoteWriteConfig:
    url: str
    name: str = ""
    remote_timeout: float = 30.0
    headers: tuple[tuple[str, str], ...] = field(default=(), repr=False)
    write_relabel_configs: tuple[RelabelConfig, ...] = ()
    queue_config: QueueConfig = QueueConfig()
    http: HTTPClientConfig = HTTPClientConfig()


@dataclass(frozen=True)
class GlobalConfig:
    scrape_interval: float = 60.0
    scrape_timeout: float = 10.0
    external_labels: tuple[tuple[str, str], ...] = ()
    sample_limit: int = 0
    body_size_limit: int = DEFAULT_BODY_SIZE_LIMIT  # 0: no limit, as Prometheus
    label_limit: int = 0
    label_name_length_limit: int = 0
    label_value_length_limit: int = 0
    keep_dropped_targets: int = 1000


@dataclass(frozen=True)
class ClusterConfig:
    """Sharding of targets across relay replicas (as vmagent's -promscrape.cluster.*)."""

    members_count: int = 1
    member_num: int = 0
    replication_factor: int = 1
    replica_label: str = "relay_replica"


@dataclass(frozen=True)
class AlertmanagerConfig:
    """One ``etcd_health.alertmanagers`` entry, as Prometheus' ``alertmanager_config`` (parsed and
    checked; the relay does not send to Alertmanager yet)."""

    targets: tuple[str, ...]
    scheme: str = "http"
    path_prefix: str = "/"
    api_version: str = "v2"
    timeout: float = 10.0
    http: HTTPClientConfig = HTTPClientConfig()


@dataclass(frozen=True)
class EtcdHealthConfig:
    """``etcd_health``: the etcd mixin's alerts evaluated on the scraped samples (relay.health)."""

    # Off unless the config has an etcd_health section (then on unless it says enabled: false): at
    # 1,000 members the evaluation still costs ~15 % of the relay's CPU (benchmarks/RESULTS.md).
    enabled: bool = False
    group_by: tuple[str, ...] = ()  # () = every target label but instance
    evaluation_interval: float = 15.0
    overrides: tuple[Any, ...] = ()  # relay.health.rules.Override
    alertmanagers: tuple[AlertmanagerConfig, ...] = ()


@dataclass(frozen=True)
class Config:
    global_config: GlobalConfig = GlobalConfig()
    scrape_configs: tuple[ScrapeConfig, ...] = ()
    remote_write: tuple[RemoteWriteConfig, ...] = ()
    cluster: ClusterConfig = ClusterConfig()
    source: str = ""
    scrape_config_files: tuple[str, ...] = ()  # the files the globs matched, read at load
    etcd_health: EtcdHealthConfig = EtcdHealthConfig()


# Keys of a Prometheus config that carry no meaning for a relay and are accepted silently.
_IGNORED_TOP = ("alerting", "rule_files", "remote_read", "storage", "tracing")
_IGNORED_GLOBAL = ("query_log_file", "rule_query_offset")
_IGNORED_SCRAPE = ("enable_http2", "scrape_protocols", "fallback_scrape_protocol", "track_timestamps_staleness")
_IGNORED_RW = ("metadata_config", "send_exemplars", "send_native_histograms", "enable_http2", "protobuf_message")


def _tls(sec: _Section) -> TLSConfig:
    out = TLSConfig(
        ca_file=sec.path("ca_file"),
        cert_file=sec.path("cert_file"),
        key_file=sec.path("key_file"),
        server_name=sec.optional_text("server_name"),
        insecure_skip_verify=sec.flag("insecure_skip_verify"),
        min_version=sec.optional_text("min_version"),
    )
    for inline in ("ca", "cert", "key"):
        if sec.has(inline):
            raise ConfigError(sec.at(inline), f"inline certificates are not supported; use {inline}_file")
    sec.done()
    if bool(out.cert_file) != bool(out.key_file):
        raise ConfigError(sec.where, "cert_file and key_file must be given together")
    if out.min_version not in (None, "TLS12", "TLS13"):
        raise ConfigError(sec.at("min_version"), f"{out.min_version!r} is not one of TLS12, TLS13")
    return out


def _http_client(sec: _Section) -> HTTPClientConfig:
    """The HTTP client keys of a scrape config, remote_write or etcd_sd_config section."""
    sec = sec.view(HTTPClientConfig)
    tls = _tls(sec.section("tls_config", TLSConfig))
    basic: BasicAuth | None = sec.default("basic_auth")
    auth: Authorization | None = sec.default("authorization")
    if sec.has("basic_auth"):
        b = sec.section("basic_auth", BasicAuth)
        basic = BasicAuth(username=b.text("username"), password=b.secret("password"), password_file=b.path("password_file"))
        b.done()
        if basic.password and basic.password_file:
            raise ConfigError(b.where, "at most one of password and password_file")
    if sec.has("authorization"):
        a = sec.section("authorization", Authorization)
        auth = Authorization(
            type=a.text("type"), credentials=a.secret("credentials"), credentials_file=a.path("credentials_file")
        )
        a.done()
        if auth.credentials and auth.credentials_file:
            raise ConfigError(a.where, "at most one of credentials and credentials_file")
    if sec.has("bearer_token") or sec.has("bearer_token_file"):
        if auth is not None:
            raise ConfigError(sec.at("bearer_token"), "cannot be used together with authorization")
        auth = Authorization(
            credentials=sec.secret("bearer_token", None), credentials_file=sec.path("bearer_token_file", None)
        )
    if basic is not None and auth is not None:
        raise ConfigError(sec.where, "at most one of basic_auth and authorization")
    return HTTPClientConfig(
        tls_config=tls, basic_auth=basic, authorization=auth, follow_redirects=sec.flag("follow_redirects")
    )


def _check_target(target: object, where: str) -> str:
    if not isinstance(target, str) or not target:
        raise ConfigError(where, f"{target!r} is not a host:port target")
    if "/" in target or "://" in target:
        raise ConfigError(where, f"{target!r} must be host:port without scheme or path")
    host, sep, port = target.rpartition(":")
    if sep and host and not port.isdigit():
        raise ConfigError(where, f"{target!r} has an invalid port")
    return target


def _static(sec: _Section) -> StaticConfig:
    targets = tuple(_check_target(t, f"{sec.at('targets')}[{i}]") for i, t in enumerate(sec.seq("targets")))
    labels = tuple(sorted(sec.str_map("labels", label_names=True).items()))
    sec.done()
    return StaticConfig(targets=targets, labels=labels)


def _file_sd(sec: _Section) -> FileSDConfig:
    files = []
    for i, f in enumerate(sec.seq("files")):
        if not isinstance(f, str) or not f:
            raise ConfigError(f"{sec.at('files')}[{i}]", "must be a file path")
        p = Path(f)
        files.append(str(p if p.is_absolute() else sec.base / p))
    if not files:
        raise ConfigError(sec.at("files"), "needs at least one file")
    out = FileSDConfig(files=tuple(files), refresh_interval=sec.duration("refresh_interval"))
    sec.done()
    return out


def _etcd_sd(sec: _Section) -> EtcdSDConfig:
    endpoints = []
    for i, e in enumerate(sec.seq("endpoints")):
        parts = urlsplit(str(e))
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ConfigError(f"{sec.at('endpoints')}[{i}]", f"{e!r} is not an http(s)://host:port URL")
        endpoints.append(str(e).rstrip("/"))
    if not endpoints:
        raise ConfigError(sec.at("endpoints"), "needs at least one endpoint")
    out = EtcdSDConfig(
        endpoints=tuple(endpoints),
        refresh_interval=sec.duration("refresh_interval"),
        metrics_port=sec.integer("metrics_port"),
        http=_http_client(sec),
    )
    sec.done()
    if out.metrics_port > 65535:
        raise ConfigError(sec.at("metrics_port"), f"{out.metrics_port} is not a port")
    return out


_DNS_TYPES = ("SRV", "A", "AAAA", "MX", "NS")


def _nameserver(text: object, where: str) -> tuple[str, int]:
    """``10.0.0.2``, ``10.0.0.2:5353``, ``::1`` or ``[::1]:5353`` as (ip, port); 53 by default."""
    import ipaddress

    s = str(text).strip() if isinstance(text, str | int) and not isinstance(text, bool) else ""
    host, port = s, "53"
    if s.startswith("["):
        host, _, rest = s[1:].partition("]")
        port = rest[1:] if rest.startswith(":") else ("53" if not rest else "x")
    elif s.count(":") == 1:
        host, _, port = s.partition(":")
    try:
        ipaddress.ip_address(host)
        if not port.isdigit() or not 0 < int(port) < 65536:
            raise ValueError(port)
    except ValueError:
        raise ConfigError(where, f"{text!r} is not an IP address with an optional port (10.0.0.2, 127.0.0.1:5353, [::1]:5353)") from None
    return host, int(port)


def _dns_sd(sec: _Section) -> DNSSDConfig:
    names = []
    for i, n in enumerate(sec.seq("names")):
        labels = n.rstrip(".").split(".") if isinstance(n, str) else [""]
        if len(str(n)) > 253 or not all(0 < len(x) <= 63 and " " not in x for x in labels):
            raise ConfigError(f"{sec.at('names')}[{i}]", f"{n!r} is not a DNS name")
        names.append(n)
    if not names:
        raise ConfigError(sec.at("names"), "needs at least one name")
    kind = sec.text("type").upper()
    if kind not in _DNS_TYPES:
        raise ConfigError(sec.at("type"), f"{kind!r} is not one of {', '.join(_DNS_TYPES)}")
    out = DNSSDConfig(
        names=tuple(names),
        type=kind,
        port=sec.integer("port"),
        refresh_interval=sec.duration("refresh_interval"),
        nameservers=tuple(_nameserver(n, f"{sec.at('nameservers')}[{i}]") for i, n in enumerate(sec.seq("nameservers"))),
    )
    sec.done()
    if out.port > 65535:
        raise ConfigError(sec.at("port"), f"{out.port} is not a port")
    if kind != "SRV" and out.port == 0:
        raise ConfigError(sec.at("port"), f"is required for type {kind} (only SRV records carry a port)")
    if out.refresh_interval <= 0:
        raise ConfigError(sec.at("refresh_interval"), "must be greater than 0")
    return out


def _http_sd(sec: _Section) -> HTTPSDConfig:
    url = sec.text("url", "")  # "": absent; the field has no default
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ConfigError(sec.at("url"), f"{url!r} is not an http(s) URL with a host" if url else "is required")
    out = HTTPSDConfig(url=url, refresh_interval=sec.duration("refresh_interval"), http=_http_client(sec))
    sec.done(("enable_http2",))
    if out.refresh_interval <= 0:
        raise ConfigError(sec.at("refresh_interval"), "must be greater than 0")
    return out


# As Prometheus: a wildcard only in the last path element.
_SCRAPE_FILE_RE = re.compile(r"^[^*]*(\*[^/]*)?$")


def _scrape_config_files(top: _Section, key: str) -> list[str]:
    """The files the ``scrape_config_files`` globs match (relative to the config file), sorted per glob."""
    import glob

    files: list[str] = []
    for i, pattern in enumerate(top.seq(key)):
        where = f"{key}[{i}]"
        if not isinstance(pattern, str) or not pattern:
            raise ConfigError(where, "must be a file path or glob")
        if not _SCRAPE_FILE_RE.match(pattern):
            raise ConfigError(where, f"{pattern!r}: only the file name may hold a wildcard")
        p = Path(pattern)
        full = str(p if p.is_absolute() else top.base / p)
        files += [f for f in sorted(glob.glob(full)) if f not in files]
    return files


def _scrape_file(path: str, glob: GlobalConfig, seen: set[str]) -> list[ScrapeConfig]:
    """The ``scrape_configs`` of one scrape config file; relative paths in it are relative to it."""
    try:
        text = Path(path).read_text(encoding="utf-8")
        raw = yaml.safe_load(text)
    except OSError as exc:
        raise ConfigError(path, f"cannot read scrape config file: {exc.strerror or exc}") from None
    except UnicodeDecodeError:
        raise ConfigError(path, "scrape config file is not UTF-8 text") from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"{path}:{mark.line + 1}:{mark.column + 1}" if mark is not None else path
        raise ConfigError(where, f"invalid YAML: {getattr(exc, 'problem', None) or 'syntax error'}") from None
    if isinstance(raw, list):
        raise ConfigError(path, "must be a mapping with a scrape_configs list (as in Prometheus), not a bare list")
    try:
        sec = _Section(raw, "", base=Path(path).resolve().parent)
        items = sec.seq("scrape_configs")
        sec.done()
    except ConfigError as exc:
        raise ConfigError(f"{path}: {exc.where}" if exc.where else path, exc.problem) from None
    return [_scrape(_Section(s, f"{path}: scrape_configs[{i}]", base=sec.base, of=ScrapeConfig), glob, seen)
            for i, s in enumerate(items)]
# -- kubernetes_sd_configs ------------------------------------------------------------------------

K8S_ROLES = ("endpoints", "endpointslice", "pod", "service", "node", "ingress")
# The roles whose selectors a role may use (its own and those of the objects it joins), as Prometheus.
_K8S_SELECTOR_ROLES = {
    "endpoints": ("endpoints", "pod", "service"),
    "endpointslice": ("endpointslice", "pod", "service"),
    "pod": ("pod",),
    "service": ("service",),
    "node": ("node",),
    "ingress": ("ingress",),
}
_K8S_SELECTOR_RE = re.compile(
    r"^\s*!?[A-Za-z0-9][-A-Za-z0-9_./]*\s*"
    r"((==?|!=)\s*[-A-Za-z0-9_.]*|\s(in|notin)\s*\([-A-Za-z0-9_., ]*\))?\s*$"
)


@dataclass(frozen=True)
class KubernetesSDConfig:
    """``kubernetes_sd_configs``: objects of one role, listed and watched from a Kubernetes API server.

    Without ``api_server`` and ``kubeconfig_file`` the relay runs in-cluster (service-account token
    and CA, ``KUBERNETES_SERVICE_HOST``/``_PORT``). ``selectors`` is ``((role, label, field), ...)``.
    """

    role: str
    api_server: str | None = None
    kubeconfig_file: str | None = None
    namespaces: tuple[str, ...] = ()
    own_namespace: bool = False
    selectors: tuple[tuple[str, str, str], ...] = ()
    attach_node: bool = False
    attach_namespace: bool = False
    http: HTTPClientConfig = HTTPClientConfig()

    def selector(self, role: str) -> tuple[str, str]:
        """The (label, field) selector for the objects of ``role``."""
        for r, label, fld in self.selectors:
            if r == role:
                return label, fld
        return "", ""


def _kubernetes_sd(sec: _Section) -> KubernetesSDConfig:
    role = sec.text("role", "")  # "": absent; the field has no default
    if role not in K8S_ROLES:
        raise ConfigError(sec.at("role"), f"{role!r} is not one of {', '.join(K8S_ROLES)}" if role else "is required "
                          f"(one of {', '.join(K8S_ROLES)})")
    api = sec.text("api_server") or None
    if api is not None:
        parts = urlsplit(api)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ConfigError(sec.at("api_server"), f"{api!r} is not an http(s)://host[:port] URL")
        api = api.rstrip("/")
    kubeconfig = sec.path("kubeconfig_file")
    ns = sec.section("namespaces", KubernetesSDConfig)
    names = tuple(str(n) for n in ns.seq("names"))
    own = ns.flag("own_namespace")
    ns.done()
    selectors: list[tuple[str, str, str]] = []
    for i, raw in enumerate(sec.seq("selectors")):
        s = _Section(raw, f"{sec.at('selectors')}[{i}]", base=sec.base)
        srole, label, fld = s.text("role", ""), s.text("label", ""), s.text("field", "")
        s.done()
        if srole not in _K8S_SELECTOR_ROLES[role]:
            raise ConfigError(s.at("role"), f"{role} role supports only {', '.join(_K8S_SELECTOR_ROLES[role])} selectors")
        if any(srole == r for r, _, _ in selectors):
            raise ConfigError(s.at("role"), f"duplicated selector role: {srole}")
        for key, value in (("label", label), ("field", fld)):
            if value and not all(_K8S_SELECTOR_RE.match(p) for p in re.split(r",(?![^(]*\))", value)):
                raise ConfigError(s.at(key), f"{value!r} is not a Kubernetes {key} selector")
        selectors.append((srole, label, fld))
    meta = sec.section("attach_metadata")
    attach_node, attach_ns = meta.flag("node", False), meta.flag("namespace", False)
    meta.done()
    http = _http_client(sec)
    sec.done(("enable_http2",))
    if api and kubeconfig:
        raise ConfigError(sec.where, "cannot use 'kubeconfig_file' and 'api_server' simultaneously")
    if http != HTTPClientConfig() and not api:
        raise ConfigError(sec.where, "tls_config, basic_auth and authorization need an explicit api_server "
                          "(kubeconfig_file and in-cluster mode bring their own)")
    if own and (api or kubeconfig):
        raise ConfigError(sec.at("namespaces.own_namespace"), "works only in-cluster (not with api_server or kubeconfig_file)")
    return KubernetesSDConfig(role=role, api_server=api, kubeconfig_file=kubeconfig, namespaces=names,
                              own_namespace=own, selectors=tuple(selectors), attach_node=attach_node,
                              attach_namespace=attach_ns, http=http)


def _scrape(sec: _Section, glob: GlobalConfig, seen: set[str]) -> ScrapeConfig:
    job = sec.text("job_name", "")  # "": absent; the field has no default
    if not job:
        raise ConfigError(sec.at("job_name"), "is required")
    if job in seen:
        raise ConfigError(sec.at("job_name"), f"{job!r} is used by another scrape config")
    seen.add(job)
    interval = sec.duration("scrape_interval", glob.scrape_interval)
    timeout = sec.duration("scrape_timeout", min(glob.scrape_timeout, interval))
    if interval <= 0:
        raise ConfigError(sec.at("scrape_interval"), "must be greater than 0")
    if timeout <= 0 or timeout > interval:
        raise ConfigError(sec.at("scrape_timeout"), f"must be greater than 0 and at most scrape_interval ({interval:g}s)")
    scheme = sec.text("scheme")
    if scheme not in ("http", "https"):
        raise ConfigError(sec.at("scheme"), f"{scheme!r} is not http or https")
    path = sec.text("metrics_path")
    if not path.startswith("/"):
        raise ConfigError(sec.at("metrics_path"), f"{path!r} must start with /")
    params_raw = sec.get("params") or {}
    if not isinstance(params_raw, Mapping):
        raise ConfigError(sec.at("params"), "must be a mapping of name to list of values")
    params = []
    for k, v in params_raw.items():
        if not isinstance(v, list) or not all(isinstance(x, str) for x in v):
            raise ConfigError(f"{sec.at('params')}.{k}", "must be a list of strings")
        params.append((str(k), tuple(v)))
    out = ScrapeConfig(
        job_name=job,
        scrape_interval=interval,
        scrape_timeout=timeout,
        metrics_path=path,
        scheme=scheme,
        params=tuple(params),
        honor_labels=sec.flag("honor_labels"),
        honor_timestamps=sec.flag("honor_timestamps"),
        sample_limit=sec.integer("sample_limit", glob.sample_limit),
        body_size_limit=sec.size("body_size_limit", glob.body_size_limit),
        label_limit=sec.integer("label_limit", glob.label_limit),
        label_name_length_limit=sec.integer("label_name_length_limit", glob.label_name_length_limit),
        label_value_length_limit=sec.integer("label_value_length_limit", glob.label_value_length_limit),
        keep_dropped_targets=sec.integer("keep_dropped_targets", glob.keep_dropped_targets),
        relabel_configs=sec.relabel_configs("relabel_configs"),
        metric_relabel_configs=sec.relabel_configs("metric_relabel_configs"),
        static_configs=tuple(_static(s) for s in sec.sections("static_configs", StaticConfig)),
        file_sd_configs=tuple(_file_sd(s) for s in sec.sections("file_sd_configs", FileSDConfig)),
        etcd_sd_configs=tuple(_etcd_sd(s) for s in sec.sections("etcd_sd_configs", EtcdSDConfig)),
        dns_sd_configs=tuple(_dns_sd(s) for s in sec.sections("dns_sd_configs", DNSSDConfig)),
        http_sd_configs=tuple(_http_sd(s) for s in sec.sections("http_sd_configs", HTTPSDConfig)),
        kubernetes_sd_configs=tuple(
            _kubernetes_sd(s) for s in sec.sections("kubernetes_sd_configs", KubernetesSDConfig)
        ),
        http=_http_client(sec),
    )
    sec.done(_IGNORED_SCRAPE)
    return out


def _queue(sec: _Section) -> QueueConfig:
    out = QueueConfig(
        capacity=sec.integer("capacity", minimum=1),
        min_shards=sec.integer("min_shards", minimum=1),
        max_shards=sec.integer("max_shards", minimum=1),
        max_samples_per_send=sec.integer("max_samples_per_send", minimum=1),
        batch_send_deadline=sec.duration("batch_send_deadline"),
        min_backoff=sec.duration("min_backoff"),
        max_backoff=sec.duration("max_backoff"),
        retry_on_http_429=sec.flag("retry_on_http_429"),
    )
    sec.done(("max_retries", "sample_age_limit"))
    if out.min_shards > out.max_shards:
        raise ConfigError(sec.at("min_shards"), f"must be at most max_shards ({out.max_shards})")
    if out.min_backoff > out.max_backoff:
        raise ConfigError(sec.at("min_backoff"), "must be at most max_backoff")
    return out


_RESERVED_HEADERS = frozenset(
    h.lower()
    for h in (
        "Authorization",
        "Host",
        "Content-Encoding",
        "Content-Length",
        "Content-Type",
        "User-Agent",
        "Connection",
        "Keep-Alive",
        "Proxy-Authenticate",
        "Proxy-Authorization",
        "Www-Authenticate",
        "X-Prometheus-Remote-Write-Version",
    )
)


def _remote_write(sec: _Section, names: set[str]) -> RemoteWriteConfig:
    url = sec.text("url", "")  # "": absent; the field has no default
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        shown = url if "@" not in parts.netloc else url.replace(parts.netloc, "<secret>@" + parts.netloc.rpartition("@")[2])
        raise ConfigError(sec.at("url"), f"{shown!r} is not an http(s) URL" if url else "is required")
    headers = sec.str_map("headers")
    for h in headers:
        if h.lower() in _RESERVED_HEADERS:
            raise ConfigError(f"{sec.at('headers')}.{h}", "is a reserved header and cannot be set")
    name = sec.text("name")
    if name:
        if name in names:
            raise ConfigError(sec.at("name"), f"{name!r} is used by another remote_write")
        names.add(name)
    out = RemoteWriteConfig(
        url=url,
        name=name,
        remote_timeout=sec.duration("remote_timeout"),
        headers=tuple(headers.items()),
        write_relabel_configs=sec.relabel_configs("write_relabel_configs"),
        queue_config=_queue(sec.section("queue_config", QueueConfig)),
        http=_http_client(sec),
    )
    if "@" in parts.netloc and (out.http.basic_auth is not None or out.http.authorization is not None):
        raise ConfigError(sec.at("url"), "has credentials (user:password@) and basic_auth or authorization is set too")
    sec.done(_IGNORED_RW)
    return out


def _cluster(sec: _Section) -> ClusterConfig:
    out = ClusterConfig(
        members_count=sec.integer("members_count", minimum=1),
        member_num=sec.integer("member_num"),
        replication_factor=sec.integer("replication_factor", minimum=1),
        replica_label=sec.text("replica_label"),
    )
    sec.done()
    validate_cluster(out, sec.where)
    return out


def _etcd_health(sec: _Section, evaluation_interval: float) -> EtcdHealthConfig:
    from .health.rules import Override, apply_overrides, default_rules

    group_by = []
    for i, name in enumerate(sec.seq("group_by")):
        if not isinstance(name, str) or not _LABEL_NAME_RE.match(name):
            raise ConfigError(f"{sec.at('group_by')}[{i}]", f"{name!r} is not a label name")
        group_by.append(name)
    overrides = []
    for i, raw in enumerate(sec.seq("overrides")):
        o = _Section(raw, f"{sec.at('overrides')}[{i}]", base=sec.base)
        alert = o.text("alert", "")
        if not alert:
            raise ConfigError(o.at("alert"), "is required")
        threshold = o.get("threshold")
        if threshold is not None and (isinstance(threshold, bool) or not isinstance(threshold, int | float)):
            raise ConfigError(o.at("threshold"), f"must be a number, got {threshold!r}")
        window = o.duration("window", 0.0) if o.has("window") else None
        if window is not None and window <= 0:
            raise ConfigError(o.at("window"), "must be greater than 0")
        overrides.append(Override(alert=alert, severity=o.text("severity", "") or None,
                                  for_s=o.duration("for", 0.0) if o.has("for") else None, window_s=window,
                                  threshold=None if threshold is None else float(threshold)))
        o.done()
    try:
        apply_overrides(default_rules(), overrides, sec.at("overrides"))
    except ValueError as exc:
        raise ConfigError(sec.at("overrides"), str(exc).split(": ", 1)[-1]) from None
    managers = []
    for i, raw in enumerate(sec.seq("alertmanagers")):
        a = _Section(raw, f"{sec.at('alertmanagers')}[{i}]", base=sec.base, of=AlertmanagerConfig)
        targets = tuple(t for j, s in enumerate(a.seq("static_configs"))
                        for t in _static(_Section(s, f"{a.at('static_configs')}[{j}]", base=a.base)).targets)
        scheme = a.text("scheme")
        if scheme not in ("http", "https"):
            raise ConfigError(a.at("scheme"), f"{scheme!r} is not http or https")
        version = a.text("api_version")
        if version != "v2":
            raise ConfigError(a.at("api_version"), f"{version!r}: only v2 (Alertmanager's current API) is supported")
        managers.append(AlertmanagerConfig(targets=targets, scheme=scheme, path_prefix=a.text("path_prefix"),
                                           api_version=version, timeout=a.duration("timeout"),
                                           http=_http_client(a)))
        a.done(("enable_http2", "follow_redirects"))
        if not targets:
            raise ConfigError(a.at("static_configs"), "needs at least one target")
    # a section written means on, unless it says enabled: false
    out = EtcdHealthConfig(enabled=sec.flag("enabled", True), group_by=tuple(group_by),
                           evaluation_interval=sec.duration("evaluation_interval", evaluation_interval),
                           overrides=tuple(overrides), alertmanagers=tuple(managers))
    sec.done()
    if out.evaluation_interval <= 0:
        raise ConfigError(sec.at("evaluation_interval"), "must be greater than 0")
    return out


def validate_cluster(c: ClusterConfig, where: str) -> None:
    if c.member_num >= c.members_count:
        raise ConfigError(f"{where}.member_num", f"must be below members_count ({c.members_count})")
    if c.replication_factor > c.members_count:
        raise ConfigError(f"{where}.replication_factor", f"must be at most members_count ({c.members_count})")
    if not _LABEL_NAME_RE.match(c.replica_label):
        raise ConfigError(f"{where}.replica_label", f"{c.replica_label!r} is not a valid label name")


def parse_config(text: str, *, source: str = "<config>", base: Path | None = None) -> Config:
    """Parse config YAML text. Raises ConfigError naming the key path and the problem."""
    try:
        raw = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"{source}:{mark.line + 1}:{mark.column + 1}" if mark is not None else source
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise ConfigError(where, f"invalid YAML: {problem}") from None
    top = _Section(raw, "", base=base or Path.cwd(), of=Config)
    g = top.section("global", GlobalConfig)
    glob = GlobalConfig(
        scrape_interval=g.duration("scrape_interval"),
        scrape_timeout=g.duration("scrape_timeout", 0.0),  # 0: not given, see below
        external_labels=tuple(sorted(g.str_map("external_labels", label_names=True).items())),
        sample_limit=g.integer("sample_limit"),
        body_size_limit=g.size("body_size_limit"),
        label_limit=g.integer("label_limit"),
        label_name_length_limit=g.integer("label_name_length_limit"),
        label_value_length_limit=g.integer("label_value_length_limit"),
        keep_dropped_targets=g.integer("keep_dropped_targets"),
    )
    evaluation_interval = g.duration("evaluation_interval", 15.0)
    g.done(_IGNORED_GLOBAL)
    if glob.scrape_timeout == 0:  # as Prometheus: the default (10s), but never more than the interval
        glob = replace(glob, scrape_timeout=min(g.default("scrape_timeout"), glob.scrape_interval))
    if glob.scrape_interval <= 0:
        raise ConfigError("global.scrape_interval", "must be greater than 0")
    if glob.scrape_timeout > glob.scrape_interval:
        raise ConfigError("global.scrape_timeout", "must be at most global.scrape_interval")
    jobs: set[str] = set()
    scrapes = tuple(_scrape(s, glob, jobs) for s in top.sections("scrape_configs", ScrapeConfig))
    rw_names: set[str] = set()
    writes = tuple(_remote_write(s, rw_names) for s in top.sections("remote_write", RemoteWriteConfig))
    cluster = _cluster(top.section("cluster", ClusterConfig))
    files = _scrape_config_files(top, "scrape_config_files")
    scrapes += tuple(s for f in files for s in _scrape_file(f, glob, jobs))
    health = (_etcd_health(top.section("etcd_health"), evaluation_interval) if top.get("etcd_health") is not None
              else EtcdHealthConfig(evaluation_interval=evaluation_interval))
    top.done(_IGNORED_TOP)
    return Config(
        global_config=glob,
        scrape_configs=scrapes,
        remote_write=writes,
        cluster=cluster,
        source=source,
        scrape_config_files=tuple(files),
        etcd_health=health,
    )


def load_config(path: str | Path) -> Config:
    """Read and parse a config file; the error names the file when it cannot be read."""
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(str(p), f"cannot read config file: {exc.strerror or exc}") from None
    except UnicodeDecodeError:
        raise ConfigError(str(p), "config file is not UTF-8 text") from None
    return parse_config(text, source=str(p), base=p.resolve().parent)
