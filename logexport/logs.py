"""Structured logging for ``serve`` and ``worker`` (README.md, "Behaviour worth knowing").

JSON lines when stderr is not a terminal (one object per record: time, level, logger,
message and the ``extra`` fields such as ``export_id`` and ``organization_id``), readable
lines on a terminal. Every line passes through ``redact`` last: code never logs tokens on
purpose, and this catches the ones a library or an exception message lets slip.
"""

from __future__ import annotations

import json
import logging
import re
import sys
from datetime import UTC, datetime
from typing import TextIO

_REDACTED = "[REDACTED]"

_PATTERNS: tuple[tuple[re.Pattern[str], str], ...] = (
    # API tokens, wherever they appear.
    (re.compile(r"lex_[A-Za-z0-9_\-]{6,}"), f"lex_{_REDACTED}"),
    # Bearer credentials in a header dump.
    (re.compile(r"(?i)(bearer\s+)[^\s\"',;]+"), rf"\1{_REDACTED}"),
    # Presigned URLs: drop the whole query string, it is the credential.
    (
        re.compile(r"(?i)(https?://[^\s?\"'<>]+)\?[^\s\"'<>]*x-amz-[^\s\"'<>]*"),
        rf"\1?{_REDACTED}",
    ),
    (
        re.compile(r"(?i)(x-amz-(?:signature|credential|security-token)=)[^&\s\"'<>]+"),
        rf"\1{_REDACTED}",
    ),
    # Download-link tokens and other secrets passed as query or form values.
    (
        re.compile(r"(?i)\b((?:token|password|passwd|secret|signature)=)[^&\s\"'<>]+"),
        rf"\1{_REDACTED}",
    ),
    # Passwords in URLs: scheme://user:password@host.
    (re.compile(r"([a-zA-Z][a-zA-Z0-9+.\-]*://[^:/?#\s@\"']*:)[^@/?#\s\"']+@"), rf"\1{_REDACTED}@"),
)

# Attributes every LogRecord has; anything else on a record came from ``extra``.
_STANDARD_ATTRS = frozenset(logging.makeLogRecord({}).__dict__) | {"message", "asctime"}


def redact(text: str) -> str:
    """``text`` with anything that looks like a credential replaced."""
    for pattern, replacement in _PATTERNS:
        text = pattern.sub(replacement, text)
    return text


def _extras(record: logging.LogRecord) -> dict[str, object]:
    return {
        key: value
        for key, value in record.__dict__.items()
        if key not in _STANDARD_ATTRS and not key.startswith("_") and key != "color_message"
    }


class RedactingFilter(logging.Filter):
    """Rewrites the message and string extras of every record it sees."""

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            message = record.getMessage()
        except Exception:  # a bad format string must not lose the record
            message = str(record.msg)
        record.msg = redact(message)
        record.args = None
        for key, value in _extras(record).items():
            if isinstance(value, str):
                setattr(record, key, redact(value))
        return True


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, object] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        for key, value in _extras(record).items():
            entry.setdefault(key, value)
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return redact(json.dumps(entry, default=str, ensure_ascii=False))


class PlainFormatter(logging.Formatter):
    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)-7s %(name)s: %(message)s", "%H:%M:%S")

    def format(self, record: logging.LogRecord) -> str:
        line = super().format(record)
        extras = _extras(record)
        if extras:
            line += " " + " ".join(f"{k}={v}" for k, v in sorted(extras.items()))
        return redact(line)


def configure_logging(
    level: int | str = logging.INFO,
    *,
    stream: TextIO | None = None,
    json_lines: bool | None = None,
) -> logging.Handler:
    """Send every logger's records to ``stream`` (stderr), JSON unless it is a terminal.

    Replaces the root logger's handlers, so calling it twice does not duplicate lines.
    """
    target = stream if stream is not None else sys.stderr
    if json_lines is None:
        json_lines = not (hasattr(target, "isatty") and target.isatty())
    handler = logging.StreamHandler(target)
    handler.setFormatter(JsonFormatter() if json_lines else PlainFormatter())
    handler.addFilter(RedactingFilter())
    root = logging.getLogger()
    for existing in list(root.handlers):
        root.removeHandler(existing)
    root.addHandler(handler)
    root.setLevel(level)
    # Libraries that log every request or retry at INFO would drown the service's own lines.
    for noisy in ("botocore", "aiobotocore", "aioboto3", "urllib3", "httpx", "mcp"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    return handler
