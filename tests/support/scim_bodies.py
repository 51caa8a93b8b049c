"""Hypothesis strategies for SCIM request and response bodies that carry a password.

Every generated body comes with the password planted in it (``pw-`` and random hex, so it
can be searched for in any text), somewhere the redaction rules must reach: a key ending in
``password`` in any letter case, the ``value`` of a PATCH operation whose ``path`` (plain,
URN-qualified or a sub-attribute path) ends in ``password`` with its members spelled in any
case (``Op``, ``PATH``, ``Value``), a PATCH operation without ``path`` whose value object
holds a password, any of these inside ``/Bulk`` operations' ``data``, and all of it nested
in further objects and arrays.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from hypothesis import HealthCheck, Phase, given
from hypothesis import settings as hypothesis_settings
from hypothesis import strategies as st

_LONG_S = "\u017f"

USER_SCHEMA = "urn:ietf:params:scim:schemas:core:2.0:User"
ENTERPRISE_SCHEMA = "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User"
PATCH_SCHEMA = "urn:ietf:params:scim:api:messages:2.0:PatchOp"
BULK_SCHEMA = "urn:ietf:params:scim:api:messages:2.0:BulkRequest"


@dataclass(frozen=True)
class PlantedBody:
    body: Any
    password: str

    def text(self) -> str:
        return json.dumps(self.body, ensure_ascii=False)


def any_case(word: str, *, long_s: bool = False) -> st.SearchStrategy[str]:
    """``word`` with each letter in random case (and, with ``long_s``, some ``s`` as U+017F)."""
    choices = []
    for char in word:
        options = [char.lower(), char.upper()]
        if long_s and char.lower() == "s":
            options.append(_LONG_S)
        choices.append(st.sampled_from(options))
    return st.tuples(*choices).map("".join)


passwords = st.binary(min_size=8, max_size=8).map(lambda raw: "pw-" + raw.hex())

_SECRET_KEY_PREFIXES = [
    "",
    "old",
    "new",
    "user",
    "legacy_",
    f"{USER_SCHEMA}:",
    f"{ENTERPRISE_SCHEMA}:legacy",
]
_SECRET_PATHS = [
    "password",
    f"{USER_SCHEMA}:password",
    f"{USER_SCHEMA}:Password",
    f"{ENTERPRISE_SCHEMA}:oldPassword",
    'emails[type eq "work"].password',
    "name.password",
]


def _with_trailing_space(names: st.SearchStrategy[str]) -> st.SearchStrategy[str]:
    return st.one_of(names, st.tuples(names, st.sampled_from([" ", "\t", "  "])).map("".join))


def _spelled(text: str) -> st.SearchStrategy[str]:
    """A name of the rules in any spelling a lenient server would still accept."""
    return _with_trailing_space(any_case(text, long_s=True))


def secret_keys() -> st.SearchStrategy[str]:
    return st.sampled_from(_SECRET_KEY_PREFIXES).flatmap(
        lambda prefix: st.tuples(any_case(prefix), _spelled("password")).map("".join)
    )


def secret_paths() -> st.SearchStrategy[str]:
    return st.sampled_from(_SECRET_PATHS).flatmap(
        lambda path: st.tuples(any_case(path[: -len("password")]), _spelled("password")).map(
            "".join
        )
    )


# Harmless values and names: nothing in them spells a name of the rules.
_plain_text = st.text(alphabet="abcdefghijklmnoqrtuvxyz0123456789 .@-_", max_size=12)
_plain_keys = st.sampled_from(
    ["userName", "displayName", "active", "id", "externalId", "meta", "title", "locale"]
) | _plain_text.filter(bool)
_scalars = st.none() | st.booleans() | st.integers(-(2**31), 2**31) | _plain_text
filler = st.recursive(
    _scalars,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(_plain_keys, inner, max_size=3),
    max_leaves=6,
)


def _member(name: str) -> st.SearchStrategy[str]:
    return any_case(name)


@st.composite
def _user_resource(draw: Callable[..., Any], password: str) -> dict[str, Any]:
    body: dict[str, Any] = draw(st.dictionaries(_plain_keys, filler, max_size=3))
    body[draw(_member("schemas"))] = [USER_SCHEMA]
    body[draw(_member("userName"))] = draw(_plain_text)
    body[draw(secret_keys())] = password
    return body


@st.composite
def _password_operation(draw: Callable[..., Any], password: str) -> dict[str, Any]:
    value: Any = draw(
        st.sampled_from([password, [password], {"value": password}, {draw(_plain_keys): password}])
    )
    operation = {
        draw(_member("op")): draw(st.sampled_from(["replace", "add", "Replace", "ADD"])),
        draw(_with_trailing_space(_member("path"))): draw(secret_paths()),
        draw(_with_trailing_space(_member("value"))): value,
    }
    return operation


@st.composite
def _pathless_operation(draw: Callable[..., Any], password: str) -> dict[str, Any]:
    holder: dict[str, Any] = {draw(secret_keys()): password, draw(_member("active")): True}
    if draw(st.booleans()):
        holder = {draw(st.sampled_from([USER_SCHEMA, ENTERPRISE_SCHEMA])): holder}
    return {
        draw(_member("op")): draw(st.sampled_from(["replace", "add"])),
        draw(_member("value")): holder,
    }


@st.composite
def _patch_body(draw: Callable[..., Any], password: str) -> dict[str, Any]:
    planted = draw(st.one_of(_password_operation(password), _pathless_operation(password)))
    others = draw(
        st.lists(
            st.fixed_dictionaries(
                {"op": st.just("replace"), "path": st.just("displayName"), "value": _plain_text}
            ),
            max_size=2,
        )
    )
    position = draw(st.integers(0, len(others)))
    operations = [*others[:position], planted, *others[position:]]
    return {
        draw(_member("schemas")): [PATCH_SCHEMA],
        draw(_member("Operations")): operations,
    }


@st.composite
def _bulk_body(draw: Callable[..., Any], password: str) -> dict[str, Any]:
    method, data = draw(
        st.one_of(
            st.tuples(st.sampled_from(["POST", "PUT"]), _user_resource(password)),
            st.tuples(st.just("PATCH"), _patch_body(password)),
        )
    )
    planted = {
        draw(_member("method")): method,
        draw(_member("path")): "/Users" if method == "POST" else f"/Users/{draw(_plain_text)}",
        draw(_member("bulkId")): draw(_plain_text),
        draw(_member("data")): data,
    }
    others = draw(
        st.lists(st.fixed_dictionaries({"method": st.just("DELETE"), "path": st.just("/Users/x")}))
    )
    return {
        draw(_member("schemas")): [BULK_SCHEMA],
        draw(_member("Operations")): [*others[:1], planted, *others[1:]],
    }


def _nested(body: Any) -> st.SearchStrategy[Any]:
    """``body`` as it is, or wrapped a few levels deep in objects and arrays."""
    wrappers = st.lists(st.sampled_from(["object", "array", "resources"]), max_size=3)

    @st.composite
    def wrap(draw: Callable[..., Any]) -> Any:
        value = body
        for kind in draw(wrappers):
            if kind == "array":
                value = [draw(filler), value] if draw(st.booleans()) else [value]
            elif kind == "resources":
                value = {draw(_member("Resources")): [value], "totalResults": 1}
            else:
                # The body's key goes last so no filler key can replace it.
                value = {
                    **draw(st.dictionaries(_plain_keys, filler, max_size=2)),
                    draw(_plain_keys): value,
                }
        return value

    return wrap()


@st.composite
def planted_bodies(draw: Callable[..., Any]) -> PlantedBody:
    """A SCIM body (user resource, PATCH, or /Bulk, possibly nested) holding a password."""
    password = draw(passwords)
    body = draw(st.one_of(_user_resource(password), _patch_body(password), _bulk_body(password)))
    planted = PlantedBody(draw(_nested(body)), password)
    assert password in planted.text()
    return planted


def collect(strategy: st.SearchStrategy[Any], count: int) -> list[Any]:
    """``count`` values drawn by Hypothesis, for checks that run in bulk.

    Tests of whole services insert many bodies once and check them together; a failure there
    names the offending body, which the per-body property tests can then shrink.
    """
    found: list[Any] = []

    @hypothesis_settings(
        max_examples=count,
        database=None,
        phases=[Phase.generate],
        deadline=None,
        suppress_health_check=list(HealthCheck),
    )
    @given(strategy)
    def draw_one(value: Any) -> None:
        found.append(value)

    draw_one()
    return found
