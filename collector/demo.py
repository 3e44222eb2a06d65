"""Realistic synthetic Claude Code telemetry: the events and metrics a real CLI session emits.

Used by ``ccbridge demo`` (so a newcomer without Claude Code sees records arrive) and by the load generators in
``bench/``. The shapes follow the recordings in ``tests/fixtures/claude-code``: event name in the body, ``event.name``
and ``event.sequence`` attributes, numbers as strings where the CLI sends strings, delta double-valued Sums.
"""

from __future__ import annotations

import random
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceRequest
from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import ExportMetricsServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue
from opentelemetry.proto.logs.v1.logs_pb2 import LogRecord
from opentelemetry.proto.metrics.v1.metrics_pb2 import AggregationTemporality

CLI_VERSION = "2.1.332"
MODELS = ("claude-opus-5-5", "claude-sonnet-5", "claude-haiku-4-5")
COMMANDS = (
    ("echo", "echo hi", "Print hi"),
    ("ls", "ls -la src", "List sources"),
    ("pytest", "pytest -q tests", "Run the tests"),
    ("git", "git status", "Show working tree status"),
    ("rm", "rm -f build/output.log", "Remove the log"),
)
FILES = ("src/app.py", "README.md", "tests/test_app.py", "docs/index.md", "hello.txt")


def _kv(key: str, value: Any) -> KeyValue:
    if isinstance(value, bool):
        return KeyValue(key=key, value=AnyValue(bool_value=value))
    if isinstance(value, int):
        return KeyValue(key=key, value=AnyValue(int_value=value))
    if isinstance(value, float):
        return KeyValue(key=key, value=AnyValue(double_value=value))
    return KeyValue(key=key, value=AnyValue(string_value=str(value)))


@dataclass
class DemoSession:
    """One simulated CLI session: identity plus a running ``event.sequence``."""

    email: str
    user_id: str = field(default_factory=lambda: uuid.uuid4().hex + uuid.uuid4().hex)
    session_id: str = field(default_factory=lambda: str(uuid.uuid4()))
    organization_id: str = "3f0c5b8e-9a43-4c55-9d0c-2a7f0e4c1b11"
    sequence: int = 0
    rng: random.Random = field(default_factory=random.Random)
    usage: dict[str, dict[str, float]] = field(default_factory=dict)
    """Per model: ``cost`` (USD) and tokens by metric type, summed over the ``api_request`` events sent so far; the
    session's metric points report exactly these, as Claude Code's do."""
    edit_decisions: dict[tuple[str, str, str], int] = field(default_factory=dict)
    """(tool, decision, source) -> count of Edit/Write decisions, for ``claude_code.code_edit_tool.decision``."""

    def _add_usage(self, model: str, cost: float, tokens: dict[str, int]) -> None:
        u = self.usage.setdefault(
            model, {"cost": 0.0, "input": 0.0, "output": 0.0, "cacheRead": 0.0, "cacheCreation": 0.0}
        )
        u["cost"] += cost
        for k, v in tokens.items():
            u[k] += v

    def standard(self) -> list[tuple[str, Any]]:
        return [
            ("user.id", self.user_id),
            ("session.id", self.session_id),
            ("organization.id", self.organization_id),
            ("user.email", self.email),
            ("terminal.type", "vscode"),
            ("anthropic.provider", "firstParty"),
        ]

    def event(self, name: str, attrs: list[tuple[str, Any]], t_ns: int) -> LogRecord:
        ts = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(t_ns / 1e9)) + f".{(t_ns // 1_000_000) % 1000:03d}Z"
        all_attrs = [
            *self.standard(),
            ("event.name", name),
            ("event.timestamp", ts),
            ("event.sequence", self.sequence),
            *attrs,
        ]
        self.sequence += 1
        return LogRecord(
            time_unix_nano=t_ns,
            observed_time_unix_nano=t_ns,
            body=AnyValue(string_value=f"claude_code.{name}"),
            attributes=[_kv(k, v) for k, v in all_attrs],
        )

    def prompt_turn(self, t_ns: int, tools: int = 3, reject_rate: float = 0.15) -> list[LogRecord]:
        """One user prompt with ``tools`` tool calls, like the recorded reference run."""
        rng = self.rng
        prompt_id = str(uuid.uuid4())
        model = rng.choice(MODELS)
        out = [
            self.event(
                "user_prompt",
                [
                    ("prompt.id", prompt_id),
                    ("prompt_length", str(rng.randint(10, 400))),
                    ("prompt", "<REDACTED>"),
                ],
                t_ns,
            )
        ]
        for _ in range(tools):
            t_ns += rng.randint(5, 80) * 1_000_000
            tool_use_id = "toolu_" + uuid.uuid4().hex[:24]
            request_id = "req_" + uuid.uuid4().hex[:24]
            if rng.random() < 0.5:
                tool = "Bash"
                cmd = rng.choice(COMMANDS)
                params = f'{{"bash_command":"{cmd[0]}","full_command":"{cmd[1]}","description":"{cmd[2]}"}}'
                tool_input = f'{{"command":"{cmd[1]}","description":"{cmd[2]}"}}'
            else:
                tool = rng.choice(("Write", "Edit"))
                path = "/home/dev/project/" + rng.choice(FILES)
                params = ""
                tool_input = f'{{"file_path":"{path}","content":"print(1)\\n"}}'
            rejected = rng.random() < reject_rate
            source = rng.choice(("config", "config", "user_temporary", "user_permanent", "hook"))
            if rejected:
                source = rng.choice(("config", "user_reject", "hook"))
            decision_attrs: list[tuple[str, Any]] = [
                ("prompt.id", prompt_id),
                ("decision", "reject" if rejected else "accept"),
                ("source", source),
                ("tool_name", tool),
                ("tool_use_id", tool_use_id),
                ("tool_source", "builtin"),
                ("permission_mode", "default"),
                ("request_id", request_id),
            ]
            if params:
                decision_attrs.append(("tool_parameters", params))
            out.append(self.event("tool_decision", decision_attrs, t_ns))
            t_ns += rng.randint(20, 900) * 1_000_000
            inp, outp = rng.randint(800, 9000), rng.randint(20, 600)
            cache_read, cache_creation = rng.randint(0, 5000), rng.randint(0, 500)
            cost = round(inp * 3e-6 + outp * 15e-6, 6)
            self._add_usage(
                model, cost, {"input": inp, "output": outp, "cacheRead": cache_read, "cacheCreation": cache_creation}
            )
            if tool != "Bash":
                key = (tool, "reject" if rejected else "accept", source)
                self.edit_decisions[key] = self.edit_decisions.get(key, 0) + 1
            out.append(
                self.event(
                    "api_request",
                    [
                        ("prompt.id", prompt_id),
                        ("model", model),
                        ("input_tokens", inp),
                        ("output_tokens", outp),
                        ("cache_read_tokens", cache_read),
                        ("cache_creation_tokens", cache_creation),
                        ("cost_usd", cost),
                        ("cost_usd_micros", int(cost * 1e6)),
                        ("duration_ms", rng.randint(300, 9000)),
                        ("ttft_ms", rng.randint(50, 900)),
                        ("request_id", request_id),
                        ("speed", "normal"),
                        ("query_source", "sdk"),
                        ("effort", "medium"),
                    ],
                    t_ns,
                )
            )
            if rejected:
                continue
            t_ns += rng.randint(10, 300) * 1_000_000
            ok = rng.random() > 0.05
            result_attrs: list[tuple[str, Any]] = [
                ("prompt.id", prompt_id),
                ("tool_name", tool),
                ("tool_use_id", tool_use_id),
                ("success", "true" if ok else "false"),
                ("duration_ms", str(rng.randint(5, 3000))),
                ("tool_input", tool_input),
                ("tool_input_size_bytes", str(len(tool_input))),
                ("request_id", request_id),
            ]
            if params:
                result_attrs.append(("tool_parameters", params))
            if ok:
                result_attrs.append(("tool_result_size_bytes", str(rng.randint(0, 4000))))
            else:
                result_attrs += [("error_type", "ShellError"), ("error", "Shell command failed")]
            out.append(self.event("tool_result", result_attrs, t_ns))
        return out


def demo_sessions(
    sessions: int, prompts: int, start_ns: int
) -> Iterator[tuple[DemoSession, list[LogRecord], int, int]]:
    """``ccbridge demo``'s sessions: ``(session, its events, start ns, end ns)``, one user each, reproducible
    (seeded by the session's number). Send the events before :func:`metrics_request`, which reports their totals."""
    for i in range(sessions):
        s = DemoSession(email=f"demo.user{i + 1}@example.com", rng=random.Random(i))
        t = start_ns
        records: list[LogRecord] = []
        for _ in range(prompts):
            records += s.prompt_turn(t)
            t += 5_000_000_000
        yield s, records, start_ns, t


def logs_request(records: list[LogRecord]) -> ExportLogsServiceRequest:
    req = ExportLogsServiceRequest()
    rl = req.resource_logs.add()
    for k, v in (
        ("service.name", "claude-code"),
        ("service.version", CLI_VERSION),
        ("os.type", "linux"),
        ("host.arch", "amd64"),
    ):
        rl.resource.attributes.append(_kv(k, v))
    sl = rl.scope_logs.add()
    sl.scope.name = "com.anthropic.claude_code.events"
    sl.scope.version = CLI_VERSION
    sl.log_records.extend(records)
    return req


def metrics_request(session: DemoSession, t_ns: int, start_ns: int) -> ExportMetricsServiceRequest:
    """The delta Sums a session flushes: session count, cost, tokens, lines, edit decisions, active time."""
    rng = session.rng
    req = ExportMetricsServiceRequest()
    rm = req.resource_metrics.add()
    rm.resource.attributes.append(_kv("service.name", "claude-code"))
    sm = rm.scope_metrics.add()
    sm.scope.name = "com.anthropic.claude_code"
    sm.scope.version = CLI_VERSION
    models = sorted(session.usage)
    series: list[tuple[str, str, list[tuple[list[tuple[str, Any]], float]]]] = [
        ("claude_code.session.count", "", [([("start_type", "fresh")], 1.0)]),
        (
            "claude_code.cost.usage",
            "USD",
            [([("model", m), ("query_source", "main")], session.usage[m]["cost"]) for m in models],
        ),
        (
            "claude_code.token.usage",
            "tokens",
            [
                ([("model", m), ("type", t)], session.usage[m][t])
                for m in models
                for t in ("input", "output", "cacheRead", "cacheCreation")
            ],
        ),
        (
            "claude_code.lines_of_code.count",
            "",
            [([("type", "added"), ("model", m)], float(rng.randint(0, 80))) for m in models[:1]]
            + [([("type", "removed"), ("model", m)], float(rng.randint(0, 30))) for m in models[:1]],
        ),
        (
            "claude_code.code_edit_tool.decision",
            "",
            [
                (
                    [("tool_name", tool), ("decision", decision), ("source", source), ("language", "Python")],
                    float(n),
                )
                for (tool, decision, source), n in sorted(session.edit_decisions.items())
            ],
        ),
        ("claude_code.active_time.total", "s", [([("type", "cli")], rng.uniform(0.5, 30.0))]),
        ("claude_code.commit.count", "", [([], float(rng.randint(0, 2)))]),
    ]
    for name, unit, points in series:
        if not points:
            continue
        m = sm.metrics.add()
        m.name = name
        m.unit = unit
        m.sum.aggregation_temporality = AggregationTemporality.AGGREGATION_TEMPORALITY_DELTA
        m.sum.is_monotonic = True
        for attrs, value in points:
            p = m.sum.data_points.add()
            p.start_time_unix_nano = start_ns
            p.time_unix_nano = t_ns
            p.as_double = value
            for k, v in [("user.id", session.user_id), ("session.id", session.session_id), *attrs]:
                p.attributes.append(_kv(k, v))
    return req


def record_stream(users: int = 20, seed: int = 1, tools_per_prompt: int = 3) -> Iterator[LogRecord]:
    """An endless stream of log records from ``users`` concurrent simulated sessions."""
    rng = random.Random(seed)
    sessions = [DemoSession(email=f"dev{i:03d}@example.com", rng=random.Random(seed * 1000 + i)) for i in range(users)]
    t_ns = time.time_ns()
    while True:
        s = rng.choice(sessions)
        if rng.random() < 0.02:
            s.session_id = str(uuid.UUID(int=rng.getrandbits(128)))
            s.sequence = 0
        yield from s.prompt_turn(t_ns, tools=tools_per_prompt)
        t_ns += 1_000_000_000


def batches(size: int, users: int = 20, seed: int = 1) -> Iterator[ExportLogsServiceRequest]:
    """Endless ``ExportLogsServiceRequest`` messages of exactly ``size`` records."""
    stream = record_stream(users, seed)
    while True:
        yield logs_request([next(stream) for _ in range(size)])
