"""Exceptions raised by the relay.

    RelayError
    ├── ConfigError          a config file, flag or reload that is not valid; names the key and the problem
    │   └── ConfigErrors         several of them, from one file (``.errors``; the first is its own where/problem)
    ├── ParseError           an exposition body that does not parse; names the line and what was wrong
    ├── ScrapeError          a scrape that broke one of its own limits (sample_limit, label_limit, ...); .reason
    ├── RemoteWriteError     a send that failed for good (4xx) or a queue that could not be used
    └── HTTPError            an HTTP exchange that failed; .reason is decided where it failed, .url
        ├── ConnectError         "connect": refused, unreachable, name not resolved
        ├── TLSError             "tls": handshake failed, certificate rejected (either side)
        ├── HTTPTimeout          "timeout": connect, TLS, send or receive took too long (.phase)
        ├── CredentialsError     "auth": a password_file or credentials_file cannot be read
        ├── OAuth2Error          "oauth2": no token from the token endpoint (down, refused, bad answer)
        ├── SigV4Error           "sigv4": no AWS credentials to sign with (none found, STS refused)
        ├── ProxyError           "proxy": the proxy cannot be reached, refused CONNECT or wants credentials
        ├── StatusError          "http_status": a response status the caller does not accept (.status)
        ├── BodyLimitError       "body_size_limit": the decoded body is larger than allowed
        └── TransferError        "http": the exchange broke after the connection was made
            ├── ConnectionClosed     the peer closed or reset the connection mid-message
            ├── ProtocolError        the response is not valid HTTP/1.1 (head, framing, chunk sizes)
            └── DecodeError          a gzip or deflate body does not decode

``reason`` labels counters (``relay_scrape_failures_total{reason=...}``) and the targets page, so
its values are stable; the class says more, and the message (one line) says what and where.
Every message is one line that says what was wrong and where, and never contains a secret.
"""

from __future__ import annotations

from typing import ClassVar


class RelayError(Exception):
    """Base class of every error the relay raises on purpose."""


class ConfigError(RelayError):
    """A configuration error: `where` is the key path (e.g. ``scrape_configs[0].job_name``).

    ``file`` and ``line`` (1-based; 0 when not known) say where in which file, when known: the
    message is then ``FILE:LINE: where: problem``."""

    def __init__(self, where: str, problem: str, *, file: str = "", line: int = 0) -> None:
        self.where = where
        self.problem = problem
        self.file = file
        self.line = line
        self.warnings: tuple[str, ...] = ()  # of the file, when it was read far enough to have them
        super().__init__(self._message())

    def _message(self) -> str:
        where = self.where
        if self.file and where.startswith(self.file + ": "):  # a scrape config file's key path
            where = where[len(self.file) + 2:]
        text = f"{where}: {self.problem}" if where else self.problem
        if self.file and self.line:
            return f"{self.file}:{self.line}: {text}"
        return text

    def located(self, file: str, line: int) -> ConfigError:
        """The same error, placed at ``file:line`` (unless it already is)."""
        if self.file or (not file and not line):
            return self
        return ConfigError(self.where, self.problem, file=file, line=line)

    @staticmethod
    def group(errors: list[ConfigError]) -> ConfigError:
        """One error for several (the only one, or a ConfigErrors)."""
        return errors[0] if len(errors) == 1 else ConfigErrors(errors)


class ConfigErrors(ConfigError):
    """Several configuration errors of one file, in file order; ``str()`` is the first and a count."""

    def __init__(self, errors: list[ConfigError]) -> None:
        flat = [e for err in errors for e in (err.errors if isinstance(err, ConfigErrors) else [err])]
        self.errors: list[ConfigError] = flat
        first = flat[0]
        super().__init__(first.where, first.problem, file=first.file, line=first.line)

    def _message(self) -> str:
        return f"{super()._message()} (and {len(self.errors) - 1} more)"

    def lines(self) -> list[str]:
        return [str(e) for e in self.errors]


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


class HTTPError(RelayError):
    """An HTTP exchange that failed. `reason` (a class constant) labels counters; `url` is the
    request's URL without credentials ("" when not known where it was raised)."""

    reason: ClassVar[str] = "http"

    def __init__(self, message: str, *, url: str = "") -> None:
        self.url = url
        super().__init__(message)


class ConnectError(HTTPError):
    """The TCP connection could not be made (refused, unreachable, the name does not resolve)."""

    reason = "connect"


class TLSError(HTTPError):
    """The TLS handshake failed, or the server hung up on our certificate right after it."""

    reason = "tls"


class HTTPTimeout(HTTPError):
    """A step took longer than its timeout. `phase`: connect, tls, write, read or total."""

    reason = "timeout"

    def __init__(self, message: str, *, phase: str, url: str = "") -> None:
        self.phase = phase
        super().__init__(message, url=url)


class CredentialsError(HTTPError):
    """A secret file (password_file, credentials_file) that cannot be read: the request is not sent."""

    reason = "auth"


class OAuth2Error(HTTPError):
    """No OAuth 2.0 token: the token endpoint is down, refused the client, or answered nonsense.
    The request is not sent (without its token it would only be refused)."""

    reason = "oauth2"


class SigV4Error(HTTPError):
    """No AWS credentials to sign the request with (none in the chain, STS refused the role)."""

    reason = "sigv4"


class ProxyError(HTTPError):
    """The forward proxy cannot be reached, refused the CONNECT tunnel, or asks for credentials."""

    reason = "proxy"


class StatusError(HTTPError):
    """A response whose status the caller does not accept."""

    reason = "http_status"

    def __init__(self, status: int, *, url: str = "") -> None:
        self.status = status
        super().__init__(f"server returned HTTP status {status}", url=url)


class BodyLimitError(HTTPError):
    """The (decoded) body is larger than the limit; reading stopped there."""

    reason = "body_size_limit"

    def __init__(self, limit: int, *, url: str = "") -> None:
        self.limit = limit
        super().__init__(f"body exceeds body_size_limit of {limit} bytes", url=url)


class TransferError(HTTPError):
    """The exchange broke after the connection was made."""

    reason = "http"


class ConnectionClosed(TransferError):
    """The peer closed or reset the connection before the message was complete."""


class ProtocolError(TransferError):
    """The response is not valid HTTP/1.1."""


class DecodeError(TransferError):
    """A compressed body that does not decode."""
