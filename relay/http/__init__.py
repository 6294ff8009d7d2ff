"""The HTTP layer: one client pool for scraping, remote write and discovery, and the web server.

    client.py   ClientPool: one client per TLS/auth setting, TLS files reloaded when they change
    _wire.py    the fast HTTP/1.1 transport and the direct GET/POST path (keep-alive, chunks, gzip)
    server.py   the relay's own web endpoints (/metrics, /targets, /-/reload, ...)
"""
