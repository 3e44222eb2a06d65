"""Datadog metrics: which counters records and Claude Code metric points become (bounded tags, delta and cumulative),
bucket aggregation with last-write-wins resubmission, request bodies within the series limits, and the store tailer
against the strict fake (old points not sent but counted, restart without double counting, 429 / 413 / 400 / 403
and points the API drops)."""

from __future__ import annotations

import gzip
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import orjson
import pytest
from prometheus_client import CollectorRegistry

import exporters
from collector.delivery.api import METRICS, RECORDS, SinkContext
from collector.pipeline import metric_point_key, record_row
from collector.store.sqlite import AuditStore
from collector.telemetry.selfmetrics import SelfMetrics
from exporters.datadog import DatadogExporter
from exporters.datadog.series import (
    MAX_AGE_SECONDS,
    POINT_TAG_ATTRIBUTES,
    Aggregator,
    Increment,
    PointConverter,
    build_bodies,
    record_increments,
    split_series,
)
from exporters.datadog.tailer import SeriesTailer
from tests.fakes.datadog import DatadogFake

KEY = "0123456789abcdef0123456789abcdef"
NOW = 1_795_650_000.0
EMAIL = "jdoe@example.com"
SESSION = "d2369f49-d11c-4322-b8a2-818d9c23de10"


class Clock:
    def __init__(self, now: float = NOW) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def datadog_view(points: list[Any]) -> dict[tuple[str, tuple[str, ...]], float]:
    """What Datadog would show per (metric, tags): the last value per timestamp, summed over timestamps."""
    last: dict[tuple[str, tuple[str, ...], int], float] = {}
    for p in points:
        last[(p.metric, tuple(p.tags), p.timestamp)] = p.value
    out: dict[tuple[str, tuple[str, ...]], float] = {}
    for (metric, tags, _), value in last.items():
        out[(metric, tags)] = out.get((metric, tags), 0.0) + value
    return out


def total(view: dict[tuple[str, tuple[str, ...]], float], metric: str, *tags: str) -> float:
    return sum(v for (m, t), v in view.items() if m == metric and all(tag in t for tag in tags))


# ---------------------------------------------------------------------------------------------------------------
# what is counted


def test_record_increments_per_kind():
    t = NOW
    decision = {
        "kind": "tool_decision",
        "tool": {"name": "Bash", "decision": "reject", "decision_source": "config", "approval_mode": "automatic"},
        "user": {"email": EMAIL},
        "session": {"id": SESSION},
    }
    incs = record_increments(decision, t)
    assert incs == [
        Increment("claude_code.audit.records", ("kind:tool_decision",), t, 1.0),
        Increment(
            "claude_code.audit.tool_decisions",
            ("tool:Bash", "decision:reject", "source:config", "approval_mode:automatic"),
            t,
            1.0,
            item=False,  # the record is accounted for once, by its audit.records increment
        ),
    ]
    request = {
        "kind": "api_request",
        "model": "claude-opus-5-5",
        "cost_usd": 0.25,
        "tokens": {"input": 100, "output": 7, "cache_read": 0, "cache_creation": 3},
    }
    by_metric = {(i.metric, i.tags): i.value for i in record_increments(request, t)}
    assert by_metric[("claude_code.audit.api_requests", ("model:claude-opus-5-5",))] == 1
    assert by_metric[("claude_code.audit.cost_usd", ("model:claude-opus-5-5",))] == 0.25
    assert by_metric[("claude_code.audit.tokens", ("model:claude-opus-5-5", "type:input"))] == 100
    assert by_metric[("claude_code.audit.tokens", ("model:claude-opus-5-5", "type:cache_creation"))] == 3
    assert ("claude_code.audit.tokens", ("model:claude-opus-5-5", "type:cache_read")) not in by_metric
    error = {"kind": "api_error", "model": "m", "api": {"status_code": 529}}
    assert record_increments(error, t)[1] == Increment(
        "claude_code.audit.api_errors", ("model:m", "status_code:529"), t, 1, item=False
    )
    result = {"kind": "tool_result", "tool": {"name": "Write", "success": False}}
    assert record_increments(result, t)[1].tags == ("tool:Write", "success:false")
    change = {"kind": "file_change", "tool": {"name": "Edit"}, "file": {"operation": "edit", "path": "/x"}}
    assert record_increments(change, t)[1] == Increment(
        "claude_code.audit.file_changes", ("tool:Edit", "operation:edit"), t, 1, item=False
    )
    for inc in record_increments(decision, t):
        assert not any(EMAIL in tag or SESSION in tag for tag in inc.tags)


def test_the_bridges_own_records_count_nothing():
    head = {"kind": "chain_head", "event": "ccbridge.chain_head", "chain_head": {"shard": 0, "seq": 9}}
    assert record_increments(head, NOW) == []
    assert record_increments({"kind": "event", "event": "ccbridge.something_new"}, NOW) == []


def point(name: str, value: float, *, t: float = NOW, temporality: str = "delta", start: float | None = None,
          **attrs: Any) -> dict[str, Any]:  # fmt: skip
    return {
        "name": name,
        "type": "sum",
        "temporality": temporality,
        "monotonic": True,
        "unit": "tokens" if "token" in name else "",
        "value": value,
        "time_unix_nano": int(t * 1e9),
        "start_time_unix_nano": int((start if start is not None else t - 5) * 1e9),
        "attributes": {"user.email": EMAIL, "session.id": SESSION, "user.id": "u" * 64, **attrs},
        "resource": {"service.name": "claude-code"},
    }


def test_points_keep_only_bounded_tags():
    conv = PointConverter(dict(POINT_TAG_ATTRIBUTES))
    inc = conv.convert(point("claude_code.token.usage", 42, model="claude-opus-4-8[1m]", type="input"), NOW)
    assert isinstance(inc, Increment)
    assert inc.metric == "claude_code.token.usage" and inc.value == 42 and inc.unit == "token"
    assert inc.tags == ("model:claude-opus-4-8_1m", "type:input")
    extra = PointConverter({**POINT_TAG_ATTRIBUTES, "team.id": "team_id"})
    inc = extra.convert(point("claude_code.session.count", 1, **{"team.id": "platform"}), NOW)
    assert isinstance(inc, Increment) and inc.tags == ("team_id:platform",)


def test_cumulative_points_become_deltas_per_stream():
    conv = PointConverter({"type": "type"})
    start = NOW - 100
    values = []
    for i, v in enumerate([10.0, 15.0, 15.0, 3.0, 8.0]):
        inc = conv.convert(point("claude_code.lines_of_code.count", v, t=start + 10 * i, temporality="cumulative",
                                 start=start, type="added"), NOW)  # fmt: skip
        assert isinstance(inc, Increment)
        values.append(inc.value)
    assert values == [10.0, 5.0, 0.0, 3.0, 5.0]  # 3 after 15: the stream restarted
    other = conv.convert(
        point("claude_code.lines_of_code.count", 4, temporality="cumulative", start=start, type="removed"), NOW
    )
    assert isinstance(other, Increment) and other.value == 4  # another stream


def test_a_cumulative_stream_that_began_before_the_window_only_sets_a_baseline():
    conv = PointConverter({})
    old_start = NOW - MAX_AGE_SECONDS - 600
    assert (
        conv.convert(point("claude_code.cost.usage", 9.0, temporality="cumulative", start=old_start), NOW) == "baseline"
    )
    inc = conv.convert(point("claude_code.cost.usage", 9.5, t=NOW + 1, temporality="cumulative", start=old_start), NOW)
    assert isinstance(inc, Increment) and inc.value == pytest.approx(0.5)


def test_unusable_points_are_named():
    conv = PointConverter({})
    assert conv.convert({**point("x", 1), "type": "gauge"}, NOW) == "unsupported"
    assert conv.convert({**point("x", 1), "value": "1"}, NOW) == "invalid"
    assert conv.convert({**point("x", 1), "time_unix_nano": None}, NOW) == "invalid"


# ---------------------------------------------------------------------------------------------------------------
# aggregation and bodies


def test_buckets_sum_by_event_time_and_resend_full_totals():
    agg = Aggregator(10, ("env:prod",), "bridge-01")
    for t in (NOW + 1, NOW + 2, NOW + 12):
        assert agg.add(Increment("m", ("a:b",), t, 2.0), NOW + 15)
    series = agg.pending()
    assert series == [
        {
            "metric": "m",
            "type": 1,
            "interval": 10,
            "points": [{"timestamp": int(NOW), "value": 4.0}, {"timestamp": int(NOW) + 10, "value": 2.0}],
            "tags": ["env:prod", "a:b"],
            "resources": [{"type": "host", "name": "bridge-01"}],
        }
    ]
    agg.mark_sent(series)
    assert agg.pending() == []
    agg.add(Increment("m", ("a:b",), NOW + 3, 1.0), NOW + 20)  # late: the first bucket is sent again, in full
    assert agg.pending()[0]["points"] == [{"timestamp": int(NOW), "value": 5.0}]


def test_too_old_is_refused_future_is_clamped_and_unsent_buckets_expire_counted():
    agg = Aggregator(10)
    assert not agg.add(Increment("m", (), NOW - MAX_AGE_SECONDS - 1, 1.0), NOW)
    assert agg.add(Increment("m", (), NOW + 3600, 1.0), NOW)
    assert agg.pending()[0]["points"][0]["timestamp"] == int(NOW) // 10 * 10
    assert agg.add(Increment("m", (), NOW - 100, 1.0), NOW)
    assert agg.add(Increment("m", (), NOW - 100, 1.0), NOW)
    assert agg.expire(NOW + MAX_AGE_SECONDS) == 2
    assert len(agg.pending()) == 1


def test_bodies_stay_within_the_series_limits():
    series = [
        {"metric": f"claude_code.m{i}", "type": 1, "interval": 10,
         "points": [{"timestamp": int(NOW) + j, "value": float(j)} for j in range(40)],
         "tags": [f"t:{i:06d}", "x:" + "y" * 150]}
        for i in range(6000)
    ]  # fmt: skip
    bodies = build_bodies(series, compress=True)
    assert len(bodies) > 1
    sent = []
    for group, body in bodies:
        raw = gzip.decompress(body)
        assert len(body) <= 512_000 and len(raw) < 5_242_880
        assert orjson.loads(raw) == {"series": group}
        sent.extend(group)
    assert sent == series
    plain = build_bodies(series[:10], compress=False)
    assert orjson.loads(plain[0][1]) == {"series": series[:10]}


def test_split_series_halves_series_then_points():
    a = {"metric": "a", "points": [{"timestamp": 1, "value": 1.0}]}
    b = {"metric": "b", "points": [{"timestamp": 1, "value": 1.0}, {"timestamp": 2, "value": 2.0}]}
    assert split_series([a, b]) == [[a], [b]]
    assert split_series([b]) == [[{**b, "points": b["points"][:1]}], [{**b, "points": b["points"][1:]}]]
    assert split_series([a]) == []


# ---------------------------------------------------------------------------------------------------------------
# the tailer against the fake


class Rig:
    """A one-shard store, an exporter bound to it and a tailer on a test clock."""

    def __init__(self, data_dir: Path, fake: DatadogFake, clock: Clock, **section: Any) -> None:
        self.data_dir = data_dir
        self.fake = fake
        self.clock = clock
        self.store = AuditStore(data_dir, shard=0, synchronous="normal").open()
        self.section = section
        self.n = 0
        self.exporter, self.tailer = self.new_tailer()

    def new_tailer(self) -> tuple[DatadogExporter, SeriesTailer]:
        section = {"api_key": KEY, "logs_endpoint": self.fake.url, "metrics_endpoint": self.fake.url,
                   "hostname": "bridge-01", "metrics_interval": 10, **self.section}  # fmt: skip
        cfg = exporters.build_configs({"datadog/m": section})["datadog/m"]
        exp = exporters.create("datadog/m", cfg)
        assert isinstance(exp, DatadogExporter)
        self.metrics = SelfMetrics(CollectorRegistry())
        exp.bind(self.context())
        tailer = exp._new_tailer()
        assert tailer is not None
        tailer.clock = self.clock
        return exp, tailer

    def context(self) -> SinkContext:
        return SinkContext(Path(self.data_dir), (0,), 0, self.metrics)

    def add_record(self, kind: str, t: float, **fields: Any) -> None:
        self.n += 1
        rec = {"id": f"{self.n:032x}", "kind": kind, "user": {"email": EMAIL}, "session": {"id": SESSION}, **fields}
        self.store.append_sync(records=[record_row(rec, int(t * 1e9), int(self.clock.now * 1000))])

    def add_point(self, p: dict[str, Any]) -> None:
        self.store.append_sync(metrics=[(p["time_unix_nano"] // 1_000_000, metric_point_key(p), p["name"],
                                         orjson.dumps(p))])  # fmt: skip

    def skipped(self, reason: str) -> float:
        value = self.metrics.registry.get_sample_value(
            "ccbridge_exporter_metric_points_skipped_total", {"destination": "datadog/m", "reason": reason}
        )
        return value or 0.0

    async def close(self) -> None:
        self.tailer.close()
        await self.exporter.close()
        self.store.close()


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
async def fake(clock: Clock) -> AsyncIterator[DatadogFake]:
    async with DatadogFake([KEY], clock=clock) as f:
        yield f


@pytest.fixture
async def rig(tmp_path: Path, fake: DatadogFake, clock: Clock) -> AsyncIterator[Rig]:
    r = Rig(tmp_path / "data", fake, clock)
    yield r
    await r.close()


def decision(rig: Rig, t: float, decision: str = "accept") -> None:
    tool = {"name": "Bash", "decision": decision, "decision_source": "config", "approval_mode": "automatic"}
    rig.add_record("tool_decision", t, tool=tool)


async def test_fresh_records_and_points_become_count_series(rig, fake):
    for i in range(3):
        decision(rig, NOW - 30 + i)
    decision(rig, NOW - 5, "reject")
    rig.add_record("api_request", NOW - 20, model="claude-opus-5-5", cost_usd=0.5, tokens={"input": 10})
    rig.add_point(point("claude_code.token.usage", 10, t=NOW - 20, model="claude-opus-5-5", type="input"))
    rig.add_point(point("claude_code.commit.count", 2, t=NOW - 15))
    await rig.tailer.step()
    view = datadog_view(fake.points)
    assert total(view, "claude_code.audit.tool_decisions", "decision:accept") == 3
    assert total(view, "claude_code.audit.tool_decisions", "decision:reject", "source:config") == 1
    assert total(view, "claude_code.audit.cost_usd", "model:claude-opus-5-5") == 0.5
    assert total(view, "claude_code.token.usage", "type:input", "model:claude-opus-5-5") == 10
    assert total(view, "claude_code.commit.count") == 2
    for p in fake.points:
        assert p.type == 1 and p.interval == 10 and p.host == "bridge-01"
        assert "ccbridge_worker:0" in p.tags
        assert not any(EMAIL in tag or SESSION in tag or "u" * 64 in tag for tag in p.tags)
    assert {s.get("unit") for s in fake.series if s["metric"] == "claude_code.token.usage"} == {"token"}
    assert fake.dropped_points == []
    (req,) = [r for r in fake.requests if r.path == "/api/v2/series"]
    assert req.headers["DD-API-KEY"] == KEY and req.headers["Content-Encoding"] == "gzip"
    await rig.tailer.step()  # nothing new: nothing sent
    assert len(fake.requests) == 1


async def test_a_backlog_older_than_the_window_is_counted_not_sent(rig, fake):
    await rig.tailer.step()  # the reader has its positions: what arrives from now on is read
    for i in range(5):
        decision(rig, NOW - 2 * 3600 + i)
    rig.add_point(point("claude_code.commit.count", 1, t=NOW - 2 * 3600))
    decision(rig, NOW - 1)
    await rig.tailer.step()
    assert total(datadog_view(fake.points), "claude_code.audit.tool_decisions") == 1
    assert fake.dropped_points == []
    assert rig.skipped("too_old") == 6
    assert rig.tailer.stats.skipped == {"too_old": 6}


async def test_a_new_reader_starts_at_the_window_and_ignores_older_history(rig, fake):
    for i in range(5):
        decision(rig, NOW - 3 * 3600 + i)
    decision(rig, NOW - 30)
    decision(rig, NOW - 4 * 3600)  # stored after the first recent one: read, and counted as too old
    await rig.tailer.step()
    assert total(datadog_view(fake.points), "claude_code.audit.tool_decisions") == 1
    assert rig.tailer.stats.records == 2 and rig.skipped("too_old") == 1


async def test_chain_heads_are_neither_counted_nor_skipped(rig, fake):
    await rig.tailer.step()
    rig.add_record("chain_head", NOW - 2 * 3600, event="ccbridge.chain_head")
    rig.add_record("chain_head", NOW - 1, event="ccbridge.chain_head")
    await rig.tailer.step()
    assert fake.requests == [] and rig.tailer.stats.skipped == {} and rig.tailer.stats.records == 2


async def test_late_data_resends_the_bucket_with_its_full_total(rig, fake):
    decision(rig, NOW - 4)
    await rig.tailer.step()
    decision(rig, NOW - 3)
    rig.clock.now += 20
    await rig.tailer.step()
    assert len([r for r in fake.requests if r.path == "/api/v2/series"]) == 2
    assert total(datadog_view(fake.points), "claude_code.audit.tool_decisions") == 2


async def test_a_restart_neither_resends_nor_forgets(rig, fake):
    decision(rig, NOW - 4)
    decision(rig, NOW - 3)
    await rig.tailer.step()
    rig.tailer.close()
    requests = len(fake.requests)
    rig.exporter, rig.tailer = rig.new_tailer()
    await rig.tailer.step()
    assert len(fake.requests) == requests  # positions were saved: nothing to send again
    decision(rig, NOW - 2)  # same 10 s bucket as before the restart
    await rig.tailer.step()
    assert total(datadog_view(fake.points), "claude_code.audit.tool_decisions") == 3
    assert fake.points[-1].value == 3  # the whole bucket, rebuilt from the store, not just the new record


async def test_429_waits_for_the_server_delay_and_keeps_the_counts(rig, fake):
    decision(rig, NOW - 1)
    fake.fail_next(status=429, retry_after=30, endpoint="series")
    await rig.tailer.step()
    assert fake.points == [] and rig.tailer.not_before == NOW + 30
    rig.clock.now += 10
    await rig.tailer.step()
    assert len(fake.requests) == 1  # still waiting
    rig.clock.now += 21
    await rig.tailer.step()
    assert total(datadog_view(fake.points), "claude_code.audit.tool_decisions") == 1


async def test_413_halves_the_request_until_it_fits(rig, fake):
    for i in range(40):
        rig.add_record("api_request", NOW - 60 + i, model=f"model-{i}")
    fake.series_max_payload_bytes = 300
    await rig.tailer.step()
    assert 413 in [r.status for r in fake.requests]
    assert total(datadog_view(fake.points), "claude_code.audit.api_requests") == 40


async def test_400_drops_the_refused_series_and_counts_them(rig, fake, caplog):
    decision(rig, NOW - 1)
    fake.fail_next(status=400, endpoint="series")
    await rig.tailer.step()
    assert rig.skipped("rejected") == 2  # two series points (audit.records, audit.tool_decisions)
    assert "refused 2 series for good: HTTP 400: Bad Request" in caplog.text
    await rig.tailer.step()
    assert len(fake.requests) == 1


async def test_points_the_api_drops_are_logged_and_counted(rig, fake, caplog):
    decision(rig, NOW - 1)
    fake.clock = lambda: NOW + 2 * 3600  # the intake's clock is ahead: our point is too old for it
    await rig.tailer.step()
    assert len(fake.dropped_points) == 2 and rig.skipped("rejected") == 2
    assert "Datadog dropped 2 metric point(s)" in caplog.text


async def test_403_marks_the_destination_unhealthy_and_keeps_counts_until_too_old(rig, fake):
    decision(rig, NOW - 1)
    fake.revoke_key(KEY)
    await rig.tailer.step()
    assert rig.exporter.health() is not None and "metrics intake" in rig.exporter.health()
    assert (
        rig.metrics.registry.get_sample_value("ccbridge_exporter_auth_failures_total", {"destination": "datadog/m"})
        == 1
    )
    assert rig.tailer.aggregator.dirty
    fake.add_key(KEY)
    rig.clock.now += 31
    await rig.tailer.step()
    assert rig.exporter.health() is None
    assert total(datadog_view(fake.points), "claude_code.audit.tool_decisions") == 1


async def test_counts_that_could_not_be_sent_within_the_window_are_counted_as_too_old(rig, fake):
    decision(rig, NOW - 1)
    fake.revoke_key(KEY)
    await rig.tailer.step()
    rig.clock.now += MAX_AGE_SECONDS + 20
    await rig.tailer.step()
    assert rig.skipped("too_old") == 1 and not rig.tailer.aggregator.dirty  # one record


async def test_the_run_loop_submits_and_stops(tmp_path, fake):
    fake.clock = time.time  # this test runs on the real clock
    r = Rig(tmp_path / "loop", fake, Clock(time.time()), metrics_interval=1)
    try:
        decision(r, time.time())
        await r.exporter.start()
        assert r.exporter._tailer_task is None  # records only until started as a metric sink
        assert await r.exporter.start_metrics(r.context())
        assert r.exporter._tailer_task is not None
        await fake.wait_for_points(2, timeout=10)
    finally:
        await r.close()
    assert r.exporter._tailer_task is None


async def test_without_send_metrics_or_a_store_there_is_no_tailer(tmp_path):
    section = {"api_key": KEY, "send_metrics": False}
    exp = exporters.create("datadog", exporters.build_configs({"datadog": section})["datadog"])
    assert isinstance(exp, DatadogExporter)
    assert exp.signals == {RECORDS}  # the service never starts it as a metric sink
    ctx = SinkContext(tmp_path, (0,), 0)
    exp.bind(ctx)
    assert exp._new_tailer() is None
    assert not await exp.start_metrics(ctx)
    await exp.close()
    exp = exporters.create("datadog", exporters.build_configs({"datadog": {"api_key": KEY}})["datadog"])
    assert isinstance(exp, DatadogExporter)
    assert exp.signals == {RECORDS, METRICS}
    assert exp._new_tailer() is None  # not bound to a store yet


def test_the_age_limit_applies_to_the_bucket_start_not_the_event_time():
    agg = Aggregator(300)
    now = 1_795_650_000.0  # a multiple of 300 plus 0: buckets start at now - 3300, now - 3600, ...
    assert agg.add(Increment("m", (), now - MAX_AGE_SECONDS, 1.0), now)  # its bucket starts exactly at the limit
    assert not agg.add(Increment("m", (), now - MAX_AGE_SECONDS - 1, 1.0), now)  # bucket starts 5 min earlier
    assert agg.pending()[0]["points"] == [{"timestamp": int(now - MAX_AGE_SECONDS), "value": 1.0}]


def test_increment_tags_follow_each_records_values_and_types() -> None:
    def model_tags(model: object) -> tuple[str, ...]:
        return record_increments({"kind": "api_request", "model": model}, NOW)[1].tags

    assert model_tags(1) == ("model:1",)
    assert model_tags(True) == ("model:true",)
    assert model_tags("opus") == model_tags("opus") == ("model:opus",)
    assert model_tags("sonnet") == ("model:sonnet",)
    assert model_tags("x" * 300) == ("model:" + "x" * 200,)
    results = [
        record_increments({"kind": "tool_result", "tool": {"name": "Bash", "success": success}}, NOW)[1].tags
        for success in (True, 1, False, 0)
    ]
    assert results == [
        ("tool:Bash", "success:true"),
        ("tool:Bash", "success:1"),
        ("tool:Bash", "success:false"),
        ("tool:Bash", "success:0"),
    ]
