"""OTLP/gRPC receiver: the Logs, Metrics and Trace ``Export`` services on ``grpc.aio``.

Requests are registered with raw-bytes (de)serializers so the receiver, not grpcio, decodes the protobuf: an
undecodable message is answered ``INVALID_ARGUMENT`` with a message that says why, instead of grpcio's generic
``INTERNAL``. An export that does not complete within ``call_timeout`` (including its wait for the in-flight
budget) is answered ``DEADLINE_EXCEEDED``; connections are bounded by the handshake, idle and age limits of the
config (gRPC core's server channel arguments). Errors map through :mod:`collector.receivers.status`; retryable
ones carry a ``retry-after`` trailer and a ``google.rpc.RetryInfo`` detail so OTLP SDKs back off.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Iterable
from typing import Any

import grpc
from grpc import aio

from collector.config import GrpcReceiverConfig, parse_endpoint
from collector.processing.decode import DECODERS, DecodeError
from collector.receivers.context import ReceiverContext
from collector.receivers.status import ReceiverError, RequestTimeout, ShuttingDown, classify, encode_status
from collector.telemetry.logs import fields

log = logging.getLogger(__name__)

SERVICES = {
    "logs": "opentelemetry.proto.collector.logs.v1.LogsService",
    "metrics": "opentelemetry.proto.collector.metrics.v1.MetricsService",
    "traces": "opentelemetry.proto.collector.trace.v1.TraceService",
}

GrpcAuthenticator = Callable[[aio.ServicerContext], Awaitable[str | None]]


def status_details(code: int, message: str, retry_after: float | None) -> bytes:
    """``google.rpc.Status`` with an optional ``google.rpc.RetryInfo`` detail, for ``grpc-status-details-bin``."""
    return encode_status(code, message, retry_after)


class OtlpGrpcReceiver:
    """A ``grpc.aio`` server exposing the three OTLP Export services."""

    def __init__(
        self, cfg: GrpcReceiverConfig, ctx: ReceiverContext, *, authenticate: GrpcAuthenticator | None = None
    ) -> None:
        self.cfg = cfg
        self.ctx = ctx
        self.authenticate = authenticate
        self.accepting = True
        self.server: aio.Server | None = None
        self.port: int | None = None

    def _handler(self, signal: str) -> grpc.RpcMethodHandler:
        decode = DECODERS[(signal, "protobuf")]
        call_timeout = float(self.cfg.call_timeout)

        async def export(request: bytes, context: aio.ServicerContext) -> bytes:
            started = time.perf_counter()
            try:
                if not self.accepting:
                    raise ShuttingDown("the bridge is shutting down; retry later")
                identity = await self.authenticate(context) if self.authenticate is not None else None
                if self.ctx.admit is not None:
                    self.ctx.admit(signal)
                try:
                    async with asyncio.timeout(call_timeout):
                        async with self.ctx.inflight.hold(len(request), identity or context.peer()):
                            try:
                                items: Iterable[Any] = decode(request, self.ctx.max_depth)
                            except RecursionError:
                                raise DecodeError("message is nested too deeply") from None
                            stored = await self.ctx.pipeline.consume(signal, items, "grpc", identity, len(request))
                except TimeoutError:
                    raise RequestTimeout(
                        f"the export did not complete within {call_timeout:g}s (receivers.otlp.grpc.call_timeout)"
                    ) from None
                if log.isEnabledFor(logging.DEBUG):
                    log.debug(
                        "OTLP/gRPC %s request from %s: %d records (%d new), %d metric points, %d spans stored",
                        signal,
                        context.peer(),
                        stored.records,
                        stored.new_records,
                        stored.metric_points,
                        stored.spans,
                        extra=fields(transport="grpc", signal=signal, peer=context.peer(), records=stored.new_records),
                    )
            except Exception as exc:
                await self._abort(exc, signal, context)
            finally:
                self.ctx.metrics.request_latency.labels(signal, "grpc").observe(time.perf_counter() - started)
            return b""

        return grpc.unary_unary_rpc_method_handler(export, request_deserializer=None, response_serializer=None)

    async def _abort(self, exc: Exception, signal: str, context: aio.ServicerContext) -> None:
        answer = classify(exc, self.ctx.storage_retry_after)
        self.ctx.metrics.refused.labels(signal, "grpc", answer.reason).inc()
        if isinstance(exc, ReceiverError | DecodeError) or answer.grpc_code == grpc.StatusCode.UNAVAILABLE:
            log.warning("refused gRPC %s export from %s: %s", signal, context.peer(), answer.message)
        else:
            log.exception("internal error on gRPC %s export", signal, exc_info=exc)
        trailers: list[tuple[str, str | bytes]] = []
        if answer.retry_after is not None:
            trailers.append(("retry-after", str(max(1, round(answer.retry_after)))))
            trailers.append(
                (
                    "grpc-status-details-bin",
                    status_details(answer.grpc_code.value[0], answer.message, answer.retry_after),
                )
            )
        if trailers:
            context.set_trailing_metadata(tuple(trailers))
        await context.abort(answer.grpc_code, answer.message)

    def _server_credentials(self) -> grpc.ServerCredentials | None:
        tls = self.cfg.tls
        if not tls.enabled:
            return None
        with open(tls.key_file, "rb") as f:
            key = f.read()
        with open(tls.cert_file, "rb") as f:
            cert = f.read()
        ca = None
        if tls.client_ca_file:
            with open(tls.client_ca_file, "rb") as f:
                ca = f.read()
        return grpc.ssl_server_credentials([(key, cert)], root_certificates=ca, require_client_auth=bool(ca))

    async def start(self) -> None:
        host, port = parse_endpoint(self.cfg.endpoint)
        cfg = self.cfg
        options = [
            ("grpc.max_receive_message_length", int(cfg.max_recv_msg_size)),
            ("grpc.so_reuseport", 1 if self.ctx.reuse_port else 0),
            # deadlines for every client (gRPC core channel arguments, grpc/grpc include/grpc/impl/channel_arg_names.h)
            ("grpc.server_handshake_timeout_ms", int(cfg.handshake_timeout * 1000)),
            ("grpc.max_connection_idle_ms", int(cfg.max_connection_idle * 1000)),
            ("grpc.max_connection_age_ms", int(cfg.max_connection_age * 1000)),
            ("grpc.max_connection_age_grace_ms", int(cfg.max_connection_age_grace * 1000)),
        ]
        server = aio.server(options=options)
        handlers = {
            service: grpc.method_handlers_generic_handler(service, {"Export": self._handler(signal)})
            for signal, service in SERVICES.items()
        }
        server.add_generic_rpc_handlers(tuple(handlers.values()))
        address = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
        creds = self._server_credentials()
        try:
            bound = server.add_secure_port(address, creds) if creds else server.add_insecure_port(address)
        except RuntimeError as exc:
            raise OSError(f"cannot listen for OTLP/gRPC on {address}: {exc}") from None
        if not bound:
            raise OSError(f"cannot listen for OTLP/gRPC on {address}")
        await server.start()
        self.server = server
        self.port = bound
        log.info("OTLP/gRPC receiver listening on %s:%s", host, bound)

    async def stop(self, grace: float = 5.0) -> None:
        self.accepting = False
        if self.server is not None:
            await self.server.stop(grace)
            self.server = None
