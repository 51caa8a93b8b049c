"""Errors a user can cause. Each surface maps ``code`` once; ``message`` is safe to show."""

from __future__ import annotations


class LogExportError(Exception):
    code = "INTERNAL"

    def __init__(self, message: str, *, field: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.field = field


class BadUserInput(LogExportError):
    """Input breaks a rule; ``field`` names the offending input field."""

    code = "BAD_USER_INPUT"


class Unauthenticated(LogExportError):
    code = "UNAUTHENTICATED"


class Forbidden(LogExportError):
    code = "FORBIDDEN"


class NotFound(LogExportError):
    code = "NOT_FOUND"


class RateLimited(LogExportError):
    code = "RATE_LIMITED"
