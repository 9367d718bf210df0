"""``hopscope export`` and ``hopscope import`` as a user runs them, on real SQLite files."""

from __future__ import annotations

import gzip
import json
import subprocess
from pathlib import Path

from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans
from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceRequest

from hopscope.collector.model.flows import FlowFilter
from hopscope.collector.otlp.codec import traces_from_json
from hopscope.collector.query.layer import QueryLayer
from hopscope.collector.store.sqlite.store import SQLiteStore
from tests.helpers.flow_chains import Services, flows_by_trace, order_chain
from tests.helpers.servers import HOPSCOPE


def _run(*args: str | Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([HOPSCOPE, *map(str, args)], capture_output=True, text=True, timeout=60)


def _source(tmp_path: Path) -> tuple[Path, Services, int]:
    services = Services()
    order_chain(services, "o-1")
    order_chain(services, "o-2")
    db = tmp_path / "source.db"
    store = SQLiteStore(db)
    store.write([encode_spans(services.spans())])
    flow_id = store.search_flow_ids(FlowFilter(correlation_id="o-1"), 1, 0)[0]
    store.close()
    return db, services, flow_id


def test_a_flow_exported_and_imported_elsewhere_is_the_same_flow(tmp_path: Path) -> None:
    # GIVEN a database with two flows
    db, _, flow_id = _source(tmp_path)
    # WHEN one flow is exported to a file and imported into a fresh database
    out = tmp_path / "flow.json"
    exported = _run("export", "--flow", flow_id, "--db", db, "--out", out)
    assert exported.returncode == 0, exported.stderr
    imported = _run("import", out, "--db", tmp_path / "fresh.db")
    assert imported.returncode == 0, imported.stderr
    assert "imported 5 spans from 1 file(s)" in imported.stderr
    # THEN the fresh database holds exactly that flow's spans, unchanged, as one flow
    document = json.loads(out.read_text())
    source, fresh = SQLiteStore(db, read_only=True), SQLiteStore(tmp_path / "fresh.db", read_only=True)
    trace_ids = {
        s.trace_id
        for rs in traces_from_json(document).resource_spans
        for ss in rs.scope_spans
        for s in ss.spans
    }
    assert len(trace_ids) == 3 and fresh.count_spans() == 5
    for trace_id in trace_ids:
        assert fresh.get_trace(trace_id) == source.get_trace(trace_id)
    assert len({fresh.flow_of_trace(t) for t in trace_ids}) == 1


def test_a_trace_exports_to_standard_output_and_protobuf_and_gzip_files_import(tmp_path: Path) -> None:
    db, services, _ = _source(tmp_path)
    trace_id = f"{services.spans()[0].context.trace_id:032x}"
    exported = _run("export", "--trace", trace_id, "--db", db)
    assert exported.returncode == 0
    assert json.loads(exported.stdout)["resourceSpans"][0]["scopeSpans"][0]["spans"][0]["traceId"] == trace_id
    # protobuf and gzipped protobuf files of the whole set, imported twice: spans are stored once
    request = encode_spans(services.spans())
    (tmp_path / "all.pb").write_bytes(request.SerializeToString())
    (tmp_path / "all.pb.gz").write_bytes(gzip.compress(request.SerializeToString()))
    result = _run("import", tmp_path / "all.pb", tmp_path / "all.pb.gz", "--db", tmp_path / "copy.db")
    assert result.returncode == 0, result.stderr
    copy = SQLiteStore(tmp_path / "copy.db", read_only=True)
    assert copy.count_spans() == 10
    assert len(flows_by_trace(copy, services.spans())) == 2


def test_unknown_ids_and_bad_files_fail_with_one_clear_line_and_write_nothing(tmp_path: Path) -> None:
    db, _, _ = _source(tmp_path)
    missing = _run("export", "--flow", "999", "--db", db)
    assert missing.returncode == 1 and missing.stderr.strip() == f"hopscope export: no flow 999 in {db}"
    bad_id = _run("export", "--trace", "xyz", "--db", db)
    assert bad_id.returncode == 1 and "32 hex characters" in bad_id.stderr
    no_db = _run("export", "--flow", "1", "--db", tmp_path / "absent.db")
    assert no_db.returncode == 1 and "no hopscope database" in no_db.stderr
    garbage = tmp_path / "garbage.json"
    garbage.write_text('{"resourceSpans": 3}')
    good = tmp_path / "good.pb"
    good.write_bytes(encode_spans(Services().spans()).SerializeToString())
    result = _run("import", good, garbage, "--db", tmp_path / "target.db")
    assert result.returncode == 1
    assert f"{garbage} is not an OTLP file" in result.stderr
    assert not (tmp_path / "target.db").exists()


def test_a_flows_log_records_export_and_import_with_its_spans(tmp_path: Path) -> None:
    # GIVEN a flow whose spans logged (a record in each of its traces)
    db, _, flow_id = _source(tmp_path)
    store = SQLiteStore(db)
    trace_ids = store.flow_trace_ids(flow_id)
    request = ExportLogsServiceRequest()
    scope = request.resource_logs.add().scope_logs.add()
    for number, trace_id in enumerate(trace_ids):
        record = scope.log_records.add(time_unix_nano=1_000 + number, trace_id=trace_id, span_id=b"\x01" * 8)
        record.body.string_value = f"line {number}"
    store.write_logs([request])
    store.close()
    # WHEN the flow's spans and its log records are exported, and both files imported elsewhere
    spans_file, logs_file = tmp_path / "flow.json", tmp_path / "flow-logs.json"
    assert _run("export", "--flow", flow_id, "--db", db, "--out", spans_file).returncode == 0
    exported = _run("export", "--flow", flow_id, "--logs", "--db", db, "--out", logs_file)
    assert exported.returncode == 0, exported.stderr
    imported = _run("import", spans_file, logs_file, "--db", tmp_path / "fresh.db")
    # THEN the fresh database holds the flow and its records, in the flow
    assert imported.returncode == 0, imported.stderr
    assert f"and {len(trace_ids)} log records from 2 file(s)" in imported.stderr
    fresh = SQLiteStore(tmp_path / "fresh.db", read_only=True)
    [fresh_flow] = fresh.search_flow_ids(FlowFilter(correlation_id="o-1"), 1, 0)
    lines = QueryLayer(fresh).flow_logs(fresh_flow)
    assert lines is not None
    assert [line.body for line in lines.lines] == [f"line {n}" for n in range(len(trace_ids))]
    fresh.close()
