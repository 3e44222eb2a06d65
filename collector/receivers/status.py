"""The one table that maps internal errors to HTTP status, gRPC code and Retry-After.

Receivers raise or catch the typed errors below (and :class:`~collector.processing.decode.DecodeError`,
:class:`~collector.store.api.StorageError`) and ask :func:`classify` how to answer, so an error means the same
thing on both transports.
"""

from __future__ import annotations

from dataclasses import dataclass

import grpc

from collector.processing.decode import DecodeError
from collector.store.api import StorageError


class ReceiverError(Exception):
    """Base of the errors a receiver answers with a client-visible status."""

    reason = "error"


class UnsupportedMediaType(ReceiverError):
    reason = "unsupported_media_type"


class UnsupportedEncoding(ReceiverError):
    reason = "unsupported_encoding"


class PayloadTooLarge(ReceiverError):
    reason = "too_large"


class Unauthenticated(ReceiverError):
    reason = "unauthenticated"


class Backpressure(ReceiverError):
    """A destination's backlog limit is reached; clients must retry later."""

    reason = "backpressure"

    def __init__(self, message: str, retry_after: float) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class ShuttingDown(ReceiverError):
    reason = "shutting_down"


class RequestTimeout(ReceiverError):
    """The request passed one of the receivers' deadlines (its body too slow, or the call too long)."""

    reason = "timeout"


class ClientGone(ReceiverError):
    """The client disconnected before its request was processed (nobody will read the answer)."""

    reason = "client_gone"


@dataclass(frozen=True)
class Answer:
    """How to answer a failed request."""

    http_status: int
    grpc_code: grpc.StatusCode
    reason: str
    message: str
    retry_after: float | None = None


def classify(exc: BaseException, storage_retry_after: float = 5.0) -> Answer:
    """The answer for ``exc``. Unknown exceptions are internal errors (500 / INTERNAL) with a generic message."""
    msg = str(exc)
    if isinstance(exc, DecodeError):
        return Answer(400, grpc.StatusCode.INVALID_ARGUMENT, "decode_error", msg)
    if isinstance(exc, UnsupportedMediaType):
        return Answer(415, grpc.StatusCode.INVALID_ARGUMENT, exc.reason, msg)
    if isinstance(exc, UnsupportedEncoding):
        return Answer(415, grpc.StatusCode.UNIMPLEMENTED, exc.reason, msg)
    if isinstance(exc, PayloadTooLarge):
        return Answer(413, grpc.StatusCode.RESOURCE_EXHAUSTED, exc.reason, msg)
    if isinstance(exc, Unauthenticated):
        return Answer(401, grpc.StatusCode.UNAUTHENTICATED, exc.reason, msg)
    if isinstance(exc, Backpressure):
        return Answer(429, grpc.StatusCode.RESOURCE_EXHAUSTED, exc.reason, msg, exc.retry_after)
    if isinstance(exc, ClientGone):
        return Answer(408, grpc.StatusCode.CANCELLED, exc.reason, msg)
    if isinstance(exc, RequestTimeout):
        return Answer(408, grpc.StatusCode.DEADLINE_EXCEEDED, exc.reason, msg)
    if isinstance(exc, ShuttingDown):
        return Answer(503, grpc.StatusCode.UNAVAILABLE, exc.reason, msg, 1.0)
    if isinstance(exc, StorageError):
        return Answer(503, grpc.StatusCode.UNAVAILABLE, f"storage_{exc.reason}", msg, storage_retry_after)
    return Answer(500, grpc.StatusCode.INTERNAL, "internal", "internal error while processing the request")


# ---------------------------------------------------------------------------------------------------------------
# google.rpc.Status, the body of an OTLP/HTTP error and the grpc-status-details-bin trailer


def _varint(n: int) -> bytes:
    out = bytearray()
    while True:
        b = n & 0x7F
        n >>= 7
        if n:
            out.append(b | 0x80)
        else:
            out.append(b)
            return bytes(out)


def _field(num: int, payload: bytes) -> bytes:
    return bytes([(num << 3) | 2]) + _varint(len(payload)) + payload


def encode_status(code: int, message: str, retry_after: float | None = None) -> bytes:
    """A ``google.rpc.Status`` protobuf: ``code`` (field 1, omitted when 0 as proto3 does), ``message`` (field 2) and,
    with ``retry_after``, a ``google.rpc.RetryInfo`` detail (field 3, an ``Any``). The one encoder both receivers
    use (the OTLP/HTTP error body, the gRPC ``grpc-status-details-bin`` trailer)."""
    body = (bytes([0x08]) + _varint(code) if code else b"") + _field(2, message.encode("utf-8", "replace"))
    if retry_after is not None:
        secs = int(retry_after)
        nanos = int((retry_after - secs) * 1e9)
        duration = (bytes([0x08]) + _varint(secs) if secs else b"") + (bytes([0x10]) + _varint(nanos) if nanos else b"")
        retry_info = _field(1, duration)
        any_msg = _field(1, b"type.googleapis.com/google.rpc.RetryInfo") + _field(2, retry_info)
        body += _field(3, any_msg)
    return body
