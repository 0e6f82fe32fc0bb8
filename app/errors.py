"""Errors a user can act on, free of any transport.

Code anywhere in ``app`` and ``models`` raises one of these; the edges map them: the CLI
(``app/cli.py``) prints one line and exits 2, the HTTP API (``app/api/problems.py``) answers an
``application/problem+json`` body whose status follows the kind. The message is the whole story:
it names the file, line and key, the option, or the value that is wrong.
"""

from __future__ import annotations


class UserError(Exception):
    """Base of every error meant for a person: bad input, bad configuration, a missing thing.

    ``reason`` is a short slug for metrics and the problem ``type``; each kind has a default."""

    reason = "bad-request"

    def __init__(self, message: str, *, reason: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        if reason is not None:
            self.reason = reason

    def __str__(self) -> str:
        return self.message


class InvalidInput(UserError):
    """A value that breaks a rule (a bad filter, an unknown class, a box outside the frame)."""

    reason = "invalid-input"


class ConfigError(InvalidInput):
    """A settings variable, cameras file or dataset file that cannot be used (names file, line and key)."""

    reason = "config"


class NotFound(UserError):
    """The thing asked for does not exist (a row, a file, a model)."""

    reason = "not-found"


class Conflict(UserError):
    """The request clashes with what is already there (a duplicate, a resource in use)."""

    reason = "conflict"


class SchemaMismatch(UserError):
    """The database's schema is not the one this version of the software writes (migrations not run,
    or a database a newer version migrated)."""

    reason = "schema"


class TooLarge(UserError):
    """Input beyond a configured size limit."""

    reason = "too-large"


class UnsupportedMedia(UserError):
    """Input of a kind the service does not read (not a JPEG or PNG, say)."""

    reason = "unsupported-media"


class Unavailable(UserError):
    """A dependency is away or a bound is reached; trying again later can succeed, after about
    ``retry_after_s`` seconds when that is known (HTTP: the ``Retry-After`` header)."""

    reason = "unavailable"

    def __init__(self, message: str, *, reason: str | None = None, retry_after_s: int | None = None) -> None:
        super().__init__(message, reason=reason)
        self.retry_after_s = retry_after_s


class DatabaseUnavailable(Unavailable):
    """The database is away (its circuit breaker is open, or a request lost its connection); the
    message names no driver, host or port. ``retry_after_s``: about when it is probed again."""

    def __init__(self, retry_after_s: float) -> None:
        super().__init__("the database is unavailable; try again shortly", reason="database_unavailable",
                         retry_after_s=max(1, round(retry_after_s)))
