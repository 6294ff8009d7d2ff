"""``python -m relay.healthcheck [URL]``: exit 0 when the relay's ``/-/healthy`` answers 200, else 1.

The container image's ``HEALTHCHECK`` runs this (the slim image has no curl). The URL is the
argument, else ``$RELAY_HEALTHCHECK_URL``, else ``http://127.0.0.1:9091/-/healthy`` (the default
``--listen``). A relay that listens only on the pod or node IP needs the variable set. Over https
the certificate is not verified: the probe runs beside the relay, and the serving certificate
rarely names 127.0.0.1. One line on stderr says why a check failed.
"""

from __future__ import annotations

import os
import ssl
import sys
import urllib.error
import urllib.request
from collections.abc import Sequence

DEFAULT_URL = "http://127.0.0.1:9091/-/healthy"
TIMEOUT = 5.0


def check(url: str, timeout: float = TIMEOUT) -> str | None:
    """None when ``url`` answers 200; otherwise what went wrong, in one line."""
    if not url.startswith(("http://", "https://")):
        return f"healthcheck: {url!r} is not an http:// or https:// URL"
    context = None
    if url.startswith("https://"):
        context = ssl.create_default_context()
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    try:
        with urllib.request.urlopen(url, timeout=timeout, context=context) as resp:
            status = int(resp.status)
    except urllib.error.HTTPError as exc:
        status = exc.code
    except (urllib.error.URLError, OSError, ValueError) as exc:
        reason = getattr(exc, "reason", exc)
        return f"healthcheck: {url}: {reason}"
    if status != 200:
        return f"healthcheck: {url}: HTTP status {status}"
    return None


def main(argv: Sequence[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    if len(args) > 1:
        print("usage: python -m relay.healthcheck [URL]", file=sys.stderr)
        return 2
    url = args[0] if args else os.environ.get("RELAY_HEALTHCHECK_URL") or DEFAULT_URL
    problem = check(url)
    if problem is not None:
        print(problem, file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
