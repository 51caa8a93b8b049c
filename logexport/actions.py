"""Roles and the actions they may take, as names only: no database, so the remote client,
the kinds table and the API shapes can name them. ``logexport.policy`` decides who holds
which."""

from __future__ import annotations

from enum import StrEnum


class Role(StrEnum):
    OWNER = "OWNER"
    ADMIN = "ADMIN"
    VIEWER = "VIEWER"


class Action(StrEnum):
    AUDIT_LOG_LIST = "iam:audit-log:list"
    AUDIT_LOG_EXPORT = "iam:audit-log:export"
    SCIM_EVENT_LIST = "iam:scim-event:list"
    SCIM_EVENT_EXPORT = "iam:scim-event:export"
    LOG_EXPORT_GET = "iam:log-export:get"
    LOG_EXPORT_CANCEL = "iam:log-export:cancel"
    LOG_EXPORT_DOWNLOAD = "iam:log-export:download"
    # Creating, changing, testing and deleting log streams (listing them needs membership only).
    LOG_STREAM_MANAGE = "iam:log-stream:manage"
