"""Settings from the environment (the variables are listed in README.md).

Each command names the settings it needs; a missing or malformed one raises
``ConfigError`` whose message names the variable and never echoes its value. A setting
with no default is ``None`` unless the command asked for it; ``Settings.require`` reads
one that must be present.
"""

from __future__ import annotations

import ipaddress
import os
import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field, fields, replace
from typing import Any, Literal, TypeVar
from urllib.parse import SplitResult, parse_qs, unquote, urlsplit


class ConfigError(Exception):
    """A setting is missing or malformed. The message is safe to print."""


_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h|d)?\s*$")
_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0, None: 1.0}


def parse_duration(text: str) -> float:
    """``"24h"``, ``"5s"``, ``"250ms"`` or a plain number of seconds → seconds."""
    match = _DURATION.match(text)
    if not match:
        raise ValueError("expected a duration such as 30s, 15m, 24h or 7d")
    return float(match.group(1)) * _UNITS[match.group(2)]


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise ValueError("expected a whole number") from None
    if value < 1:
        raise ValueError("expected a whole number of at least 1")
    return value


def _parallelism(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = 0
    if not 1 <= value <= 16:
        raise ValueError("expected a whole number from 1 to 16")
    return value


def _positive_duration(text: str) -> float:
    value = parse_duration(text)
    if value <= 0:
        raise ValueError("expected a duration greater than zero")
    return value


def _bool(text: str) -> bool:
    lowered = text.strip().lower()
    if lowered in ("1", "true", "yes", "on"):
        return True
    if lowered in ("0", "false", "no", "off", ""):
        return False
    raise ValueError("expected 1 or 0")


def _url(*schemes: str) -> Callable[[str], str]:
    def parse(text: str) -> str:
        parts = _split(text, schemes)
        try:
            port = parts.port
        except ValueError:
            port = 0
        if port == 0:
            raise ValueError(_BAD_PORT)
        return text

    return parse


_BAD_PORT = "the port must be a number from 1 to 65535"
_SSLMODES = ("disable", "allow", "prefer", "require", "verify-ca", "verify-full")


def _split(text: str, schemes: tuple[str, ...]) -> SplitResult:
    # urlsplit's own messages may quote the network location, password included.
    try:
        parts = urlsplit(text)
    except ValueError:
        raise ValueError("not a valid URL") from None
    if parts.scheme not in schemes:
        raise ValueError("expected a URL starting with " + " or ".join(f"{s}://" for s in schemes))
    if parts.scheme not in ("file",) and not parts.netloc:
        raise ValueError("the URL has no host")
    return parts


def _postgres_url(text: str) -> str:
    """A PostgreSQL URL the driver will accept: checked here, where a mistake can be named,
    rather than at the first connection, where it ends in a traceback."""
    parts = _split(text, ("postgres", "postgresql"))
    # libpq's multi-host form: host1:5432,host2:5433, each host possibly an [IPv6] literal.
    for host in parts.netloc.rpartition("@")[2].split(","):
        port = host.rpartition("]")[2] if host.startswith("[") else host
        port = port.partition(":")[2]
        if port and not _is_port(unquote(port)):
            raise ValueError(_BAD_PORT)
    try:
        query = parse_qs(parts.query, strict_parsing=True) if parts.query else {}
    except ValueError:
        raise ValueError("the query string is not name=value pairs joined by &") from None
    for value in query.get("port", []):
        if not all(_is_port(port) for port in value.split(",")):
            raise ValueError(_BAD_PORT)
    for value in query.get("sslmode", []):
        if value not in _SSLMODES:
            raise ValueError("sslmode must be one of " + ", ".join(_SSLMODES))
    return text


def _is_port(text: str) -> bool:
    return text.isascii() and text.isdigit() and 1 <= int(text) <= 65535


def _secret_key(text: str) -> str:
    if len(text.encode()) < 32:
        raise ValueError("must be at least 32 bytes")
    return text


def _signing_key(text: str) -> str:
    from logexport.manifests import parse_signing_key

    parse_signing_key(text)
    return text.strip()


def _verify_keys(text: str) -> str:
    from logexport.manifests import parse_verify_keys

    parse_verify_keys(text)
    return text.strip()


def _email(text: str) -> str:
    if "@" not in text or any(c in text for c in "\r\n"):
        raise ValueError("expected an email address")
    return text


def _addressing_style(text: str) -> str:
    if text not in ("auto", "path", "virtual"):
        raise ValueError("expected auto, path or virtual")
    return text


IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network


def _networks(text: str) -> tuple[IPNetwork, ...]:
    """Comma-separated CIDRs (a bare address is a network of one)."""
    entries = [entry.strip() for entry in text.split(",")]
    entries = [entry for entry in entries if entry]
    networks = []
    for number, entry in enumerate(entries, start=1):
        try:
            networks.append(ipaddress.ip_network(entry, strict=True))
        except ValueError:
            raise ValueError(
                f"entry {number} of {len(entries)} is not a network in CIDR form with its "
                "host bits zero, such as 10.0.0.0/8 or 2001:db8::/32"
            ) from None
    return tuple(networks)


T = TypeVar("T")


def _optional(env: str, parse: Callable[[str], T], *, secret: bool = False) -> T | None:
    """A setting with no default: ``None`` unless set, or needed and then checked present.

    A ``secret`` one (a key, or a URL that may carry a password) stays out of the settings'
    repr, which tracebacks and test failures print."""
    return field(
        default=None, repr=not secret, metadata={"env": env, "parse": parse, "default": None}
    )


def _setting(env: str, parse: Callable[[str], T], default: str) -> T:
    """A setting with a default, written as the environment would spell it."""
    return field(default=parse(default), metadata={"env": env, "parse": parse, "default": default})


# The settings with no default: each is None unless the command asked for it.
Required = Literal[
    "database_url",
    "export_database_url",
    "base_url",
    "storage_url",
    "s3_endpoint_url",
    "s3_public_url",
    "smtp_url",
    "mail_from",
    "secret_key",
    "signing_key",
    "token",
]


@dataclass(frozen=True)
class Settings:
    database_url: str | None = _optional("LOGEXPORT_DATABASE_URL", _postgres_url, secret=True)
    export_database_url: str | None = _optional(
        "LOGEXPORT_EXPORT_DATABASE_URL", _postgres_url, secret=True
    )
    base_url: str | None = _optional("LOGEXPORT_BASE_URL", _url("http", "https"))
    storage_url: str | None = _optional("LOGEXPORT_STORAGE_URL", _url("s3", "file"))
    s3_endpoint_url: str | None = _optional("LOGEXPORT_S3_ENDPOINT_URL", _url("http", "https"))
    s3_public_url: str | None = _optional("LOGEXPORT_S3_PUBLIC_URL", _url("http", "https"))
    s3_addressing_style: str = _setting("LOGEXPORT_S3_ADDRESSING_STYLE", _addressing_style, "auto")
    smtp_url: str | None = _optional("LOGEXPORT_SMTP_URL", _url("smtp", "smtps"), secret=True)
    mail_from: str | None = _optional("LOGEXPORT_MAIL_FROM", _email)
    secret_key: str | None = _optional("LOGEXPORT_SECRET_KEY", _secret_key, secret=True)
    # Ed25519 key that signs manifests (base64url seed or PKCS#8 PEM), and retired public
    # keys that still verify files signed before a rotation (JWKS or base64url, comma-separated).
    signing_key: str | None = _optional("LOGEXPORT_SIGNING_KEY", _signing_key, secret=True)
    verify_keys: str | None = _optional("LOGEXPORT_VERIFY_KEYS", _verify_keys)
    link_ttl: float = _setting("LOGEXPORT_LINK_TTL", _positive_duration, "24h")
    max_range_days: int = _setting("LOGEXPORT_MAX_RANGE_DAYS", _positive_int, "366")
    max_active_exports_per_org: int = _setting(
        "LOGEXPORT_MAX_ACTIVE_EXPORTS_PER_ORG", _positive_int, "5"
    )
    max_running_exports_per_org: int = _setting(
        "LOGEXPORT_MAX_RUNNING_EXPORTS_PER_ORG", _positive_int, "1"
    )
    worker_concurrency: int = _setting("LOGEXPORT_WORKER_CONCURRENCY", _positive_int, "2")
    # Connections one export reads through, sharing its snapshot, each reading time slices.
    export_parallelism: int = _setting("LOGEXPORT_EXPORT_PARALLELISM", _parallelism, "2")
    worker_poll_interval: float = _setting(
        "LOGEXPORT_WORKER_POLL_INTERVAL", _positive_duration, "5s"
    )
    worker_poll_only: bool = _setting("LOGEXPORT_WORKER_POLL_ONLY", _bool, "0")
    worker_lease: float = _setting("LOGEXPORT_WORKER_LEASE", _positive_duration, "60s")
    worker_max_attempts: int = _setting("LOGEXPORT_WORKER_MAX_ATTEMPTS", _positive_int, "5")
    worker_retry_base: float = _setting("LOGEXPORT_WORKER_RETRY_BASE", _positive_duration, "2s")
    shutdown_grace: float = _setting("LOGEXPORT_SHUTDOWN_GRACE", parse_duration, "30s")
    # Log streams: plain http and private addresses only for tests and demos; the shortest
    # interval accepted; the size of one delivery; the longest wait between retries.
    stream_allow_private: bool = _setting("LOGEXPORT_STREAM_ALLOW_PRIVATE", _bool, "0")
    stream_min_interval: float = _setting("LOGEXPORT_STREAM_MIN_INTERVAL", _positive_duration, "1m")
    stream_max_rows: int = _setting("LOGEXPORT_STREAM_MAX_ROWS", _positive_int, "10000")
    stream_max_bytes: int = _setting("LOGEXPORT_STREAM_MAX_BYTES", _positive_int, "8388608")
    stream_retry_cap: float = _setting("LOGEXPORT_STREAM_RETRY_CAP", _positive_duration, "5m")
    api_url: str = _setting("LOGEXPORT_API_URL", _url("http", "https"), "http://127.0.0.1:8000")
    token: str | None = _optional("LOGEXPORT_TOKEN", str, secret=True)
    trusted_proxies: tuple[IPNetwork, ...] = _setting("LOGEXPORT_TRUSTED_PROXIES", _networks, "")

    @classmethod
    def from_env(cls, needs: Iterable[str] = (), env: Mapping[str, str] | None = None) -> Settings:
        """Read every setting; those named in ``needs`` must be present.

        ``needs`` holds field names (``"database_url"``). A malformed value is an error
        whether or not the command needs it: a typo should never pass silently.
        """
        source = os.environ if env is None else env
        required = set(needs)
        known = {f.name for f in fields(cls)}
        unknown = required - known
        if unknown:
            raise ValueError(f"unknown settings: {sorted(unknown)}")
        # One value per field, each of the type its field's parser returns.
        values: dict[str, Any] = {}
        for f in fields(cls):
            name, parse, default = f.metadata["env"], f.metadata["parse"], f.metadata["default"]
            raw = source.get(name)
            if raw is None or raw == "":
                if f.name in required and default is None:
                    raise ConfigError(f"{name} is not set")
                raw = default
            if raw is None:
                values[f.name] = None
                continue
            try:
                values[f.name] = parse(raw)
            except ValueError as exc:
                raise ConfigError(f"{name} is malformed: {exc}") from None
        return cls(**values)

    def require(self, name: Required) -> str:
        """The value of a setting the caller cannot work without; ``ConfigError`` naming the
        variable when it is not set."""
        value: str | None = getattr(self, name)
        if value is None:
            env = next(f.metadata["env"] for f in fields(self) if f.name == name)
            raise ConfigError(f"{env} is not set")
        return value

    @property
    def snapshot_database_url(self) -> str:
        return self.export_database_url or self.require("database_url")

    def derive(self, **changes: Any) -> Settings:
        """A copy with some values replaced (tests and embedding applications)."""
        return replace(self, **changes)
