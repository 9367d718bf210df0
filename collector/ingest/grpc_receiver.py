"""OTLP/gRPC receiver (``TraceService/Export`` and ``LogsService/Export``), beside the OTLP/HTTP one, as
the OTLP specification says.

It runs on grpc.aio on uvicorn's own event loop, so that it shares the HTTP receiver's write path (the
same validation, store, writer and forwarder: an OK is sent only after the commit) and its memory
budget, which is only ever touched from that loop. The app's lifespan starts it and stops it before the
writer drains. Importing this module imports grpcio: only ``--grpc-port`` does.

Status codes follow the OTLP specification's "OTLP/gRPC Response" and "Throttling" sections: a full write
queue answers UNAVAILABLE with a RetryInfo; an exhausted memory budget RESOURCE_EXHAUSTED with a RetryInfo
(the spec's signal that the exhaustion is recoverable, so clients retry); bad data INVALID_ARGUMENT; a
missing or wrong token UNAUTHENTICATED; a message over the size limit RESOURCE_EXHAUSTED without RetryInfo
(not to be retried), from gRPC itself.
"""

from __future__ import annotations

import socket
from collections.abc import Awaitable, Callable

import grpc
from google.protobuf.any_pb2 import Any as AnyMessage
from google.protobuf.duration_pb2 import Duration
from google.rpc import error_details_pb2, status_pb2
from grpc import aio

from hopscope.collector.ingest.bearer import bearer_token_matches
from hopscope.collector.ingest.body import BudgetExhaustedError, InflightBudget, holding_cost
from hopscope.collector.ingest.http_receiver import RETRY_AFTER_SECONDS, OtlpReceiver, SpansNotStoredError
from hopscope.collector.ingest.validation import Validation
from hopscope.collector.ingest.writer import QueueFullError, SpanWriter, WriterClosedError
from hopscope.collector.otlp.codec import Encoding, OtlpDecodeError

METHOD = "Export"
_Export = Callable[[bytes, "aio.ServicerContext[bytes, bytes]"], Awaitable[bytes]]

_Metadata = tuple[tuple[str, str | bytes], ...]


class _Refused(Exception):
    """An error answer: raised inside the handler, turned into ``context.abort`` at its edge."""

    def __init__(self, code: grpc.StatusCode, message: str, *, retry: bool = False) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.retry = retry

    def trailers(self) -> _Metadata:
        """RetryInfo for retryable answers: in the standard status details (``grpc-status-details-bin``)
        and alone under ``google.rpc.retryinfo-bin``, the key opentelemetry-python's exporter reads."""
        if not self.retry:
            return ()
        retry_info = error_details_pb2.RetryInfo(retry_delay=Duration(seconds=RETRY_AFTER_SECONDS))
        detail = AnyMessage()
        detail.Pack(retry_info)
        status = status_pb2.Status(code=self.code.value[0], message=self.message, details=[detail])
        return (
            ("grpc-status-details-bin", status.SerializeToString()),
            ("google.rpc.retryinfo-bin", retry_info.SerializeToString()),
        )


class GrpcTraceReceiver:
    """Serves ``TraceService/Export`` (and ``LogsService/Export`` with a ``logs_receiver``) on
    ``host:port`` (0: a free port) with the HTTP receivers' write paths, memory budget, body limit and
    bearer token; one instance per app."""

    def __init__(
        self,
        receiver: OtlpReceiver,
        writer: SpanWriter,
        budget: InflightBudget,
        *,
        host: str,
        port: int,
        max_body_bytes: int,
        token: str | None,
        logs_receiver: OtlpReceiver | None = None,
    ) -> None:
        self._receivers = [receiver, *([logs_receiver] if logs_receiver else [])]
        self._writer = writer
        self._budget = budget
        self._host = host
        self._port = port
        self._max_body_bytes = max_body_bytes
        self._token = token
        self._server: aio.Server | None = None

    def bind(self) -> int:
        """Listen (port 0 picks a free one) and return the port; call it on the loop that will serve.

        The CLI binds before it logs its start line; a taken port ends the process at once with one
        line, as the HTTP bind does.
        """
        if self._server is not None:
            raise RuntimeError("the OTLP/gRPC receiver is already bound")
        host, port = self._host, self._port
        problem = _probe(host, port)  # grpc's own failure is a vague RuntimeError plus a log line
        if problem is not None:
            raise SystemExit(f"hopscope collector: cannot listen on {host}:{port} (OTLP/gRPC): {problem}")
        server = aio.server(
            options=[
                # Compressed and after gzip inflation, as for HTTP; larger gets RESOURCE_EXHAUSTED.
                ("grpc.max_receive_message_length", self._max_body_bytes),
                # grpc shares a port with another process by default; a second collector must fail instead.
                ("grpc.so_reuseport", 0),
            ]
        )
        # No deserializer: the handler gets the raw bytes and decodes them itself, so a malformed
        # message is answered INVALID_ARGUMENT with a clear message.
        for receiver in self._receivers:
            handler: grpc.RpcMethodHandler[bytes, bytes] = grpc.unary_unary_rpc_method_handler(
                self._export_of(receiver)
            )
            service = receiver.signal.grpc_service
            server.add_generic_rpc_handlers(
                (grpc.method_handlers_generic_handler(service, {METHOD: handler}),)
            )
        address = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
        try:
            bound = server.add_insecure_port(address)
        except RuntimeError as exc:
            raise SystemExit(f"hopscope collector: cannot listen on {address} (OTLP/gRPC): {exc}") from None
        self._server = server
        return bound

    async def start(self) -> None:
        """Serve RPCs; binds first unless :meth:`bind` was called."""
        if self._server is None:
            self.bind()
        assert self._server is not None
        await self._server.start()

    async def stop(self, grace: float) -> None:
        """Refuse new RPCs and give those in flight ``grace`` seconds to be committed and answered."""
        if self._server is not None:
            await self._server.stop(grace)

    def _export_of(self, receiver: OtlpReceiver) -> _Export:
        async def export(body: bytes, context: aio.ServicerContext[bytes, bytes]) -> bytes:
            """The RPC: a serialized Export*ServiceRequest in, a serialized response out."""
            try:
                self._check_token(context.invocation_metadata())
                return await self._receive(body, receiver)
            except _Refused as refused:
                await context.abort(refused.code, refused.message, trailing_metadata=refused.trailers())

        return export

    def _check_token(self, metadata: aio.Metadata | None) -> None:
        if self._token is None:
            return
        given = b""
        for key, value in metadata or ():
            if key == "authorization":
                given = value if isinstance(value, bytes) else value.encode()
        if not bearer_token_matches(given, self._token):
            message = "missing bearer token" if not given else "wrong bearer token"
            raise _Refused(grpc.StatusCode.UNAUTHENTICATED, message)

    async def _receive(self, body: bytes, receiver: OtlpReceiver) -> bytes:
        if self._writer.saturated:  # refuse before spending time on the message
            raise _Refused(grpc.StatusCode.UNAVAILABLE, "collector busy: the write queue is full", retry=True)
        cost = holding_cost(len(body), Encoding.PROTOBUF)
        try:
            self._budget.take(cost, holding=0)
        except BudgetExhaustedError as exc:
            # memory that frees itself in a moment: RESOURCE_EXHAUSTED, retryable because RetryInfo says so
            raise _Refused(grpc.StatusCode.RESOURCE_EXHAUSTED, f"collector busy: {exc}", retry=True) from None
        try:
            # decoded, limited and prepared off the event loop, as OTLP/HTTP does
            committed: Awaitable[Validation] = await receiver.off_the_loop(
                receiver.decode_and_accept_protobuf, body
            )
            validation = await committed
        except OtlpDecodeError as exc:
            raise _Refused(grpc.StatusCode.INVALID_ARGUMENT, str(exc)) from None
        except QueueFullError as exc:
            raise _Refused(grpc.StatusCode.UNAVAILABLE, f"collector busy: {exc}", retry=True) from None
        except (WriterClosedError, SpansNotStoredError) as exc:
            raise _Refused(grpc.StatusCode.UNAVAILABLE, str(exc), retry=True) from None
        finally:
            self._budget.give_back(cost)
        return receiver.signal.encode_response(
            validation.rejected, validation.error_message, Encoding.PROTOBUF
        )


def _probe(host: str, port: int) -> str | None:
    """Why ``host:port`` cannot be listened on, or None; port 0 always can."""
    if port == 0:
        return None
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
            sock.listen(1)
        except OSError as exc:
            return exc.strerror or str(exc)
    return None
