"""``--web.config.file``: TLS and basic auth for the relay's own endpoints, in Prometheus' format.

    tls_server_config:
      cert_file: server.crt          # paths relative to the web config file
      key_file: server.key
      client_ca_file: ca.crt         # optional
      client_auth_type: RequireAndVerifyClientCert   # NoClientCert (default), RequestClientCert,
                                     # RequireAnyClientCert, VerifyClientCertIfGiven
      min_version: TLS12             # TLS10..TLS13 (default TLS12)
      max_version: TLS13
    http_server_config:
      headers: {Strict-Transport-Security: max-age=31536000}
    basic_auth_users:
      alice: $2y$10$...              # bcrypt hashes (htpasswd -nBC 10 "" | tr -d ':\\n')

Every error is a :class:`ConfigError` naming the key. Loaded once at start.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import os
import ssl
from collections import OrderedDict
from dataclasses import dataclass, field
from pathlib import Path

import anyio
import yaml

from .._exceptions import ConfigError
from ..config import _Section

__all__ = ["BasicAuthUsers", "WebConfig", "load_web_config"]

_TLS_VERSIONS = {
    "TLS10": ssl.TLSVersion.TLSv1,
    "TLS11": ssl.TLSVersion.TLSv1_1,
    "TLS12": ssl.TLSVersion.TLSv1_2,
    "TLS13": ssl.TLSVersion.TLSv1_3,
}
_CLIENT_AUTH = {
    "NoClientCert": ssl.CERT_NONE,
    "RequestClientCert": ssl.CERT_OPTIONAL,  # Python cannot ask without verifying: verified when sent
    "RequireAnyClientCert": ssl.CERT_REQUIRED,
    "VerifyClientCertIfGiven": ssl.CERT_OPTIONAL,
    "RequireAndVerifyClientCert": ssl.CERT_REQUIRED,
}
# The response headers Prometheus' web config lets one set (exporter-toolkit's list).
_ALLOWED_HEADERS = {
    "content-security-policy": "Content-Security-Policy",
    "x-frame-options": "X-Frame-Options",
    "x-content-type-options": "X-Content-Type-Options",
    "x-xss-protection": "X-XSS-Protection",
    "strict-transport-security": "Strict-Transport-Security",
}


@dataclass(frozen=True)
class TLSServerConfig:
    """The ``tls_server_config`` keys read, with their defaults (written once, here)."""

    cert_file: str | None = None
    key_file: str | None = None
    client_ca_file: str | None = None
    client_auth_type: str = "NoClientCert"
    min_version: str = "TLS12"
    max_version: str = "TLS13"
    prefer_server_cipher_suites: bool = True  # accepted: OpenSSL servers prefer their own order


@dataclass(frozen=True)
class HTTPServerConfig:
    http2: bool = True  # accepted; this server speaks HTTP/1.1


class BasicAuthUsers:
    """Checks ``Authorization: Basic`` against bcrypt hashes. bcrypt is slow on purpose (tens of
    milliseconds): it runs in a worker thread, at most two at a time, and a pair that passed is
    remembered (as a keyed digest, never the password) so a scraper's every request does not pay it."""

    def __init__(self, users: dict[str, bytes]) -> None:
        self.users = users
        self._key = os.urandom(32)
        self._good: OrderedDict[bytes, None] = OrderedDict()
        self._limiter = anyio.CapacityLimiter(2)

    async def check(self, header: str | None) -> bool:
        import bcrypt

        if not header:
            return False
        scheme, _, token = header.partition(" ")
        if scheme.lower() != "basic":
            return False
        try:
            user, sep, password = base64.b64decode(token.strip(), validate=True).decode("utf-8").partition(":")
        except (ValueError, UnicodeDecodeError):
            return False
        hashed = self.users.get(user)
        if not sep or hashed is None:
            return False
        digest = hmac.new(self._key, f"{user}\0{password}".encode(), hashlib.sha256).digest()
        if digest in self._good:
            self._good.move_to_end(digest)
            return True
        try:
            ok = await anyio.to_thread.run_sync(bcrypt.checkpw, password.encode(), hashed, limiter=self._limiter)
        except ValueError:  # a hash bcrypt cannot read: checked at load, so only a corrupted one
            return False
        if ok:
            self._good[digest] = None
            while len(self._good) > 256:
                self._good.popitem(last=False)
        return bool(ok)


@dataclass
class WebConfig:
    ssl_context: ssl.SSLContext | None = None
    users: BasicAuthUsers | None = None
    headers: dict[str, str] = field(default_factory=dict)


def _tls(sec: _Section) -> ssl.SSLContext:
    cert, key = sec.path("cert_file"), sec.path("key_file")
    if not cert:
        raise ConfigError(sec.at("cert_file"), "is required")
    if not key:
        raise ConfigError(sec.at("key_file"), "is required")
    ca = sec.path("client_ca_file")
    auth_type = sec.text("client_auth_type")
    if auth_type not in _CLIENT_AUTH:
        raise ConfigError(sec.at("client_auth_type"), f"{auth_type!r} is not one of {', '.join(_CLIENT_AUTH)}")
    versions = {}
    for k in ("min_version", "max_version"):
        v = sec.text(k)
        if v not in _TLS_VERSIONS:
            raise ConfigError(sec.at(k), f"{v!r} is not one of {', '.join(_TLS_VERSIONS)}")
        versions[k] = _TLS_VERSIONS[v]
    for k in ("cipher_suites", "curve_preferences"):
        if sec.has(k):
            raise ConfigError(sec.at(k), "is not supported (Python's TLS uses OpenSSL's defaults)")
    sec.flag("prefer_server_cipher_suites")
    sec.done()
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    try:
        ctx.minimum_version = versions["min_version"]
        ctx.maximum_version = versions["max_version"]
    except (ValueError, ssl.SSLError) as exc:
        raise ConfigError(sec.at("min_version"), f"not usable here: {exc}") from None
    try:
        ctx.load_cert_chain(cert, key)
    except (OSError, ssl.SSLError) as exc:
        raise ConfigError(sec.at("cert_file"), f"cannot load {cert} with {key}: {getattr(exc, 'strerror', None) or exc}") from None
    mode = _CLIENT_AUTH[auth_type]
    if mode != ssl.CERT_NONE:
        if not ca and auth_type in ("VerifyClientCertIfGiven", "RequireAndVerifyClientCert"):
            raise ConfigError(sec.at("client_ca_file"), f"is required with client_auth_type {auth_type}")
        if ca:
            try:
                ctx.load_verify_locations(ca)
            except (OSError, ssl.SSLError) as exc:
                raise ConfigError(sec.at("client_ca_file"), f"cannot load {ca}: {getattr(exc, 'strerror', None) or exc}") from None
        else:  # RequestClientCert / RequireAnyClientCert with no CA: verify against the system's
            ctx.load_default_certs(ssl.Purpose.CLIENT_AUTH)
        ctx.verify_mode = mode
    elif ca:
        raise ConfigError(sec.at("client_ca_file"), "is set but client_auth_type is NoClientCert")
    return ctx


def parse_web_config(text: str, source: str, base: Path) -> WebConfig:
    try:
        raw = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"{source}:{mark.line + 1}:{mark.column + 1}" if mark is not None else source
        raise ConfigError(where, f"invalid YAML: {getattr(exc, 'problem', None) or 'cannot parse'}") from None
    top = _Section(raw, "", base=base)
    out = WebConfig()
    if top.has("tls_server_config"):
        out.ssl_context = _tls(top.section("tls_server_config", of=TLSServerConfig))
    else:
        top.get("tls_server_config")
    if top.has("http_server_config"):
        h = top.section("http_server_config", of=HTTPServerConfig)
        h.flag("http2")
        for name, value in h.str_map("headers").items():
            canonical = _ALLOWED_HEADERS.get(name.lower())
            if canonical is None:
                raise ConfigError(f"{h.at('headers')}.{name}", f"cannot be set (allowed: {', '.join(_ALLOWED_HEADERS.values())})")
            if "\r" in value or "\n" in value:
                raise ConfigError(f"{h.at('headers')}.{name}", "must be one line")
            out.headers[canonical] = value
        h.done()
    else:
        top.get("http_server_config")
    if top.has("basic_auth_users"):
        users: dict[str, bytes] = {}
        for name, hashed in top.str_map("basic_auth_users").items():
            where = f"basic_auth_users.{name}"
            if ":" in name:
                raise ConfigError(where, "a user name cannot contain ':'")
            if not hashed.startswith(("$2a$", "$2b$", "$2y$")) or len(hashed) != 60:
                raise ConfigError(where, "is not a bcrypt hash (like $2y$10$ and 53 more characters)")
            users[name] = hashed.encode()
        out.users = BasicAuthUsers(users) if users else None
    else:
        top.get("basic_auth_users")
    top.done()
    return out


def load_web_config(path: str) -> WebConfig:
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(str(p), f"cannot read web config file: {exc.strerror or exc}") from None
    except UnicodeDecodeError:
        raise ConfigError(str(p), "web config file is not UTF-8 text") from None
    where = str(p)
    try:
        return parse_web_config(text, where, p.resolve().parent)
    except ConfigError as exc:
        if exc.where.startswith(where):
            raise
        raise ConfigError(f"{where}: {exc.where}" if exc.where else where, exc.problem) from None
