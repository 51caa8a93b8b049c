import pytest

from logexport.policy import ROLE_ACTIONS, Action, Role, allows


def test_owner_holds_every_action():
    assert ROLE_ACTIONS[Role.OWNER] == frozenset(Action)
    assert all(allows(Role.OWNER, action) for action in Action)


def test_admin_holds_every_action_but_managing_log_streams():
    assert ROLE_ACTIONS[Role.ADMIN] == frozenset(Action) - {Action.LOG_STREAM_MANAGE}
    assert not allows(Role.ADMIN, Action.LOG_STREAM_MANAGE)
    assert not allows(Role.VIEWER, Action.LOG_STREAM_MANAGE)


def test_viewer_holds_only_the_two_list_actions():
    assert ROLE_ACTIONS[Role.VIEWER] == {Action.AUDIT_LOG_LIST, Action.SCIM_EVENT_LIST}


@pytest.mark.parametrize(
    "action",
    [
        Action.AUDIT_LOG_EXPORT,
        Action.SCIM_EVENT_EXPORT,
        Action.LOG_EXPORT_GET,
        Action.LOG_EXPORT_CANCEL,
        Action.LOG_EXPORT_DOWNLOAD,
    ],
)
def test_viewer_cannot_export_or_touch_exports(action):
    assert not allows(Role.VIEWER, action)


def test_non_member_holds_nothing():
    assert not any(allows(None, action) for action in Action)


def test_action_names_are_the_public_ones():
    assert {a.value for a in Action} == {
        "iam:audit-log:list",
        "iam:audit-log:export",
        "iam:scim-event:list",
        "iam:scim-event:export",
        "iam:log-export:get",
        "iam:log-export:cancel",
        "iam:log-export:download",
        "iam:log-stream:manage",
    }


def test_the_table_cannot_be_changed_at_runtime():
    with pytest.raises(TypeError):
        ROLE_ACTIONS[Role.VIEWER] = frozenset(Action)  # type: ignore[index]
