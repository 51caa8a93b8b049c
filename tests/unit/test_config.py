"""Settings: a missing or malformed variable is named, and its value never echoed."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from logexport.config import ConfigError, Settings, parse_duration

VALID = {
    "LOGEXPORT_DATABASE_URL": "postgresql://app:pw@db.internal:5432/logexport",
    "LOGEXPORT_BASE_URL": "https://logs.example.test",
    "LOGEXPORT_STORAGE_URL": "s3://exports/prefix",
    "LOGEXPORT_SMTP_URL": "smtp://mailer:mailpw@smtp.example.test:587",
    "LOGEXPORT_MAIL_FROM": "logexport@example.test",
    "LOGEXPORT_SECRET_KEY": "k" * 32,
}


def test_valid_environment_parses_with_spec_defaults() -> None:
    settings = Settings.from_env(needs=["database_url", "secret_key"], env=VALID)

    assert settings.database_url == VALID["LOGEXPORT_DATABASE_URL"]
    assert settings.snapshot_database_url == VALID["LOGEXPORT_DATABASE_URL"]
    assert settings.link_ttl == 24 * 3600
    assert (settings.max_range_days, settings.max_active_exports_per_org) == (366, 5)
    assert settings.max_running_exports_per_org == 1
    assert (settings.worker_concurrency, settings.worker_poll_interval) == (2, 5.0)
    assert (settings.worker_lease, settings.worker_max_attempts) == (60.0, 5)
    assert settings.worker_poll_only is False
    assert settings.shutdown_grace == 30.0
    assert settings.api_url == "http://127.0.0.1:8000"
    assert settings.s3_addressing_style == "auto"


def test_missing_needed_variable_names_it() -> None:
    env = {k: v for k, v in VALID.items() if k != "LOGEXPORT_DATABASE_URL"}

    with pytest.raises(ConfigError) as raised:
        Settings.from_env(needs=["database_url"], env=env)

    assert "LOGEXPORT_DATABASE_URL" in str(raised.value)


def test_empty_needed_variable_counts_as_missing() -> None:
    with pytest.raises(ConfigError, match="LOGEXPORT_MAIL_FROM"):
        Settings.from_env(needs=["mail_from"], env={**VALID, "LOGEXPORT_MAIL_FROM": ""})


def test_unneeded_variable_may_be_missing() -> None:
    settings = Settings.from_env(
        needs=["database_url"], env={"LOGEXPORT_DATABASE_URL": VALID["LOGEXPORT_DATABASE_URL"]}
    )

    assert settings.smtp_url is None


def test_require_returns_a_present_value_and_names_a_missing_one() -> None:
    settings = Settings.from_env(
        needs=["database_url"], env={"LOGEXPORT_DATABASE_URL": VALID["LOGEXPORT_DATABASE_URL"]}
    )

    assert settings.require("database_url") == VALID["LOGEXPORT_DATABASE_URL"]
    with pytest.raises(ConfigError) as raised:
        settings.require("smtp_url")
    assert str(raised.value) == "LOGEXPORT_SMTP_URL is not set"


def test_settings_built_in_code_carry_the_documented_defaults() -> None:
    # Tests and embedding applications build Settings directly, without the environment.
    assert Settings() == Settings.from_env(env={})


@pytest.mark.parametrize(
    ("variable", "value"),
    [
        ("LOGEXPORT_LINK_TTL", "a day hunter2-secret"),
        ("LOGEXPORT_WORKER_LEASE", "0s"),
        ("LOGEXPORT_MAX_RANGE_DAYS", "0"),
        ("LOGEXPORT_WORKER_CONCURRENCY", "two-hunter2-secret"),
        ("LOGEXPORT_EXPORT_PARALLELISM", "0"),
        ("LOGEXPORT_EXPORT_PARALLELISM", "17"),
        ("LOGEXPORT_WORKER_POLL_ONLY", "maybe-hunter2-secret"),
        ("LOGEXPORT_S3_ADDRESSING_STYLE", "sideways-hunter2-secret"),
        ("LOGEXPORT_MAIL_FROM", "no-at-sign-hunter2-secret"),
        ("LOGEXPORT_BASE_URL", "logs.example.test/hunter2-secret"),
        ("LOGEXPORT_DATABASE_URL", "mysql://app:hunter2-secret@db/logexport"),
        ("LOGEXPORT_STORAGE_URL", "ftp://user:hunter2-secret@host/dir"),
        ("LOGEXPORT_SMTP_URL", "smtp:///nohost-hunter2-secret"),
        ("LOGEXPORT_SECRET_KEY", "short-hunter2-secret"),
    ],
)
def test_malformed_variable_is_named_without_echoing_its_value(variable: str, value: str) -> None:
    with pytest.raises(ConfigError) as raised:
        Settings.from_env(env={**VALID, variable: value})

    message = str(raised.value)
    assert variable in message
    assert "hunter2" not in message
    assert value not in message
    # The message is one line a command can print as is.
    assert "\n" not in message


def test_malformed_value_is_an_error_even_when_not_needed() -> None:
    with pytest.raises(ConfigError, match="LOGEXPORT_LINK_TTL"):
        Settings.from_env(needs=[], env={"LOGEXPORT_LINK_TTL": "forever"})


def test_error_chain_does_not_carry_the_value() -> None:
    # A traceback printed by an outer handler must not reveal the secret either.
    with pytest.raises(ConfigError) as raised:
        Settings.from_env(env={**VALID, "LOGEXPORT_SECRET_KEY": "hunter2"})

    assert raised.value.__cause__ is None
    assert raised.value.__suppress_context__


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("24h", 86400.0),
        ("15m", 900.0),
        ("30s", 30.0),
        ("250ms", 0.25),
        ("7d", 604800.0),
        ("12", 12.0),
        ("1.5h", 5400.0),
    ],
)
def test_durations(text: str, seconds: float) -> None:
    assert parse_duration(text) == seconds


def test_unknown_setting_name_in_needs_is_a_programming_error() -> None:
    with pytest.raises(ValueError, match="unknown settings"):
        Settings.from_env(needs=["datbase_url"], env=VALID)


@pytest.mark.parametrize(
    ("variable", "value", "reason"),
    [
        ("LOGEXPORT_DATABASE_URL", "postgresql://u:hunter2@h:abc/db", "port"),
        ("LOGEXPORT_DATABASE_URL", "postgresql://u:hunter2@h:0/db", "port"),
        ("LOGEXPORT_DATABASE_URL", "postgresql://u:hunter2@h:65536/db", "port"),
        ("LOGEXPORT_DATABASE_URL", "postgres://u:hunter2@h1:5432,h2:x5433/db", "port"),
        ("LOGEXPORT_DATABASE_URL", "postgresql://u:hunter2@[2001:db8::1]:pg/db", "port"),
        ("LOGEXPORT_DATABASE_URL", "postgresql://u:hunter2@h/db?port=five", "port"),
        ("LOGEXPORT_DATABASE_URL", "postgresql://u:hunter2@h/db?sslmode=required", "sslmode"),
        ("LOGEXPORT_DATABASE_URL", "postgresql://u:hunter2@h/db?sslmode", "query string"),
        ("LOGEXPORT_DATABASE_URL", "postgresql://u:hunter2@[2001:db8::1/db", "not a valid URL"),
        ("LOGEXPORT_EXPORT_DATABASE_URL", "postgresql://u:hunter2@h:5o32/db", "port"),
        ("LOGEXPORT_EXPORT_DATABASE_URL", "postgresql://u:hunter2@h/db?sslmode=on", "sslmode"),
        ("LOGEXPORT_SMTP_URL", "smtp://mailer:hunter2@smtp.example.test:smtp", "port"),
        ("LOGEXPORT_SMTP_URL", "smtps://mailer:hunter2@smtp.example.test:99999", "port"),
        ("LOGEXPORT_S3_ENDPOINT_URL", "http://key:hunter2@minio:9ooo", "port"),
        ("LOGEXPORT_S3_PUBLIC_URL", "https://minio.example.test:-1", "port"),
        ("LOGEXPORT_BASE_URL", "https://logs.example.test:x443", "port"),
        ("LOGEXPORT_API_URL", "http://127.0.0.1:8000:1", "port"),
    ],
)
def test_url_with_a_bad_port_or_sslmode_is_named_without_echoing_it(
    variable: str, value: str, reason: str
) -> None:
    with pytest.raises(ConfigError) as raised:
        Settings.from_env(env={**VALID, variable: value})

    message = str(raised.value)
    assert message.startswith(f"{variable} is malformed: ")
    assert reason in message
    assert "hunter2" not in message and value not in message
    assert "\n" not in message


@pytest.mark.parametrize(
    "url",
    [
        "postgresql://app:pw@db.internal:5432/logexport",
        "postgresql://app:pw@db.internal/logexport?sslmode=verify-full",
        "postgres://app:pw@db1:5432,db2:5433,db3/logexport?sslmode=prefer",
        "postgresql://app:pw@[2001:db8::1]:5432/logexport?sslmode=disable",
        "postgresql://app:pw@[2001:db8::1],db2:6543/logexport",
        "postgresql://app:pw@db.internal/logexport?port=5433&application_name=logexport",
        "postgresql://app:p%40ss@db.internal:65535/logexport?sslmode=require",
    ],
)
def test_database_urls_the_driver_accepts_pass(url: str) -> None:
    settings = Settings.from_env(
        env={**VALID, "LOGEXPORT_DATABASE_URL": url, "LOGEXPORT_EXPORT_DATABASE_URL": url}
    )
    assert settings.database_url == url == settings.snapshot_database_url


@pytest.mark.parametrize(
    ("variable", "value"),
    [
        ("LOGEXPORT_SMTP_URL", "smtp://mailer:pw@smtp.example.test:2525?starttls=1"),
        ("LOGEXPORT_SMTP_URL", "smtps://smtp.example.test"),
        ("LOGEXPORT_S3_ENDPOINT_URL", "http://127.0.0.1:9000"),
        ("LOGEXPORT_S3_ENDPOINT_URL", "http://[::1]:9000"),
        ("LOGEXPORT_STORAGE_URL", "file:///var/lib/logexport"),
    ],
)
def test_other_urls_with_good_ports_pass(variable: str, value: str) -> None:
    assert Settings.from_env(env={**VALID, variable: value}) is not None


@pytest.mark.parametrize(
    "url",
    [
        "postgresql://u:hunter2@h:abc/db",
        "postgresql://u:hunter2@127.0.0.1:1/db?sslmode=bogus",
        "postgresql://u:hunter2@127.0.0.1:70000/db",
    ],
)
def test_migrate_with_a_malformed_database_url_says_so_in_one_line(url: str) -> None:
    # The command as a person runs it: one line naming the variable, exit 2, no traceback.
    result = subprocess.run(
        [str(Path(sys.executable).parent / "logexport"), "migrate"],
        env={"PATH": os.environ.get("PATH", ""), "LOGEXPORT_DATABASE_URL": url},
        capture_output=True, text=True, timeout=60,
    )
    assert result.returncode == 2, result.stderr
    assert result.stderr.count("\n") == 1, result.stderr
    assert result.stderr.startswith("error: LOGEXPORT_DATABASE_URL is malformed: ")
    assert "hunter2" not in result.stderr and "Traceback" not in result.stderr
    assert result.stdout == ""


def test_migrate_with_a_malformed_smtp_url_stops_before_anything_else() -> None:
    # Every setting is checked at start, needed or not: a typo never waits for the first mail.
    result = subprocess.run(
        [str(Path(sys.executable).parent / "logexport"), "migrate"],
        env={
            "PATH": os.environ.get("PATH", ""),
            "LOGEXPORT_DATABASE_URL": "postgresql://u:pw@127.0.0.1:1/db",
            "LOGEXPORT_SMTP_URL": "smtp://mailer:hunter2@smtp.example.test:twentyfive",
        },
        capture_output=True, text=True, timeout=60,
    )
    assert result.returncode == 2, result.stderr
    assert result.stderr == (
        "error: LOGEXPORT_SMTP_URL is malformed: the port must be a number from 1 to 65535\n"
    )


def test_the_settings_repr_keeps_keys_and_passwords_out() -> None:
    # Tracebacks, debuggers and test failures print the settings; no secret may ride along.
    from logexport.manifests import generate_signing_key

    signing_key = generate_signing_key()
    env = {
        "LOGEXPORT_DATABASE_URL": "postgresql://u:db-hunter2@127.0.0.1:5432/app",
        "LOGEXPORT_EXPORT_DATABASE_URL": "postgresql://r:replica-hunter2@127.0.0.1:5433/app",
        "LOGEXPORT_SMTP_URL": "smtp://mailer:smtp-hunter2@127.0.0.1:25",
        "LOGEXPORT_SECRET_KEY": "s" * 40,
        "LOGEXPORT_SIGNING_KEY": signing_key,
        "LOGEXPORT_TOKEN": "lxp_token_hunter2",
        "LOGEXPORT_BASE_URL": "https://exports.example.test",
    }
    settings = Settings.from_env(env=env)
    shown = repr(settings)
    for secret in ("db-hunter2", "replica-hunter2", "smtp-hunter2", "s" * 40, signing_key,
                   "lxp_token_hunter2"):
        assert secret not in shown
    # The rest stays visible, and the values themselves are still there to use.
    assert "https://exports.example.test" in shown
    assert settings.signing_key == signing_key
