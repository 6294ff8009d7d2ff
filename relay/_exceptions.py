"""Exceptions raised by the relay.

    RelayError
    ├── ConfigError      a config file, flag or reload that is not valid; names the key and the problem
    ├── ParseError       an exposition body that does not parse; names the line and what was wrong
    ├── ScrapeError      a scrape that failed (HTTP status, timeout, limit, TLS); carries a short reason
    └── RemoteWriteError a send that failed for good (4xx) or a queue that could not be used

Every message is one line that says what was wrong and where, and never contains a secret.
"""

from __future__ import annotations


class RelayError(Exception):
    """Base class of every error the relay raises on purpose."""


class ConfigError(RelayError):
    """A configuration error: `where` is the key path (e.g. ``scrape_configs[0].job_name``)."""

    def __init__(self, where: str, problem: str) -> None:
        self.where = where
        self.problem = problem
        super().__init__(f"{where}: {problem}" if where else problem)


class ParseError(RelayError):
    """An exposition body that does not parse. `line` is 1-based (0 when not tied to a line)."""

    def __init__(self, line: int, problem: str) -> None:
        self.line = line
        self.problem = problem
        super().__init__(f"line {line}: {problem}" if line else problem)


class ScrapeError(RelayError):
    """A failed scrape. `reason` is a short constant (labels a counter); the message is for humans."""

    def __init__(self, reason: str, message: str) -> None:
        self.reason = reason
        super().__init__(message)


class RemoteWriteError(RelayError):
    """A remote-write failure that is not retried."""
