import asyncio
import hashlib
import uuid
from datetime import timedelta

import pytest

from logexport import identity, policy
from logexport.errors import BadUserInput, Forbidden, NotFound
from logexport.policy import Action, Role


@pytest.fixture
async def conn(pool):
    async with pool.acquire() as connection:
        yield connection


async def _member(conn, org, email, role):
    user = await identity.create_user(conn, email, email.split("@")[0].title())
    await identity.add_member(conn, org.id, user.id, role)
    return user


async def test_token_is_issued_once_and_stored_only_as_its_sha256(conn):
    user = await identity.create_user(conn, "ada@example.com", "Ada Lovelace")
    key, token = await identity.create_api_key(conn, user.id, "CI job", None)
    assert token.startswith("lex_") and len(token) == 47
    stored = await conn.fetchval("SELECT secret_hash FROM api_keys WHERE id = $1", key.id)
    assert bytes(stored) == hashlib.sha256(token.encode()).digest()
    dump = await conn.fetchval("SELECT row_to_json(k)::text FROM api_keys k WHERE id = $1", key.id)
    assert token[4:] not in dump
    _, second = await identity.create_api_key(conn, user.id, "CI job", None)
    assert second != token


async def test_authenticate_returns_the_principal_of_a_live_key(conn):
    user = await identity.create_user(conn, "ada@example.com", "Ada Lovelace")
    key, token = await identity.create_api_key(conn, user.id, "CI job", None)
    principal = await identity.authenticate(conn, token)
    assert principal == identity.Principal(user.id, "ada@example.com", "Ada Lovelace", key.id)


@pytest.mark.parametrize(
    "token",
    ["", "lex_", "lex_short", "Bearer lex_x", "lex_" + "A" * 43, "lex_" + "A" * 42 + "!"],
)
async def test_malformed_or_unknown_tokens_do_not_authenticate(conn, token):
    assert await identity.authenticate(conn, token) is None


async def test_revoked_key_stops_authenticating(conn):
    user = await identity.create_user(conn, "ada@example.com", "Ada")
    key, token = await identity.create_api_key(conn, user.id, "k", None)
    assert await identity.api_key_is_active(conn, key.id)
    revoked = await identity.revoke_api_key(conn, key.id)
    assert revoked.revoked_at is not None
    assert await identity.authenticate(conn, token) is None
    assert not await identity.api_key_is_active(conn, key.id)
    again = await identity.revoke_api_key(conn, key.id)
    assert again.revoked_at == revoked.revoked_at
    with pytest.raises(NotFound):
        await identity.revoke_api_key(conn, uuid.uuid4())


async def test_expired_key_stops_authenticating(conn):
    user = await identity.create_user(conn, "ada@example.com", "Ada")
    key, token = await identity.create_api_key(conn, user.id, "k", timedelta(days=30))
    delta = key.expires_at - key.created_at
    assert timedelta(days=30) - timedelta(seconds=1) < delta <= timedelta(days=30)
    assert await identity.authenticate(conn, token) is not None
    await conn.execute(
        "UPDATE api_keys SET expires_at = now() - interval '1 second' WHERE id = $1", key.id
    )
    assert await identity.authenticate(conn, token) is None
    assert not await identity.api_key_is_active(conn, key.id)
    [listed] = await identity.list_api_keys(conn, user.id)
    assert not listed.is_active()


async def test_non_positive_expiry_is_rejected(conn):
    user = await identity.create_user(conn, "ada@example.com", "Ada")
    with pytest.raises(BadUserInput) as info:
        await identity.create_api_key(conn, user.id, "k", timedelta(0))
    assert info.value.field == "expires_in"


async def test_last_used_at_is_written_at_most_once_a_minute(conn):
    user = await identity.create_user(conn, "ada@example.com", "Ada")
    key, token = await identity.create_api_key(conn, user.id, "k", None)
    assert (await identity.get_api_key(conn, key.id)).last_used_at is None

    await identity.authenticate(conn, token)
    first = (await identity.get_api_key(conn, key.id)).last_used_at
    assert first is not None
    for _ in range(3):
        await identity.authenticate(conn, token)
    assert (await identity.get_api_key(conn, key.id)).last_used_at == first

    await conn.execute(
        "UPDATE api_keys SET last_used_at = last_used_at - interval '61 seconds' WHERE id = $1",
        key.id,
    )
    await identity.authenticate(conn, token)
    refreshed = (await identity.get_api_key(conn, key.id)).last_used_at
    assert refreshed > first - timedelta(seconds=61)
    assert refreshed >= first


async def test_emails_are_unique_case_insensitively_and_found_either_way(conn):
    user = await identity.create_user(conn, "Ada@Example.com", "Ada")
    assert (await identity.get_user_by_email(conn, "ada@EXAMPLE.com")).id == user.id
    with pytest.raises(BadUserInput) as info:
        await identity.create_user(conn, "ADA@example.COM", "Other Ada")
    assert info.value.field == "email"
    assert await identity.get_user_by_email(conn, "nobody@example.com") is None


@pytest.mark.parametrize(
    "email",
    ["no-at-sign", "a@b@c", "@example.com", "ada@", "ada@example.com\r\nBcc: x@y.z",
     "ada smith@example.com", "a" * 320 + "@example.com"],
)  # fmt: skip
async def test_invalid_emails_are_rejected(conn, email):
    with pytest.raises(BadUserInput) as info:
        await identity.create_user(conn, email, "Name")
    assert info.value.field == "email"


async def test_names_with_control_characters_are_rejected(conn):
    with pytest.raises(BadUserInput) as info:
        await identity.create_user(conn, "ada@example.com", "Ada\nBcc: evil")
    assert info.value.field == "name"
    with pytest.raises(BadUserInput):
        await identity.create_organization(conn, "Acme\x00")
    with pytest.raises(BadUserInput):
        await identity.create_organization(conn, "   ")


async def test_memberships_add_change_and_remove(conn):
    org = await identity.create_organization(conn, "Acme")
    other = await identity.create_organization(conn, "Globex")
    user = await identity.create_user(conn, "ada@example.com", "Ada")
    membership = await identity.add_member(conn, org.id, user.id, "viewer")
    assert membership.role is Role.VIEWER
    assert await policy.role_of(conn, org.id, user.id) is Role.VIEWER
    with pytest.raises(BadUserInput):
        await identity.add_member(conn, org.id, user.id, Role.ADMIN)
    with pytest.raises(BadUserInput) as info:
        await identity.add_member(conn, other.id, user.id, "superuser")
    assert info.value.field == "role"
    with pytest.raises(NotFound):
        await identity.add_member(conn, uuid.uuid4(), user.id, Role.ADMIN)

    await identity.set_role(conn, org.id, user.id, Role.OWNER)
    assert await policy.role_of(conn, org.id, user.id) is Role.OWNER
    assert [o.id for o in await identity.list_organizations_for(conn, user.id)] == [org.id]

    await _member(conn, org, "grace@example.com", Role.OWNER)
    await identity.remove_member(conn, org.id, user.id)
    assert await policy.role_of(conn, org.id, user.id) is None
    assert await identity.list_organizations_for(conn, user.id) == []
    with pytest.raises(NotFound):
        await identity.remove_member(conn, org.id, user.id)
    with pytest.raises(NotFound):
        await identity.set_role(conn, org.id, user.id, Role.ADMIN)


async def _owners(conn, org):
    rows = await conn.fetch(
        "SELECT user_id FROM memberships WHERE organization_id = $1 AND role = 'OWNER'", org.id
    )
    return {row["user_id"] for row in rows}


async def test_the_last_owner_can_be_neither_demoted_nor_removed(conn):
    org = await identity.create_organization(conn, "Acme")
    ada = await _member(conn, org, "ada@example.com", Role.OWNER)
    viewer = await _member(conn, org, "vic@example.com", Role.VIEWER)
    for role in (Role.ADMIN, Role.VIEWER, "viewer"):
        with pytest.raises(BadUserInput, match="last OWNER") as info:
            await identity.set_role(conn, org.id, ada.id, role)
        assert info.value.field == "role"
    with pytest.raises(BadUserInput, match="cannot remove the organization's last OWNER"):
        await identity.remove_member(conn, org.id, ada.id)
    assert await _owners(conn, org) == {ada.id}
    # Keeping OWNER, and changes to other members, are not in the way.
    assert (await identity.set_role(conn, org.id, ada.id, Role.OWNER)).role is Role.OWNER
    await identity.set_role(conn, org.id, viewer.id, Role.ADMIN)
    await identity.remove_member(conn, org.id, viewer.id)

    # With a second owner, either may go.
    grace = await _member(conn, org, "grace@example.com", Role.OWNER)
    assert (await identity.set_role(conn, org.id, ada.id, Role.VIEWER)).role is Role.VIEWER
    with pytest.raises(BadUserInput, match="last OWNER"):
        await identity.remove_member(conn, org.id, grace.id)
    assert await _owners(conn, org) == {grace.id}


async def test_an_organization_without_any_owner_still_allows_other_changes(conn):
    org = await identity.create_organization(conn, "Acme")
    admin = await _member(conn, org, "ada@example.com", Role.ADMIN)
    await identity.set_role(conn, org.id, admin.id, Role.VIEWER)
    await identity.remove_member(conn, org.id, admin.id)


async def _wait_for_lock_waiters(pool, count, deadline_seconds=30.0):
    # Polled outside any transaction: inside one, pg_stat_activity stays the snapshot taken
    # at its first read.
    loop = asyncio.get_running_loop()
    deadline = loop.time() + deadline_seconds
    while True:
        waiting = await pool.fetchval(
            "SELECT count(*) FROM pg_stat_activity"
            " WHERE datname = current_database() AND wait_event_type = 'Lock'"
        )
        if waiting >= count:
            return
        assert loop.time() < deadline, f"only {waiting} of {count} sessions reached the lock"
        await asyncio.sleep(0.02)


@pytest.mark.parametrize("change", ["demote", "remove"])
async def test_two_owners_removing_each_other_at_once_leave_one_owner(pool, change):
    async with pool.acquire() as conn:
        org = await identity.create_organization(conn, "Acme")
        ada = await _member(conn, org, "ada@example.com", Role.OWNER)
        grace = await _member(conn, org, "grace@example.com", Role.OWNER)

    async def take_away(user):
        async with pool.acquire() as conn:
            if change == "demote":
                await identity.set_role(conn, org.id, user.id, Role.VIEWER)
            else:
                await identity.remove_member(conn, org.id, user.id)

    # Hold the organization's row so both changes are in flight at the same moment, then
    # let them go: each must see what the other committed.
    async with pool.acquire() as blocker:
        async with blocker.transaction():
            await blocker.execute(
                "SELECT 1 FROM organizations WHERE id = $1 FOR UPDATE", org.id
            )
            tasks = [asyncio.create_task(take_away(user)) for user in (ada, grace)]
            await _wait_for_lock_waiters(pool, 2)
        results = await asyncio.gather(*tasks, return_exceptions=True)

    refused = [r for r in results if isinstance(r, BadUserInput)]
    assert len(refused) == 1, results
    assert [r for r in results if r is not None and r not in refused] == []
    async with pool.acquire() as conn:
        assert len(await _owners(conn, org)) == 1


async def test_non_member_gets_the_same_answer_for_existing_and_missing_organizations(conn):
    org = await identity.create_organization(conn, "Acme")
    outsider = await identity.create_user(conn, "eve@example.com", "Eve")
    principal = outsider.as_principal()
    with pytest.raises(Forbidden) as existing:
        await policy.authorize(conn, principal, org.id, Action.AUDIT_LOG_LIST)
    with pytest.raises(Forbidden) as missing:
        await policy.authorize(conn, principal, uuid.uuid4(), Action.AUDIT_LOG_LIST)
    assert existing.value.message == missing.value.message
    assert existing.value.code == missing.value.code == "FORBIDDEN"


async def test_member_without_the_permission_is_told_which_one(conn):
    org = await identity.create_organization(conn, "Acme")
    viewer = await _member(conn, org, "vic@example.com", Role.VIEWER)
    principal = viewer.as_principal()
    assert await policy.authorize(conn, principal, org.id, Action.AUDIT_LOG_LIST) is Role.VIEWER
    with pytest.raises(Forbidden) as info:
        await policy.authorize(conn, principal, org.id, Action.AUDIT_LOG_EXPORT)
    assert "iam:audit-log:export" in info.value.message


async def test_permissions_follow_the_role(conn):
    org = await identity.create_organization(conn, "Acme")
    admin = await _member(conn, org, "adam@example.com", Role.ADMIN)
    viewer = await _member(conn, org, "vic@example.com", Role.VIEWER)
    outsider = await identity.create_user(conn, "eve@example.com", "Eve")
    assert await policy.permissions(conn, admin.as_principal(), org.id) == frozenset(Action) - {
        Action.LOG_STREAM_MANAGE
    }
    assert await policy.permissions(conn, viewer.as_principal(), org.id) == {
        Action.AUDIT_LOG_LIST,
        Action.SCIM_EVENT_LIST,
    }
    assert await policy.permissions(conn, outsider.as_principal(), org.id) == frozenset()
