"""``hopscope export`` and ``hopscope import``: OTLP files out of and into a store."""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from rich.progress import Progress

from hopscope.collector import otlp_codec
from hopscope.collector.otlp_codec import Encoding, OtlpDecodeError
from hopscope.collector.query import QueryLayer
from hopscope.collector.store.open import open_store
from hopscope.collector.validation import drop_invalid_spans


class TransferError(RuntimeError):
    """What went wrong, in a sentence for the command line."""


def export_otlp_json(db: Path | str, *, flow_id: int | None = None, trace_id: str | None = None) -> str:
    """A flow or a trace of the store as an OTLP JSON document (what ``/api/flows/{id}/otlp`` serves)."""
    store = open_store(str(db), read_only=True)
    try:
        queries = QueryLayer(store)
        if flow_id is not None:
            traces = queries.flow_otlp(flow_id)
            missing = f"no flow {flow_id} in {db}"
        else:
            assert trace_id is not None
            try:
                raw_id = bytes.fromhex(trace_id)
            except ValueError:
                raise TransferError(f"trace id must be 32 hex characters, got {trace_id!r}") from None
            if len(raw_id) != 16:
                raise TransferError(f"trace id must be 32 hex characters, got {trace_id!r}")
            traces = queries.trace(raw_id)
            missing = f"no trace {trace_id} in {db}"
    finally:
        store.close()
    if traces is None:
        raise TransferError(missing)
    return json.dumps(otlp_codec.traces_to_json(traces), indent=2)


@dataclass
class ImportResult:
    files: int = 0
    spans: int = 0
    rejected: int = 0


def read_otlp_file(path: Path) -> ExportTraceServiceRequest:
    """An OTLP JSON (``.json``) or protobuf file: ExportTraceServiceRequest and TracesData alike."""
    try:
        body = path.read_bytes()
    except OSError as exc:
        raise TransferError(f"cannot read {path}: {exc.strerror}") from None
    if body[:2] == b"\x1f\x8b":
        body = otlp_codec.inflate_gzip(body, 1 << 31)
    encoding = Encoding.JSON if body.lstrip()[:1] == b"{" else Encoding.PROTOBUF
    try:
        return otlp_codec.decode_request(body, encoding)
    except OtlpDecodeError as exc:
        raise TransferError(f"{path} is not an OTLP file: {exc}") from None


def import_files(db: Path | str, paths: Sequence[Path], *, show_progress: bool = True) -> ImportResult:
    """Load files into the store as the collector would: invalid spans counted and skipped, flows stitched."""
    requests = []
    result = ImportResult()
    for path in paths:  # read them all first: a bad file aborts before anything is written
        request = read_otlp_file(path)
        validation = drop_invalid_spans(request)
        result.rejected += validation.rejected
        requests.append(request)
    store = open_store(str(db))
    try:
        with Progress(disable=not show_progress, transient=True) as progress:
            task = progress.add_task("importing", total=len(requests))
            for request in requests:
                result.spans += store.write([request])
                result.files += 1
                progress.advance(task)
    finally:
        store.close()
    return result
