"""``ccbridge approvals export --from-splunk``: the same rows, read back through splunk-sdk from a fake of Splunk's
search export endpoint that holds what the ``splunk_hec`` exporter would have indexed."""

from __future__ import annotations

from typing import Any

import orjson
import pytest

from collector import cli
from collector.compliance.approvals import ApprovalFilter
from collector.compliance.splunk import SplunkTarget, build_search, spl_quote
from tests.collector.compliance.approvals_support import EXPECTED_ROWS, PERIOD, replay_runs
from tests.conftest import stored_records
from tests.fakes.splunk_search import SplError, SplunkSearchFake, parse_search

TOKEN = "splunk-auth-token-8d1f0b2c7e"
SOURCETYPE = "claude:code:audit"


def hec_envelope(rec: dict[str, Any], index: str = "ai_audit", sourcetype: str = SOURCETYPE) -> dict[str, Any]:
    """What the splunk_hec exporter posts for a record (exporters/splunk_hec/events.py, spec section 6)."""
    fields = {"cc_kind": rec["kind"], "cc_event": rec["event"]}
    user = rec.get("user") or {}
    if user.get("email") or user.get("id"):
        fields["cc_user"] = user.get("email") or user.get("id")
    return {
        "time": _epoch(rec["time"]),
        "host": "bridge-1",
        "source": "ccbridge",
        "sourcetype": sourcetype,
        "index": index,
        "fields": fields,
        "event": rec,
    }


def _epoch(text: str) -> float:
    from collector.compliance.approvals import rfc3339_to_ms

    ms = rfc3339_to_ms(text)
    assert ms is not None
    return ms / 1000


@pytest.fixture
async def splunk(bridge: Any) -> SplunkSearchFake:
    """A fake Splunk holding every record of the recorded runs, plus noise the search must not return."""
    await replay_runs(bridge.http_url, bridge.grpc_target)
    fake = SplunkSearchFake(tokens={TOKEN}, users={"auditor": "correct horse battery"}, preview_rows=3)
    records = stored_records(bridge.data_dir)
    for rec in records:
        fake.index_hec(hec_envelope(rec))
    decision = next(r for r in records if r["kind"] == "tool_decision")
    fake.index_hec(hec_envelope(decision, index="other_index"))  # another index: must not be read
    fake.index_hec(hec_envelope(decision, sourcetype="ocsf:audit"))  # another sourcetype: must not be read
    fake.index_hec({"time": _epoch(decision["time"]), "index": "ai_audit", "sourcetype": SOURCETYPE, "event": "plain"})
    return fake


def run_cli(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    try:
        code = cli.main(["approvals", "export", "--since", PERIOD[0], "--until", PERIOD[1], "--format", "jsonl", *args])
    except SystemExit as exc:
        code = int(exc.code or 0)
    out = capsys.readouterr()
    return code, out.out, out.err


def rows_of(text: str) -> list[dict[str, Any]]:
    return [orjson.loads(line) for line in text.splitlines() if line]


async def test_rows_from_splunk_equal_the_rows_from_the_store(
    bridge: Any, splunk: SplunkSearchFake, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    code, local, err = run_cli(capsys, "--data-dir", str(bridge.data_dir))
    assert code == 0, err
    monkeypatch.setenv("SPLUNK_TOKEN", TOKEN)
    with splunk.running() as url:
        code, out, err = run_cli(
            capsys, "--from-splunk", url, "--splunk-token-env", "SPLUNK_TOKEN", "--index", "ai_audit"
        )
    assert code == 0, err
    rows = rows_of(out)
    assert rows == rows_of(local), "the same rows, chain hashes included"
    assert [{k: v for k, v in r.items() if k != "chain_hash"} for r in rows] == EXPECTED_ROWS
    assert all(r["chain_hash"] for r in rows)
    assert "exported 17 decision(s) from 6 session(s)" in err
    export = [r for r in splunk.requests if r["path"].endswith("/jobs/export")]
    assert len(export) == 1 and export[0]["auth"] == "Bearer"
    params = export[0]["params"]
    assert params["search"] == (
        'search index="ai_audit" sourcetype="claude:code:audit" (kind="tool_decision" OR kind="tool_result") '
        "| sort 0 session.id _time"
    )
    assert params["output_mode"] == "json"
    assert params["earliest_time"] == "1795564800.000"  # 2026-11-25T00:00:00Z
    assert params["latest_time"] == "1795737600.000"  # + 24 h of grace for late results
    assert TOKEN not in out + err


async def test_password_login_and_filters(splunk: SplunkSearchFake, capsys: pytest.CaptureFixture[str],
                                          monkeypatch: pytest.MonkeyPatch) -> None:  # fmt: skip
    monkeypatch.setenv("SPLUNK_USER", "auditor")
    monkeypatch.setenv("SPLUNK_PASSWORD", "correct horse battery")
    auth = ["--splunk-username-env", "SPLUNK_USER", "--splunk-password-env", "SPLUNK_PASSWORD", "--index", "ai_audit"]
    with splunk.running() as url:
        code, out, err = run_cli(capsys, "--from-splunk", url, *auth, "--decision", "reject")
        assert code == 0, err
        assert [r["record_id"] for r in rows_of(out)] == [
            r["record_id"] for r in EXPECTED_ROWS if r["decision"] == "reject"
        ]
        code, out, err = run_cli(capsys, "--from-splunk", url, *auth, "--user", "jdoe@example.com", "--format", "csv")
        assert code == 0, err
        assert out.count("\n") == 4 and "/home/dev/project/hello.txt" in out
    logins = [r for r in splunk.requests if r["path"] == "/services/auth/login"]
    assert logins and all("password" not in r["params"] for r in logins)
    searches = [r["params"]["search"] for r in splunk.requests if r["path"].endswith("/jobs/export")]
    assert '(user.email="jdoe@example.com" OR user.id="jdoe@example.com")' in searches[-1]


async def test_splunk_errors_are_reported_without_credentials(
    splunk: SplunkSearchFake, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SPLUNK_TOKEN", "wrong-token-5f2a")
    monkeypatch.setenv("SPLUNK_USER", "auditor")
    monkeypatch.setenv("SPLUNK_PASSWORD", "not the password")
    with splunk.running() as url:
        code, _, err = run_cli(capsys, "--from-splunk", url, "--splunk-token-env", "SPLUNK_TOKEN")
        assert code == 1 and "cannot export: Splunk at" in err and "401" in err
        assert "wrong-token-5f2a" not in err
        code, _, err = run_cli(
            capsys,
            "--from-splunk",
            url,
            "--splunk-username-env",
            "SPLUNK_USER",
            "--splunk-password-env",
            "SPLUNK_PASSWORD",
        )
        assert code == 1 and "refused the login" in err and "not the password" not in err
        monkeypatch.setenv("SPLUNK_TOKEN", TOKEN)
        splunk.fatal_message = "Search not executed: the search quota is exceeded"
        code, _, err = run_cli(capsys, "--from-splunk", url, "--splunk-token-env", "SPLUNK_TOKEN")
        assert code == 1 and "Splunk search failed: Search not executed: the search quota is exceeded" in err
        splunk.fatal_message = None
        code, _, err = run_cli(capsys, "--from-splunk", url, "--splunk-token-env", "SPLUNK_TOKEN", "--index", "a b")
        assert code == 1 and "invalid index name 'a b'" in err
    code, _, err = run_cli(capsys, "--from-splunk", url, "--splunk-token-env", "SPLUNK_TOKEN")
    assert code == 1 and f"cannot reach Splunk at {url}" in err
    code, _, err = run_cli(capsys, "--from-splunk", url, "--splunk-token-env", "NOT_SET_ANYWHERE_42")
    assert code == 2 and "environment variable NOT_SET_ANYWHERE_42 (Splunk token) is not set" in err
    code, _, err = run_cli(capsys, "--from-splunk", url)
    assert code == 2 and "--from-splunk needs --splunk-token-env" in err
    code, _, err = run_cli(capsys, "--from-splunk", "ftp://splunk", "--splunk-token-env", "SPLUNK_TOKEN")
    assert code == 1 and "invalid Splunk URL 'ftp://splunk'" in err


def test_unsorted_results_are_refused(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    """If the search came back ungrouped (no sort), joining would silently miss results: refuse instead."""
    fake = SplunkSearchFake(tokens={TOKEN})
    for i, session in enumerate(("s2", "s1", "s2")):
        rec = {"kind": "tool_decision", "time": f"2026-11-25T10:00:0{i}.000Z", "session": {"id": session},
               "tool": {"name": "Bash", "use_id": f"u{i}", "decision": "accept"}, "id": f"r{i}"}  # fmt: skip
        fake.index_hec({"time": 1795600800 + i, "index": "main", "sourcetype": SOURCETYPE, "event": rec})
    monkeypatch.setattr("collector.compliance.splunk.build_search", lambda t, f: f"search index={t.index}")
    monkeypatch.setenv("SPLUNK_TOKEN", TOKEN)
    with fake.running() as url:
        code, _, err = run_cli(capsys, "--from-splunk", url, "--splunk-token-env", "SPLUNK_TOKEN", "--index", "main")
    assert code == 1 and "records are not grouped by session" in err


def test_search_building_and_the_fakes_spl_subset() -> None:
    assert spl_quote('a"b\\c') == '"a\\"b\\\\c"'
    flt = ApprovalFilter(0, 1, user='x" OR index=*')
    spl = build_search(SplunkTarget(url="https://s:8089", token="t"), flt)
    assert spl.endswith('(user.email="x\\" OR index=*" OR user.id="x\\" OR index=*") | sort 0 session.id _time')
    assert "secret-tok" not in repr(SplunkTarget(url="https://s:8089", token="secret-tok", password="secret-tok"))
    fake = SplunkSearchFake()
    fake.index_hec({"time": 10, "index": "a", "sourcetype": SOURCETYPE, "event": {"kind": "k1", "s": {"id": "b"}}})
    fake.index_hec({"time": 20, "index": "a", "sourcetype": SOURCETYPE, "event": {"kind": "k2", "s": {"id": "a"}}})
    fake.index_hec({"time": 30, "index": "b", "sourcetype": SOURCETYPE, "event": {"kind": "k1", "tags": ["x", "y"]}})

    def ids(search: str, **params: str) -> list[float]:
        return [ev.time for ev in fake.run_search({"search": search, **params})]

    assert ids("search index=a") == [20, 10], "newest first without sort"
    assert ids("search index=a | sort 0 s.id") == [20, 10]
    assert ids("search index=* | sort 0 _time") == [10, 20, 30]
    assert ids("search index=* | sort 0 -_time | head 1") == [30]
    assert ids('search (kind="K1" OR kind=k2) NOT index=b') == [20, 10]
    assert ids("search tags=y") == [30]
    assert ids("search kind!=k1") == [20]
    assert ids("search index=*", earliest_time="15", latest_time="30") == [20]
    assert ids("search index=*", earliest_time="1970-01-01T00:00:25Z") == [30]
    for bad in ("index=a", "search (index=a", "search index=a | stats count", "search index= | sort"):
        with pytest.raises(SplError):
            fake.run_search({"search": bad})
    with pytest.raises(SplError):
        fake.run_search({"search": "search *", "earliest_time": "-24h@h"})
    assert parse_search("search index=a | sort 5 +x -y").sort == [("x", False), ("y", True)]
