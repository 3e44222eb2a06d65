"""The ``ccbridge`` commands as an operator runs them (the installed console script, as a process): read-only
commands without destination secrets, one "no store" message, one time grammar, the analyst's export filters,
help, usage errors, broken pipes and failed exports."""

from __future__ import annotations

import csv
import io
import re
import subprocess
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import orjson
import pytest

from tests.collector.cli.cli_support import CCBRIDGE, ccbridge
from tests.collector.test_cli import ALICE, BOB, event, store_events

NOW = datetime.now(UTC).replace(microsecond=0)
T = NOW - timedelta(hours=2)


def analyst_events() -> list:
    return [
        event(
            "tool_decision",
            T,
            "s1",
            0,
            ALICE,
            tool_name="Bash",
            decision="accept",
            source="user_temporary",
            tool_parameters='{"full_command":"rm -rf build"}',
        ),
        event(
            "tool_decision",
            T + timedelta(seconds=1),
            "s1",
            1,
            ALICE,
            tool_name="Edit",
            decision="reject",
            source="config",
        ),
        event(
            "tool_result",
            T + timedelta(seconds=2),
            "s1",
            2,
            ALICE,
            tool_name="Write",
            success="true",
            tool_input='{"file_path":"/home/dev/project/Secrets.env","content":"x"}',
        ),
        event(
            "tool_decision",
            T + timedelta(seconds=3),
            "s2",
            0,
            BOB,
            tool_name="Bash",
            decision="accept",
            source="config",
            tool_parameters='{"full_command":"terraform apply"}',
        ),
    ]


@pytest.fixture
def store(tmp_path: Path) -> Path:
    d = tmp_path / "data"
    store_events(d, analyst_events())
    return d


@pytest.fixture
def secret_config(tmp_path: Path, store: Path) -> Path:
    """A production-like config whose destinations need secrets that are not in this environment."""
    cfg = tmp_path / "ccbridge.yaml"
    cfg.write_text(
        f"storage:\n  directory: {store}\n"
        "exporters:\n"
        "  splunk_hec/siem:\n    endpoint: https://splunk.example:8088\n    token: ${env:SPLUNK_HEC_TOKEN}\n"
        "  http/archive:\n    url: https://archive.example/in\n    headers:\n"
        "      Authorization: Bearer ${env:ARCHIVE_TOKEN}\n"
    )
    return cfg


# ---------------------------------------------------------------------------------------------------------------
# 1. read-only commands need no destination secrets


@pytest.mark.parametrize(
    "argv",
    [
        ["audit", "export"],
        ["audit", "verify"],
        ["approvals", "export", "--since", "7d", "--until", "1h"],
        ["dlq", "list"],
        ["report", "--since", "7d"],
        ["status", "--store"],
    ],
)
def test_read_only_commands_need_no_destination_secrets(secret_config, argv):
    r = ccbridge(*argv, "--config", str(secret_config))
    assert "SPLUNK_HEC_TOKEN" not in r.err and "ARCHIVE_TOKEN" not in r.err, r.err
    assert r.code == 0, r.err


def test_commands_that_deliver_still_resolve_the_secrets(secret_config):
    r = ccbridge("dlq", "replay", "--config", str(secret_config))
    assert r.code == 2 and "SPLUNK_HEC_TOKEN" in r.err and "Traceback" not in r.err


# ---------------------------------------------------------------------------------------------------------------
# 2. a missing store is reported the same way everywhere


@pytest.mark.parametrize(
    "argv",
    [
        ["audit", "export"],
        ["audit", "export", "--format", "csv"],
        ["audit", "verify"],
        ["approvals", "export", "--since", "7d", "--until", "today"],
        ["dlq", "list"],
        ["dlq", "show", "0-1"],
        ["report"],
        ["status", "--store"],
    ],
)
def test_a_missing_store_is_one_message_everywhere(tmp_path, argv):
    missing = tmp_path / "nowhere"
    r = ccbridge(*argv, "--data-dir", str(missing))
    assert r.code == 1, r.err
    assert f"no store under {missing}" in r.err
    assert r.out == ""
    assert len(r.err.strip().splitlines()) == 1
    assert not missing.exists()


# ---------------------------------------------------------------------------------------------------------------
# 3. one time grammar, --until exclusive, one message for a reversed range

COMMANDS_WITH_TIME = [["audit", "export"], ["approvals", "export"], ["report"]]


@pytest.mark.parametrize("argv", COMMANDS_WITH_TIME)
@pytest.mark.parametrize(
    ("since", "until"),
    [("7d", "today"), ("yesterday", "1h"), ("2020-01-01", "2030-01-01"), ("2020-01-01T00:00:00Z", "24h")],
)
def test_every_command_takes_the_same_time_forms(store, argv, since, until):
    r = ccbridge(*argv, "--data-dir", str(store), "--since", since, "--until", until)
    assert r.code == 0, r.err


@pytest.mark.parametrize("argv", COMMANDS_WITH_TIME)
def test_a_reversed_range_is_one_message_naming_both_values(store, argv):
    r = ccbridge(*argv, "--data-dir", str(store), "--since", "2026-11-08", "--until", "2026-11-01")
    assert r.code == 2
    assert "2026-11-08" in r.err and "2026-11-01" in r.err and "is not before" in r.err
    assert "Traceback" not in r.err and r.out == ""


def test_until_is_exclusive(store):
    first = orjson.loads(ccbridge("audit", "export", "--data-dir", str(store)).out.splitlines()[0])
    r = ccbridge("audit", "export", "--data-dir", str(store), "--until", first["time"])
    assert r.code == 0 and r.out == ""
    r = ccbridge("audit", "export", "--data-dir", str(store), "--since", first["time"])
    assert first["id"] in r.out


# ---------------------------------------------------------------------------------------------------------------
# 4. exports an analyst can use directly


def exported(store: Path, *args: str) -> tuple[list[dict], str]:
    r = ccbridge("audit", "export", "--data-dir", str(store), *args)
    assert r.code == 0, r.err
    return [orjson.loads(line) for line in r.out.splitlines()], r.err


def test_export_filters_by_tool_decision_mode_and_text_case_insensitively(store):
    recs, _ = exported(store, "--tool", "bash")
    assert {r["tool"]["command"] for r in recs} == {"rm -rf build", "terraform apply"}
    recs, _ = exported(store, "--tool", "BASH", "--decision", "ACCEPT", "--mode", "automatic")
    assert [r["tool"]["command"] for r in recs] == ["terraform apply"]
    recs, _ = exported(store, "--decision", "reject")
    assert [r["tool"]["name"] for r in recs] == ["Edit"]
    recs, _ = exported(store, "--text", "secrets.ENV")
    assert [r["file"]["path"] for r in recs if r["kind"] == "tool_result"] == ["/home/dev/project/Secrets.env"]
    recs, _ = exported(store, "--text", "TERRAFORM", "--session", "s2")
    assert len(recs) == 1
    recs, _ = exported(store, "--user", "ALICE@Example.com", "--kind", "tool_decision")
    assert len(recs) == 2


def test_an_unknown_user_or_tool_says_so(store):
    recs, err = exported(store, "--user", "mallory@example.com")
    assert recs == [] and "0 records; no user matches mallory@example.com" in err
    recs, err = exported(store, "--tool", "Grep")
    assert recs == [] and "no tool matches Grep" in err


def test_approvals_export_sorts_by_time_or_session(store):
    def rows(*extra: str) -> list[dict]:
        r = ccbridge("approvals", "export", "--data-dir", str(store), "--since", "1d", "--until", "now", *extra)
        assert r.code == 0, r.err
        return list(csv.DictReader(io.StringIO(r.out)))

    by_time = rows("--sort", "time", "--user", "ALICE@EXAMPLE.COM")
    assert [r["tool_name"] for r in by_time] == ["Bash", "Edit"]
    every = rows("--sort", "time")
    assert [r["time"] for r in every] == sorted(r["time"] for r in every)
    assert len(rows("--tool", "bash", "--decision", "ACCEPT")) == 2


# ---------------------------------------------------------------------------------------------------------------
# 5. errors and help


def test_version_option_and_command():
    a, b = ccbridge("--version"), ccbridge("version")
    assert a.code == b.code == 0
    assert re.match(r"ccbridge \S+ \(Python 3\.\d+", a.out) and a.out == b.out


SUBCOMMANDS = [
    ["run"],
    ["validate-config"],
    ["audit", "export"],
    ["audit", "verify"],
    ["approvals", "export"],
    ["dlq", "list"],
    ["dlq", "show"],
    ["dlq", "replay"],
    ["analytics", "sync"],
    ["report"],
    ["status"],
    ["demo"],
]


@pytest.mark.parametrize("argv", SUBCOMMANDS)
def test_every_option_has_help_and_shows_its_default(argv):
    from collector.cli import build_parser

    parser = build_parser()
    sub = parser
    for name in argv:
        action = next(a for a in sub._actions if a.__class__.__name__ == "_SubParsersAction")
        sub = action.choices[name]
    help_text = " ".join(ccbridge(*argv, "--help").out.split())
    for action in sub._actions:
        if action.help == "==SUPPRESS==" or "-h" in action.option_strings:
            continue
        assert action.help, f"{argv} {action.option_strings or action.dest} has no help"
        if action.default not in (None, False) and action.nargs != 0:
            assert f"(default: {action.default})" in help_text, f"{argv} {action.option_strings} hides its default"


def test_kind_help_lists_the_kinds():
    from collector.processing.normalize import KINDS

    out = " ".join(ccbridge("audit", "export", "--help").out.split())
    for kind in KINDS:
        assert kind in out


def test_a_usage_error_prints_the_subcommands_usage_once(store):
    r = ccbridge("audit", "export", "--data-dir", str(store), "--kind", "bogus")
    assert r.code == 2
    assert r.err.count("usage:") == 1 and "usage: ccbridge audit export" in r.err
    r = ccbridge("approvals", "export", "--data-dir", str(store), "--since", "1d", "--until", "2020-01-01")
    assert r.code == 2 and r.err.count("usage:") == 1 and "usage: ccbridge approvals export" in r.err


@pytest.mark.parametrize(
    ("args", "named"),
    [
        (["--sessions", "-1"], "--sessions"),
        (["--prompts", "-3"], "--prompts"),
        (["--endpoint", "127.0.0.1:4318"], "http:// or https://"),
        (["--endpoint", "localhost"], "http:// or https://"),
    ],
)
def test_demo_refuses_negative_counts_and_urls_without_a_scheme(args, named):
    r = ccbridge("demo", *args)
    assert r.code == 2 and named in r.err and "Traceback" not in r.err


def test_a_broken_pipe_ends_quietly(tmp_path):
    d = tmp_path / "big"
    events = [
        event("user_prompt", T + timedelta(milliseconds=i), f"s{i % 7}", i, ALICE, prompt_length="1")
        for i in range(3000)
    ]
    store_events(d, events)
    for fmt in ("jsonl", "csv"):
        done = subprocess.run(
            f"'{CCBRIDGE}' audit export --data-dir '{d}' --format {fmt} | head -n 1",
            shell=True,
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        assert len(done.stdout.splitlines()) == 1
        assert "Traceback" not in done.stderr and "BrokenPipe" not in done.stderr and "Exception" not in done.stderr


@pytest.mark.parametrize(
    "argv", [["audit", "export", "--format", "csv"], ["approvals", "export", "--since", "7d", "--until", "now"]]
)
def test_a_failed_export_leaves_no_half_written_header(tmp_path, argv):
    d = tmp_path / "broken"
    d.mkdir()
    (d / "shard-0.db").write_bytes(b"this is not a database" * 100)
    r = ccbridge(*argv, "--data-dir", str(d))
    assert r.code == 1, r.err
    assert r.out == ""
    assert "Traceback" not in r.err and len(r.err.strip().splitlines()) == 1


def test_an_unwritable_data_directory_is_one_line(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    r = ccbridge("run", "--data-dir", str(blocker / "data"), timeout=60)
    assert r.code != 0
    assert "Traceback" not in r.err
    assert str(blocker) in r.err


# ---------------------------------------------------------------------------------------------------------------
# 9. analytics sync fails fast when the API cannot be reached


def test_analytics_sync_fails_within_seconds_on_connection_refused(tmp_path):
    from tests.conftest import free_port

    env = {
        "CCBRIDGE_ANALYTICS_BASE_URL": f"http://127.0.0.1:{free_port()}",
        "ANTHROPIC_ADMIN_API_KEY": "sk-ant-admin01-test",
    }
    started = time.monotonic()
    r = ccbridge("analytics", "sync", "--data-dir", str(tmp_path / "d"), "--since", "3d", env=env, timeout=60)
    assert time.monotonic() - started < 15
    assert r.code == 1
    assert "connection refused" in r.out + r.err
    assert "Traceback" not in r.err and "sk-ant-admin01-test" not in r.out + r.err
