"""The HTTP layer: one client interface for scraping, remote write and discovery, and the web server.

    client.py   HTTPClient (auth, redirects, timeouts, body limits, errors with their reason) and
                ClientPool: one client per HTTP client config, TLS files reloaded when they change
    _wire.py    FastTransport: HTTP/1.1 on anyio streams (keep-alive pool, request out, response
                head in, body framing); the default transport under HTTPClient
    fetch.py    the body side: chunked decoding, gzip/deflate in bounded steps, size limits
    server.py   the relay's own web endpoints (/metrics, /targets, /-/reload, ...)

``--http-transport httpx`` puts httpx's own transport under HTTPClient instead of FastTransport;
everything above the transport (and every error reason) is the same.
"""
