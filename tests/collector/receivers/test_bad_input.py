"""Hostile and malformed input against the real listening receivers (OTLP/HTTP and OTLP/gRPC).

One table per transport. Every row runs against a fresh in-process bridge and checks, in order:

1. a valid request before the bad one is acknowledged (its records are "accepted before the bad input");
2. the bad request gets the expected status and a useful message: the ``google.rpc.Status`` message for protobuf
   requests (decoded), ``{"code", "message"}`` for JSON ones, the gRPC status details for gRPC;
3. the bridge keeps serving: a valid request afterwards succeeds;
4. ``ccbridge audit export`` lists exactly the records of the acknowledged requests: nothing accepted earlier is
   lost, and nothing of the refused request was stored.

HTTP requests are written with a raw HTTP/1.1 client, so headers (or their absence), chunked framing and early
answers (413 before the body is read) are exactly as the row says.

Empty bodies: an empty protobuf body is the valid encoding of an empty ``ExportLogsServiceRequest`` (every field is
optional in proto3), so it is answered 200 and stores nothing; an empty body is not a JSON document, so with
``Content-Type: application/json`` it is a 400. That is what the code does and what the OTLP spec implies.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import gzip
import struct
import time
import tracemalloc
import uuid
import zlib
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import grpc
import orjson
import pytest
from google.rpc import status_pb2
from grpc import aio
from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue

from collector import cli
from collector.processing.decode import logs_from_json, logs_from_protobuf
from collector.processing.normalize import normalize_log

SMALL = {
    "receivers": {
        "otlp": {
            "http": {"max_request_body_size": "64KiB", "max_decompressed_size": "256KiB"},
            "grpc": {"max_recv_msg_size": "64KiB"},
        }
    }
}
LARGE = {
    "receivers": {
        "max_attribute_value_size": "8MiB",  # a 5 MB value under every limit is stored whole
        "max_record_size": "16MiB",
        "otlp": {
            "http": {"max_request_body_size": "8MiB", "max_decompressed_size": "16MiB"},
            "grpc": {"max_recv_msg_size": "8MiB"},
        },
    }
}
CONFIGS = {"small": SMALL, "large": LARGE}
PROTOBUF = "application/x-protobuf"
JSON = "application/json"
LOGS_METHOD = "/opentelemetry.proto.collector.logs.v1.LogsService/Export"
BIG_ATTRIBUTE = 5 * 1024 * 1024
BOMB_BYTES = 1024**3


# ---------------------------------------------------------------------------------------------------------------
# request bodies


@dataclass
class Payload:
    body: bytes
    ids: set[str] = field(default_factory=set)  # record ids the bridge must store if it accepts the body
    session: str = ""


def ids_of_protobuf(body: bytes) -> set[str]:
    return {r["id"] for ev in logs_from_protobuf(body, 1000) for r in normalize_log(ev, 0)}


def logs_request(n: int = 2, extra: dict[str, str] | None = None) -> tuple[ExportLogsServiceRequest, str]:
    session = str(uuid.uuid4())
    req = ExportLogsServiceRequest()
    rl = req.resource_logs.add()
    rl.resource.attributes.append(KeyValue(key="service.name", value=AnyValue(string_value="claude-code")))
    sl = rl.scope_logs.add()
    sl.scope.name = "com.anthropic.claude_code.events"
    now = time.time_ns()
    for seq in range(n):
        lr = sl.log_records.add()
        lr.time_unix_nano = now + seq * 1_000_000
        lr.observed_time_unix_nano = lr.time_unix_nano
        lr.body.string_value = "claude_code.user_prompt"
        attrs = {"session.id": session, "event.name": "user_prompt", "prompt_length": "5", **(extra or {})}
        for k, v in attrs.items():
            lr.attributes.append(KeyValue(key=k, value=AnyValue(string_value=v)))
        lr.attributes.append(KeyValue(key="event.sequence", value=AnyValue(int_value=seq)))
    return req, session


def valid_protobuf(n: int = 2, extra: dict[str, str] | None = None) -> Payload:
    req, session = logs_request(n, extra)
    body = req.SerializeToString()
    return Payload(body, ids_of_protobuf(body), session)


def valid_json(n: int = 1) -> Payload:
    session = str(uuid.uuid4())
    now = time.time_ns()
    records = [
        {
            "timeUnixNano": str(now + seq),
            "body": {"stringValue": "claude_code.user_prompt"},
            "traceId": "5b8efff798038103d269b633813fc60c",
            "spanId": "eee19b7ec3c1b174",
            "attributes": [
                {"key": "session.id", "value": {"stringValue": session}},
                {"key": "event.sequence", "value": {"intValue": seq}},
            ],
        }
        for seq in range(n)
    ]
    body = orjson.dumps({"resourceLogs": [{"scopeLogs": [{"logRecords": records}]}]})
    ids = {r["id"] for ev in logs_from_json(body) for r in normalize_log(ev, 0)}
    return Payload(body, ids, session)


def json_with_record(**record: Any) -> Payload:
    return Payload(orjson.dumps({"resourceLogs": [{"scopeLogs": [{"logRecords": [record]}]}]}))


def _varint(n: int) -> bytes:
    out = bytearray()
    while True:
        byte = n & 0x7F
        n >>= 7
        out.append(byte | (0x80 if n else 0))
        if not n:
            return bytes(out)


def _ld(field_number: int, payload: bytes) -> bytes:
    return _varint((field_number << 3) | 2) + _varint(len(payload)) + payload


def deep_protobuf(levels: int) -> Payload:
    """A log record whose body is ``levels`` nested arrays, hand-encoded (the classes refuse to build it)."""
    value = AnyValue(string_value="x").SerializeToString()
    for _ in range(levels):
        value = _ld(5, _ld(1, value))  # AnyValue.array_value -> ArrayValue.values -> AnyValue
    return Payload(_ld(1, _ld(2, _ld(2, _ld(5, value)))))  # resource_logs -> scope_logs -> log_records -> body


def deep_json(levels: int) -> Payload:
    value = '{"stringValue":"x"}'
    for _ in range(levels):
        value = '{"arrayValue":{"values":[' + value + "]}}"
    return Payload(('{"resourceLogs":[{"scopeLogs":[{"logRecords":[{"body":' + value + "}]}]}]}").encode())


def invalid_utf8_protobuf() -> Payload:
    req, _ = logs_request(1)
    req.resource_logs[0].scope_logs[0].log_records[0].body.string_value = "claude_code.@@@@"
    return Payload(req.SerializeToString().replace(b"@@@@", b"\xff\xfe\xc3\x28"))


def truncated_protobuf() -> Payload:
    body = valid_protobuf(3).body
    return Payload(body[: len(body) - 7])


def big_attribute_value() -> str:
    pattern = "0123456789abcdefghijklmnopqrstuvwxyz-✓-"
    text = (pattern * (BIG_ATTRIBUTE // len(pattern) + 1))[:BIG_ATTRIBUTE]
    return text + "<end>"


def big_attribute() -> Payload:
    return valid_protobuf(1, {"big": big_attribute_value()})


def protobuf_of_size(size: int) -> Payload:
    """A valid logs request of exactly ``size`` bytes (padded with one attribute)."""
    req, session = logs_request(1)
    attrs = req.resource_logs[0].scope_logs[0].log_records[0].attributes
    pad = KeyValue(key="pad", value=AnyValue(string_value=""))
    attrs.append(pad)
    for _ in range(10):
        missing = size - req.ByteSize()
        if missing == 0:
            body = req.SerializeToString()
            return Payload(body, ids_of_protobuf(body), session)
        value = attrs[-1].value.string_value
        attrs[-1].value.string_value = value + "z" * missing if missing > 0 else value[:missing]
    raise AssertionError(f"cannot build a request of exactly {size} bytes")


def gzip_inflating_to(size: int) -> Payload:
    p = protobuf_of_size(size)
    return Payload(gzip.compress(p.body), p.ids, p.session)


SMALL_LIMIT = 64 * 1024
SMALL_DECOMPRESSED_LIMIT = 256 * 1024


def oversized_protobuf() -> Payload:
    return valid_protobuf(1, {"pad": "z" * (100 * 1024)})


def with_unknown_field() -> Payload:
    p = valid_protobuf()
    return Payload(p.body + _ld(99, b"from a future OTLP version"), p.ids, p.session)


def gzip_zeros(total: int, block: int = 1 << 20) -> bytes:
    """A valid gzip of ``total`` zero bytes (~1/1000 of the size), built without compressing ``total`` bytes.

    After a full flush deflate restarts from scratch, so the compressed form of one zero block can be repeated; the
    trailer (CRC-32 and size of the whole) is written by hand.
    """
    zeros = bytes(block)
    c = zlib.compressobj(9, zlib.DEFLATED, 31)
    first = c.compress(zeros) + c.flush(zlib.Z_FULL_FLUSH)  # gzip header + block
    again = c.compress(zeros) + c.flush(zlib.Z_FULL_FLUSH)  # the same block, on its own
    final = c.flush(zlib.Z_FINISH)[:-8]  # last (empty) deflate block, without zlib's trailer
    n = total // block
    crc = 0
    for _ in range(n):
        crc = zlib.crc32(zeros, crc)
    return first + again * (n - 1) + final + struct.pack("<II", crc, total & 0xFFFFFFFF)


def gzip_bomb() -> Payload:
    body = gzip_zeros(BOMB_BYTES)
    assert len(body) < 2 * 1024 * 1024
    d = zlib.decompressobj(31)  # sanity: it really inflates to zeros
    assert d.decompress(body, 4 << 20) == bytes(4 << 20)
    return Payload(body)


def gzip_bomb_members() -> Payload:
    member = gzip.compress(bytes(1 << 20), 9)  # 1 MiB of zeros in ~1 KiB
    return Payload(member * 300)  # 300 MiB across 300 gzip members


def corrupt_gzip() -> Payload:
    good = gzip.compress(valid_protobuf().body)
    return Payload(good[:10] + bytes(b ^ 0x5A for b in good[10:30]) + good[30:])


def truncated_gzip() -> Payload:
    good = gzip.compress(valid_protobuf().body)
    return Payload(good[: len(good) // 2])


def gzip_two_members() -> Payload:
    """Two gzip members, each a serialized request: protobuf concatenation makes them one request of both."""
    a, b = valid_protobuf(), valid_protobuf()
    return Payload(gzip.compress(a.body) + gzip.compress(b.body), a.ids | b.ids)


def gzip_with_corrupt_second_member() -> Payload:
    """Two gzip members (two serialized requests concatenate into one valid request), the second one's magic broken."""
    first = gzip.compress(valid_protobuf().body)
    second = gzip.compress(valid_protobuf().body)
    return Payload(first + b"\x1f\x8c" + second[2:])


def gzip_with_trailing_garbage() -> Payload:
    return Payload(gzip.compress(valid_protobuf().body) + b"trailing garbage, not gzip")


def gzipped_valid() -> Payload:
    p = valid_protobuf()
    return Payload(gzip.compress(p.body), p.ids, p.session)


# ---------------------------------------------------------------------------------------------------------------
# a raw HTTP/1.1 client


@dataclass
class HttpAnswer:
    status: int
    headers: dict[str, str]
    body: bytes

    def status_message(self) -> tuple[int, str, str]:
        """(code, message, media) of the error body: google.rpc.Status for protobuf, {"code","message"} for JSON."""
        media = self.headers.get("content-type", "").split(";")[0].strip()
        if media == PROTOBUF:
            st = status_pb2.Status()
            st.ParseFromString(self.body)
            return st.code, st.message, "protobuf"
        assert media == JSON, f"unexpected error body type {media!r}: {self.body[:200]!r}"
        doc = orjson.loads(self.body)
        assert set(doc) == {"code", "message"}, doc
        return doc["code"], doc["message"], "json"


async def http_call(
    base_url: str,
    path: str,
    body: bytes | None,
    *,
    method: str = "POST",
    content_type: str | None = PROTOBUF,
    encoding: str | None = None,
    chunked: bool = False,
    timeout: float = 30.0,
) -> HttpAnswer:
    url = urlsplit(base_url)
    reader, writer = await asyncio.open_connection(url.hostname, url.port)
    head = [f"{method} {path} HTTP/1.1", f"Host: {url.netloc}", "Connection: close", "User-Agent: ccbridge-tests"]
    if content_type is not None:
        head.append(f"Content-Type: {content_type}")
    if encoding is not None:
        head.append(f"Content-Encoding: {encoding}")
    if body is not None:
        head.append("Transfer-Encoding: chunked" if chunked else f"Content-Length: {len(body)}")
    request_head = ("\r\n".join(head) + "\r\n\r\n").encode()

    async def send() -> None:
        try:
            writer.write(request_head)
            if body is not None and chunked:
                for i in range(0, len(body), 16384):
                    piece = body[i : i + 16384]
                    writer.write(f"{len(piece):x}\r\n".encode() + piece + b"\r\n")
                    await writer.drain()
                writer.write(b"0\r\n\r\n")
            elif body:
                writer.write(body)
            await writer.drain()
        except (ConnectionError, OSError):
            pass  # the server may answer (413) and close before reading everything: that is allowed

    sender = asyncio.create_task(send())
    try:
        async with asyncio.timeout(timeout):
            status_line = (await reader.readline()).decode("latin-1").strip()
            assert status_line.startswith("HTTP/1.1 "), f"no HTTP answer: {status_line!r}"
            status = int(status_line.split()[1])
            headers: dict[str, str] = {}
            while True:
                line = (await reader.readline()).decode("latin-1").strip()
                if not line:
                    break
                k, _, v = line.partition(":")
                headers[k.strip().lower()] = v.strip()
            if "content-length" in headers:
                data = await reader.readexactly(int(headers["content-length"]))
            elif headers.get("transfer-encoding", "").lower() == "chunked":
                data = b""
                while True:
                    size = int((await reader.readline()).strip(), 16)
                    if size == 0:
                        await reader.readline()
                        break
                    data += await reader.readexactly(size)
                    await reader.readline()
            else:
                data = await reader.read()
    finally:
        sender.cancel()
        writer.close()
        with contextlib.suppress(ConnectionError, OSError):
            await writer.wait_closed()
    return HttpAnswer(status, headers, data)


# ---------------------------------------------------------------------------------------------------------------
# the HTTP table


@dataclass(frozen=True)
class HttpRow:
    name: str
    build: Callable[[], Payload]
    status: int
    fragments: tuple[str, ...] = ()  # all must be in the error message (case-insensitive)
    content_type: str | None = PROTOBUF
    path: str = "/v1/logs"
    method: str = "POST"
    encoding: str | None = None
    chunked: bool = False
    config: str = "small"
    reply: str = "protobuf"  # media of the error body
    stores: bool = False  # a 200 row whose records must be stored
    memory_bound: int | None = None  # bytes the server may allocate while answering
    bug: str | None = None  # known product bug: the row is a strict xfail with this reason


def _no_body() -> Payload:
    return Payload(b"")


HTTP_ROWS = [
    HttpRow("garbage bytes", lambda: Payload(b"\xff\xfe garbage \x00\x01" * 20), 400, ("not a valid protobuf",)),
    HttpRow("truncated protobuf", truncated_protobuf, 400, ("not a valid protobuf",)),
    HttpRow(
        "text/plain",
        valid_protobuf,
        415,
        ("unsupported content-type", "text/plain", "application/x-protobuf"),
        content_type="text/plain",
        reply="json",
    ),
    HttpRow("no Content-Type", valid_protobuf, 415, ("content-type", "(none)"), content_type=None, reply="json"),
    HttpRow(
        "invalid JSON",
        lambda: Payload(b'{"resourceLogs": [ {'),
        400,
        ("not valid json",),
        content_type=JSON,
        reply="json",
    ),
    HttpRow("JSON array", lambda: Payload(b"[]"), 400, ("json object",), content_type=JSON, reply="json"),
    HttpRow(
        "base64 traceId",
        lambda: json_with_record(traceId=base64.b64encode(bytes(range(16))).decode()),
        400,
        ("traceid", "hex", "base64"),
        content_type=JSON,
        reply="json",
    ),
    HttpRow(
        "base64 spanId",
        lambda: json_with_record(spanId=base64.b64encode(bytes(range(8))).decode()),
        400,
        ("spanid", "hex"),
        content_type=JSON,
        reply="json",
    ),
    HttpRow(
        "base64 parentSpanId on traces",
        lambda: Payload(
            orjson.dumps(
                {
                    "resourceSpans": [
                        {"scopeSpans": [{"spans": [{"parentSpanId": base64.b64encode(b"12345678").decode()}]}]}
                    ]
                }
            )
        ),
        400,
        ("parentspanid", "hex"),
        path="/v1/traces",
        content_type=JSON,
        reply="json",
    ),
    HttpRow("empty protobuf body", _no_body, 200),
    HttpRow("empty JSON body", _no_body, 400, ("not valid json",), content_type=JSON, reply="json"),
    HttpRow("empty JSON object", lambda: Payload(b"{}"), 200, content_type=JSON, reply="json"),
    HttpRow("JSON with charset", valid_json, 200, content_type="application/json; charset=utf-8", stores=True),
    HttpRow("gzip", gzipped_valid, 200, encoding="gzip", stores=True),
    HttpRow("gzip with two members", gzip_two_members, 200, encoding="gzip", stores=True),
    HttpRow("over the limit, Content-Length", oversized_protobuf, 413, ("exceeds the limit of 65536 bytes",)),
    HttpRow("over the limit, chunked", oversized_protobuf, 413, ("exceeds the limit of 65536 bytes",), chunked=True),
    HttpRow("exactly the limit, Content-Length", lambda: protobuf_of_size(SMALL_LIMIT), 200, stores=True),
    HttpRow("exactly the limit, chunked", lambda: protobuf_of_size(SMALL_LIMIT), 200, chunked=True, stores=True),
    HttpRow("one byte over, Content-Length", lambda: protobuf_of_size(SMALL_LIMIT + 1), 413, ("exceeds the limit",)),
    HttpRow(
        "one byte over, chunked", lambda: protobuf_of_size(SMALL_LIMIT + 1), 413, ("exceeds the limit",), chunked=True
    ),
    HttpRow(
        "gzip inflating to exactly the decompressed limit",
        lambda: gzip_inflating_to(SMALL_DECOMPRESSED_LIMIT),
        200,
        encoding="gzip",
        stores=True,
    ),
    HttpRow(
        "gzip inflating to one byte over the decompressed limit",
        lambda: gzip_inflating_to(SMALL_DECOMPRESSED_LIMIT + 1),
        413,
        ("decompressed", "exceeds the limit of 262144 bytes"),
        encoding="gzip",
    ),
    HttpRow(
        "over the limit, JSON",
        lambda: Payload(b'{"resourceLogs": []}' + b" " * 100_000),
        413,
        ("exceeds the limit",),
        content_type=JSON,
        reply="json",
    ),
    HttpRow(
        "gzip bomb (1 GiB of zeros)",
        gzip_bomb,
        413,
        ("decompressed", "exceeds the limit of 16777216 bytes"),
        encoding="gzip",
        config="large",
        memory_bound=128 * 1024 * 1024,
    ),
    HttpRow(
        "gzip bomb (300 members)",
        gzip_bomb_members,
        413,
        ("decompressed", "exceeds the limit of 16777216 bytes"),
        encoding="gzip",
        config="large",
        memory_bound=128 * 1024 * 1024,
    ),
    HttpRow("corrupt gzip", corrupt_gzip, 400, ("gzip",), encoding="gzip"),
    HttpRow("truncated gzip", truncated_gzip, 400, ("gzip", "truncated"), encoding="gzip"),
    HttpRow("gzip header on a plain body", valid_protobuf, 400, ("gzip",), encoding="gzip"),
    HttpRow(
        "gzip with a corrupt second member",
        gzip_with_corrupt_second_member,
        400,
        ("gzip",),
        encoding="gzip",
    ),
    HttpRow(
        "gzip with trailing garbage",
        gzip_with_trailing_garbage,
        400,
        ("gzip",),
        encoding="gzip",
    ),
    HttpRow("Content-Encoding br", valid_protobuf, 415, ("content-encoding", "br", "gzip"), encoding="br"),
    HttpRow("invalid UTF-8 in a string", invalid_utf8_protobuf, 400, ("utf-8",)),
    HttpRow(
        "invalid UTF-8 in JSON",
        lambda: Payload(b'{"resourceLogs": [{"scopeLogs": [{"logRecords": [{"severityText": "\xff\xfe"}]}]}]}'),
        400,
        ("not valid json", "utf-8"),
        content_type=JSON,
        reply="json",
    ),
    HttpRow("unknown protobuf fields are skipped", with_unknown_field, 200, stores=True),
    HttpRow("10,000-deep AnyValue, protobuf", lambda: deep_protobuf(10_000), 400, ("depth",), config="large"),
    HttpRow(
        "10,000-deep AnyValue, JSON",
        lambda: deep_json(10_000),
        400,
        ("depth",),
        content_type=JSON,
        reply="json",
        config="large",
    ),
    HttpRow("40-deep AnyValue, protobuf", lambda: deep_protobuf(40), 400, ("nested deeper than 32",)),
    HttpRow(
        "100-deep AnyValue, JSON",
        lambda: deep_json(100),
        400,
        ("nested deeper than 32",),
        content_type=JSON,
        reply="json",
    ),
    HttpRow("5 MB attribute under the limit", big_attribute, 200, config="large", stores=True),
    HttpRow("5 MB attribute over a small limit", big_attribute, 413, ("exceeds the limit",)),
    HttpRow("5 MB attribute over a small limit, chunked", big_attribute, 413, ("exceeds the limit",), chunked=True),
    HttpRow(
        "unknown signal path", valid_protobuf, 404, ("unknown path /v1/foo", "/v1/logs"), path="/v1/foo", reply="json"
    ),
    HttpRow("GET /v1/logs", lambda: Payload(b""), 405, ("method get not allowed", "post"), method="GET", reply="json"),
]


def export_ids(capsys: pytest.CaptureFixture[str], data_dir: Path) -> set[str]:
    capsys.readouterr()
    code = cli.main(["audit", "export", "--data-dir", str(data_dir)])
    out, err = capsys.readouterr()
    assert code == 0, err
    return {orjson.loads(line)["id"] for line in out.splitlines()}


def _proc_status_kib(name: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(name + ":"):
            return int(line.split()[1])
    raise KeyError(name)


def _reset_peak_rss() -> bool:
    try:
        Path("/proc/self/clear_refs").write_text("5")
    except OSError:
        return False
    return True


def _params(rows: list[Any]) -> list[Any]:
    return [
        pytest.param(r, id=r.name, marks=[pytest.mark.xfail(strict=True, reason=r.bug)] if r.bug else []) for r in rows
    ]


@pytest.mark.parametrize("row", _params(HTTP_ROWS))
async def test_http_bad_input(row: HttpRow, bridge_factory, capsys):
    bridge = await bridge_factory(overrides=CONFIGS[row.config])
    before = valid_protobuf(3)
    answer = await http_call(bridge.http_url, "/v1/logs", before.body)
    assert answer.status == 200, answer.body

    payload = row.build()
    measure = row.memory_bound is not None
    if measure:
        rss_before = _proc_status_kib("VmRSS")
        rss_tracked = _reset_peak_rss()
        tracemalloc.start()
    try:
        answer = await http_call(
            bridge.http_url,
            row.path,
            None if row.method == "GET" else payload.body,
            method=row.method,
            content_type=row.content_type,
            encoding=row.encoding,
            chunked=row.chunked,
        )
    finally:
        if measure:
            _, traced_peak = tracemalloc.get_traced_memory()
            tracemalloc.stop()
    assert answer.status == row.status, (answer.status, answer.body[:500])

    if row.status == 200:
        assert answer.body in (b"", b"{}")
    else:
        code, message, media = answer.status_message()
        assert media == row.reply
        assert code != 0
        low = message.lower()
        for fragment in row.fragments:
            assert fragment.lower() in low, f"{fragment!r} not in {message!r}"
    if row.status == 405:
        assert answer.headers.get("allow") == "POST"
    if measure:
        assert row.memory_bound is not None
        assert traced_peak < row.memory_bound, f"server allocated {traced_peak / 2**20:.0f} MiB inflating a bomb"
        if rss_tracked:
            growth = (_proc_status_kib("VmHWM") - rss_before) * 1024
            assert growth < row.memory_bound, f"peak RSS grew by {growth / 2**20:.0f} MiB"

    after = valid_protobuf(2)
    answer = await http_call(bridge.http_url, "/v1/logs", after.body)
    assert answer.status == 200, answer.body

    expected = before.ids | after.ids | (payload.ids if row.stores else set())
    assert export_ids(capsys, bridge.data_dir) == expected
    if row.name.startswith("5 MB attribute under"):
        (rec,) = bridge.records(session=payload.session)
        assert rec["attributes"]["big"] == big_attribute_value()


def _request_bytes(netloc: str, body: bytes, *, chunked: bool = False, encoding: str | None = None) -> bytes:
    head = f"POST /v1/logs HTTP/1.1\r\nHost: {netloc}\r\nContent-Type: {PROTOBUF}\r\n"
    if encoding:
        head += f"Content-Encoding: {encoding}\r\n"
    if chunked:
        return (head + "Transfer-Encoding: chunked\r\n\r\n").encode() + b"%x\r\n%b\r\n0\r\n\r\n" % (len(body), body)
    return (head + f"Content-Length: {len(body)}\r\n\r\n").encode() + body


@pytest.mark.parametrize(
    ("bad", "chunked", "encoding", "status"),
    [
        pytest.param(lambda: b"\xff\xff\xff", False, None, 400, id="garbage"),
        pytest.param(lambda: oversized_protobuf().body, False, None, 413, id="over-limit-content-length"),
        pytest.param(lambda: oversized_protobuf().body, True, None, 413, id="over-limit-chunked"),
        pytest.param(lambda: corrupt_gzip().body, False, "gzip", 400, id="corrupt-gzip"),
        pytest.param(lambda: valid_protobuf().body, False, "br", 415, id="unsupported-encoding"),
    ],
)
async def test_keep_alive_connection_survives_a_refused_request(bridge_factory, bad, chunked, encoding, status):
    """After a refusal (even one answered before the body was read) the next request on the same keep-alive
    connection is served: exporters reuse their connections."""
    bridge = await bridge_factory(overrides=SMALL)
    url = urlsplit(bridge.http_url)
    reader, writer = await asyncio.open_connection(url.hostname, url.port)
    good = valid_protobuf()
    statuses = []
    try:
        for data in (
            _request_bytes(url.netloc, bad(), chunked=chunked, encoding=encoding),
            _request_bytes(url.netloc, good.body),
        ):
            writer.write(data)
            await writer.drain()
            async with asyncio.timeout(10):
                got = int((await reader.readline()).split()[1])
                length = 0
                while (line := (await reader.readline()).strip()) != b"":
                    if line.lower().startswith(b"content-length:"):
                        length = int(line.split(b":")[1])
                await reader.readexactly(length)
            statuses.append(got)
    finally:
        writer.close()
        with contextlib.suppress(ConnectionError, OSError):
            await writer.wait_closed()
    assert statuses == [status, 200]
    assert {r["id"] for r in bridge.records(session=good.session)} == good.ids


# ---------------------------------------------------------------------------------------------------------------
# the gRPC table


@dataclass(frozen=True)
class GrpcRow:
    name: str
    build: Callable[[], Payload]
    code: grpc.StatusCode
    fragments: tuple[str, ...] = ()
    method: str = LOGS_METHOD
    config: str = "small"
    stores: bool = False
    gzip: bool = False  # grpc-encoding: gzip
    bug: str | None = None


GRPC_ROWS = [
    GrpcRow(
        "garbage bytes",
        lambda: Payload(b"\xff\xfe garbage \x00\x01" * 20),
        grpc.StatusCode.INVALID_ARGUMENT,
        ("not a valid protobuf",),
    ),
    GrpcRow("truncated protobuf", truncated_protobuf, grpc.StatusCode.INVALID_ARGUMENT, ("not a valid protobuf",)),
    GrpcRow("invalid UTF-8 in a string", invalid_utf8_protobuf, grpc.StatusCode.INVALID_ARGUMENT, ("utf-8",)),
    GrpcRow(
        "10,000-deep AnyValue",
        lambda: deep_protobuf(10_000),
        grpc.StatusCode.INVALID_ARGUMENT,
        ("depth",),
        config="large",
    ),
    GrpcRow(
        "40-deep AnyValue", lambda: deep_protobuf(40), grpc.StatusCode.INVALID_ARGUMENT, ("nested deeper than 32",)
    ),
    GrpcRow(
        "garbage on the metrics service",
        lambda: Payload(b"\xff" * 40),
        grpc.StatusCode.INVALID_ARGUMENT,
        ("ExportMetricsServiceRequest",),
        method="/opentelemetry.proto.collector.metrics.v1.MetricsService/Export",
    ),
    GrpcRow("over max_recv_msg_size", oversized_protobuf, grpc.StatusCode.RESOURCE_EXHAUSTED, ("larger than max",)),
    GrpcRow(
        "gzip-compressed message inflating over max_recv_msg_size",
        lambda: Payload(bytes(8 * 1024 * 1024)),
        grpc.StatusCode.RESOURCE_EXHAUSTED,
        gzip=True,
    ),
    GrpcRow("gzip-compressed valid message", valid_protobuf, grpc.StatusCode.OK, gzip=True, stores=True),
    GrpcRow("5 MB attribute under the limit", big_attribute, grpc.StatusCode.OK, config="large", stores=True),
    GrpcRow(
        "unknown method",
        valid_protobuf,
        grpc.StatusCode.UNIMPLEMENTED,
        method="/opentelemetry.proto.collector.logs.v1.LogsService/Delete",
    ),
    GrpcRow(
        "unknown service",
        valid_protobuf,
        grpc.StatusCode.UNIMPLEMENTED,
        method="/opentelemetry.proto.collector.profiles.v1development.ProfilesService/Export",
    ),
    GrpcRow("empty message", _no_body, grpc.StatusCode.OK),
]


async def grpc_call(target: str, method: str, body: bytes, *, gzip: bool = False) -> tuple[grpc.StatusCode, str]:
    compression = grpc.Compression.Gzip if gzip else grpc.Compression.NoCompression
    async with aio.insecure_channel(target, compression=compression) as channel:
        call = channel.unary_unary(method)  # raw bytes in, raw bytes out
        try:
            await call(body, timeout=30)
        except aio.AioRpcError as exc:
            return exc.code(), exc.details() or ""
    return grpc.StatusCode.OK, ""


@pytest.mark.parametrize("row", _params(GRPC_ROWS))
async def test_grpc_bad_input(row: GrpcRow, bridge_factory, capsys):
    bridge = await bridge_factory(overrides=CONFIGS[row.config])
    before = valid_protobuf(3)
    assert await grpc_call(bridge.grpc_target, LOGS_METHOD, before.body) == (grpc.StatusCode.OK, "")

    payload = row.build()
    code, details = await grpc_call(bridge.grpc_target, row.method, payload.body, gzip=row.gzip)
    assert code == row.code, (code, details)
    if row.code != grpc.StatusCode.OK:
        assert details, "an error without a message"
    for fragment in row.fragments:
        assert fragment.lower() in details.lower(), f"{fragment!r} not in {details!r}"

    after = valid_protobuf(2)
    assert await grpc_call(bridge.grpc_target, LOGS_METHOD, after.body) == (grpc.StatusCode.OK, "")
    # the other transport is unaffected too
    http_after = valid_protobuf(1)
    assert (await http_call(bridge.http_url, "/v1/logs", http_after.body)).status == 200

    expected = before.ids | after.ids | http_after.ids | (payload.ids if row.stores else set())
    assert export_ids(capsys, bridge.data_dir) == expected
    if row.stores and row.name.startswith("5 MB"):
        (rec,) = bridge.records(session=payload.session)
        assert rec["attributes"]["big"] == big_attribute_value()
