"""The accumulator: delta -> cumulative, resets, gaps, cumulative pass-through, order, expiry, overflow, per-user."""

from __future__ import annotations

import threading
from typing import Any

import pytest

from exporters.prometheus.accumulator import Accumulator
from exporters.prometheus.naming import OVERFLOW, UserLabeler

S = 1_000_000_000
T0 = 1_795_643_831 * S
RESOURCE = {"service.name": "claude-code", "service.version": "2.1.332", "os.type": "linux", "host.arch": "amd64"}
COST = "claude_code_cost_usage_usd_total"
SESSIONS = "claude_code_session_count_total"


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def point(
    name: str = "claude_code.cost.usage",
    value: float = 1.0,
    start: int = T0,
    end: int = T0 + 60 * S,
    *,
    temporality: str | None = "delta",
    mtype: str = "sum",
    monotonic: bool = True,
    unit: str = "USD",
    session: str = "s1",
    resource: dict[str, Any] | None = None,
    **attrs: Any,
) -> dict[str, Any]:
    a = {"user.id": "u1", "session.id": session, "terminal.type": "dumb", "model": "claude-opus-5-5"}
    a["query_source"] = "main"
    a.update(attrs)
    return {
        "name": name,
        "unit": unit,
        "description": "",
        "type": mtype,
        "temporality": temporality,
        "monotonic": monotonic,
        "attributes": a,
        "resource": RESOURCE if resource is None else resource,
        "scope": {"name": "com.anthropic.claude_code", "version": "2.1.332"},
        "start_time_unix_nano": start,
        "time_unix_nano": end,
        "value": value,
    }


def acc(**kw: Any) -> tuple[Accumulator, Clock]:
    clock = Clock()
    return Accumulator(wall=clock, mono=clock, **kw), clock


def cost(a: Accumulator, model: str = "claude-opus-5-5") -> float | None:
    return a.value(COST, model=model, query_source="main")


# ---------------------------------------------------------------------------------------------------------------
# delta


def test_delta_points_accumulate_across_sessions_into_one_series() -> None:
    a, _ = acc()
    assert a.add_point(point(value=0.5, start=T0, end=T0 + 60 * S)) == "counted"
    assert a.add_point(point(value=0.25, start=T0 + 60 * S, end=T0 + 120 * S)) == "counted"
    assert a.add_point(point(value=1.0, session="s2")) == "counted"
    assert cost(a) == pytest.approx(1.75)
    snap = {f.name: f for f in a.snapshot()}
    assert snap[COST].labelnames == ("model", "query_source")
    assert [s[0] for s in snap[COST].samples] == [("claude-opus-5-5", "main")]  # session/user summed away


def test_delta_gap_is_a_reset_of_the_stream_and_still_adds_its_value() -> None:
    a, _ = acc()
    a.add_point(point(value=2.0, start=T0, end=T0 + 60 * S))
    # the CLI restarted (or an export was lost): start is not the previous end
    assert a.add_point(point(value=3.0, start=T0 + 300 * S, end=T0 + 360 * S)) == "gap"
    assert cost(a) == 5.0


def test_delta_out_of_order_and_duplicate_points_are_ignored() -> None:
    a, _ = acc()
    a.add_point(point(value=1.0, start=T0 + 60 * S, end=T0 + 120 * S))
    assert a.add_point(point(value=7.0, start=T0, end=T0 + 60 * S)) == "out_of_order"
    assert a.add_point(point(value=1.0, start=T0 + 60 * S, end=T0 + 120 * S)) == "out_of_order"  # stored twice
    assert cost(a) == 1.0
    assert a.stats().ignored == {"out_of_order": 2}
    assert a.stats().points == 1


def test_streams_are_keyed_by_resource_too() -> None:
    """Same attributes from another host (resource) is another stream: not out of order, both count."""
    a, _ = acc()
    a.add_point(point(value=1.0))
    other = {**RESOURCE, "os.version": "6.1"}
    assert a.add_point(point(value=2.0, resource=other)) == "counted"
    assert cost(a) == 3.0
    assert a.streams() == 2


# ---------------------------------------------------------------------------------------------------------------
# cumulative


def test_cumulative_points_pass_through_as_increments() -> None:
    a, _ = acc()
    assert a.add_point(point(value=0.5, end=T0 + 60 * S, temporality="cumulative")) == "first"
    assert a.add_point(point(value=0.75, end=T0 + 120 * S, temporality="cumulative")) == "counted"
    assert a.add_point(point(value=0.75, end=T0 + 180 * S, temporality="cumulative")) == "counted"
    assert cost(a) == 0.75
    # another session's cumulative stream adds to the same series
    a.add_point(point(value=0.25, end=T0 + 60 * S, temporality="cumulative", session="s2"))
    assert cost(a) == 1.0


def test_cumulative_reset_by_decrease_and_by_new_start() -> None:
    a, _ = acc()
    a.add_point(point(value=5.0, end=T0 + 60 * S, temporality="cumulative"))
    assert a.add_point(point(value=2.0, end=T0 + 120 * S, temporality="cumulative")) == "reset"  # value went down
    assert cost(a) == 7.0
    restarted = point(value=4.0, start=T0 + 150 * S, end=T0 + 180 * S, temporality="cumulative")
    assert a.add_point(restarted) == "reset"  # same value path, new start time
    assert cost(a) == 11.0
    assert a.add_point(point(value=4.5, start=T0 + 150 * S, end=T0 + 240 * S, temporality="cumulative")) == "counted"
    assert cost(a) == 11.5


def test_cumulative_out_of_order_is_ignored() -> None:
    a, _ = acc()
    a.add_point(point(value=5.0, end=T0 + 120 * S, temporality="cumulative"))
    assert a.add_point(point(value=3.0, end=T0 + 60 * S, temporality="cumulative")) == "out_of_order"
    assert cost(a) == 5.0


def test_old_cumulative_stream_first_seen_only_sets_the_baseline() -> None:
    """A stream older than series_expiration without state (expired, or from before a restart) is not recounted."""
    a, _ = acc(series_expiration=3600)
    old = point(value=40.0, start=T0, end=T0 + 2 * 3600 * S, temporality="cumulative")
    assert a.add_point(old) == "baseline"
    assert cost(a) == 0.0
    assert a.add_point(point(value=41.5, start=T0, end=T0 + 2 * 3600 * S + 60 * S, temporality="cumulative")) == (
        "counted"
    )
    assert cost(a) == 1.5


def test_warmup_teaches_state_without_counting() -> None:
    """After a restart the tailer re-reads recent points with count=False: the next live point adds only its delta."""
    a, _ = acc()
    assert a.add_point(point(value=3.0, end=T0 + 60 * S, temporality="cumulative"), count=False) == "warmup"
    assert a.add_point(point(value=1.0, end=T0 + 60 * S, session="s2"), count=False) == "warmup"
    assert a.snapshot() == []
    assert a.add_point(point(value=3.25, end=T0 + 120 * S, temporality="cumulative")) == "counted"
    assert cost(a) == 0.25
    assert a.add_point(point(value=1.0, end=T0 + 60 * S, session="s2")) == "out_of_order"  # delta already seen


# ---------------------------------------------------------------------------------------------------------------
# types, validity, generic metrics


def test_unsupported_and_invalid_points_are_counted_not_exposed() -> None:
    a, _ = acc()
    assert a.add_point(point(monotonic=False)) == "unsupported"  # delta non-monotonic sum
    assert a.add_point(point(temporality="unspecified")) == "unsupported"
    assert a.add_point(point(mtype="histogram", temporality="delta")) == "unsupported"
    assert a.add_point(point(name="http.server.duration")) == "not_claude_code"
    assert a.add_point(point(value=-1.0)) == "invalid"
    assert a.add_point(point(value=float("nan"))) == "invalid"
    assert a.add_point(point(value=True)) == "invalid"  # type: ignore[arg-type]
    assert a.add_point(point(end=0)) == "invalid"
    assert a.add_point({}) == "not_claude_code"
    assert a.snapshot() == []
    assert a.stats().ignored == {"unsupported": 3, "not_claude_code": 2, "invalid": 4}


def test_generic_counter_and_gauge() -> None:
    a, _ = acc()
    ctr = point(name="claude_code.subagent.count", unit="", value=2.0, agent_type="explore", session="s1")
    a.add_point(ctr)
    a.add_point({**ctr, "attributes": {**ctr["attributes"], "session.id": "s2"}})
    assert (
        a.value(
            "claude_code_subagent_count_total",
            agent_type="explore",
            model="claude-opus-5-5",
            query_source="main",
            terminal_type="dumb",
        )
        == 4.0
    )

    g1 = point(name="claude_code.context.size", unit="By", mtype="gauge", temporality=None, value=100.0)
    g2 = point(name="claude_code.context.size", unit="By", mtype="gauge", temporality=None, value=50.0, session="s2")
    a.add_point(g1)
    a.add_point(g2)
    labels = {"model": "claude-opus-5-5", "query_source": "main", "terminal_type": "dumb"}
    assert a.value("claude_code_context_size_bytes", **labels) == 150.0
    a.add_point({**g1, "value": 10.0, "time_unix_nano": g1["time_unix_nano"] + S})  # last value per stream
    assert a.value("claude_code_context_size_bytes", **labels) == 60.0
    fams = {f.name: f for f in a.snapshot()}
    assert fams["claude_code_context_size_bytes"].kind == "gauge"
    assert fams["claude_code_context_size_bytes"].unit == "bytes"
    assert fams["claude_code_subagent_count_total"].kind == "counter"
    # non-monotonic cumulative sum -> gauge
    nm = point(name="claude_code.queue.depth", unit="1", temporality="cumulative", monotonic=False, value=3.0)
    assert a.add_point(nm) == "counted"
    assert {f.name: f.kind for f in a.snapshot()}["claude_code_queue_depth"] == "gauge"


def test_name_conflicts_are_refused() -> None:
    a, _ = acc()
    # would be named like an event-derived counter
    assert a.add_point(point(name="claude_code.tool_decisions", unit="")) == "name_conflict"
    # a gauge sharing the exposition name of a fixed counter family
    g = point(name="claude_code.session.count", mtype="gauge", temporality=None, unit="")
    assert a.add_point(g) == "name_conflict"
    # a second OTel name mapping to an existing generic family
    assert a.add_point(point(name="claude_code.x.y", unit="")) == "counted"
    assert a.add_point(point(name="claude_code.x_y", unit="")) == "name_conflict"
    assert a.stats().ignored == {"name_conflict": 3}


def test_fixed_metric_labels_model_suffix_and_mcp() -> None:
    a, _ = acc(mcp_servers=["github"])
    a.add_point(point(value=0.04, model="claude-opus-4-8[1m]"))
    a.add_point(point(value=0.01, model="claude-opus-4-8", session="s2"))
    assert cost(a, "claude-opus-4-8") == pytest.approx(0.05)
    dec = point(
        name="claude_code.code_edit_tool.decision",
        unit="",
        tool_name="mcp__jira__edit",
        decision="reject",
        source="user_reject",
        language="Python",
    )
    a.add_point(dec)
    assert (
        a.value(
            "claude_code_code_edit_tool_decision_total",
            tool_name="mcp:other",
            decision="reject",
            source="user_reject",
            language="Python",
        )
        == 1.0
    )


# ---------------------------------------------------------------------------------------------------------------
# expiry and overflow


def test_idle_series_and_streams_expire_and_restart_from_zero() -> None:
    a, clock = acc(series_expiration=3600)
    a.add_point(point(value=2.0))
    a.add_point(point(name="claude_code.session.count", unit="", value=1.0))
    first = {f.name: f for f in a.snapshot()}[COST].samples[0][2]
    clock.now += 1800
    a.add_point(point(name="claude_code.session.count", unit="", value=1.0, session="s2"))
    assert a.expire() == 0
    clock.now += 1801  # cost idle for 3601 s, sessions for 1801 s
    assert a.expire() == 1
    assert cost(a) is None
    assert a.value(SESSIONS) == 2.0
    assert a.streams() == 1
    clock.now += 5
    a.add_point(point(value=0.5, start=T0 + 60 * S, end=T0 + 120 * S))
    assert cost(a) == 0.5  # a new series: Prometheus sees a reset
    assert {f.name: f for f in a.snapshot()}[COST].samples[0][2] > first


def test_expired_gauge_stream_leaves_the_sum() -> None:
    a, clock = acc(series_expiration=600)
    g = point(name="claude_code.context.size", unit="By", mtype="gauge", temporality=None, value=100.0)
    a.add_point(g)
    clock.now += 400
    a.add_point({**g, "value": 5.0, "attributes": {**g["attributes"], "session.id": "s2"}})
    labels = {"model": "claude-opus-5-5", "query_source": "main", "terminal_type": "dumb"}
    assert a.value("claude_code_context_size_bytes", **labels) == 105.0
    clock.now += 300
    a.expire()
    assert a.value("claude_code_context_size_bytes", **labels) == 5.0


def test_cardinality_cap_folds_into_one_overflow_series() -> None:
    a, clock = acc(max_series_per_metric=2, series_expiration=600)
    for i, model in enumerate(["m1", "m2", "m3", "m4", "m3"]):
        a.add_point(point(value=1.0, model=model, session=f"s{i}"))
    assert cost(a, "m1") == 1.0 and cost(a, "m2") == 1.0
    assert cost(a, "m3") is None
    assert a.value(COST, model=OVERFLOW, query_source=OVERFLOW) == 3.0
    assert a.stats().overflow == {COST: 3}
    assert a.stats().series[COST] == 3
    assert sum(v for f in a.snapshot() if f.name == COST for _, v, _ in f.samples) == 5.0  # sum() stays right
    # slots free again once regular series expire
    clock.now += 300
    a.add_point(point(value=1.0, model="m1", session="s9", start=T0 + 60 * S, end=T0 + 120 * S))
    clock.now += 301
    a.expire()  # m2 and the overflow series expired, m1 kept
    a.add_point(point(value=1.0, model="m5", session="s10"))
    assert cost(a, "m5") == 1.0
    assert a.value(COST, model=OVERFLOW, query_source=OVERFLOW) is None


def test_event_counters_overflow_too() -> None:
    a, _ = acc(max_series_per_metric=1)
    for i, tool in enumerate(["Bash", "Edit"]):
        a.add_record({"id": f"r{i}", "kind": "tool_result", "tool": {"name": tool, "success": True}})
    assert a.value("claude_code_tool_results_total", tool="Bash", success="true") == 1.0
    assert a.value("claude_code_tool_results_total", tool=OVERFLOW, success=OVERFLOW) == 1.0
    assert a.stats().overflow == {"claude_code_tool_results_total": 1}


# ---------------------------------------------------------------------------------------------------------------
# per-user


def test_per_user_off_has_no_user_label() -> None:
    a, _ = acc()
    a.add_point(point(**{"user.email": "alice@example.com"}))
    fam = {f.name: f for f in a.snapshot()}[COST]
    assert "user" not in fam.labelnames
    assert "alice" not in repr(a.snapshot())


def test_per_user_allowlist_and_hash() -> None:
    a, _ = acc(users=UserLabeler("allowlist", ["alice@example.com"]))
    a.add_point(point(value=1.0, **{"user.email": "Alice@example.com"}))
    a.add_point(point(value=2.0, session="s2", **{"user.email": "bob@example.com"}))
    a.add_point(point(value=4.0, session="s3", **{"user.id": "u3"}))
    assert a.value(COST, model="claude-opus-5-5", query_source="main", user="alice@example.com") == 1.0
    assert a.value(COST, model="claude-opus-5-5", query_source="main", user="other") == 6.0
    assert {f.name: f for f in a.snapshot()}[COST].labelnames == ("model", "query_source", "user")
    a.add_record({"id": "r1", "kind": "api_request", "model": "m", "user": {"email": "alice@example.com"}})
    assert a.value("claude_code_api_requests_total", model="m", user="alice@example.com") == 1.0

    labeler = UserLabeler("hash", salt="0123456789abcdef")
    h, _ = acc(users=labeler)
    h.add_point(point(value=1.0, resource={**RESOURCE, "enduser.id": "carol@example.com"}))
    h.add_point(point(value=1.0, session="s2", **{"enduser.id": "carol@example.com"}))
    pseudonym = labeler.label("carol@example.com", None)
    assert h.value(COST, model="claude-opus-5-5", query_source="main", user=pseudonym) == 2.0
    assert "carol" not in repr(h.snapshot())


# ---------------------------------------------------------------------------------------------------------------
# records


def test_event_derived_counters() -> None:
    a, _ = acc()
    records = [
        {
            "id": "1",
            "kind": "tool_decision",
            "tool": {"name": "Bash", "decision": "reject", "decision_source": "config", "approval_mode": "automatic"},
        },
        {
            "id": "2",
            "kind": "tool_decision",
            "tool": {
                "name": "mcp__github__create_pr",
                "decision": "accept",
                "decision_source": "user_temporary",
                "approval_mode": "manual",
            },
        },
        {"id": "3", "kind": "tool_result", "tool": {"name": "Bash", "success": False}},
        {
            "id": "4",
            "kind": "api_request",
            "model": "claude-opus-4-8",
            "cost_usd": 0.011228,
            "tokens": {"input": 100, "output": 7, "cache_read": 0, "cache_creation": 3},
        },
        {"id": "5", "kind": "api_request", "model": "claude-opus-4-8[1m]", "cost_usd": 0.5},
        {"id": "6", "kind": "api_error", "model": "claude-opus-4-8", "api": {"status_code": 529}},
        {"id": "7", "kind": "file_change", "file": {"path": "/x", "operation": "edit"}},
        {"id": "8", "kind": "user_prompt"},
        {"id": "9", "kind": "event", "event": "claude_code.assistant_response"},
    ]
    counted = [a.add_record(r) for r in records]
    assert counted == [True] * 7 + [False, False]
    tdec = "claude_code_tool_decisions_total"
    assert a.value(tdec, tool="Bash", decision="reject", source="config", approval_mode="automatic") == 1.0
    assert a.value(tdec, tool="mcp:github", decision="accept", source="user_temporary", approval_mode="manual") == 1.0
    assert a.value("claude_code_tool_results_total", tool="Bash", success="false") == 1.0
    assert a.value("claude_code_api_requests_total", model="claude-opus-4-8") == 2.0
    assert a.value("claude_code_api_cost_usd_total", model="claude-opus-4-8") == pytest.approx(0.511228)
    assert a.value("claude_code_api_tokens_total", model="claude-opus-4-8", type="input") == 100
    assert a.value("claude_code_api_tokens_total", model="claude-opus-4-8", type="cache_read") == 0
    assert a.value("claude_code_api_errors_total", model="claude-opus-4-8", status_code="529") == 1.0
    assert a.value("claude_code_file_changes_total", operation="edit") == 1.0
    assert a.stats().records == 7


def test_records_stored_twice_count_once() -> None:
    """A client retry that landed in two shards: same record id."""
    a, _ = acc()
    rec = {"id": "abc", "kind": "api_request", "model": "m", "cost_usd": 1.0}
    assert a.add_record(rec) is True
    assert a.add_record(dict(rec)) is False
    assert a.value("claude_code_api_cost_usd_total", model="m") == 1.0
    assert a.stats().ignored == {"duplicate_record": 1}


def test_malformed_records_do_not_raise() -> None:
    a, _ = acc()
    for rec in (
        {"kind": "tool_decision", "tool": "Bash"},
        {"kind": "api_request", "cost_usd": "free", "tokens": [1]},
        {"kind": "api_error", "api": None},
        {"kind": "file_change", "file": 3},
        {"kind": "tool_result", "user": "x"},
    ):
        a.add_record(rec)
    assert a.value("claude_code_api_requests_total") == 1.0
    assert a.value("claude_code_file_changes_total") == 1.0


def test_snapshot_is_consistent_under_concurrent_writes() -> None:
    a, _ = acc()
    stop = threading.Event()

    def writer() -> None:
        i = 0
        while not stop.is_set():
            a.add_point(point(value=1.0, start=T0 + i * S, end=T0 + (i + 1) * S))
            i += 1

    t = threading.Thread(target=writer)
    t.start()
    try:
        for _ in range(200):
            for fam in a.snapshot():
                for values, _, _ in fam.samples:
                    assert len(values) == len(fam.labelnames)
    finally:
        stop.set()
        t.join()
    assert cost(a) == a.stats().points


def test_bad_arguments() -> None:
    with pytest.raises(ValueError, match="max_series_per_metric"):
        Accumulator(max_series_per_metric=0)
    with pytest.raises(ValueError, match="series_expiration"):
        Accumulator(series_expiration=0)


def test_the_same_api_request_in_two_records_counts_once() -> None:
    """Two request bodies carrying the same api_request (a re-sent export under another record id, or colliding
    sessions): cost and tokens are counted once per request id."""
    a, _ = acc()
    first = {"id": "a1", "kind": "api_request", "model": "m", "cost_usd": 0.25, "tokens": {"input": 10}}
    first["api"] = {"request_id": "req_1"}
    again = dict(first, id="b2")
    other = dict(first, id="c3", api={"client_request_id": "creq_2"})
    assert [a.add_record(r) for r in (first, again, other)] == [True, False, True]
    assert a.value("claude_code_api_cost_usd_total", model="m") == pytest.approx(0.5)
    assert a.value("claude_code_api_tokens_total", model="m", type="input") == 20
    assert a.value("claude_code_api_requests_total", model="m") == 2
    assert a.stats().ignored == {"duplicate_request": 1}


def test_permission_mode_hook_and_mcp_counters() -> None:
    a, _ = acc(mcp_servers=["audit"])
    records = [
        {
            "id": "1",
            "kind": "permission_mode_change",
            "permission_mode": {"from": "default", "to": "bypassPermissions"},
        },
        {"id": "2", "kind": "hook_execution", "hook": {"event": "PreToolUse", "phase": "start"}},
        {
            "id": "3",
            "kind": "hook_execution",
            "hook": {"event": "PreToolUse", "phase": "complete", "outcome": "blocking"},
        },
        {"id": "4", "kind": "mcp_connection", "mcp": {"server": "audit", "status": "connected"}},
        {"id": "5", "kind": "mcp_connection", "mcp": {"server": "evil", "status": "connected"}},
        {"id": "6", "kind": "mcp_connection", "mcp": {"status": "failed"}},
        {
            "id": "7",
            "kind": "tool_result",
            "tool": {"name": "mcp_tool", "source": "mcp", "mcp_server": "audit", "success": True},
        },
    ]
    assert all(a.add_record(r) for r in records)
    mode = "claude_code_permission_mode_changes_total"
    assert a.value(mode, from_mode="default", to_mode="bypassPermissions") == 1
    assert a.value("claude_code_hook_executions_total", hook_event="PreToolUse", outcome="blocking") == 1
    conn = "claude_code_mcp_connections_total"
    assert a.value(conn, server="audit", status="connected", allowed="true") == 1
    assert a.value(conn, server="other", status="connected", allowed="false") == 1
    assert a.value(conn, server="unknown", status="failed", allowed="unknown") == 1
    assert a.value("claude_code_mcp_tool_calls_total", server="audit", success="true") == 1
