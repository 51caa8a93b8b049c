"""The two emails an export sends, and the SMTP client that sends them.

Rendering and sending are separate so the worker can build a message, retry sending it,
and tests can read what a user would read without a server.
"""

from __future__ import annotations

import functools
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from email.headerregistry import Address
from email.message import EmailMessage
from email.utils import format_datetime, make_msgid
from pathlib import Path
from typing import Literal
from urllib.parse import parse_qs, unquote, urlsplit
from uuid import UUID

import aiosmtplib
import jinja2

from logexport.config import ConfigError, Settings
from logexport.exports.describe import format_label, human_size
from logexport.exports.models import LogExport
from logexport.kinds import log_kind
from logexport.timeutil import format_readable, format_rfc3339

_TEMPLATES = Path(__file__).resolve().parent.parent / "mail" / "templates"

# Two environments: escaping belongs to HTML only; the text part must show "<" as "<".
_html_env = jinja2.Environment(
    loader=jinja2.FileSystemLoader(_TEMPLATES),
    autoescape=True,
    undefined=jinja2.StrictUndefined,
    trim_blocks=True,
    lstrip_blocks=True,
)
_text_env = jinja2.Environment(
    loader=jinja2.FileSystemLoader(_TEMPLATES),
    autoescape=False,  # noqa: S701 - plain-text mail, never rendered as HTML
    undefined=jinja2.StrictUndefined,
    trim_blocks=True,
    lstrip_blocks=True,
    keep_trailing_newline=True,
)

# "Your audit log export is ready": the subject after the kind's label.
_SUBJECT_ENDINGS = {"ready": "is ready", "failed": "failed"}
_MAX_ERROR_CHARS = 500
SMTP_TIMEOUT = 30.0


class MailError(Exception):
    """Sending failed. The message names the server and the reply, never credentials.

    ``permanent`` is true when the server refused with a 5xx reply: retrying the same
    message will not help.
    """

    def __init__(self, message: str, *, permanent: bool = False) -> None:
        super().__init__(message)
        self.message = message
        self.permanent = permanent


@dataclass(frozen=True)
class Recipient:
    email: str
    full_name: str


@dataclass(frozen=True)
class ExportFacts:
    """What an email says about an export."""

    export_id: UUID
    kind: str
    from_time: datetime
    to_time: datetime
    format: str
    compression: str
    csv_bom: bool = False
    filter: Mapping[str, object] = field(default_factory=dict)
    file_name: str | None = None
    row_count: int | None = None
    byte_size: int | None = None
    sha256: str | None = None
    expires_at: datetime | None = None
    error_code: str | None = None
    error_message: str | None = None

    @classmethod
    def of(cls, export: LogExport) -> ExportFacts:
        return cls(
            export_id=export.id,
            kind=export.kind.value,
            from_time=export.from_time,
            to_time=export.to_time,
            format=export.format.value,
            compression=export.compression.value,
            csv_bom=export.csv_bom,
            filter=export.filter,
            file_name=export.file_name,
            row_count=export.row_count,
            byte_size=export.byte_size,
            sha256=export.sha256,
            expires_at=export.expires_at,
            error_code=export.error_code,
            error_message=export.error_message,
        )


# ---------------------------------------------------------------------------- rendering


def _filter_lines(filter_: Mapping[str, object]) -> list[str]:
    lines = []
    for key in sorted(filter_):
        value = filter_[key]
        if value is None:
            continue
        shown = ", ".join(str(v) for v in value) if isinstance(value, list) else str(value)
        lines.append(f"{key}: {shown}")
    return lines


def _last_day(to_time: datetime) -> str:
    # to_time is exclusive: the last day with rows is the day of to_time minus 1 µs.
    return f"{(to_time - timedelta(microseconds=1)).astimezone(UTC):%Y-%m-%d}"


def _safe_error(facts: ExportFacts) -> str:
    text = " ".join((facts.error_message or "").split())
    if not text:
        text = "The export could not be completed."
    if len(text) > _MAX_ERROR_CHARS:
        text = text[: _MAX_ERROR_CHARS - 1] + "…"
    return text


def _context(settings: Settings, recipient: Recipient, facts: ExportFacts) -> dict[str, object]:
    return {
        "name": clean_display_name(recipient.full_name),
        "kind_label": log_kind(facts.kind).label,
        "row_noun": log_kind(facts.kind).rows_noun,
        "export_id": str(facts.export_id),
        "from_rfc3339": format_rfc3339(facts.from_time, fraction="if_any"),
        "to_rfc3339": format_rfc3339(facts.to_time, fraction="if_any"),
        "from_readable": format_readable(facts.from_time),
        "to_readable": format_readable(facts.to_time),
        "first_day": f"{facts.from_time.astimezone(UTC):%Y-%m-%d}",
        "last_day": _last_day(facts.to_time),
        "format_label": format_label(facts.format, facts.compression, facts.csv_bom),
        "filter_lines": _filter_lines(facts.filter),
        "console_url": settings.require("base_url").rstrip("/") + "/console",
    }


def _message(
    settings: Settings,
    recipient: Recipient,
    facts: ExportFacts,
    outcome: Literal["ready", "failed"],
    context: dict[str, object],
) -> EmailMessage:
    """The ``export_<outcome>`` email, its text and HTML parts rendered from ``context``."""
    message = EmailMessage()
    label = log_kind(facts.kind).label
    message["Subject"] = f"Your {label} export {_SUBJECT_ENDINGS[outcome]}"
    sender = settings.require("mail_from")
    message["From"] = sender
    message["To"] = recipient_address(recipient)
    message["Date"] = format_datetime(datetime.now(UTC))
    message["Message-ID"] = make_msgid(domain=sender.rpartition("@")[2] or None)
    # Tells auto-responders not to answer (RFC 3834).
    message["Auto-Submitted"] = "auto-generated"
    message.set_content(_text_env.get_template(f"export_{outcome}.txt.j2").render(context))
    message.add_alternative(
        _html_env.get_template(f"export_{outcome}.html.j2").render(context), subtype="html"
    )
    return message


def build_ready_message(
    settings: Settings, recipient: Recipient, facts: ExportFacts, link: str
) -> EmailMessage:
    """The "export is ready" email with the download link."""
    if facts.row_count is None or facts.byte_size is None or facts.sha256 is None:
        raise ValueError("a ready email needs the row count, byte size and SHA-256")
    if facts.expires_at is None or facts.file_name is None:
        raise ValueError("a ready email needs the file name and expiry time")
    context = _context(settings, recipient, facts) | {
        "file_name": facts.file_name,
        "row_count": f"{facts.row_count:,}",
        "size_human": human_size(facts.byte_size),
        "size_bytes": f"{facts.byte_size:,}",
        "sha256": facts.sha256,
        "link": link,
        "expires_rfc3339": format_rfc3339(facts.expires_at, fraction="if_any"),
        "expires_readable": format_readable(facts.expires_at),
    }
    return _message(settings, recipient, facts, "ready", context)


def build_failed_message(
    settings: Settings, recipient: Recipient, facts: ExportFacts
) -> EmailMessage:
    """The "export failed" email: what was asked, why it failed, and that it may be retried."""
    context = _context(settings, recipient, facts) | {"error_message": _safe_error(facts)}
    return _message(settings, recipient, facts, "failed", context)


def clean_display_name(name: str) -> str:
    """A name safe for a header and a greeting: control characters (CR, LF, …) become spaces."""
    printable = "".join(ch if ch.isprintable() else " " for ch in name)
    return " ".join(printable.split())


def recipient_address(recipient: Recipient) -> Address:
    if any(not ch.isprintable() or ch.isspace() for ch in recipient.email):
        raise MailError("the recipient's email address is malformed", permanent=True)
    try:
        return Address(
            display_name=clean_display_name(recipient.full_name), addr_spec=recipient.email
        )
    except (ValueError, IndexError):
        raise MailError("the recipient's email address is malformed", permanent=True) from None


# ---------------------------------------------------------------------------- sending


@dataclass(frozen=True)
class SmtpTarget:
    """Where and how to send, parsed once from ``LOGEXPORT_SMTP_URL``.

    ``smtp://host:port`` is plain SMTP, ``smtp://…?starttls=1`` requires STARTTLS and
    ``smtps://…`` uses implicit TLS. Credentials come URL-encoded in the user-info part.
    """

    host: str
    port: int
    username: str | None = None
    password: str | None = field(default=None, repr=False)
    implicit_tls: bool = False
    starttls: bool = False

    @classmethod
    def from_url(cls, url: str) -> SmtpTarget:
        parts = urlsplit(url)
        if parts.scheme not in ("smtp", "smtps"):
            raise ValueError("the SMTP URL must start with smtp:// or smtps://")
        if not parts.hostname:
            raise ValueError("the SMTP URL has no host")
        options = parse_qs(parts.query)
        unknown = set(options) - {"starttls"}
        if unknown:
            raise ValueError(f"unknown SMTP URL options: {', '.join(sorted(unknown))}")
        starttls = options.get("starttls", ["0"])[-1].lower() in ("1", "true", "yes", "on")
        implicit_tls = parts.scheme == "smtps"
        if implicit_tls and starttls:
            raise ValueError("smtps:// already uses TLS; starttls=1 does not apply")
        try:
            port = parts.port
        except ValueError:
            raise ValueError("the SMTP URL has a malformed port") from None
        if port is None:
            port = 465 if implicit_tls else 587 if starttls else 25
        return cls(
            host=parts.hostname,
            port=port,
            username=unquote(parts.username) if parts.username else None,
            password=unquote(parts.password) if parts.password is not None else None,
            implicit_tls=implicit_tls,
            starttls=starttls,
        )


@functools.lru_cache(maxsize=8)
def _target(url: str) -> SmtpTarget:
    return SmtpTarget.from_url(url)


async def send_message(settings: Settings, message: EmailMessage) -> None:
    """Send one message through ``LOGEXPORT_SMTP_URL``; raise ``MailError`` on any failure."""
    try:
        target = _target(settings.require("smtp_url"))
    except ConfigError as exc:
        raise MailError(str(exc), permanent=True) from None
    except ValueError as exc:
        raise MailError(f"LOGEXPORT_SMTP_URL is malformed: {exc}", permanent=True) from None
    await send_to(target, message)


async def send_to(target: SmtpTarget, message: EmailMessage) -> None:
    where = f"{target.host}:{target.port}"
    try:
        await aiosmtplib.send(
            message,
            hostname=target.host,
            port=target.port,
            username=target.username,
            password=target.password,
            use_tls=target.implicit_tls,
            start_tls=target.starttls,  # False means never, True means required
            timeout=SMTP_TIMEOUT,
        )
    except aiosmtplib.SMTPRecipientsRefused as exc:
        codes = [r.code for r in exc.recipients]
        permanent = bool(codes) and all(500 <= c < 600 for c in codes)
        raise MailError(
            f"SMTP server {where} refused the recipient ({', '.join(map(str, codes))})",
            permanent=permanent,
        ) from None
    except aiosmtplib.SMTPResponseException as exc:
        reply = " ".join(str(exc.message).split())[:200]
        raise MailError(
            f"SMTP server {where} replied {exc.code}: {reply}",
            permanent=500 <= exc.code < 600,
        ) from None
    except (aiosmtplib.SMTPException, OSError, TimeoutError) as exc:
        raise MailError(f"could not send mail through {where}: {type(exc).__name__}") from None
