"""OAuth 2.0 client credentials (RFC 6749 section 4.4): `TokenSource` gets, caches and refreshes a token.

The token request is a form-encoded POST of ``grant_type=client_credentials`` (plus ``scope``,
the scopes joined by spaces, and ``endpoint_params``), the client authenticated with HTTP Basic
over the form-urlencoded id and secret (section 2.3.1), through the token endpoint's own HTTP
client (its ``tls_config`` and proxy)::

    source = TokenSource(config.oauth2, token_client)
    header, fresh = await source.header()        # "Bearer eyJ...", True when just fetched
    source.invalidate()                          # after a 401 from the target: fetch anew

A token is used until ``expires_in`` minus a margin (10 s, or half its life when that is short),
then fetched anew; concurrent requests wait for one fetch. ``client_secret_file`` is read at each
fetch, and a change of the file (its mtime) drops the cached token. The answer is read under
`TOKEN_LIMIT` bytes. Every failure is an `OAuth2Error` (reason ``oauth2``) naming the token URL
and what went wrong; it never holds the secret or the token.
"""

from __future__ import annotations

import base64
import os
import time
from typing import TYPE_CHECKING, Final
from urllib.parse import parse_qsl, quote_plus, urlencode

import anyio
import orjson

from .._exceptions import BodyLimitError, HTTPError, OAuth2Error
from ..config_http import OAuth2Config, shown_url

if TYPE_CHECKING:
    from .client import HTTPClient

__all__ = ["TOKEN_LIMIT", "TokenSource"]

#: The token endpoint's answer is read up to this many bytes (as Go's oauth2 package: 1 MiB).
TOKEN_LIMIT: Final = 1 << 20
#: A token is refreshed this long before it expires (as Go's oauth2 package).
EARLY: Final = 10.0
#: The token request's own timeout (the caller's timeout bounds it too).
TOKEN_TIMEOUT: Final = 10.0


def _token_type(raw: object) -> str:
    """The Authorization scheme for a token_type (as Go's oauth2: bearer, mac, basic capitalised)."""
    kind = raw if isinstance(raw, str) and raw else "Bearer"
    return {"bearer": "Bearer", "mac": "MAC", "basic": "Basic"}.get(kind.lower(), kind)


class TokenSource:
    """The cached token of one ``oauth2`` config; see the module docstring."""

    def __init__(self, cfg: OAuth2Config, client: HTTPClient) -> None:
        self.cfg = cfg
        self.client = client
        self.fetches = 0  # token requests sent (tests and debugging)
        self._header: str | None = None
        self._refresh_at = 0.0
        self._secret_mtime: float | None = None
        self._lock = anyio.Lock()
        self._shown = shown_url(cfg.token_url)

    def invalidate(self) -> None:
        self._header = None

    def _valid(self) -> bool:
        if self._header is None or time.monotonic() >= self._refresh_at:
            return False
        if self.cfg.client_secret_file:
            try:
                mtime = os.stat(self.cfg.client_secret_file).st_mtime
            except OSError:
                return True  # the fetch that needs it says why; a token in hand is still good
            if mtime != self._secret_mtime:
                return False
        return True

    async def header(self) -> tuple[str, bool]:
        """The Authorization header value, and whether it was fetched by this call."""
        if self._valid():
            assert self._header is not None
            return self._header, False
        async with self._lock:
            if self._valid():  # another request fetched it while this one waited
                assert self._header is not None
                return self._header, False
            header = await self._fetch()
            return header, True

    def _secret(self) -> str:
        cfg = self.cfg
        if not cfg.client_secret_file:
            return cfg.client_secret.reveal() if cfg.client_secret is not None else ""
        path = cfg.client_secret_file
        try:
            self._secret_mtime = os.stat(path).st_mtime
            with open(path, encoding="utf-8") as f:
                return f.read().strip()
        except (OSError, UnicodeDecodeError) as exc:
            detail = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
            raise OAuth2Error(f"cannot read oauth2.client_secret_file {path}: {detail}") from None

    async def _fetch(self) -> str:
        cfg = self.cfg
        form = {"grant_type": "client_credentials"}
        if cfg.scopes:
            form["scope"] = " ".join(cfg.scopes)
        form.update(cfg.endpoint_params)
        pair = f"{quote_plus(cfg.client_id)}:{quote_plus(self._secret())}".encode()
        headers = {
            "Authorization": "Basic " + base64.b64encode(pair).decode(),
            "Content-Type": "application/x-www-form-urlencoded",
            "Accept": "application/json",
        }
        what = f"oauth2 token from {self._shown}"
        self.fetches += 1
        started = time.monotonic()
        try:
            response = await self.client.post(cfg.token_url, urlencode(form).encode(), headers=headers,
                                              timeout=TOKEN_TIMEOUT, limit=TOKEN_LIMIT)
        except BodyLimitError:
            raise OAuth2Error(f"{what}: the answer is larger than {TOKEN_LIMIT} bytes") from None
        except HTTPError as exc:
            raise OAuth2Error(f"{what}: {exc.reason}: {exc}") from None
        body = response.content
        ctype = response.headers.get("content-type", "").split(";")[0].strip().lower()
        data: dict[str, object]
        try:
            if ctype in ("application/x-www-form-urlencoded", "text/plain"):
                data = dict(parse_qsl(body.decode("utf-8")))
            else:
                parsed = orjson.loads(body)
                data = parsed if isinstance(parsed, dict) else {}
        except (ValueError, UnicodeDecodeError):
            data = {}
        if response.status_code != 200:
            error = data.get("error")
            detail = f": {str(error)[:100]}" if isinstance(error, str) else ""
            desc = data.get("error_description")
            if isinstance(desc, str) and desc:
                detail += f" ({desc[:200]})"
            hint = " (check client_id and client_secret)" if response.status_code in (400, 401) else ""
            raise OAuth2Error(f"{what}: HTTP {response.status_code}{detail}{hint}")
        token = data.get("access_token")
        if not isinstance(token, str) or not token or any(c in token for c in "\r\n"):
            raise OAuth2Error(f"{what}: the answer has no access_token")
        expires_in = data.get("expires_in")
        try:
            life = float(expires_in) if expires_in not in (None, "", 0, "0") else 0.0  # type: ignore[arg-type]
        except (TypeError, ValueError):
            raise OAuth2Error(f"{what}: expires_in {str(expires_in)[:40]!r} is not a number") from None
        header = f"{_token_type(data.get('token_type'))} {token}"
        # no expires_in: used until a target says 401
        self._refresh_at = started + max(life - EARLY, life / 2) if life > 0 else float("inf")
        self._header = header
        return header
