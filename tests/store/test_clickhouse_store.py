"""What only the ClickHouse store does: the exporter's text layout, retention by DELETE, read-only opening,
and export and import through ``--store`` (the rest of the store's behaviour is in the shared suite)."""

from __future__ import annotations

import json
import subprocess
import time
from pathlib import Path

import pytest

from hopscope.collector.store.clickhouse.spans import value_text
from hopscope.collector.store.clickhouse.store import ClickHouseStore
from hopscope.collector.store.errors import StoreError
from hopscope.collector.store.url import open_store
from tests.helpers.otlp_samples import full_request, spans_of
from tests.helpers.servers import HOPSCOPE


@pytest.fixture
def store(chdb_url: str) -> ClickHouseStore:
    opened = open_store(chdb_url)
    assert isinstance(opened, ClickHouseStore)
    return opened


def test_every_span_comes_back_as_the_exporter_keeps_it(store: ClickHouseStore) -> None:
    # GIVEN a request with every span field and every attribute value type
    request = full_request()
    assert store.write([request]) == 6
    traces = store.get_trace(spans_of(request)[0].trace_id)
    assert traces is not None
    # THEN the resource, the scopes' names and versions, and every span's ids, name, kind, times, status,
    # events and links are equal; attribute values are the exporter's text of the values sent
    (resource_spans,) = traces.resource_spans
    sent_resource = request.resource_spans[0].resource
    assert {kv.key: kv.value.string_value for kv in resource_spans.resource.attributes} == {
        kv.key: value_text(kv.value) for kv in sent_resource.attributes
    }
    assert sorted((s.scope.name, s.scope.version) for s in resource_spans.scope_spans) == sorted(
        (s.scope.name, s.scope.version) for s in request.resource_spans[0].scope_spans
    )
    got = {span.span_id: span for s in resource_spans.scope_spans for span in s.spans}
    for sent in spans_of(request):
        span = got[sent.span_id]
        fields = ("trace_id", "parent_span_id", "trace_state", "name", "kind", "start_time_unix_nano",
                  "end_time_unix_nano")  # fmt: skip
        assert [getattr(span, f) for f in fields] == [getattr(sent, f) for f in fields]
        assert (span.status.code, span.status.message) == (sent.status.code, sent.status.message)
        assert {kv.key: kv.value.string_value for kv in span.attributes} == {
            kv.key: value_text(kv.value) for kv in sent.attributes
        }
        assert [(e.name, e.time_unix_nano) for e in span.events] == [
            (e.name, e.time_unix_nano) for e in sent.events
        ]
        assert [(link.trace_id, link.span_id, link.trace_state) for link in span.links] == [
            (link.trace_id, link.span_id, link.trace_state) for link in sent.links
        ]
    # AND the values are the exporter's text: JSON for arrays and maps, base64 for bytes
    text = {kv.key: kv.value.string_value for kv in got[spans_of(request)[0].span_id].attributes}
    assert text["b"] == "true" and text["i"] == str(-(2**62)) and text["d"] == "3.25"
    assert json.loads(text["arr"]) == ["a", 1, 2.5, False]
    assert text["raw"] == "AP9ieXRlcw=="


def test_an_unknown_trace_is_none(store: ClickHouseStore) -> None:
    assert store.get_trace(b"\x01" * 16) is None


def test_retention_deletes_old_spans_and_keeps_recent_ones(store: ClickHouseStore) -> None:
    old = full_request(spans=5)
    for span in spans_of(old):
        span.start_time_unix_nano -= 3 * 86400 * 10**9
        span.end_time_unix_nano -= 3 * 86400 * 10**9
    recent = full_request(spans=2)
    store.write([old, recent])
    assert store.delete_spans_started_before(time.time_ns() - 86400 * 10**9, limit=2_000) == 10
    assert store.count_spans() == 4
    assert store.get_trace(spans_of(old)[0].trace_id) is None
    assert store.get_trace(spans_of(recent)[0].trace_id) is not None
    assert store.delete_spans_started_before(time.time_ns() - 86400 * 10**9, limit=2_000) == 0


def test_rows_prepared_by_one_store_are_refused_by_the_other(store: ClickHouseStore, tmp_path: Path) -> None:
    # GIVEN a SQLite store beside the ClickHouse one
    sqlite = open_store(tmp_path / "spans.db")
    try:
        # WHEN each is given rows that the other prepared THEN it refuses them and stores nothing
        with pytest.raises(TypeError, match="prepared by another store"):
            sqlite.write_prepared([store.prepare(full_request())])
        with pytest.raises(TypeError, match="prepared by another store"):
            store.write_prepared([sqlite.prepare(full_request())])
        assert sqlite.count_spans() == 0
        assert store.count_spans() == 0
    finally:
        sqlite.close()


def test_a_read_only_store_reads_but_refuses_to_write(store: ClickHouseStore, chdb_url: str) -> None:
    store.write([full_request()])
    reader = open_store(chdb_url, read_only=True)
    assert reader.count_spans() == 6
    with pytest.raises(StoreError, match="read-only"):
        reader.write([full_request()])


def test_a_read_only_store_without_the_span_table_says_so(chdb_url: str) -> None:
    with pytest.raises(StoreError, match="no otel_traces table"):
        open_store(chdb_url, read_only=True)


def test_import_and_export_through_a_chdb_store(tmp_path: Path) -> None:
    # GIVEN an OTLP file, imported into a chdb store by the command (a process of its own)
    request = full_request(spans=2)
    source = tmp_path / "spans.pb"
    source.write_bytes(request.SerializeToString())
    store = f"chdb://{tmp_path / 'clickhouse'}"
    run = subprocess.run([HOPSCOPE, "import", str(source), "--store", store], capture_output=True, text=True)
    assert run.returncode == 0, run.stderr
    assert "imported 4 spans" in run.stdout + run.stderr
    # WHEN the trace is exported again, THEN it holds the same spans
    trace_id = spans_of(request)[0].trace_id.hex()
    run = subprocess.run(
        [HOPSCOPE, "export", "--trace", trace_id, "--store", store], capture_output=True, text=True
    )
    assert run.returncode == 0, run.stderr
    exported = json.loads(run.stdout)
    names = sorted(
        s["name"] for rs in exported["resourceSpans"] for ss in rs["scopeSpans"] for s in ss["spans"]
    )
    assert names == sorted(span.name for span in spans_of(request))
