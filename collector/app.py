"""The collector's ASGI application: receiver, health and query API over one store and one writer."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING, Any

from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from hopscope.collector.auth import BearerAuthMiddleware
from hopscope.collector.body import InflightBudget
from hopscope.collector.forwarder import Forwarder
from hopscope.collector.query import QueryLayer
from hopscope.collector.query_api import QueryApi
from hopscope.collector.receiver import TraceReceiver
from hopscope.collector.settings import CollectorSettings
from hopscope.collector.span_writer import SpanWriter
from hopscope.collector.store.base import SpanStore

if TYPE_CHECKING:
    from hopscope.collector.otlp_grpc import GrpcTraceReceiver

# Seconds that shutdown waits for queued spans to be committed.
DRAIN_TIMEOUT_SECONDS = 60.0
# Seconds that shutdown then spends sending what is still queued for --forward upstreams.
FORWARD_FLUSH_TIMEOUT_SECONDS = 5.0
# Seconds that shutdown gives OTLP/gRPC calls in flight to be committed and answered (as uvicorn's HTTP).
GRPC_GRACE_SECONDS = 30.0


def create_app(settings: CollectorSettings, store: SpanStore[Any]) -> Starlette:
    """The app owns the writer thread (started and drained by its lifespan); the caller owns the store."""
    writer = SpanWriter(
        store, max_pending_spans=settings.max_pending_spans, retention_seconds=settings.retention_seconds
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
    receiver = TraceReceiver(store, writer, settings.max_body_bytes, budget, forwarder)
    grpc_receiver: GrpcTraceReceiver | None = None
    if settings.grpc_port is not None and settings.receiver:
        from hopscope.collector import otlp_grpc  # noqa: PLC0415 - grpcio only with --grpc-port

        grpc_receiver = otlp_grpc.GrpcTraceReceiver(receiver, writer, budget, settings)
    query = QueryApi(QueryLayer(store))
    poller = None
    if settings.sqs is not None:
        from hopscope.collector.sqs_poller import QueuePoller  # noqa: PLC0415 - boto3 only with --sqs

        poller = QueuePoller(store, settings.sqs, retention_seconds=settings.retention_seconds)

    async def healthz(request: Request) -> JSONResponse:
        forwarding = forwarder.stats() if forwarder else []
        return JSONResponse(
            {
                "status": "ok",
                "pending_spans": writer.pending_spans,
                "flows_pending": writer.flows_pending,
                "forwarding": forwarding,
            }
        )

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        if grpc_receiver:  # first: it is what can fail (a taken port)
            await grpc_receiver.start()
        writer.start()
        if forwarder:
            forwarder.start()
        if poller:
            poller.start()
        try:
            yield
        finally:
            if grpc_receiver:
                await grpc_receiver.stop(GRPC_GRACE_SECONDS)
            if poller:
                poller.stop()
            writer.close(DRAIN_TIMEOUT_SECONDS)
            if forwarder:
                forwarder.close(FORWARD_FLUSH_TIMEOUT_SECONDS)

    middleware = [Middleware(BearerAuthMiddleware, token=settings.auth_token)] if settings.auth_token else []
    app = Starlette(
        routes=[
            # --no-receiver: spans come from others (OpenTelemetry Collectors writing to the store)
            *([Route("/v1/traces", receiver.export, methods=["POST"])] if settings.receiver else []),
            Route("/healthz", healthz, methods=["GET"]),
            Route("/api/traces/{trace_id}", query.get_trace, methods=["GET"]),
            Route("/api/flows", query.get_flows, methods=["GET"]),
            Route("/api/flows/{flow_id}", query.get_flow, methods=["GET"]),
            Route("/api/flows/{flow_id}/otlp", query.get_flow_otlp, methods=["GET"]),
            Route("/api/services", query.get_services, methods=["GET"]),
            Route("/api/latency", query.get_latency, methods=["GET"]),
            Route("/api/graph", query.get_graph, methods=["GET"]),
            Route("/api/queues", query.get_queues, methods=["GET"]),
            Route("/api/queues/{name}/depth", query.get_queue_depth, methods=["GET"]),
            Route("/openapi.json", query.openapi, methods=["GET"]),
        ],
        middleware=middleware,
        lifespan=lifespan,
    )
    app.state.writer = writer
    app.state.poller = poller
    app.state.grpc = grpc_receiver
    return app
