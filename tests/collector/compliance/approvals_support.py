"""Shared by the approval-trail tests: the recorded runs replayed into a bridge, and the hand-built expected rows.

The expected rows were written by hand from the recordings (``tests/fixtures/claude-code/*/otlp/log_records.jsonl``
and ``spans.jsonl``): each run's ``tool_decision`` events with their ``tool_use_id``, ``prompt.id``,
``event.timestamp`` (the record time), ``user.id`` / ``enduser.id``, the command from ``tool_parameters`` and the
file path from the matching ``tool_result``'s ``tool_input`` (details run only), and the outcome from the
``tool_result``'s ``success`` (``not_executed`` for the rejected ``rm``, which has none). Record ids are the
normalizer's stable ids (the same as in ``tests/contract/golden``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from collector.compliance.approvals import COLUMNS
from tests.conftest import CLAUDE_CODE_FIXTURES
from tests.contract.make_golden import Replayer, grpc_user_agent, recorded_requests, run_names

UID_197_ALLOW = "d3cb88c51592b28c8849abe988b115bc9320845cc5c2ac515ffac19e03e151c6"
UID_197_DENY = "32fe479e3ff1b8b150ed350f66f0d650798c2cc37ac6f59cce1cc938909f333c"
UID_332_ALLOW = "d5af2f62f1e218032d97c8628fb5e2ecfa36cfa868ae7848e9ca8116401ef878"
UID_332_DETAILS = "5448c1186c797c02ca15e5490625490054db05759b7316e897d0504e3f296665"
UID_332_GZIP = "0583cc42825d7a74c70dd7966243bd3214f6a7c471c6f1355952fb8e8eaee3ec"
UID_332_GRPC = "3cb02ed8eeac0fd0c4f0623c24d93f5f0ef9ea28bbb0b0021a94adc8574546b5"
S_197_ALLOW = "8083a324-a308-4215-b6bb-18fbb04ef054"
S_197_DENY = "aa52beda-7608-431d-a6a8-b73a98451f8b"
S_332_ALLOW = "88a2e22f-0c19-4a9f-ae0a-d7f53bdf0b18"
S_332_DETAILS = "d2369f49-d11c-4322-b8a2-818d9c23de10"
S_332_GZIP = "d3ed6c00-553c-439e-ad28-61fc122ba554"
S_332_GRPC = "f91d49e9-88a3-4ef9-b6bf-9f29fb4b0566"
HELLO = "/home/dev/project/hello.txt"


def row(
    time: str,
    user_id: str,
    session: str,
    prompt: str,
    tool: str,
    use_id: str,
    record_id: str,
    *,
    email: str | None = None,
    command: str | None = None,
    path: str | None = None,
    decision: str = "accept",
    outcome: str = "success",
) -> dict[str, Any]:
    """One expected row; every recorded decision came from a settings rule (``source=config``), so automatic."""
    return {
        "time": time,
        "user_email": email,
        "user_id": user_id,
        "user_account_uuid": None,
        "organization_id": None,
        "source_identity": None,
        "session_id": session,
        "prompt_id": prompt,
        "tool_name": tool,
        "tool_use_id": use_id,
        "command": command,
        "file_path": path,
        "decision": decision,
        "decision_source": "config",
        "approval_mode": "automatic",
        "hook": None,
        "outcome": outcome,
        "record_id": record_id,
    }


P_197_ALLOW = "98265b38-5b78-4ef6-a639-2c38e5fef73b"
P_332_ALLOW = "951a305a-8339-4d10-b6cb-63747820fc86"
P_197_DENY = "a2dd398e-2c28-43ab-8d57-695a1d0e86ce"
P_332_DETAILS = "45a82b7e-0bc3-441c-ab9c-cad24dc9389a"
P_332_GZIP = "a67137ec-3d63-4d22-bc53-e072961fa7d9"
P_332_GRPC = "76bc333a-9b59-4efb-a257-907f13305534"

# In export order: sessions in id order, decisions in time order within a session.
EXPECTED_ROWS = [
    # v2.1.197-http-json-allow: Bash, Write, Edit, all accepted by a rule; no tool details
    row("2026-11-25T21:58:17.926Z", UID_197_ALLOW, S_197_ALLOW, P_197_ALLOW, "Bash",
        "toolu_fake_8fcc0a5a450349118bad", "65774bfe04fbacc21df1e263570a2891"),
    row("2026-11-25T21:58:18.038Z", UID_197_ALLOW, S_197_ALLOW, P_197_ALLOW, "Write",
        "toolu_fake_0a7602e51a584e54bbe5", "866908c247d9c708ce1167106f01990d"),
    row("2026-11-25T21:58:18.106Z", UID_197_ALLOW, S_197_ALLOW, P_197_ALLOW, "Edit",
        "toolu_fake_f462d2729f5745b5a248", "978b97ec37408370a25027ea3baaf659"),
    # v2.1.332-http-protobuf-allow (reference run)
    row("2026-11-25T21:57:11.405Z", UID_332_ALLOW, S_332_ALLOW, P_332_ALLOW, "Bash",
        "toolu_fake_06c8f2a063e64ffbbccb", "34de5353f824388554b000e74b41bb39"),
    row("2026-11-25T21:57:11.544Z", UID_332_ALLOW, S_332_ALLOW, P_332_ALLOW, "Write",
        "toolu_fake_dbfa6dcee7cc4303a9a3", "34695dc4c730136811c2456dcb46b690"),
    row("2026-11-25T21:57:11.633Z", UID_332_ALLOW, S_332_ALLOW, P_332_ALLOW, "Edit",
        "toolu_fake_e2d59c875c9c45ab88d0", "66528d7beea8e0b75544726af0db73d8"),
    # v2.1.197-http-protobuf-deny: echo accepted and run; the rm rejected by the deny rule, never executed.
    # (The auto-denied Write produced no tool_decision at all in 2.1.197, so it cannot appear.)
    row("2026-11-25T21:58:03.653Z", UID_197_DENY, S_197_DENY, P_197_DENY, "Bash",
        "toolu_fake_4edbfdd73d774c958979", "bad1e1cafbf63c30fb0a5f647efb07bd"),
    row("2026-11-25T21:58:03.817Z", UID_197_DENY, S_197_DENY, P_197_DENY, "Bash",
        "toolu_fake_2f638537e7244ed983e7", "7134ee20d4646350183df15d9e7634d1", decision="reject",
        outcome="not_executed"),
    # v2.1.332-http-json-details-traces: the command is on the decision; the file paths come from the results
    row("2026-11-25T21:57:26.254Z", UID_332_DETAILS, S_332_DETAILS, P_332_DETAILS, "Bash",
        "toolu_fake_6223f58903ad448e9aa5", "840f736d0cd5e437c0f553042cbf25c8", email="jdoe@example.com",
        command="echo hi"),
    row("2026-11-25T21:57:26.422Z", UID_332_DETAILS, S_332_DETAILS, P_332_DETAILS, "Write",
        "toolu_fake_0e10689e60ca4987aec2", "51b450e4815dd55dff3bf3ef918c8f63", email="jdoe@example.com", path=HELLO),
    row("2026-11-25T21:57:26.528Z", UID_332_DETAILS, S_332_DETAILS, P_332_DETAILS, "Edit",
        "toolu_fake_b68244797cd8410f9805", "97eb5f87af8094674c6cb0d5759f4837", email="jdoe@example.com", path=HELLO),
    # v2.1.332-http-protobuf-gzip
    row("2026-11-25T21:57:42.093Z", UID_332_GZIP, S_332_GZIP, P_332_GZIP, "Bash",
        "toolu_fake_cabc138c7d4f429c9ab7", "a040035ab4efa6b697fab9ba7801cf2b"),
    row("2026-11-25T21:57:42.261Z", UID_332_GZIP, S_332_GZIP, P_332_GZIP, "Write",
        "toolu_fake_9e0681f2620546e7a2a4", "ef83fbfd351b9b1a7cd32b23c5853000"),
    row("2026-11-25T21:57:42.449Z", UID_332_GZIP, S_332_GZIP, P_332_GZIP, "Edit",
        "toolu_fake_88e28f3f1009420e8cd6", "2cb4dc6e57125dc265544a8817a7a377"),
    # v2.1.332-grpc-allow
    row("2026-11-25T21:57:34.098Z", UID_332_GRPC, S_332_GRPC, P_332_GRPC, "Bash",
        "toolu_fake_3ebfdb73e4004ba8af48", "1bce938e7f16a1bcf3309831b7db7a70"),
    row("2026-11-25T21:57:34.234Z", UID_332_GRPC, S_332_GRPC, P_332_GRPC, "Write",
        "toolu_fake_2672978841434ef29d5c", "fbecb6574d3107c4930f83463f9f7d01"),
    row("2026-11-25T21:57:34.326Z", UID_332_GRPC, S_332_GRPC, P_332_GRPC, "Edit",
        "toolu_fake_f2fea48a3dae43e3a8e9", "80a827b9ddda92afc91a36c5491cef22"),
]  # fmt: skip
assert all(list(r) == list(COLUMNS[:-1]) for r in EXPECTED_ROWS)

PERIOD = ("2026-11-25T00:00:00Z", "2026-11-26T00:00:00Z")


async def replay_runs(http_url: str, grpc_target: str, runs: list[str] | None = None, only: Any = None) -> None:
    """Send the recorded requests of ``runs`` (default: all) exactly as recorded; ``only(req)`` selects requests."""
    for run in runs or run_names():
        reqs = [r for r in recorded_requests(CLAUDE_CODE_FIXTURES / run) if only is None or only(r)]
        async with Replayer(http_url, grpc_target, grpc_user_agent=grpc_user_agent(reqs)) as rp:
            for req in reqs:
                res = await rp.send(req)
                ok = getattr(res, "status", None) == 200 or getattr(getattr(res, "code", None), "name", "") == "OK"
                assert ok, f"{run}/{req.name}: {res}"


def fixture_path(run: str) -> Path:
    return CLAUDE_CODE_FIXTURES / run
