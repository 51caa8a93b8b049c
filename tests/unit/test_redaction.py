import json

from hypothesis import given, settings

from logexport.redaction import MAX_JSON_BYTES, REDACTED, limit_json_size, redact_scim_body
from tests.support.scim_bodies import PlantedBody, filler, planted_bodies


def test_post_user_password_is_redacted():
    body = {"userName": "ada", "password": "hunter2", "name": {"givenName": "Ada"}}
    out = redact_scim_body(body, method="POST", path="/Users")
    assert out == {"userName": "ada", "password": REDACTED, "name": {"givenName": "Ada"}}
    assert body["password"] == "hunter2", "the caller's object must not be modified"


def test_keys_ending_in_password_are_redacted_case_insensitively_at_any_depth():
    body = {
        "schemas": ["urn:ietf:params:scim:schemas:core:2.0:User"],
        "PassWord": "a",
        "urn:example:ext": {"legacyPassword": "b", "nested": [{"oldPASSWORD": "c"}]},
        "passwordHint": "kept: the key does not end in password",
    }
    out = redact_scim_body(body, method="PUT", path="/Users/1")
    assert out["PassWord"] == REDACTED
    assert out["urn:example:ext"]["legacyPassword"] == REDACTED
    assert out["urn:example:ext"]["nested"][0]["oldPASSWORD"] == REDACTED
    assert out["passwordHint"] == "kept: the key does not end in password"
    assert "a" not in json.dumps(out["PassWord"])


def test_patch_operation_with_password_path_has_its_value_redacted():
    body = {
        "schemas": ["urn:ietf:params:scim:api:messages:2.0:PatchOp"],
        "Operations": [
            {"op": "replace", "path": "password", "value": "s3cret"},
            {
                "op": "replace",
                "path": "urn:ietf:params:scim:schemas:core:2.0:User:Password",
                "value": "s3cret2",
            },
            {"op": "replace", "path": "displayName", "value": "Ada L."},
            {"op": "replace", "value": {"password": "s3cret3", "active": True}},
        ],
    }
    out = redact_scim_body(body, method="PATCH", path="/Users/1")
    ops = out["Operations"]
    assert ops[0]["value"] == REDACTED
    assert ops[1]["value"] == REDACTED
    assert ops[2]["value"] == "Ada L."
    assert ops[3]["value"] == {"password": REDACTED, "active": True}
    assert "s3cret" not in json.dumps(out)


def test_bulk_bodies_are_redacted_in_every_operation():
    body = {
        "schemas": ["urn:ietf:params:scim:api:messages:2.0:BulkRequest"],
        "Operations": [
            {
                "method": "POST",
                "path": "/Users",
                "bulkId": "q1",
                "data": {"userName": "bob", "password": "pw-one"},
            },
            {
                "method": "PATCH",
                "path": "/Users/2",
                "data": {"Operations": [{"op": "add", "path": "PASSWORD", "value": "pw-two"}]},
            },
            {"method": "DELETE", "path": "/Users/3"},
        ],
    }
    out = redact_scim_body(body, method="POST", path="/Bulk")
    text = json.dumps(out)
    assert "pw-one" not in text and "pw-two" not in text
    assert out["Operations"][0]["data"]["userName"] == "bob"
    assert out["Operations"][1]["data"]["Operations"][0]["value"] == REDACTED
    assert out["Operations"][2] == {"method": "DELETE", "path": "/Users/3"}


def test_null_and_non_object_bodies_pass_through():
    assert redact_scim_body(None, method="DELETE", path="/Users/1") is None
    assert redact_scim_body([1, "x"], method="POST", path="/x") == [1, "x"]
    assert redact_scim_body({"password": None}, method="POST", path="/Users") == {"password": None}


def test_small_values_are_kept_as_they_are():
    value = {"a": "x" * 1000}
    assert limit_json_size(value) is value
    assert limit_json_size(None) is None


def test_values_over_64_kib_are_replaced_by_a_truncated_stand_in():
    value = {"blob": 'é"' * 40_000}
    original = json.dumps(value, separators=(",", ":"), ensure_ascii=False).encode()
    out = limit_json_size(value)
    assert out["_truncated"] is True
    assert out["_original_size"] == len(original)
    assert original.decode().startswith(out["_preview"])
    assert len(out["_preview"]) > 10_000
    stored = json.dumps(out, separators=(",", ":"), ensure_ascii=False).encode()
    assert len(stored) <= MAX_JSON_BYTES


def test_exactly_at_the_limit_is_kept():
    overhead = len(json.dumps({"a": ""}, separators=(",", ":")))
    value = {"a": "x" * (MAX_JSON_BYTES - overhead)}
    assert limit_json_size(value) is value
    value = {"a": "x" * (MAX_JSON_BYTES - overhead + 1)}
    assert limit_json_size(value)["_truncated"] is True


# ---------------------------------------------------------------------------- any spelling


def test_operation_members_and_paths_match_in_any_case():
    body = {
        "Operations": [
            {"op": "replace", "path": "password", "Value": "pw-1"},
            {"Op": "Replace", "Path": "password", "value": "pw-2"},
            {"OP": "add", "PATH": "PASSWORD", "VALUE": "pw-3"},
            {
                "op": "replace",
                "Path": "urn:ietf:params:scim:schemas:core:2.0:User:Password",
                "vAlUe": "pw-4",
            },
            {"op": "replace", "path": 'emails[type eq "work"].password', "value": "pw-5"},
            {"op": "replace", "path": "displayName", "Value": "kept"},
        ]
    }
    out = redact_scim_body(body, method="PATCH", path="/Users/1")
    assert "pw-" not in json.dumps(out)
    assert out["Operations"][0] == {"op": "replace", "path": "password", "Value": REDACTED}
    assert out["Operations"][5]["Value"] == "kept"


def test_operations_in_lowercase_wrappers_and_pathless_values_are_redacted():
    body = {
        "operations": [
            {"op": "replace", "value": {"Password": "pw-1", "active": True}},
            {
                "Op": "replace",
                "Value": {"urn:ietf:params:scim:schemas:core:2.0:User": {"PASSWORD": "pw-2"}},
            },
        ]
    }
    out = redact_scim_body(body, method="PATCH", path="/Users/1")
    assert out["operations"][0]["value"] == {"Password": REDACTED, "active": True}
    assert "pw-2" not in json.dumps(out)


def test_long_s_and_trailing_whitespace_spell_the_same_name():
    body = {
        "pa\u017f\u017fword": "pw-1",
        "password ": "pw-2",
        "Operations": [{"op": "add", "path \t": "PA\u017fSWORD\n", "value ": "pw-3"}],
    }
    out = redact_scim_body(body, method="PATCH", path="/Users/1")
    assert "pw-" not in json.dumps(out)


def test_a_null_secret_stays_null():
    body = {"Operations": [{"op": "remove", "path": "password", "Value": None}]}
    assert redact_scim_body(body, method="PATCH", path="/Users/1") == body


@settings(max_examples=200, deadline=None)
@given(planted_bodies())
def test_a_planted_password_never_survives_redaction(planted: PlantedBody):
    before = planted.text()
    out = redact_scim_body(planted.body, method="PATCH", path="/Bulk")
    text = json.dumps(out, ensure_ascii=False)
    assert planted.password not in text
    assert REDACTED in text
    assert planted.text() == before, "the caller's object must not be modified"


@settings(max_examples=200, deadline=None)
@given(planted_bodies())
def test_redaction_is_idempotent(planted: PlantedBody):
    once = redact_scim_body(planted.body, method="POST", path="/Users")
    assert redact_scim_body(once, method="POST", path="/Users") == once


@settings(max_examples=200, deadline=None)
@given(filler)
def test_bodies_without_secret_names_are_unchanged(body):
    assert redact_scim_body(body, method="PUT", path="/Users/1") == body
