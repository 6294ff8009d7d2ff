"""The ``oauth2``, ``sigv4`` and proxy keys of an HTTP client config (scrape, remote_write, discovery).

Read by `relay.config._http_client` through `read_oauth2`, `read_sigv4` and `read_proxy`, with the
rules Prometheus applies (prometheus/common's ``OAuth2``/``ProxyConfig`` and prometheus/sigv4)::

    remote_write:
      - url: https://aps-workspaces.eu-west-1.amazonaws.com/workspaces/ws-1/api/v1/remote_write
        sigv4: {region: eu-west-1}
        proxy_url: http://proxy.internal:3128
        no_proxy: 10.0.0.0/8,.cluster.local
      - url: https://receiver.example/api/v1/write
        oauth2:
          client_id: relay
          client_secret_file: /etc/relay/oauth2-secret
          token_url: https://auth.example/oauth2/token
          scopes: [metrics.write]

The section readers take the config module's ``_Section`` (imported only for type checking, so
this module and ``relay.config`` do not import each other at run time).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

from ._exceptions import ConfigError

if TYPE_CHECKING:
    from collections.abc import Callable

    from .config import Secret, TLSConfig, _Section

__all__ = ["OAuth2Config", "ProxyConfig", "SigV4Config", "read_oauth2", "read_proxy", "read_sigv4", "shown_url"]



def shown_url(url: str) -> str:
    """``url`` with its user and password replaced by <secret> (for messages and pages)."""
    parts = urlsplit(url)
    if "@" not in parts.netloc:
        return url
    return url.replace(parts.netloc, "<secret>@" + parts.netloc.rpartition("@")[2], 1)


@dataclass(frozen=True)
class ProxyConfig:
    """``proxy_url`` (http://[user:password@]host:port), ``no_proxy`` (comma-separated hosts,
    domains, IPs and CIDRs), ``proxy_from_environment`` (HTTP_PROXY, HTTPS_PROXY, NO_PROXY) and
    ``proxy_connect_header`` (sent with each CONNECT, i.e. to the proxy only, for https targets)."""

    proxy_url: str | None = field(default=None, repr=False)
    no_proxy: str = ""
    proxy_from_environment: bool = False
    proxy_connect_header: tuple[tuple[str, tuple[Secret, ...]], ...] = field(default=(), repr=False)

    @property
    def enabled(self) -> bool:
        return bool(self.proxy_url) or self.proxy_from_environment

    def __repr__(self) -> str:
        url = shown_url(self.proxy_url) if self.proxy_url else None
        headers = tuple(name for name, _ in self.proxy_connect_header)
        return (f"ProxyConfig(proxy_url={url!r}, no_proxy={self.no_proxy!r}, "
                f"proxy_from_environment={self.proxy_from_environment}, proxy_connect_header={headers!r})")


@dataclass(frozen=True)
class OAuth2Config:
    """OAuth 2.0 client credentials grant (RFC 6749 section 4.4), as Prometheus' ``oauth2``."""

    client_id: str
    token_url: str
    client_secret: Secret | None = field(default=None, repr=False)
    client_secret_file: str | None = None
    scopes: tuple[str, ...] = ()
    endpoint_params: tuple[tuple[str, str], ...] = field(default=(), repr=False)
    tls_config: TLSConfig | None = None  # the token endpoint's own
    proxy: ProxyConfig = ProxyConfig()


@dataclass(frozen=True)
class SigV4Config:
    """AWS Signature Version 4, as Prometheus' ``sigv4`` (Amazon Managed Service for Prometheus).

    Empty ``access_key``/``secret_key`` take credentials from the AWS default chain (environment,
    shared files of ``profile``, container or instance role); ``role_arn`` is then assumed through STS.
    """

    region: str = ""
    access_key: str = ""
    secret_key: Secret | None = field(default=None, repr=False)
    profile: str = ""
    role_arn: str = ""
    external_id: str = ""
    session_name: str = ""
    use_fips_sts_endpoint: bool = False
    service_name: str = "aps"


def _check_proxy_url(url: str, where: str) -> None:
    parts = urlsplit(url)
    if parts.scheme in ("https", "socks5", "socks5h"):
        raise ConfigError(where, f"{shown_url(url)!r}: {parts.scheme} proxies are not supported (only http://host:port)")
    try:
        port = parts.port
    except ValueError:
        port = -1
    if parts.scheme != "http" or not parts.hostname or port == -1 or parts.path not in ("", "/"):
        raise ConfigError(where, f"{shown_url(url)!r} is not a proxy URL (like http://proxy.internal:3128)")


_HEADER_NAME_RE = re.compile(r"^[!#$%&'*+\-.^_`|~0-9A-Za-z]+$")


def read_proxy(sec: _Section) -> ProxyConfig:
    """The proxy keys of ``sec`` (an HTTP client config section, or an ``oauth2`` section)."""
    sec = sec.view(ProxyConfig)
    url = sec.optional_text("proxy_url")
    if url:
        _check_proxy_url(url, sec.at("proxy_url"))
    no_proxy = sec.text("no_proxy").strip()
    from_env = sec.flag("proxy_from_environment")
    headers: list[tuple[str, tuple[Secret, ...]]] = []
    raw = sec.get("proxy_connect_header")
    if raw is not None:
        from collections.abc import Mapping

        from .config import Secret

        where = sec.at("proxy_connect_header")
        if not isinstance(raw, Mapping):
            raise ConfigError(where, f"must be a mapping of header name to a list of values, got {type(raw).__name__}")
        for name, values in raw.items():
            if not isinstance(name, str) or not _HEADER_NAME_RE.match(name):
                raise ConfigError(f"{where}.{name}", "is not an HTTP header name")
            if isinstance(values, str):
                values = [values]
            if not isinstance(values, list) or not values or not all(isinstance(v, str) for v in values):
                raise ConfigError(f"{where}.{name}", "must be a list of strings")
            if any("\r" in v or "\n" in v for v in values):
                raise ConfigError(f"{where}.{name}", "a value holds a line break")
            headers.append((name, tuple(Secret(v) for v in values)))
    if headers and not (url or from_env):
        raise ConfigError(sec.at("proxy_connect_header"), "needs proxy_url or proxy_from_environment")
    if from_env and url:
        raise ConfigError(sec.at("proxy_from_environment"), "cannot be used together with proxy_url")
    if from_env and no_proxy:
        raise ConfigError(sec.at("no_proxy"), "cannot be used with proxy_from_environment (NO_PROXY is read instead)")
    if no_proxy and not url:
        raise ConfigError(sec.at("no_proxy"), "needs proxy_url")
    if no_proxy:
        from .http.proxy import parse_no_proxy

        try:
            parse_no_proxy(no_proxy)
        except ValueError as exc:
            raise ConfigError(sec.at("no_proxy"), str(exc)) from None
    return ProxyConfig(proxy_url=url, no_proxy=no_proxy, proxy_from_environment=from_env,
                       proxy_connect_header=tuple(headers))


_OAUTH2_UNSUPPORTED = ("grant_type", "client_certificate_key", "client_certificate_key_file",
                       "client_certificate_key_id", "signature_algorithm", "iss", "audience", "claims")


def read_oauth2(sec: _Section, read_tls: Callable[[_Section], TLSConfig]) -> OAuth2Config:
    """An ``oauth2`` section; ``read_tls(sec)`` reads its ``tls_config`` (the config module's reader)."""
    for key in _OAUTH2_UNSUPPORTED:
        if sec.has(key):
            raise ConfigError(sec.at(key), "is not supported: only the client credentials grant "
                              "(client_id and client_secret) is implemented")
    if sec.has("client_secret_ref"):
        raise ConfigError(sec.at("client_secret_ref"), "is not supported; use client_secret or client_secret_file")
    client_id = sec.text("client_id", "")  # "": absent; the field has no default
    token_url = sec.text("token_url", "")  # "": absent; the field has no default
    secret = sec.secret("client_secret")
    secret_file = sec.path("client_secret_file")
    scopes = []
    for i, s in enumerate(sec.seq("scopes")):
        if not isinstance(s, str) or not s or " " in s:
            raise ConfigError(f"{sec.at('scopes')}[{i}]", f"{s!r} is not a scope (a non-empty string without blanks)")
        scopes.append(s)
    params = sec.str_map("endpoint_params")
    if "scope" in params:
        raise ConfigError(f"{sec.at('endpoint_params')}.scope", "use scopes")
    if "client_id" in params or "client_secret" in params:
        raise ConfigError(sec.at("endpoint_params"), "client_id and client_secret are keys of oauth2 itself")
    tls = read_tls(sec) if sec.has("tls_config") else sec.default("tls_config")
    proxy = read_proxy(sec)
    sec.done()
    if not client_id:
        raise ConfigError(sec.at("client_id"), "is required")
    if not token_url:
        raise ConfigError(sec.at("token_url"), "is required")
    parts = urlsplit(token_url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ConfigError(sec.at("token_url"), f"{shown_url(token_url)!r} is not an http(s) URL")
    if secret and secret_file:
        raise ConfigError(sec.where, "at most one of client_secret and client_secret_file")
    return OAuth2Config(client_id=client_id, token_url=token_url, client_secret=secret,
                        client_secret_file=secret_file, scopes=tuple(scopes),
                        endpoint_params=tuple(sorted(params.items())), tls_config=tls, proxy=proxy)


_REGION_RE = re.compile(r"^[a-z0-9-]+$")
_ROLE_ARN_RE = re.compile(r"^arn:[a-z0-9-]+:iam::\d{12}:role/[\w+=,.@/-]+$")
_SESSION_NAME_RE = re.compile(r"^[\w+=,.@-]{2,64}$")


def read_sigv4(sec: _Section) -> SigV4Config:
    """A ``sigv4`` section (its values are checked here; credentials are looked up when the client is built)."""
    if sec.has("tags"):
        raise ConfigError(sec.at("tags"), "session tags are not supported")
    out = SigV4Config(
        region=sec.text("region"),
        access_key=sec.text("access_key"),
        secret_key=sec.secret("secret_key"),
        profile=sec.text("profile"),
        role_arn=sec.text("role_arn"),
        external_id=sec.text("external_id"),
        session_name=sec.text("session_name"),
        use_fips_sts_endpoint=sec.flag("use_fips_sts_endpoint"),
        service_name=sec.text("service_name") or sec.default("service_name"),
    )
    sec.done()
    if bool(out.access_key) != bool(out.secret_key):
        raise ConfigError(sec.where, "access_key and secret_key must be given together (or neither, for the AWS "
                          "default credentials chain)")
    if out.region and not _REGION_RE.match(out.region):
        raise ConfigError(sec.at("region"), f"{out.region!r} is not an AWS region (like us-east-1)")
    if out.role_arn and not _ROLE_ARN_RE.match(out.role_arn):
        raise ConfigError(sec.at("role_arn"), f"{out.role_arn!r} is not an IAM role ARN "
                          "(like arn:aws:iam::123456789012:role/prometheus-writer)")
    for key in ("external_id", "session_name"):
        if getattr(out, key) and not out.role_arn:
            raise ConfigError(sec.at(key), "can only be used with role_arn")
    if out.session_name and not _SESSION_NAME_RE.match(out.session_name):
        raise ConfigError(sec.at("session_name"), "must be 2-64 letters, digits and +=,.@-_ characters")
    if not _REGION_RE.match(out.service_name):
        raise ConfigError(sec.at("service_name"), f"{out.service_name!r} is not an AWS service name (like aps)")
    return out
