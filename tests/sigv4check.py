"""An independent SigV4 verifier for the tests (hashlib and hmac, written from AWS's description of
the algorithm, checked against AWS's test vectors in test_sigv4.py): it recomputes the signature of
a request as a receiver got it off the wire, so the relay's signing (botocore) is checked end to end."""

from __future__ import annotations

import hashlib
import hmac
import posixpath
from collections.abc import Iterable
from urllib.parse import quote, unquote

ALGORITHM = "AWS4-HMAC-SHA256"


def _uri_path(path: str) -> str:
    normalized = posixpath.normpath(path) if path not in ("", "/") else "/"
    if path.endswith("/") and normalized != "/":
        normalized += "/"
    return quote(normalized, safe="/~")


def _query(query: str) -> str:
    pairs = []
    for part in query.split("&") if query else []:
        key, _, value = part.partition("=")
        pairs.append((quote(unquote(key), safe="-_.~"), quote(unquote(value), safe="-_.~")))
    return "&".join(f"{k}={v}" for k, v in sorted(pairs))


def canonical_request(method: str, target: str, headers: Iterable[tuple[str, str]], body: bytes,
                      signed: list[str]) -> str:
    path, _, query = target.partition("?")
    values: dict[str, list[str]] = {}
    for name, value in headers:
        values.setdefault(name.lower(), []).append(" ".join(value.split()))
    lines = "".join(f"{name}:{','.join(values.get(name, []))}\n" for name in signed)
    return "\n".join([method, _uri_path(path), _query(query), lines, ";".join(signed),
                      hashlib.sha256(body).hexdigest()])


def _hmac(key: bytes, text: str) -> bytes:
    return hmac.new(key, text.encode(), hashlib.sha256).digest()


def signature(secret: str, amz_date: str, region: str, service: str, creq: str) -> tuple[str, str]:
    """(string to sign, signature hex) for a canonical request."""
    scope = f"{amz_date[:8]}/{region}/{service}/aws4_request"
    sts = "\n".join([ALGORITHM, amz_date, scope, hashlib.sha256(creq.encode()).hexdigest()])
    key = _hmac(_hmac(_hmac(_hmac(("AWS4" + secret).encode(), amz_date[:8]), region), service), "aws4_request")
    return sts, hmac.new(key, sts.encode(), hashlib.sha256).hexdigest()


def verify(method: str, target: str, headers: list[tuple[str, str]], body: bytes, *, access_key: str, secret: str,
           region: str, service: str) -> str:
    """"" when the request's Authorization is a valid signature of it, else what is wrong."""
    got = {k.lower(): v for k, v in headers}
    auth = got.get("authorization", "")
    if not auth.startswith(ALGORITHM + " "):
        return "no SigV4 Authorization header"
    fields = dict(part.strip().split("=", 1) for part in auth[len(ALGORITHM) + 1:].split(","))
    amz_date = got.get("x-amz-date", "")
    want_scope = f"{access_key}/{amz_date[:8]}/{region}/{service}/aws4_request"
    if fields.get("Credential") != want_scope:
        return f"credential {fields.get('Credential')!r}, want {want_scope!r}"
    signed = fields.get("SignedHeaders", "").split(";")
    for must in ("host", "x-amz-date", *(h for h in ("content-type", "content-encoding", "x-amz-security-token")
                                          if h in got)):
        if must not in signed:
            return f"{must} is not signed"
    creq = canonical_request(method, target, headers, body, signed)
    _, sig = signature(secret, amz_date, region, service, creq)
    if not hmac.compare_digest(sig, fields.get("Signature", "")):
        return "signature does not match"
    return ""
