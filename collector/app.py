"""The collector's ASGI application: receiver, health and query API over one store and one writer."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING

from google.rpc import code_pb2
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from hopscope.collector.auth import BearerAuthMiddleware
from hopscope.collector.health import ConnectionLimitView, DiskWatch, HealthEndpoints
from hopscope.collector.http.guard import ConnectionStats
from hopscope.collector.http.host_check import LoopbackHostMiddleware
from hopscope.collector.ingest.body import InflightBudget
from hopscope.collector.ingest.forward import Forwarder
from hopscope.collector.ingest.http_receiver import OtlpReceiver, status_response
from hopscope.collector.ingest.signals import LOGS
from hopscope.collector.ingest.writer import SpanWriter
from hopscope.collector.loopback import is_loopback_host
from hopscope.collector.otlp.codec import Encoding
from hopscope.collector.query.api import QueryApi
from hopscope.collector.query.layer import QueryLayer
from hopscope.collector.settings import CollectorSettings
from hopscope.collector.store.base import SpanStore

if TYPE_CHECKING:
    from hopscope.collector.ingest.grpc_receiver import GrpcTraceReceiver

# Seconds that shutdown waits for queued spans to be committed.
DRAIN_TIMEOUT_SECONDS = 60.0
# Seconds that shutdown then spends sending what is still queued for --forward upstreams.
FORWARD_FLUSH_TIMEOUT_SECONDS = 5.0
# Seconds that shutdown gives OTLP/gRPC calls in flight to be committed and answered (as uvicorn's HTTP).
GRPC_GRACE_SECONDS = 30.0


# google.rpc.Code of the errors that the router and the server answer (google.rpc's HTTP mapping).
_ERROR_CODES = {404: code_pb2.NOT_FOUND, 405: code_pb2.UNIMPLEMENTED, 500: code_pb2.INTERNAL}


def _error_answer(request: Request, status: int, message: str) -> Response:
    """An error of the routing shell (unknown path, wrong method, a crash) as a google.rpc.Status body."""
    encoding = Encoding.from_content_type(request.headers.get("content-type")) or Encoding.JSON
    return status_response(status, _ERROR_CODES.get(status, code_pb2.UNKNOWN), message, encoding)


async def _http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    if exc.status_code == 404:
        message = f"no such endpoint: {request.url.path}"
    elif exc.status_code == 405:
        message = f"{request.method} is not allowed on {request.url.path}"
    else:
        message = exc.detail
    response = _error_answer(request, exc.status_code, message)
    if exc.headers:  # 405's Allow
        response.headers.update(exc.headers)
    return response


async def _server_error(request: Request, exc: Exception) -> Response:
    return _error_answer(request, 500, "internal error; the collector logged it")


def create_app(
    settings: CollectorSettings,
    store: SpanStore,
    *,
    connections: ConnectionStats | None = None,
    max_connections: int = 0,
) -> Starlette:
    """The app owns the writer thread (started and drained by its lifespan); the caller owns the store.

    ``connections`` are the HTTP server's counters (server.py), shown by ``/healthz``.
    """
    writer = SpanWriter(
        store,
        max_pending_spans=settings.max_pending_spans,
        retention_seconds=settings.retention_seconds,
        stitch_in_process=settings.stitch_process,
    )
    forwarder = (
        Forwarder(
            settings.forward_urls,
            max_queue_bytes=settings.forward_queue_bytes,
            initial_backoff=settings.forward_initial_backoff_seconds,
            max_backoff=settings.forward_max_backoff_seconds,
        )
        if settings.forward_urls
        else None
    )
    budget = InflightBudget(settings.max_inflight_bytes)
    receiver = OtlpReceiver(
        store, writer, settings.max_body_bytes, budget, forwarder, span_limits=settings.span_limits
    )
    logs_receiver = OtlpReceiver(
        store,
        writer,
        settings.max_body_bytes,
        budget,
        forwarder,
        span_limits=settings.span_limits,
        signal=LOGS,
    )
    grpc_receiver: GrpcTraceReceiver | None = None
    if settings.grpc_port is not None and settings.receiver:
        from hopscope.collector.ingest import grpc_receiver as otlp_grpc  # noqa: PLC0415 - grpcio only with --grpc-port

        grpc_receiver = otlp_grpc.GrpcTraceReceiver(
            receiver,
            writer,
            budget,
            host=settings.host,
            port=settings.grpc_port or 0,
            max_body_bytes=settings.max_body_bytes,
            token=settings.auth_token,
            logs_receiver=logs_receiver,
        )
    query = QueryApi(QueryLayer(store))
    poller = None
    if settings.sqs is not None:
        from hopscope.collector.aws.poller import QueuePoller  # noqa: PLC0415 - boto3 only with --sqs

        poller = QueuePoller(store, settings.sqs, retention_seconds=settings.retention_seconds)

    connection_view = ConnectionLimitView(connections, max_connections) if connections else None
    # /healthz and /readyz; the disk watch looks at the store's size and free space, and warns when low
    health = HealthEndpoints(writer, forwarder, connection_view, DiskWatch(store, settings.retention_seconds))

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        if grpc_receiver:  # first: it is what can fail (a taken port)
            await grpc_receiver.start()
        writer.start()
        if forwarder:
            forwarder.start()
        if poller:
            poller.start()
        health.disk.start()
        try:
            yield
        finally:
            health.disk.stop()
            if grpc_receiver:
                await grpc_receiver.stop(GRPC_GRACE_SECONDS)
            if poller:
                poller.stop()
            writer.close(DRAIN_TIMEOUT_SECONDS)
            receiver.close()
            logs_receiver.close()
            if forwarder:
                forwarder.close(FORWARD_FLUSH_TIMEOUT_SECONDS)

    middleware = [
        # DNS rebinding: bound to a loopback address, only loopback host names (before the token check)
        *([Middleware(LoopbackHostMiddleware)] if is_loopback_host(settings.host) else []),
        *([Middleware(BearerAuthMiddleware, token=settings.auth_token)] if settings.auth_token else []),
    ]
    app = Starlette(
        routes=[
            # --no-receiver: spans come from others (OpenTelemetry Collectors writing to the store)
            *(
                [
                    Route("/v1/traces", receiver.export, methods=["POST"]),
                    Route("/v1/logs", logs_receiver.export, methods=["POST"]),
                ]
                if settings.receiver
                else []
            ),
            Route("/healthz", health.healthz, methods=["GET"]),
            Route("/readyz", health.readyz, methods=["GET"]),
            Route("/api/traces/{trace_id}", query.get_trace, methods=["GET"]),
            Route("/api/flows", query.get_flows, methods=["GET"]),
            Route("/api/flows/{flow_id}", query.get_flow, methods=["GET"]),
            Route("/api/flows/{flow_id}/otlp", query.get_flow_otlp, methods=["GET"]),
            Route("/api/flows/{flow_id}/logs", query.get_flow_logs, methods=["GET"]),
            Route("/api/flows/{flow_id}/logs/otlp", query.get_flow_logs_otlp, methods=["GET"]),
            Route("/api/logs", query.get_logs, methods=["GET"]),
            Route("/api/services", query.get_services, methods=["GET"]),
            Route("/api/latency", query.get_latency, methods=["GET"]),
            Route("/api/graph", query.get_graph, methods=["GET"]),
            Route("/api/queues", query.get_queues, methods=["GET"]),
            Route("/api/queues/{name}/depth", query.get_queue_depth, methods=["GET"]),
            Route("/openapi.json", query.openapi, methods=["GET"]),
        ],
        middleware=middleware,
        exception_handlers={HTTPException: _http_error, Exception: _server_error},
        lifespan=lifespan,
    )
    app.state.writer = writer
    app.state.poller = poller
    app.state.grpc = grpc_receiver
    return app
