"""Which requests go through a forward proxy, and what the proxy is told: `ProxyRoute`.

As Prometheus (Go's ``net/http`` and ``x/net/http/httpproxy``): ``proxy_url`` alone sends every
request through the proxy; with ``no_proxy``, or with ``proxy_from_environment`` (HTTP_PROXY,
HTTPS_PROXY, NO_PROXY), requests to ``localhost`` and loopback addresses, and to the hosts
``no_proxy`` names, go direct::

    route = ProxyRoute.from_config(ProxyConfig(url="http://proxy:3128", no_proxy="10.0.0.0/8,.internal"))
    route.choose(httpx.URL("http://10.1.2.3:2381/metrics"))   # None: direct
    route.choose(httpx.URL("https://aps.amazonaws.com/"))     # the Proxy to CONNECT through

``no_proxy`` entries: ``*`` (everything), an IP (``10.0.0.1``), a CIDR (``10.0.0.0/8``), a domain
(``example.com``: it and its subdomains; ``.example.com``: subdomains only), each optionally with a
``:port``. An http target is sent to the proxy in absolute form (``GET http://host/path``), with
``Proxy-Authorization`` from the proxy URL's user and password; an https target is tunnelled with
``CONNECT host:port``, which also carries ``proxy_connect_header``.
"""

from __future__ import annotations

import base64
import ipaddress
import os
from collections.abc import Mapping
from dataclasses import dataclass
from urllib.parse import unquote, urlsplit

import httpx

from ..config_http import ProxyConfig, shown_url

__all__ = ["Proxy", "ProxyRoute", "parse_no_proxy"]


@dataclass(frozen=True)
class Proxy:
    """One proxy: where it is, and the header lines it is sent (already encoded)."""

    host: str
    port: int
    shown: str  # the URL without its password, for messages
    auth: tuple[tuple[bytes, bytes], ...] = ()  # Proxy-Authorization, on every request to the proxy
    connect: tuple[tuple[bytes, bytes], ...] = ()  # proxy_connect_header, on CONNECT only

    @classmethod
    def from_url(cls, url: str, connect_headers: tuple[tuple[str, tuple[str, ...]], ...] = ()) -> Proxy:
        if "://" not in url:  # as Go reads HTTP_PROXY=host:port
            url = "http://" + url
        parts = urlsplit(url)
        if parts.scheme != "http" or not parts.hostname:
            raise ValueError(f"{shown_url(url)!r}: only http:// proxies are supported")
        auth: tuple[tuple[bytes, bytes], ...] = ()
        if parts.username is not None:
            pair = f"{unquote(parts.username)}:{unquote(parts.password or '')}".encode()
            auth = ((b"Proxy-Authorization", b"Basic " + base64.b64encode(pair)),)
        connect = tuple((name.encode("latin-1"), _reveal(v).encode("latin-1"))
                        for name, values in connect_headers for v in values)
        return cls(parts.hostname, parts.port or 80, shown_url(url), auth, connect)

    def __repr__(self) -> str:
        return f"<Proxy {self.shown}>"


def _reveal(value: str) -> str:
    reveal = getattr(value, "reveal", None)
    return reveal() if reveal is not None else value


_Matcher = tuple[str, object, str]  # kind ("all", "ip", "net", "domain", "host"), what, port ("" = any)


def parse_no_proxy(text: str) -> tuple[_Matcher, ...]:
    """``no_proxy``'s entries as matchers (ValueError naming a bad entry)."""
    out: list[_Matcher] = []
    for raw in text.split(","):
        entry = raw.strip().lower()
        if not entry:
            continue
        if entry == "*":
            out.append(("all", None, ""))
            continue
        try:
            out.append(("net", ipaddress.ip_network(entry, strict=False), "") if "/" in entry else
                       ("ip", ipaddress.ip_address(entry), ""))
            continue
        except ValueError:
            if "/" in entry:
                raise ValueError(f"{raw.strip()!r} is not a CIDR (like 10.0.0.0/8)") from None
        host, port = entry, ""
        if entry.startswith("["):
            host, _, rest = entry[1:].partition("]")
            port = rest[1:] if rest.startswith(":") else ""
        elif entry.count(":") == 1:
            host, _, port = entry.partition(":")
        if port and not port.isdigit():
            raise ValueError(f"{raw.strip()!r} has a bad port")
        try:
            out.append(("ip", ipaddress.ip_address(host), port))
            continue
        except ValueError:
            pass
        if host.startswith("*."):
            host = host[1:]
        if not host or host == "." or any(c in host for c in " /@"):
            raise ValueError(f"{raw.strip()!r} is not a host, domain, IP or CIDR")
        # "example.com" matches itself and its subdomains; ".example.com" only the subdomains
        out.append(("domain", host if host.startswith(".") else "." + host, port))
        if not host.startswith("."):
            out.append(("host", host, port))
    return tuple(out)


class ProxyRoute:
    """The proxy (if any) for each request of one HTTP client config."""

    def __init__(self, http: Proxy | None, https: Proxy | None, no_proxy: str = "", *, everything: bool = False) -> None:
        self.http = http
        self.https = https
        self._matchers = parse_no_proxy(no_proxy)
        # proxy_url without no_proxy: everything through the proxy, loopback too (Go's http.ProxyURL)
        self._everything = everything

    @classmethod
    def from_config(cls, cfg: ProxyConfig, environ: Mapping[str, str] | None = None) -> ProxyRoute | None:
        """The route for ``cfg`` (None when it names no proxy); the environment is read now."""
        if cfg.proxy_url:
            proxy = Proxy.from_url(cfg.proxy_url, cfg.proxy_connect_header)
            return cls(proxy, proxy, cfg.no_proxy, everything=not cfg.no_proxy)
        if not cfg.proxy_from_environment:
            return None
        env = os.environ if environ is None else environ

        def var(name: str) -> str:
            return env.get(name) or env.get(name.lower()) or ""

        http_url, https_url = var("HTTP_PROXY"), var("HTTPS_PROXY")
        if env.get("REQUEST_METHOD"):  # as Go: under CGI, HTTP_PROXY may come from the client's Proxy: header
            http_url = ""
        try:
            http = Proxy.from_url(http_url, cfg.proxy_connect_header) if http_url else None
            https = Proxy.from_url(https_url, cfg.proxy_connect_header) if https_url else None
            no_proxy = var("NO_PROXY")
            parse_no_proxy(no_proxy)
        except ValueError as exc:
            from .._exceptions import ConfigError

            raise ConfigError("proxy_from_environment", f"the environment's proxy settings: {exc}") from None
        if http is None and https is None:
            return None
        return cls(http, https, no_proxy)

    def choose(self, url: httpx.URL) -> Proxy | None:
        """The proxy for a request to ``url``, or None: direct."""
        proxy = self.https if url.scheme == "https" else self.http
        if proxy is None or self._everything:
            return proxy
        host = url.host.lower().rstrip(".")
        port = str(url.port or (443 if url.scheme == "https" else 80))
        if host == "localhost":
            return None
        try:
            ip: ipaddress.IPv4Address | ipaddress.IPv6Address | None = ipaddress.ip_address(host)
        except ValueError:
            ip = None
        if ip is not None and ip.is_loopback:
            return None
        for kind, what, want_port in self._matchers:
            if kind == "all":
                return None
            if want_port and want_port != port:
                continue
            if ip is not None:
                if (kind == "ip" and ip == what) or (kind == "net" and ip in what):  # type: ignore[operator]
                    return None
            elif (kind == "domain" and host.endswith(what)) or (kind == "host" and host == what):  # type: ignore[arg-type]
                return None
        return proxy
