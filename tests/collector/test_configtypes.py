"""PostgreSQL DSNs in configuration values: shown redacted, password found for scrubbing, checked before use."""

from __future__ import annotations

import pytest

from collector.configtypes import ConfigError, check_pg_dsn, dsn_password, redact_dsn, scrub_secret_text

SECRET = "s3cr3t-PW"


@pytest.mark.parametrize(
    ("dsn", "shown"),
    [
        (f"postgresql://app:{SECRET}@db.example:5432/audit", "postgresql://app:***@db.example:5432/audit"),
        (f"postgres://app:{SECRET}@db/audit?sslmode=verify-full", "postgres://app:***@db/audit?sslmode=verify-full"),
        (
            f"postgresql://app:{SECRET}@h1:5432,h2:5433/audit?target_session_attrs=read-write",
            "postgresql://app:***@h1:5432,h2:5433/audit?target_session_attrs=read-write",
        ),
        (
            f"postgresql://db/audit?user=app&password={SECRET}&sslmode=require",
            "postgresql://db/audit?user=app&password=***&sslmode=require",
        ),
        ("postgresql://app@db/audit", "postgresql://app@db/audit"),
        ("postgresql://db/audit", "postgresql://db/audit"),
        # a raw @ and : inside the password (not percent-encoded, as people do write it)
        ("postgresql://app:p@ss:w0rd@db/audit", "postgresql://app:***@db/audit"),
        ("postgresql://app:p%40ss@db/audit", "postgresql://app:***@db/audit"),
        (f"host=db user=app password={SECRET} dbname=audit", "host=db user=app password=*** dbname=audit"),
        ("host=db password='with space' dbname=audit", "host=db password=*** dbname=audit"),
    ],
)
def test_redact_dsn_hides_the_password_and_keeps_the_rest(dsn: str, shown: str) -> None:
    assert redact_dsn(dsn) == shown
    for part in ("s3cr3t", "p@ss", "w0rd", "with space", "p%40ss"):
        assert part not in redact_dsn(dsn)


def test_redaction_hides_more_rather_than_less_when_ambiguous() -> None:
    # an @ in the query too: everything up to the last @ is taken as user info
    shown = redact_dsn(f"postgresql://app:{SECRET}@db/audit?application_name=me@host")
    assert SECRET not in shown and shown.startswith("postgresql://app:***@")


@pytest.mark.parametrize(
    ("dsn", "password"),
    [
        (f"postgresql://app:{SECRET}@db/audit", SECRET),
        ("postgresql://app:p%40ss@db/audit", "p@ss"),
        (f"postgresql://db/audit?password={SECRET}", SECRET),
        ("postgresql://app@db/audit", ""),
        (r"host=db password='it\'s' dbname=x", "it's"),
    ],
)
def test_dsn_password(dsn: str, password: str) -> None:
    assert dsn_password(dsn) == password


def test_scrub_removes_the_password_from_any_message() -> None:
    dsn = "postgresql://app:p%40ss%2Fx@db/audit"
    text = f"cannot connect to {dsn}: password p@ss/x rejected (p%40ss%2Fx)"
    out = scrub_secret_text(text, dsn)
    assert "p@ss" not in out and "p%40ss" not in out
    assert "postgresql://app:***@db/audit" in out


@pytest.mark.parametrize(
    "dsn",
    [
        "postgresql://app:pw@db:5432/audit",
        "postgres://db/audit?sslmode=verify-full&sslrootcert=/etc/ssl/ca.pem",
        "postgresql://app:pw@h1:5432,h2/audit",
        "postgresql://app:pw@[::1]:5432/audit",
        "postgresql:///audit",
    ],
)
def test_check_pg_dsn_accepts_uris(dsn: str) -> None:
    check_pg_dsn(dsn, "storage.postgresql.dsn")


@pytest.mark.parametrize(
    ("dsn", "problem"),
    [
        (f"host=db password={SECRET}", "expected a PostgreSQL URI"),
        (f"mysql://app:{SECRET}@db/audit", "expected a PostgreSQL URI"),
        (f"postgresql://app:{SECRET}@db:99999/audit", "invalid port '99999'"),
        (f"postgresql://app:{SECRET}@db:http/audit", "invalid port 'http'"),
        (f"postgresql://app:{SECRET}@db/audit?sslmode=sometimes", "sslmode must be one of"),
        (f"postgresql://app:{SECRET}@db/audit?sslmode", "invalid query parameters"),
    ],
)
def test_check_pg_dsn_refuses_with_the_key_and_without_the_password(dsn: str, problem: str) -> None:
    with pytest.raises(ConfigError) as exc:
        check_pg_dsn(dsn, "storage.postgresql.dsn")
    msg = str(exc.value)
    assert msg.startswith("storage.postgresql.dsn: ") and problem in msg
    assert SECRET not in msg and "***" in msg
