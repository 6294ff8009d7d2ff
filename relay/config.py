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

Prometheus 3's keys: ``scrape_protocols``, ``fallback_scrape_protocol``, ``enable_compression``,
``target_limit``, ``track_timestamps_staleness``, ``metric_name_validation_scheme``,
``metric_name_escaping_scheme``, ``always_scrape_classic_histograms`` are implemented; the keys the
relay does not act on are refused (``rule_files``, ``alerting``, ``remote_read`` as agent mode;
discovery mechanisms it lacks) or accepted with a warning (see the tables below ``Config``).
YAML is read by :mod:`relay._yaml` (scalars as written, lines, ``%{NAME}`` environment variables).

Every error is a :class:`ConfigError` whose message names the key path and the problem, e.g.
``scrape_configs[0].scrape_timeout: "5x" is not a duration (like 15s, 1m, 500ms)``; a file's
errors are all found and raised together (``ConfigErrors``), each with ``FILE:LINE:`` when read
from a file. Relative file paths are resolved against the config file's folder, as Prometheus does.
"""

from __future__ import annotations

import enum
import functools
import logging
import re
from collections.abc import Callable, Iterator, Mapping
from dataclasses import MISSING, dataclass, field, fields, replace
from pathlib import Path
from typing import Any, Literal, TypeVar
from urllib.parse import urlsplit

from . import _yaml
from ._exceptions import ConfigError
from .config_http import OAuth2Config, ProxyConfig, SigV4Config, read_oauth2, read_proxy, read_sigv4
from .relabel import RelabelConfig, parse_relabel_configs

log = logging.getLogger("relay.config")
_T = TypeVar("_T")

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
    "MetadataConfig",
    "OAuth2Config",
    "ProxyConfig",
    "QueueConfig",
    "RemoteWriteConfig",
    "ScrapeConfig",
    "Secret",
    "SigV4Config",
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


class _Report:
    """What reading one config file found: every error (so check-config shows them all at once) and
    the warnings for keys accepted without effect."""

    def __init__(self) -> None:
        self.errors: list[ConfigError] = []
        self.warnings: list[tuple[str, int, str, str]] = []  # (file, line, key path, text); file "": not placed


class _Section:
    """Reads one mapping of the YAML, tracking which keys were used so unknown keys are errors.

    ``of`` is the dataclass the section becomes: a key that is absent takes the default of the
    field of the same name, so each default is written once, in the dataclass. A reader is given
    an explicit ``default`` only where the value comes from elsewhere (inherited from ``global``).

    With a ``report`` (parse_config), a bad value is recorded there and reading goes on with the
    default, so that one run finds every error; without one, the first error is raised.
    """

    def __init__(self, raw: object, where: str, *, base: Path, of: type | None = None,
                 report: _Report | None = None) -> None:
        self.report = report
        if raw is None:
            raw = {}
        if not isinstance(raw, Mapping):
            raise ConfigError(where, f"must be a mapping, got {_kind(raw)}")
        self.raw: Mapping[str, Any] = raw
        self.where = where
        self.base = base
        self.of = of
        self.used: set[str] = set()

    def view(self, of: type) -> _Section:
        """The same mapping read into another dataclass (keys used by either count as used)."""
        other = _Section(self.raw, self.where, base=self.base, of=of, report=self.report)
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

    # -- errors and warnings ---------------------------------------------------------------------

    def fail(self, exc: ConfigError) -> None:
        """Record ``exc`` (or raise it when there is no report)."""
        if self.report is None:
            raise exc
        self.report.errors.append(exc)

    def bad(self, key: str, problem: str, default: Any = _UNSET) -> Any:
        """An error at ``key``; reading goes on with the key's default."""
        self.fail(ConfigError(self.at(key), problem))
        return self.default(key, default)

    def guard(self, read: Callable[[], _T], fallback: _T) -> _T:
        """``read()``, or ``fallback`` when it raised a ConfigError (recorded)."""
        try:
            return read()
        except ConfigError as exc:
            self.fail(exc)
            return fallback

    def warn(self, key: str, text: str) -> None:
        if self.report is None:
            log.warning("%s: %s", self.at(key), text)
        else:
            self.report.warnings.append(("", 0, self.at(key), text))

    def ok(self) -> bool:
        """No error recorded so far under this section."""
        if self.report is None:
            return True
        prefix = self.where
        return not any(e.where == prefix or e.where.startswith((prefix + ".", prefix + "["))
                       for e in self.report.errors)

    # -- typed readers ---------------------------------------------------------------------------

    def get(self, key: str) -> Any:
        self.used.add(key)
        return self.raw.get(key)

    def has(self, key: str) -> bool:
        return key in self.raw and self.raw[key] is not None

    def text(self, key: str, default: str | _Unset = _UNSET) -> str:
        """A string; a YAML bool, number or date is taken as written (``regex: true`` is "true")."""
        v = self.get(key)
        if v is None:
            return self.default(key, default)
        if isinstance(v, str):
            return v
        written = _yaml.source_text(self.raw, key)
        if written is not None:
            return written
        if isinstance(v, int | float) and not isinstance(v, bool):
            return str(v)
        return self.bad(key, f"must be a string, got {_kind(v)}", default)

    def optional_text(self, key: str) -> str | None:
        """A string, or the field's default (None) when absent; an empty string counts as absent."""
        if self.get(key) is None:
            return self.default(key)
        return self.text(key) or None

    def secret(self, key: str, default: _Unset | None = _UNSET) -> Secret | None:
        v = self.get(key)
        if v is None:
            return self.default(key, default)
        written = v if isinstance(v, str) else _yaml.source_text(self.raw, key)
        if written is None:
            return self.bad(key, f"must be a string, got {_kind(v)}", default)
        return Secret(written)

    def path(self, key: str, default: _Unset | None = _UNSET) -> str | None:
        if self.get(key) is None:
            return self.default(key, default)
        v = self.text(key, "")
        if not v:
            return None
        p = Path(v)
        return str(p if p.is_absolute() else self.base / p)

    def flag(self, key: str, default: bool | _Unset = _UNSET) -> bool:
        v = self.get(key)
        if v is None:
            return self.default(key, default)
        if isinstance(v, str) and v in _YAML11_BOOLS:  # yaml.v2 also reads y/Y/n/N as booleans
            return _YAML11_BOOLS[v]
        if not isinstance(v, bool):
            return self.bad(key, f"must be true or false, got {v!r}", default)
        return v

    def integer(self, key: str, default: int | _Unset = _UNSET, *, minimum: int = 0) -> int:
        v = self.get(key)
        if v is None:
            return self.default(key, default)
        if isinstance(v, bool) or not isinstance(v, int):
            return self.bad(key, f"must be an integer, got {v!r}", default)
        if v < minimum:
            return self.bad(key, f"must be at least {minimum}, got {v}", default)
        return v

    def duration(self, key: str, default: float | _Unset = _UNSET) -> float:
        v = self.get(key)
        if v is None:
            return self.default(key, default)
        return self.guard(lambda: parse_duration(v, self.at(key)), self.default(key, default))

    def size(self, key: str, default: int | _Unset = _UNSET) -> int:
        v = self.get(key)
        if v is None:
            return self.default(key, default)
        return self.guard(lambda: parse_size(v, self.at(key)), self.default(key, default))

    def seq(self, key: str) -> list[Any]:
        v = self.get(key)
        if v is None:
            return []
        if not isinstance(v, list):
            self.fail(ConfigError(self.at(key), f"must be a list, got {_kind(v)}"))
            return []
        return v

    def item_text(self, key: str, items: list[Any], i: int) -> str | None:
        """Item ``i`` of list ``items`` (the value of ``key``) as a string, as written; None if it is none."""
        v = items[i]
        if isinstance(v, str):
            return v
        return _yaml.source_text(items, i)

    def str_map(self, key: str, *, label_names: str = "") -> dict[str, str]:
        """A mapping of string to string (values as written); ``label_names``: the name validation
        scheme ("legacy" or "utf8") the keys must follow, "" for any key."""
        v = self.get(key)
        if v is None:
            return {}
        if not isinstance(v, Mapping):
            self.fail(ConfigError(self.at(key), f"must be a mapping, got {_kind(v)}"))
            return {}
        out: dict[str, str] = {}
        for k, val in v.items():
            where = f"{self.at(key)}.{k}"
            if label_names and not valid_label_name(str(k), label_names):
                self.fail(ConfigError(where, f"{k!r} is not a valid label name" + (
                    " (metric_name_validation_scheme: legacy allows [a-zA-Z_][a-zA-Z0-9_]*)"
                    if label_names == "legacy" else "")))
                continue
            written = val if isinstance(val, str) else _yaml.source_text(v, k)
            if written is None:
                self.fail(ConfigError(where, f"must be a string, got {_kind(val)}"))
                continue
            out[str(k)] = written
        return out

    def relabel_configs(self, key: str, name_validation: str = "utf8") -> tuple[RelabelConfig, ...]:
        """Every rule checked on its own, so that each bad rule is reported."""
        raw = self.get(key)
        if not isinstance(raw, list):
            return self.guard(lambda: parse_relabel_configs(raw, self.at(key),
                                                            name_validation=_scheme(name_validation)), ())
        out: list[RelabelConfig] = []
        for i, item in enumerate(raw):
            try:
                out += parse_relabel_configs([item], self.at(key),
                                             name_validation=_scheme(name_validation))
            except ConfigError as exc:  # its where says [0]: the rule's own index instead
                one = f"{self.at(key)}[0]"
                where = f"{self.at(key)}[{i}]{exc.where[len(one):]}" if exc.where.startswith(one) else exc.where
                self.fail(ConfigError(where, exc.problem))
        return tuple(out)

    def section(self, key: str, of: type | None = None) -> _Section:
        raw = self.get(key)
        try:
            return _Section(raw, self.at(key), base=self.base, of=of, report=self.report)
        except ConfigError as exc:
            self.fail(exc)
            return _Section({}, self.at(key), base=self.base, of=of, report=self.report)

    def sections(self, key: str, of: type) -> Iterator[_Section]:
        """The mappings of list ``key`` one by one (each read before the next is checked), into ``of``."""
        for i, s in enumerate(self.seq(key)):
            try:
                yield _Section(s, f"{self.at(key)}[{i}]", base=self.base, of=of, report=self.report)
            except ConfigError as exc:
                self.fail(exc)

    def each(self, key: str, of: type, read: Callable[[_Section], _T]) -> tuple[_T, ...]:
        """``read`` of each mapping of list ``key``; an item with an error is left out (and reported)."""
        out: list[_T] = []
        for s in self.sections(key, of):
            try:
                out.append(read(s))
            except ConfigError as exc:
                self.fail(exc)
        return tuple(out)

    def done(self, ignored: tuple[str, ...] = ()) -> None:
        """Each key not read is an unknown key (with the known key it is likely a typo of)."""
        import difflib

        for key in self.raw:
            if key not in self.used and key not in ignored:
                near = difflib.get_close_matches(str(key), sorted(self.used), n=1, cutoff=0.8)
                self.fail(ConfigError(self.at(str(key)), f"unknown key (did you mean {near[0]}?)" if near
                                      else "unknown key"))


_YAML11_BOOLS = {"y": True, "Y": True, "n": False, "N": False}


def _kind(v: object) -> str:
    """A value's YAML kind, for messages."""
    if isinstance(v, Mapping):
        return "a mapping"
    if isinstance(v, list):
        return "a list"
    if isinstance(v, bool):
        return f"a boolean ({v!r})"
    return type(v).__name__


def valid_label_name(name: str, scheme: str) -> bool:
    """Prometheus' label name rule for ``metric_name_validation_scheme`` ``legacy`` or ``utf8``."""
    return bool(_LABEL_NAME_RE.match(name)) if scheme == "legacy" else name != ""


def _scheme(name: str) -> Literal["legacy", "utf8"]:
    return "legacy" if name == "legacy" else "utf8"


TLS_VERSIONS = ("TLS10", "TLS11", "TLS12", "TLS13")


@dataclass(frozen=True)
class TLSConfig:
    """``tls_config``, as Prometheus' (prometheus/common): a CA, a client certificate and key, each
    inline (PEM) or in a file; ``min_version`` (default TLS12) and ``max_version``: TLS10..TLS13."""

    ca_file: str | None = None
    cert_file: str | None = None
    key_file: str | None = None
    server_name: str | None = None
    insecure_skip_verify: bool = False
    min_version: str | None = None
    max_version: str | None = None
    ca: str | None = field(default=None, repr=False)  # inline PEM
    cert: str | None = field(default=None, repr=False)
    key: Secret | None = field(default=None, repr=False)


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
    """The TLS, auth and proxy settings of an HTTP client; equal settings share one client.
    ``oauth2``, ``sigv4`` and ``proxy``: see relay.config_http."""

    tls_config: TLSConfig = TLSConfig()
    basic_auth: BasicAuth | None = None
    authorization: Authorization | None = None
    follow_redirects: bool = True
    oauth2: OAuth2Config | None = None
    sigv4: SigV4Config | None = None
    proxy: ProxyConfig = ProxyConfig()  # noqa: RUF009 - frozen, so shared safely


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
    # Prometheus 3's scrape keys (see _scrape_p3): the Accept header's formats in order of preference,
    # the format of a body without a usable Content-Type, gzip asked for or not, the most targets
    # the job may have (0: no limit), staleness markers for series exposed with timestamps, the name
    # rules, and the classic-histogram keys (the relay scrapes only classic histograms).
    scrape_protocols: tuple[str, ...] = ("OpenMetricsText1.0.0", "OpenMetricsText0.0.1", "PrometheusText1.0.0",
                                         "PrometheusText0.0.4")
    fallback_scrape_protocol: str = ""
    enable_compression: bool = True
    target_limit: int = 0
    track_timestamps_staleness: bool = False
    metric_name_validation_scheme: str = "utf8"
    metric_name_escaping_scheme: str = "allow-utf-8"
    always_scrape_classic_histograms: bool = False
    convert_classic_histograms_to_nhcb: bool = False
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
    sample_age_limit: float = 0.0  # seconds; 0: no limit (Prometheus 2.50+)


@dataclass(frozen=True)
class MetadataConfig:
    """``remote_write.metadata_config``: metric metadata (HELP/TYPE/UNIT) sent as Prometheus 2.x does."""

    send: bool = True
    send_interval: float = 60.0
    max_samples_per_send: int = 500  # metadata entries per request


@dataclass(frozen=True)
class RemoteWriteConfig:
    url: str
    name: str = ""
    remote_timeout: float = 30.0
    headers: tuple[tuple[str, str], ...] = field(default=(), repr=False)
    write_relabel_configs: tuple[RelabelConfig, ...] = ()
    queue_config: QueueConfig = QueueConfig()
    http: HTTPClientConfig = HTTPClientConfig()
    metadata_config: MetadataConfig = MetadataConfig()
    send_exemplars: bool = False


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
    scrape_protocols: tuple[str, ...] = ()  # (): not given, each job takes ScrapeConfig's default
    target_limit: int = 0
    metric_name_validation_scheme: str = "utf8"
    metric_name_escaping_scheme: str = ""  # "": from the validation scheme, as Prometheus
    always_scrape_classic_histograms: bool = False
    convert_classic_histograms_to_nhcb: bool = False


@dataclass(frozen=True)
class ClusterConfig:
    """Sharding of targets across relay replicas (as vmagent's -promscrape.cluster.*)."""

    members_count: int = 1
    member_num: int = 0
    replication_factor: int = 1
    replica_label: str = "relay_replica"


@dataclass(frozen=True)
class AlertmanagerConfig:
    """One ``etcd_health.alertmanagers`` entry, as Prometheus' ``alertmanager_config``
    (``relay.health.notify`` sends to it)."""

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
    # 1,000 members the evaluation still costs ~6 % of the relay's CPU (benchmarks/RESULTS.md).
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
    # "FILE:LINE: key: has no effect: why", one per key accepted without effect (logged at start)
    warnings: tuple[str, ...] = field(default=(), compare=False)
    # the line of a key path in the file (for errors found after parsing, like unreadable certificates)
    line_of: Callable[[str], int] = field(default_factory=lambda: _no_line, compare=False, repr=False)


def _no_line(where: str) -> int:
    return 0


# -- Prometheus keys the relay does not implement: refused (why, what instead) or warned about -----
#
# Each key of Prometheus 3's config that the relay does not act on is in one of these tables. A key
# whose value is inert (absent, false, 0, empty) has no consequence and passes silently; any
# other value is refused (REFUSE) or accepted with a warning "has no effect: <why>" (WARN), logged
# at start and printed by check-config. Keys implemented elsewhere (oauth2, sigv4, proxies,
# metadata_config, send_exemplars, sample_age_limit) are not here.

_AGENT = ("the relay scrapes and remote-writes as Prometheus' agent mode does, and agent mode refuses it "
          "(\"field {key} is not allowed in agent mode\")")
_REFUSE_TOP = {
    "rule_files": _AGENT + "; evaluate recording and alerting rules where the samples are stored "
                  "(the etcd mixin's alerts: etcd_health)",
    "alerting": _AGENT + "; for the etcd mixin's alerts use etcd_health.alertmanagers",
    "remote_read": _AGENT + "; query the remote storage directly",
}
_WARN_TOP = {
    "storage": "the relay stores no samples (its remote-write queue: --queue-dir, --queue-max-bytes)",
    "tracing": "the relay exports no traces",
    "runtime": "a Go runtime setting (gogc)",
    "otlp": "the relay has no OTLP receiver",
}
_NO_NATIVE = "the relay scrapes text formats only, which carry no native histograms"
_WARN_GLOBAL = {
    "query_log_file": "the relay answers no PromQL queries",
    "rule_query_offset": "the relay evaluates no rule groups",
    "scrape_failure_log_file": "scrape failures are on /targets and in relay_scrape_failures_total",
    "scrape_native_histograms": _NO_NATIVE,
    "convert_classic_histograms_to_nhcb": "classic histograms are sent as their _bucket, _sum and _count series",
    "extra_scrape_metrics": "the relay adds up, scrape_duration_seconds, scrape_samples_scraped, "
                            "scrape_samples_post_metric_relabeling and scrape_series_added only",
}
_HTTP1 = "the relay speaks HTTP/1.1 only (etcd's client port takes HTTP/2 for gRPC)"
_WARN_SCRAPE = {
    **{k: v for k, v in _WARN_GLOBAL.items() if k not in ("query_log_file", "rule_query_offset")},
    "native_histogram_bucket_limit": _NO_NATIVE,
    "native_histogram_min_bucket_factor": _NO_NATIVE,
}
_FILE_OR_HTTP_SD = ("is not supported by the relay: write the targets to files for file_sd_configs, or serve "
                    "them for http_sd_configs (or use static_configs, dns_sd_configs, etcd_sd_configs or "
                    "kubernetes_sd_configs)")
_REFUSE_SCRAPE = {
    **{f"{name}_sd_configs": _FILE_OR_HTTP_SD for name in (
        "aws", "azure", "consul", "digitalocean", "docker", "dockerswarm", "ec2", "ecs", "elasticache",
        "eureka", "gce", "hetzner", "ionos", "kuma", "lightsail", "linode", "marathon", "msk", "nerve",
        "nomad", "oci", "openstack", "outscale", "ovhcloud", "puppetdb", "rds", "scaleway", "serverset",
        "stackit", "triton", "uyuni", "vultr")},
    "http_headers": "is not supported yet (custom request headers of scrapes)",
}
_WARN_RW = {
    "send_native_histograms": _NO_NATIVE,
    "round_robin_dns": "the relay connects to the first address the resolver gives",
    "failed_request_logging": "a Remote-Write 2.0 setting; failed sends are logged with their reason",
}
_REFUSE_RW = {
    "azuread": "is not supported by the relay; Azure AD issues tokens by OAuth 2.0 client credentials (oauth2)",
    "google_iam": "is not supported by the relay",
}
_WARN_QUEUE = {"max_retries": "removed from Prometheus; a recoverable failure is retried with "
                              "min_backoff..max_backoff until it succeeds or the queue drops it"}

# Keys left to other parts of the relay (HTTP client and remote write), accepted here for now.
_IGNORED_RW: tuple[str, ...] = ()  # (metadata_config and send_exemplars are read)


def _inert(value: object) -> bool:
    """Absent, false, zero or empty: a value that asks for nothing."""
    if value is None or value is False or value == "":
        return True
    if isinstance(value, int | float) and not isinstance(value, bool):
        return value == 0
    return isinstance(value, list | Mapping) and not value


def _not_implemented(sec: _Section, warn: Mapping[str, str], refuse: Mapping[str, str] | None = None) -> None:
    """Refuse or warn about each key of ``refuse``/``warn`` that ``sec`` sets to something not inert."""
    for key, why in (refuse or {}).items():
        if key in sec.raw and not _inert(sec.get(key)):
            sec.fail(ConfigError(sec.at(key), why))
    for key, why in warn.items():
        if key in sec.raw and not _inert(sec.get(key)):
            sec.warn(key, f"has no effect: {why}")


SCRAPE_PROTOCOLS = {
    "PrometheusProto": "application/vnd.google.protobuf;proto=io.prometheus.client.MetricFamily;encoding=delimited",
    "PrometheusText0.0.4": "text/plain;version=0.0.4",
    "PrometheusText1.0.0": "text/plain;version=1.0.0",
    "OpenMetricsText0.0.1": "application/openmetrics-text;version=0.0.1",
    "OpenMetricsText1.0.0": "application/openmetrics-text;version=1.0.0",
}
"""Prometheus' ``scrape_protocols`` names and the media types they stand for."""
NAME_VALIDATION_SCHEMES = ("utf8", "legacy")
NAME_ESCAPING_SCHEMES = ("allow-utf-8", "underscores", "dots", "values")


def _protocol(sec: _Section, key: str, value: object, where: str) -> str | None:
    """One scrape protocol name, checked (None after an error was recorded)."""
    if isinstance(value, str) and value in SCRAPE_PROTOCOLS:
        return value
    names = ", ".join(sorted(SCRAPE_PROTOCOLS))
    near = [n for n in SCRAPE_PROTOCOLS if isinstance(value, str) and n.lower() == value.lower()]
    sec.fail(ConfigError(where, f"unknown scrape protocol {value!r}" + (
        f" (names are case sensitive: {near[0]})" if near else f"; one of {names}")))
    return None


def _scrape_protocols(sec: _Section, inherited: tuple[str, ...]) -> tuple[str, ...]:
    """``scrape_protocols``: checked as Prometheus checks it; PrometheusProto is skipped with a
    warning (the relay parses text formats only), so a list needs at least one text format."""
    if "scrape_protocols" not in sec.raw or sec.raw["scrape_protocols"] is None:
        sec.used.add("scrape_protocols")
        return inherited
    items = sec.seq("scrape_protocols")
    where = sec.at("scrape_protocols")
    if not items:
        if isinstance(sec.raw["scrape_protocols"], list):
            sec.fail(ConfigError(where, "cannot be empty"))
        return inherited
    out: list[str] = []
    seen: set[str] = set()
    for i, v in enumerate(items):
        name = _protocol(sec, "scrape_protocols", v, f"{where}[{i}]")
        if name is None:
            continue
        if name.lower() in seen:
            sec.fail(ConfigError(f"{where}[{i}]", f"{name} is given twice"))
            continue
        seen.add(name.lower())
        out.append(name)
    if "PrometheusProto" in out:
        sec.warn("scrape_protocols", "PrometheusProto is skipped: the relay parses text formats only "
                 "(the others are asked for in the order given)")
        if len(out) == 1:
            sec.fail(ConfigError(where, "needs a text format besides PrometheusProto (the relay parses "
                                 "PrometheusText1.0.0, PrometheusText0.0.4, OpenMetricsText1.0.0, OpenMetricsText0.0.1)"))
    return tuple(out) or inherited


def _fallback_protocol(sec: _Section) -> str:
    v = sec.get("fallback_scrape_protocol")
    if v is None or v == "":
        return ""
    name = _protocol(sec, "fallback_scrape_protocol", v, sec.at("fallback_scrape_protocol"))
    if name == "PrometheusProto":
        sec.fail(ConfigError(sec.at("fallback_scrape_protocol"), "PrometheusProto cannot be parsed by the relay "
                             "(text formats only): use PrometheusText0.0.4 or OpenMetricsText1.0.0"))
        return ""
    return name or ""


def _name_schemes(sec: _Section, validation: str, escaping: str, *, job: bool) -> tuple[str, str]:
    """``metric_name_validation_scheme`` and ``metric_name_escaping_scheme``, as Prometheus 3 sets them:
    a job takes the global ones when it sets neither; an unset escaping follows the validation
    (legacy: underscores, utf8: allow-utf-8); allow-utf-8 needs utf8."""
    v_raw = sec.get("metric_name_validation_scheme")
    e_raw = sec.get("metric_name_escaping_scheme")
    v_given = v_raw not in (None, "")
    if v_given:
        if v_raw in NAME_VALIDATION_SCHEMES:
            validation = v_raw
        else:
            sec.fail(ConfigError(sec.at("metric_name_validation_scheme"),
                                 f"{v_raw!r} is not one of {', '.join(NAME_VALIDATION_SCHEMES)}"))
    if e_raw not in (None, ""):
        if e_raw in NAME_ESCAPING_SCHEMES:
            escaping = e_raw
        else:
            sec.fail(ConfigError(sec.at("metric_name_escaping_scheme"),
                                 f"{e_raw!r} is not one of {', '.join(NAME_ESCAPING_SCHEMES)}"))
            escaping = ""
    elif v_given or not job:
        escaping = ""  # from this section's validation scheme (a job that sets neither keeps the global one)
    if not escaping and job:
        escaping = "underscores" if validation == "legacy" else "allow-utf-8"
    if escaping == "allow-utf-8" and validation != "utf8":
        sec.fail(ConfigError(sec.at("metric_name_escaping_scheme"), "allow-utf-8 asks targets for UTF-8 names, "
                             "which metric_name_validation_scheme: legacy refuses (use underscores, dots or values)"))
    return validation, escaping


def _scrape_p3(sec: _Section, glob: GlobalConfig) -> dict[str, Any]:
    """The Prometheus 3 keys of a scrape config (and its refused and no-effect keys), as
    ScrapeConfig fields; each default comes from ``global`` where Prometheus inherits it."""
    validation, escaping = _name_schemes(sec, glob.metric_name_validation_scheme, glob.metric_name_escaping_scheme,
                                         job=True)
    out = {
        "scrape_protocols": _scrape_protocols(sec, glob.scrape_protocols or sec.default("scrape_protocols")),
        "fallback_scrape_protocol": _fallback_protocol(sec),
        "enable_compression": sec.flag("enable_compression"),
        "target_limit": sec.integer("target_limit", glob.target_limit),
        "track_timestamps_staleness": sec.flag("track_timestamps_staleness"),
        "metric_name_validation_scheme": validation,
        "metric_name_escaping_scheme": escaping,
        "always_scrape_classic_histograms": sec.flag("always_scrape_classic_histograms",
                                                     glob.always_scrape_classic_histograms),
        "convert_classic_histograms_to_nhcb": sec.flag("convert_classic_histograms_to_nhcb",
                                                       glob.convert_classic_histograms_to_nhcb),
    }
    _not_implemented(sec, {k: v for k, v in _WARN_SCRAPE.items() if k != "convert_classic_histograms_to_nhcb"},
                     _REFUSE_SCRAPE)
    if out["convert_classic_histograms_to_nhcb"] and not glob.convert_classic_histograms_to_nhcb:
        sec.warn("convert_classic_histograms_to_nhcb", f"has no effect: {_WARN_GLOBAL['convert_classic_histograms_to_nhcb']}")
    return out


def _global_p3(g: _Section) -> dict[str, Any]:
    """The Prometheus 3 keys of ``global`` (and its no-effect keys), as GlobalConfig fields."""
    validation, escaping = _name_schemes(g, g.default("metric_name_validation_scheme"), "", job=False)
    out = {
        "scrape_protocols": _scrape_protocols(g, ()),
        "target_limit": g.integer("target_limit"),
        "metric_name_validation_scheme": validation,
        "metric_name_escaping_scheme": escaping,
        "always_scrape_classic_histograms": g.flag("always_scrape_classic_histograms"),
        "convert_classic_histograms_to_nhcb": g.flag("convert_classic_histograms_to_nhcb"),
    }
    _not_implemented(g, _WARN_GLOBAL)
    return out


def _remote_write_p3(sec: _Section) -> None:
    """The refused and no-effect keys of a remote_write entry."""
    message = sec.get("protobuf_message")
    if message not in (None, "", "prometheus.WriteRequest"):
        sec.fail(ConfigError(sec.at("protobuf_message"), f"{message!r}: the relay sends Remote-Write 1.0 "
                             "(prometheus.WriteRequest) only"))
    _not_implemented(sec, _WARN_RW, _REFUSE_RW)


def _top_p3(top: _Section) -> None:
    """The top-level keys agent mode refuses (when not empty, as agent mode) and the no-effect ones."""
    for key, why in _REFUSE_TOP.items():
        value = top.get(key)
        if key == "alerting" and isinstance(value, Mapping):
            value = [v for k in ("alertmanagers", "alert_relabel_configs") if (v := value.get(k))]
        if value not in (None, [], {}):
            top.fail(ConfigError(key, "is not allowed: " + why.format(key=key)))
    _not_implemented(top, _WARN_TOP)


def _http2(sec: _Section) -> None:
    """``enable_http2``: the relay never speaks HTTP/2; true is accepted with a warning."""
    _not_implemented(sec, {"enable_http2": _HTTP1})


def _tls(sec: _Section) -> TLSConfig:
    """``tls_config``, checked as prometheus/common checks it (files are read by check_config)."""
    out = TLSConfig(
        ca_file=sec.path("ca_file"),
        cert_file=sec.path("cert_file"),
        key_file=sec.path("key_file"),
        server_name=sec.optional_text("server_name"),
        insecure_skip_verify=sec.flag("insecure_skip_verify"),
        min_version=sec.optional_text("min_version"),
        max_version=sec.optional_text("max_version"),
        ca=sec.optional_text("ca"),
        cert=sec.optional_text("cert"),
        key=sec.secret("key") or None,
    )
    sec.done()
    for inline in ("ca", "cert", "key"):
        if getattr(out, inline) and getattr(out, f"{inline}_file"):
            sec.fail(ConfigError(sec.at(inline), f"at most one of {inline} and {inline}_file"))
    has_cert, has_key = bool(out.cert or out.cert_file), bool(out.key or out.key_file)
    if has_cert != has_key:
        sec.fail(ConfigError(sec.at("key_file" if has_cert else "cert_file"),
                             "is required: a client certificate (cert or cert_file) needs its key (key or key_file)"
                             if has_cert else "is required: a client key (key or key_file) needs its certificate "
                             "(cert or cert_file)"))
    for k in ("min_version", "max_version"):
        v = getattr(out, k)
        if v is not None and v not in TLS_VERSIONS:
            sec.fail(ConfigError(sec.at(k), f"{v!r} is not one of {', '.join(TLS_VERSIONS)}"))
            out = replace(out, min_version=None) if k == "min_version" else replace(out, max_version=None)
    if out.min_version and out.max_version and out.max_version < out.min_version:
        sec.fail(ConfigError(sec.at("max_version"), f"{out.max_version} is below min_version ({out.min_version})"))
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
    oauth2 = sigv4 = None
    if sec.has("oauth2"):
        oauth2 = read_oauth2(sec.section("oauth2", OAuth2Config), lambda s: _tls(s.section("tls_config", TLSConfig)))
    if sec.has("sigv4"):
        sigv4 = read_sigv4(sec.section("sigv4", SigV4Config))
    proxy = read_proxy(sec)
    given = [k for k, v in (("basic_auth", basic), ("authorization", auth), ("oauth2", oauth2), ("sigv4", sigv4))
             if v is not None]
    if len(given) > 1:
        raise ConfigError(sec.where, f"at most one of {' and '.join(given)} (give one of basic_auth, "
                          "authorization or bearer_token, oauth2, sigv4)")
    _http2(sec)
    return HTTPClientConfig(
        tls_config=tls, basic_auth=basic, authorization=auth, follow_redirects=sec.flag("follow_redirects"),
        oauth2=oauth2, sigv4=sigv4, proxy=proxy,
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


def _static(sec: _Section, scheme: str = "utf8") -> StaticConfig:
    items = sec.seq("targets")
    targets = tuple(t for i in range(len(items)) if (t := sec.guard(functools.partial(
        _check_target, sec.item_text("targets", items, i) or items[i], f"{sec.at('targets')}[{i}]"), "")))
    labels = tuple(sorted(sec.str_map("labels", label_names=scheme).items()))
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
    sec.done()
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


def _scrape_file(path: str, glob: GlobalConfig, seen: set[str], report: _Report) -> list[ScrapeConfig]:
    """The ``scrape_configs`` of one scrape config file; relative paths in it are relative to it.
    Its errors and warnings go to ``report``, placed in that file."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(path, f"cannot read scrape config file: {exc.strerror or exc}") from None
    except UnicodeDecodeError:
        raise ConfigError(path, "scrape config file is not UTF-8 text") from None
    raw = _yaml.load(_yaml.expand_percent(text, path), path)
    if isinstance(raw, list):
        raise ConfigError(path, "must be a mapping with a scrape_configs list (as in Prometheus), not a bare list")
    mine = _Report()
    try:
        sec = _Section(raw, "", base=Path(path).resolve().parent, report=mine)
    except ConfigError as exc:
        raise ConfigError(path, exc.problem) from None
    out: list[ScrapeConfig] = []
    for i, s in enumerate(sec.seq("scrape_configs")):
        try:
            out.append(_scrape(_Section(s, f"scrape_configs[{i}]", base=sec.base, of=ScrapeConfig, report=mine),
                               glob, seen))
        except ConfigError as exc:
            mine.errors.append(exc)
    sec.done()
    report.errors += [ConfigError(f"{path}: {e.where}" if e.where else path, e.problem, file=path,
                                  line=_yaml.line_of(raw, e.where)) for e in mine.errors]
    report.warnings += [(path, _yaml.line_of(raw, w), w, text) for _, _, w, text in mine.warnings]
    return out


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
    sec.done()
    if api and kubeconfig:
        raise ConfigError(sec.where, "cannot use 'kubeconfig_file' and 'api_server' simultaneously")
    if http != HTTPClientConfig() and not api:
        raise ConfigError(sec.where, "tls_config, basic_auth and authorization need an explicit api_server "
                          "(kubeconfig_file and in-cluster mode bring their own; oauth2, sigv4 and the proxy keys need it too)")
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
    if sec.ok():  # (a bad interval or timeout read as its default would only add a confusing error)
        if interval <= 0:
            sec.fail(ConfigError(sec.at("scrape_interval"), "must be greater than 0"))
        elif timeout <= 0 or timeout > interval:
            sec.fail(ConfigError(sec.at("scrape_timeout"),
                                 f"must be greater than 0 and at most scrape_interval ({interval:g}s)"))
    scheme = sec.text("scheme")
    if scheme not in ("http", "https"):
        scheme = sec.bad("scheme", f"{scheme!r} is not http or https")
    path = sec.text("metrics_path")
    if not path.startswith("/"):
        path = sec.bad("metrics_path", f"{path!r} must start with /")
    params_raw = sec.get("params") or {}
    params = []
    if not isinstance(params_raw, Mapping):
        sec.fail(ConfigError(sec.at("params"), "must be a mapping of name to list of values"))
        params_raw = {}
    for k, v in params_raw.items():
        values = [x if isinstance(x, str) else _yaml.source_text(v, i) for i, x in enumerate(v)] \
            if isinstance(v, list) else [None]
        if not all(isinstance(x, str) for x in values):
            sec.fail(ConfigError(f"{sec.at('params')}.{k}", "must be a list of strings"))
            continue
        params.append((str(k), tuple(x for x in values if x is not None)))
    p3 = _scrape_p3(sec, glob)
    names = p3["metric_name_validation_scheme"]
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
        relabel_configs=sec.relabel_configs("relabel_configs", names),
        metric_relabel_configs=sec.relabel_configs("metric_relabel_configs", names),
        static_configs=sec.each("static_configs", StaticConfig, lambda s: _static(s, names)),
        file_sd_configs=sec.each("file_sd_configs", FileSDConfig, _file_sd),
        etcd_sd_configs=sec.each("etcd_sd_configs", EtcdSDConfig, _etcd_sd),
        dns_sd_configs=sec.each("dns_sd_configs", DNSSDConfig, _dns_sd),
        http_sd_configs=sec.each("http_sd_configs", HTTPSDConfig, _http_sd),
        kubernetes_sd_configs=sec.each("kubernetes_sd_configs", KubernetesSDConfig, _kubernetes_sd),
        http=sec.guard(lambda: _http_client(sec), HTTPClientConfig()),
        **p3,
    )
    sec.done()
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
        sample_age_limit=sec.duration("sample_age_limit"),
    )
    _not_implemented(sec, _WARN_QUEUE)
    sec.done()
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


def _remote_write(sec: _Section, names: set[str], scheme: str = "utf8") -> RemoteWriteConfig:
    url = sec.text("url", "")  # "": absent; the field has no default
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        shown = url if "@" not in parts.netloc else url.replace(parts.netloc, "<secret>@" + parts.netloc.rpartition("@")[2])
        raise ConfigError(sec.at("url"), f"{shown!r} is not an http(s) URL" if url else "is required")
    headers = sec.str_map("headers")
    for h in list(headers):
        if h.lower() in _RESERVED_HEADERS:
            sec.fail(ConfigError(f"{sec.at('headers')}.{h}", "is a reserved header and cannot be set"))
            del headers[h]
    name = sec.text("name")
    if name:
        if name in names:
            sec.fail(ConfigError(sec.at("name"), f"{name!r} is used by another remote_write"))
        names.add(name)
    _remote_write_p3(sec)
    out = RemoteWriteConfig(
        url=url,
        name=name,
        remote_timeout=sec.duration("remote_timeout"),
        headers=tuple(headers.items()),
        write_relabel_configs=sec.relabel_configs("write_relabel_configs", scheme),
        queue_config=sec.guard(lambda: _queue(sec.section("queue_config", QueueConfig)), QueueConfig()),
        http=sec.guard(lambda: _http_client(sec), HTTPClientConfig()),
        metadata_config=sec.guard(lambda: _metadata_config(sec.section("metadata_config", MetadataConfig)),
                                  MetadataConfig()),
        send_exemplars=sec.flag("send_exemplars"),
    )
    if "@" in parts.netloc and (out.http.basic_auth is not None or out.http.authorization is not None):
        sec.fail(ConfigError(sec.at("url"), "has credentials (user:password@) and basic_auth or authorization is set too"))
    sec.done(_IGNORED_RW)
    return out


def _metadata_config(sec: _Section) -> MetadataConfig:
    out = MetadataConfig(
        send=sec.flag("send"),
        send_interval=sec.duration("send_interval"),
        max_samples_per_send=sec.integer("max_samples_per_send", minimum=1),
    )
    sec.done()
    if out.send_interval <= 0:
        raise ConfigError(sec.at("send_interval"), "must be more than 0s")
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
        a.done()
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


def _external_labels(g: _Section, scheme: str) -> tuple[tuple[str, str], ...]:
    """``global.external_labels``, each value with ``$NAME``/``${NAME}`` expanded as Prometheus does."""
    labels = g.str_map("external_labels", label_names=scheme)
    out = {}
    for name, value in labels.items():
        expanded: str | None = g.guard(functools.partial(_yaml.expand_dollar, value, f"{g.at('external_labels')}.{name}"),
                                       None)
        if expanded is not None:
            out[name] = expanded
    return tuple(sorted(out.items()))


def parse_config(text: str, *, source: str = "<config>", base: Path | None = None) -> Config:
    """Parse config YAML text. Raises ConfigError naming the key path and the problem.

    Every error of the text is found: several are raised together as a ConfigErrors. When
    ``source`` names a file, each error and warning says ``FILE:LINE:`` too."""
    file = "" if source == "<config>" else source
    raw = _yaml.load(_yaml.expand_percent(text, file), source)
    report = _Report()
    top = _Section(raw, "", base=base or Path.cwd(), of=Config, report=report)
    g = top.section("global", GlobalConfig)
    p3 = _global_p3(g)
    glob = GlobalConfig(
        scrape_interval=g.duration("scrape_interval"),
        scrape_timeout=g.duration("scrape_timeout", 0.0),  # 0: not given, see below
        external_labels=_external_labels(g, p3["metric_name_validation_scheme"]),
        sample_limit=g.integer("sample_limit"),
        body_size_limit=g.size("body_size_limit"),
        label_limit=g.integer("label_limit"),
        label_name_length_limit=g.integer("label_name_length_limit"),
        label_value_length_limit=g.integer("label_value_length_limit"),
        keep_dropped_targets=g.integer("keep_dropped_targets"),
        **p3,
    )
    evaluation_interval = g.duration("evaluation_interval", 15.0)
    g.done()
    if glob.scrape_timeout == 0:  # as Prometheus: the default (10s), but never more than the interval
        glob = replace(glob, scrape_timeout=min(g.default("scrape_timeout"), glob.scrape_interval))
    if glob.scrape_interval <= 0:
        g.fail(ConfigError("global.scrape_interval", "must be greater than 0"))
        glob = replace(glob, scrape_interval=g.default("scrape_interval"))
    if glob.scrape_timeout > glob.scrape_interval:
        g.fail(ConfigError("global.scrape_timeout", "must be at most global.scrape_interval"))
        glob = replace(glob, scrape_timeout=glob.scrape_interval)
    jobs: set[str] = set()
    scrapes = top.each("scrape_configs", ScrapeConfig, lambda s: _scrape(s, glob, jobs))
    rw_names: set[str] = set()
    writes = top.each("remote_write", RemoteWriteConfig,
                      lambda s: _remote_write(s, rw_names, glob.metric_name_validation_scheme))
    cluster = top.guard(lambda: _cluster(top.section("cluster", ClusterConfig)), ClusterConfig())
    no_files: list[str] = []
    files = top.guard(lambda: _scrape_config_files(top, "scrape_config_files"), no_files)
    for f in files:
        none: list[ScrapeConfig] = []
        scrapes += tuple(top.guard(functools.partial(_scrape_file, f, glob, jobs, report), none))
    health = (top.guard(lambda: _etcd_health(top.section("etcd_health"), evaluation_interval),
                        EtcdHealthConfig(evaluation_interval=evaluation_interval))
              if top.get("etcd_health") is not None else EtcdHealthConfig(evaluation_interval=evaluation_interval))
    _top_p3(top)
    top.done()

    def line_of(where: str) -> int:
        return _yaml.line_of(raw, where)

    order = {f: i for i, f in enumerate(dict.fromkeys([file, *files]))}
    placed = [ConfigError(where, text, file=wfile or file, line=line if wfile else line_of(where))
              for wfile, line, where, text in report.warnings]
    placed.sort(key=lambda w: (order.get(w.file, len(order)), w.line))
    warnings = tuple(str(w) for w in placed)
    if report.errors:
        located = [e.located(file, line_of(e.where)) for e in report.errors]
        located.sort(key=lambda e: (order.get(e.file, len(order)), e.line))
        error = ConfigError.group(located)
        error.warnings = warnings  # check-config shows them too
        raise error
    return Config(
        global_config=glob,
        scrape_configs=scrapes,
        remote_write=writes,
        cluster=cluster,
        source=source,
        scrape_config_files=tuple(files),
        etcd_health=health,
        warnings=warnings,
        line_of=line_of,
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
