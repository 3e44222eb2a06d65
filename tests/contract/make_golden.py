"""Generate the golden summaries in ``tests/contract/golden/`` from the recorded Claude Code runs.

THE GOLDEN FILES ARE REVIEWED BY HAND. They are the contract: what the bridge must store for each real recording.
Each one was generated once with this script and then checked, field by field, against the run's ``SUMMARY.txt``,
``claude.stdout.json``, the fixture README and the Claude Code "Monitoring usage" documentation
(https://docs.claude.com/en/docs/claude-code/monitoring-usage) (counts per kind, decisions and
their sources, approval modes, tool names, file paths, costs, tokens, identities, record ids). Where the bridge's
output disagreed with the recording, the code was fixed, not the golden.

Regenerate only deliberately (an intended change of the audit record contract), and review the diff line by line:

    .venv/bin/python -m tests.contract.make_golden            # rewrite every golden
    .venv/bin/python -m tests.contract.make_golden RUN ...    # rewrite some
    .venv/bin/python -m tests.contract.make_golden --check    # show differences, write nothing

This module also holds what the contract tests share with the generator: reading the recorded requests, sending them
through the real listening receivers exactly as recorded, and summarising the stored records.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import difflib
import json
import sys
from collections import Counter
from collections.abc import AsyncIterator, Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import grpc
from google.protobuf import json_format
from grpc import aio
from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceRequest
from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import ExportMetricsServiceRequest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

CONTRACT_DIR = Path(__file__).resolve().parent
FIXTURES = CONTRACT_DIR.parent / "fixtures" / "claude-code"
GOLDEN_DIR = CONTRACT_DIR / "golden"

KINDS = ("user_prompt", "tool_decision", "tool_result", "file_change", "api_request", "api_error", "event")
GRPC_METHODS = {
    "logs": "/opentelemetry.proto.collector.logs.v1.LogsService/Export",
    "metrics": "/opentelemetry.proto.collector.metrics.v1.MetricsService/Export",
    "traces": "/opentelemetry.proto.collector.trace.v1.TraceService/Export",
}
# Hop-by-hop / framing headers are produced by the client library from how the body is sent, not copied.
FRAMING_HEADERS = {"host", "content-length", "transfer-encoding", "connection"}
CHUNK_SIZE = 1024
SUMMARY_FIELDS = (
    "sequence",
    "kind",
    "event",
    "tool.name",
    "tool.decision",
    "tool.decision_source",
    "tool.approval_mode",
    "tool.success",
    "tool.command",
    "file.path",
    "file.operation",
    "model",
    "cost_usd",
    "tokens",
)


# ---------------------------------------------------------------------------------------------------------------
# the recordings


@dataclass(frozen=True)
class RecordedRequest:
    """One recorded OTLP export request: its raw body and transport facts (``raw/NNNN-<signal>.meta.json``)."""

    run: str
    seq: int
    signal: str
    transport: str  # "http" or "grpc"
    path: str | None  # HTTP path
    grpc_method: str | None
    content_type: str | None
    content_encoding: str | None
    chunked: bool
    content_length: int | None
    headers: dict[str, str]
    body_file: Path
    body: bytes
    meta: dict[str, Any]

    @property
    def name(self) -> str:
        return self.body_file.name


def run_dirs() -> list[Path]:
    """Every recorded run folder, in name order."""
    return sorted(p for p in FIXTURES.iterdir() if p.is_dir() and (p / "otlp" / "raw").is_dir())


def run_names() -> list[str]:
    return [p.name for p in run_dirs()]


def recorded_requests(run_dir: Path) -> list[RecordedRequest]:
    """The run's requests in arrival order, with the raw body file that belongs to each ``.meta.json``."""
    raw = run_dir / "otlp" / "raw"
    out: list[RecordedRequest] = []
    for meta_file in sorted(raw.glob("*.meta.json")):
        meta = json.loads(meta_file.read_text())
        stem = meta_file.name.removesuffix(".meta.json")
        bodies = [p for p in raw.iterdir() if p.name.startswith(stem + ".") and not p.name.endswith(".meta.json")]
        if len(bodies) != 1:
            raise AssertionError(f"{meta_file}: expected exactly one body file, found {[p.name for p in bodies]}")
        body_file = bodies[0]
        headers = {str(k): str(v) for k, v in (meta.get("headers") or {}).items()}
        lower = {k.lower(): v for k, v in headers.items()}
        transport = meta["transport"]
        out.append(
            RecordedRequest(
                run=run_dir.name,
                seq=int(meta["seq"]),
                signal=meta["signal"],
                transport=transport,
                path=meta.get("path"),
                grpc_method=meta["method"] if transport == "grpc" else None,
                content_type=meta.get("content_type"),
                content_encoding=meta.get("content_encoding"),
                chunked=lower.get("transfer-encoding", "").lower() == "chunked",
                content_length=int(lower["content-length"]) if "content-length" in lower else None,
                headers=headers,
                body_file=body_file,
                body=body_file.read_bytes(),
                meta=meta,
            )
        )
    out.sort(key=lambda r: r.seq)
    return out


def stdout_json(run_dir: Path) -> dict[str, Any]:
    """The CLI's ``--output-format json`` result of the run."""
    return json.loads((run_dir / "claude.stdout.json").read_text())


def jsonl_rows(run_dir: Path, name: str) -> list[dict[str, Any]]:
    """Rows of ``otlp/<name>`` (``log_records.jsonl``, ``datapoints.jsonl``, ``spans.jsonl``); [] if absent."""
    p = run_dir / "otlp" / name
    if not p.exists():
        return []
    return [json.loads(line) for line in p.read_text().splitlines() if line.strip()]


# ---------------------------------------------------------------------------------------------------------------
# sending, exactly as recorded


@dataclass
class HttpResult:
    status: int
    body: bytes
    content_type: str
    request_headers: dict[str, str]  # what the client really sent (lower-case names), captured by a trace hook


@dataclass
class GrpcResult:
    code: grpc.StatusCode
    details: str | None
    body: bytes | None


async def _chunks(body: bytes, size: int) -> AsyncIterator[bytes]:
    for i in range(0, len(body), size):
        yield body[i : i + size]


class Replayer:
    """One client per run, like the CLI: a keep-alive HTTP/1.1 connection and one gRPC channel.

    Use as ``async with Replayer(http_url, grpc_target) as rp: await rp.send(req)``. The headers of every HTTP
    request are captured as the client sent them, and ``connections_opened`` counts new TCP connections, so a test
    can prove framing and connection reuse instead of assuming them.
    """

    def __init__(self, http_url: str, grpc_target: str, *, grpc_user_agent: str | None = None) -> None:
        self.http_url = http_url
        self.grpc_target = grpc_target
        self.grpc_user_agent = grpc_user_agent
        self.connections_opened = 0
        self._sent: dict[str, str] = {}
        self._session: aiohttp.ClientSession | None = None
        self._channel: aio.Channel | None = None

    async def __aenter__(self) -> Replayer:
        tc = aiohttp.TraceConfig()

        async def on_headers_sent(_s: Any, _c: Any, params: aiohttp.TraceRequestHeadersSentParams) -> None:
            self._sent.clear()
            self._sent.update({k.lower(): v for k, v in params.headers.items()})

        async def on_connection_created(_s: Any, _c: Any, _p: Any) -> None:
            self.connections_opened += 1

        tc.on_request_headers_sent.append(on_headers_sent)
        tc.on_connection_create_end.append(on_connection_created)
        self._session = aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(limit=1),
            trace_configs=[tc],
            auto_decompress=False,
            timeout=aiohttp.ClientTimeout(total=30),
        )
        options = [("grpc.primary_user_agent", self.grpc_user_agent)] if self.grpc_user_agent else []
        self._channel = aio.insecure_channel(self.grpc_target, options=options)
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._session is not None:
            await self._session.close()
        if self._channel is not None:
            await self._channel.close()

    async def post(
        self,
        path: str,
        body: bytes,
        *,
        content_type: str,
        content_encoding: str | None = None,
        chunked: bool = False,
        headers: dict[str, str] | None = None,
    ) -> HttpResult:
        """POST ``body`` byte for byte; ``chunked`` sends ``Transfer-Encoding: chunked`` in ``CHUNK_SIZE`` pieces.

        The client never compresses or re-encodes: a gzip body must already be gzip.
        """
        assert self._session is not None, "use Replayer as an async context manager"
        hdrs = {k: v for k, v in (headers or {}).items() if k.lower() not in FRAMING_HEADERS | {"content-encoding"}}
        hdrs["Content-Type"] = content_type
        if content_encoding:
            hdrs["Content-Encoding"] = content_encoding
        data: Any = _chunks(body, CHUNK_SIZE) if chunked else body
        async with self._session.post(self.http_url + path, data=data, headers=hdrs, compress=None) as resp:
            return HttpResult(resp.status, await resp.read(), resp.headers.get("Content-Type", ""), dict(self._sent))

    async def grpc(self, signal: str, body: bytes) -> GrpcResult:
        """A unary raw-bytes ``Export`` call: the message goes out as is (grpcio adds the 5-byte prefix)."""
        assert self._channel is not None, "use Replayer as an async context manager"
        call = self._channel.unary_unary(GRPC_METHODS[signal], request_serializer=None, response_deserializer=None)
        try:
            resp = await call(body, timeout=10)
        except aio.AioRpcError as exc:
            return GrpcResult(exc.code(), exc.details(), None)
        return GrpcResult(grpc.StatusCode.OK, None, resp)

    async def send(self, req: RecordedRequest) -> HttpResult | GrpcResult:
        """Send a recorded request over the transport it was recorded on, exactly as recorded."""
        if req.transport == "grpc":
            return await self.grpc(req.signal, req.body)
        assert req.transport == "http" and req.path, f"{req.run}/{req.name}: unknown transport"
        return await self.post(
            req.path,
            req.body,
            content_type=req.content_type or "",
            content_encoding=req.content_encoding,
            chunked=req.chunked,
            headers=req.headers,
        )


def grpc_user_agent(reqs: Iterable[RecordedRequest]) -> str | None:
    """The recorded gRPC client's user-agent, if the run was recorded over gRPC."""
    for r in reqs:
        ua = (r.meta.get("metadata") or {}).get("user-agent")
        if ua:
            return str(ua)
    return None


async def post_body(
    base_url: str,
    path: str,
    body: bytes,
    *,
    content_type: str,
    content_encoding: str | None = None,
    chunked: bool = False,
    headers: dict[str, str] | None = None,
) -> HttpResult:
    """One-shot :meth:`Replayer.post` on its own connection."""
    async with Replayer(base_url, "127.0.0.1:1") as rp:
        return await rp.post(
            path, body, content_type=content_type, content_encoding=content_encoding, chunked=chunked, headers=headers
        )


async def send_grpc(target: str, signal: str, body: bytes) -> GrpcResult:
    """One-shot :meth:`Replayer.grpc` on its own channel."""
    async with Replayer("http://127.0.0.1:1", target) as rp:
        return await rp.grpc(signal, body)


async def replay(http_url: str, grpc_target: str, req: RecordedRequest) -> HttpResult | GrpcResult:
    """One-shot :meth:`Replayer.send`."""
    async with Replayer(http_url, grpc_target, grpc_user_agent=grpc_user_agent([req])) as rp:
        return await rp.send(req)


# ---------------------------------------------------------------------------------------------------------------
# the same request in the other OTLP encoding

REQUEST_TYPES: dict[str, Any] = {
    "logs": ExportLogsServiceRequest,
    "metrics": ExportMetricsServiceRequest,
    "traces": ExportTraceServiceRequest,
}
ID_KEYS = ("traceId", "spanId", "parentSpanId")


def _convert_ids(node: Any, convert: Callable[[str], str]) -> Any:
    if isinstance(node, dict):
        return {
            k: convert(v) if k in ID_KEYS and isinstance(v, str) else _convert_ids(v, convert) for k, v in node.items()
        }
    if isinstance(node, list):
        return [_convert_ids(v, convert) for v in node]
    return node


def json_to_protobuf(signal: str, body: bytes) -> bytes:
    """An OTLP/JSON request (hex ids, as the CLI writes it) as the equivalent protobuf message."""
    doc = _convert_ids(json.loads(body), lambda h: base64.b64encode(bytes.fromhex(h)).decode())
    msg = json_format.ParseDict(doc, REQUEST_TYPES[signal]())
    return msg.SerializeToString()


def protobuf_to_json(signal: str, body: bytes) -> bytes:
    """A protobuf request as spec-conformant OTLP/JSON: hex ids, int64 as strings, enums by name."""
    doc = json_format.MessageToDict(REQUEST_TYPES[signal].FromString(body))
    doc = _convert_ids(doc, lambda b: base64.b64decode(b).hex())
    return json.dumps(doc).encode()


# ---------------------------------------------------------------------------------------------------------------
# summarising what was stored


def dig(rec: dict[str, Any], dotted: str) -> Any:
    cur: Any = rec
    for part in dotted.split("."):
        if not isinstance(cur, dict):
            return None
        cur = cur.get(part)
    return cur


def _sort_key(rec: dict[str, Any]) -> tuple[int, int, str]:
    seq = rec.get("sequence")
    return (seq if isinstance(seq, int) else -1, 1 if rec.get("kind") == "file_change" else 0, rec.get("id", ""))


def summarize(
    records: list[dict[str, Any]],
    metric_points: Iterable[dict[str, Any]] = (),
    spans: Iterable[dict[str, Any]] = (),
) -> dict[str, Any]:
    """The golden view of one run: stable, reviewable facts only (no receive times, no transport)."""
    ordered = sorted(records, key=_sort_key)
    counts = Counter(r.get("kind") for r in ordered)
    rows = []
    for r in ordered:
        row = {"id": r.get("id")}
        for f in SUMMARY_FIELDS:
            row[f] = dig(r, f)
        if r.get("derived_from") is not None:
            row["derived_from"] = r["derived_from"]
        rows.append(row)
    identities = sorted(
        {
            (dig(r, "session.id"), dig(r, "user.id"), dig(r, "user.email"), dig(r, "user.identity_source"))
            for r in ordered
        },
        key=lambda t: tuple("" if x is None else str(x) for x in t),
    )
    api = [r for r in ordered if r.get("kind") == "api_request"]
    token_sums: dict[str, int] = {}
    for r in api:
        for k, v in (r.get("tokens") or {}).items():
            token_sums[k] = token_sums.get(k, 0) + int(v)
    points = sorted(
        (
            {
                "name": p.get("name"),
                "type": p.get("type"),
                "temporality": p.get("temporality"),
                "unit": p.get("unit"),
                "attributes": {
                    k: v
                    for k, v in sorted((p.get("attributes") or {}).items())
                    if k in ("type", "decision", "tool_name", "start_type", "model", "source", "language")
                },
                "value": p.get("value"),
            }
            for p in metric_points
        ),
        key=lambda d: (str(d["name"]), json.dumps(d["attributes"], sort_keys=True), json.dumps(d, sort_keys=True)),
    )
    span_names = Counter(s.get("name") for s in spans)
    return {
        "counts": {k: counts.get(k, 0) for k in KINDS} | {"total": len(ordered)},
        "records": rows,
        "identities": [
            {"session.id": s, "user.id": u, "user.email": e, "user.identity_source": src} for s, u, e, src in identities
        ],
        "total_cost_usd": round(sum(float(r.get("cost_usd") or 0.0) for r in api), 9),
        "tokens": dict(sorted(token_sums.items())),
        "metric_points": points,
        "spans": dict(sorted(span_names.items())),
    }


def render(summary: dict[str, Any]) -> str:
    """JSON with one line per record / metric point, so a review diff shows whole records."""

    def one(v: Any) -> str:
        return json.dumps(v, ensure_ascii=False)

    lines = ["{"]
    keys = list(summary)
    for i, key in enumerate(keys):
        v = summary[key]
        end = "," if i < len(keys) - 1 else ""
        if isinstance(v, list) and v:
            lines.append(f"  {one(key)}: [")
            lines.extend(f"    {one(item)}{',' if j < len(v) - 1 else ''}" for j, item in enumerate(v))
            lines.append(f"  ]{end}")
        else:
            lines.append(f"  {one(key)}: {one(v)}{end}")
    lines.append("}")
    return "\n".join(lines) + "\n"


def golden_path(run: str) -> Path:
    return GOLDEN_DIR / f"{run}.json"


def load_golden(run: str) -> dict[str, Any]:
    return json.loads(golden_path(run).read_text())


# ---------------------------------------------------------------------------------------------------------------
# generator


async def _generate(run: str, workdir: Path) -> dict[str, Any]:
    from tests.conftest import start_bridge

    bridge = await start_bridge(workdir / run)
    reqs = recorded_requests(FIXTURES / run)
    try:
        async with Replayer(bridge.http_url, bridge.grpc_target, grpc_user_agent=grpc_user_agent(reqs)) as rp:
            for req in reqs:
                res = await rp.send(req)
                ok = res.code == grpc.StatusCode.OK if isinstance(res, GrpcResult) else res.status == 200
                if not ok:
                    raise SystemExit(f"{run}/{req.name}: refused: {res}")
        return summarize(bridge.records(), bridge.metric_points(), bridge.spans())
    finally:
        await bridge.stop()


def main(argv: list[str] | None = None) -> int:
    import tempfile

    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("runs", nargs="*", help="run folder names (default: all)")
    ap.add_argument("--check", action="store_true", help="print differences and write nothing")
    args = ap.parse_args(argv)
    runs = args.runs or run_names()
    changed = 0
    with tempfile.TemporaryDirectory(prefix="ccbridge-golden-") as tmp:
        for run in runs:
            text = render(asyncio.run(_generate(run, Path(tmp))))
            path = golden_path(run)
            old = path.read_text() if path.exists() else ""
            if old == text:
                print(f"{run}: unchanged")
                continue
            changed += 1
            if args.check:
                sys.stdout.writelines(difflib.unified_diff(old.splitlines(True), text.splitlines(True), str(path), run))
            else:
                path.parent.mkdir(parents=True, exist_ok=True)
                path.write_text(text)
                print(f"{run}: written to {path} -- REVIEW IT BY HAND before committing")
    return 1 if args.check and changed else 0


if __name__ == "__main__":
    sys.exit(main())
