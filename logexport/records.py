"""What the two logs hold and how they are filtered, as plain data.

The records a listing reads back and the filters a listing or an export applies. Nothing
here touches the database, so the kinds table and the remote client can name them;
``logexport.entries`` writes and reads the rows.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any
from uuid import UUID

from logexport.errors import BadUserInput

MAX_FILTER_VALUES = 100

# ---------------------------------------------------------------------------- records


@dataclass(frozen=True)
class AuditLogEntry:
    id: UUID
    organization_id: UUID
    created_at: datetime
    actor_type: str
    actor_id: str | None
    actor_email: str | None
    actor_name: str | None
    action: str
    resource_type: str | None
    resource_id: str | None
    ip_address: str | None
    user_agent: str | None
    metadata: Any


@dataclass(frozen=True)
class ScimEvent:
    id: UUID
    organization_id: UUID
    created_at: datetime
    method: str
    path: str
    user_name: str | None
    status_code: int
    error_message: str | None
    ip_address: str | None
    user_agent: str | None
    request_body: Any
    response_body: Any


# ---------------------------------------------------------------------------- filters


def _string_list(mapping: Mapping[str, Any], key: str, prefix: str) -> tuple[str, ...] | None:
    value = mapping.get(key)
    field = f"{prefix}.{key}"
    if value is None:
        return None
    if not isinstance(value, list | tuple) or not 1 <= len(value) <= MAX_FILTER_VALUES:
        raise BadUserInput(f"{field} must list 1 to {MAX_FILTER_VALUES} values", field=field)
    for item in value:
        if not _is_filter_text(item):
            raise BadUserInput(f"{field} values must be non-empty text", field=field)
    return tuple(sorted(set(value)))


def _is_filter_text(value: Any) -> bool:
    # NUL cannot be stored or compared by PostgreSQL: no value could ever match it.
    return isinstance(value, str) and 0 < len(value) <= 1000 and "\x00" not in value


def _pick(mapping: Mapping[str, Any], *names: str) -> str:
    """The key the caller used: GraphQL sends camelCase, MCP and Python snake_case."""
    present = [n for n in names if mapping.get(n) is not None]
    return present[0] if present else names[0]


def _check_keys(mapping: Mapping[str, Any], allowed: set[str], prefix: str) -> None:
    unknown = sorted(set(mapping) - allowed)
    if unknown:
        raise BadUserInput(f"{prefix}.{unknown[0]} is not a known filter", field=prefix)


@dataclass(frozen=True)
class AuditLogFilter:
    """OR within a field, AND across fields, exact and case-sensitive; ``None`` = any."""

    actions: tuple[str, ...] | None = None
    actor_ids: tuple[str, ...] | None = None
    resource_types: tuple[str, ...] | None = None

    @classmethod
    def parse(cls, mapping: Mapping[str, Any] | None, prefix: str = "filter") -> AuditLogFilter:
        if mapping is None:
            return cls()
        if not isinstance(mapping, Mapping):
            raise BadUserInput(f"{prefix} must be an object", field=prefix)
        _check_keys(
            mapping,
            {"actions", "actorIds", "actor_ids", "resourceTypes", "resource_types"},
            prefix,
        )
        return cls(
            actions=_string_list(mapping, "actions", prefix),
            actor_ids=_string_list(mapping, _pick(mapping, "actorIds", "actor_ids"), prefix),
            resource_types=_string_list(
                mapping, _pick(mapping, "resourceTypes", "resource_types"), prefix
            ),
        )

    def to_json(self) -> dict[str, Any]:
        """Canonical form (camelCase, sorted, unset fields omitted) for storage and hashing."""
        out: dict[str, Any] = {}
        for key, value in (
            ("actions", self.actions),
            ("actorIds", self.actor_ids),
            ("resourceTypes", self.resource_types),
        ):
            if value is not None:
                out[key] = list(value)
        return out

    def sql_args(self) -> tuple[list[str] | None, list[str] | None, list[str] | None]:
        """``(actions, actor_ids, resource_types)`` for ``$n::text[] IS NULL OR …``."""
        return _as_list(self.actions), _as_list(self.actor_ids), _as_list(self.resource_types)


@dataclass(frozen=True)
class ScimEventFilter:
    """Like ``AuditLogFilter``; ``user_name`` is a single, case-insensitive value."""

    methods: tuple[str, ...] | None = None
    user_name: str | None = None
    status_codes: tuple[int, ...] | None = None

    @classmethod
    def parse(cls, mapping: Mapping[str, Any] | None, prefix: str = "filter") -> ScimEventFilter:
        if mapping is None:
            return cls()
        if not isinstance(mapping, Mapping):
            raise BadUserInput(f"{prefix} must be an object", field=prefix)
        _check_keys(
            mapping, {"methods", "userName", "user_name", "statusCodes", "status_codes"}, prefix
        )
        user_key = _pick(mapping, "userName", "user_name")
        user_name = mapping.get(user_key)
        if user_name is not None and not _is_filter_text(user_name):
            field = f"{prefix}.{user_key}"
            raise BadUserInput(f"{field} must be non-empty text", field=field)
        codes_key = _pick(mapping, "statusCodes", "status_codes")
        codes = mapping.get(codes_key)
        status_codes: tuple[int, ...] | None = None
        if codes is not None:
            field = f"{prefix}.{codes_key}"
            if not isinstance(codes, list | tuple) or not 1 <= len(codes) <= MAX_FILTER_VALUES:
                raise BadUserInput(
                    f"{field} must list 1 to {MAX_FILTER_VALUES} values", field=field
                )
            if any(
                isinstance(c, bool) or not isinstance(c, int) or not 100 <= c <= 599 for c in codes
            ):
                raise BadUserInput(f"{field} values must be HTTP status codes", field=field)
            status_codes = tuple(sorted(set(codes)))
        return cls(
            methods=_string_list(mapping, "methods", prefix),
            user_name=user_name,
            status_codes=status_codes,
        )

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        if self.methods is not None:
            out["methods"] = list(self.methods)
        if self.user_name is not None:
            out["userName"] = self.user_name
        if self.status_codes is not None:
            out["statusCodes"] = list(self.status_codes)
        return out

    def sql_args(self) -> tuple[list[str] | None, str | None, list[int] | None]:
        """``(methods, user_name, status_codes)`` for the listing and export queries."""
        return _as_list(self.methods), self.user_name, _as_list(self.status_codes)


def _as_list(value: tuple[Any, ...] | None) -> list[Any] | None:
    return None if value is None else list(value)
