"""The dashboard's frame with Streamlit's AppTest: the overview against the shop's database, the hint on an
empty one. (Each page's own tests are in test_dashboard_*.py.)"""

from __future__ import annotations

from pathlib import Path

import httpx

from hopscope.collector.model.flows import FlowFilter
from hopscope.collector.query.layer import QueryLayer
from hopscope.collector.settings import CollectorSettings
from hopscope.collector.store.sqlite.store import SQLiteStore
from hopscope.collector.transfer import export_otlp_json, import_files
from tests.helpers.dashboard_harness import dashboard_env, run_page
from tests.helpers.servers import ShopDatabase, serve_in_thread

PAGES = [None, "service_map", "flows", "flow_detail", "logs", "latency", "queues", "dead_letters"]


def test_an_empty_database_shows_where_to_send_spans_never_a_traceback(tmp_path: Path) -> None:
    for db in (tmp_path / "missing.db", tmp_path / "empty.db"):
        if db.name == "empty.db":
            SQLiteStore(db).close()  # a real, empty hopscope database
        with dashboard_env(db):
            for page in PAGES:
                app = run_page(page)
                assert not app.exception
                assert any("No data yet" in info.value for info in app.info), page
                assert "configure(endpoint=" in app.code[0].value


def test_the_overview_shows_the_query_apis_numbers(shop: ShopDatabase) -> None:
    with dashboard_env(shop.db):
        app = run_page(query={"range": "24h"})
    assert not app.exception
    metrics = {metric.label: metric.value for metric in app.metric}
    assert metrics["Services"] == "3"
    assert metrics["Dead letters waiting"] == "1"
    store = SQLiteStore(shop.db)
    with serve_in_thread(CollectorSettings(db=shop.db), store) as url:
        services = httpx.get(f"{url}/api/services", params={"since": "0"}).json()["services"]
    store.close()
    table = app.dataframe[0].value
    assert sorted(table["service"]) == sorted(s["service"] for s in services)
    by_name = {s["service"]: s for s in services}
    for row in table.itertuples():
        assert row.spans == by_name[row.service]["red"]["span_count"]
        assert row.errors == by_name[row.service]["red"]["error_count"]


def test_a_database_of_imported_spans_works_without_a_collector(shop: ShopDatabase, tmp_path: Path) -> None:
    # GIVEN o-3's flow exported from the shop and imported into a new database: no collector ever ran on it
    store = SQLiteStore(shop.db, read_only=True)
    (o3,) = QueryLayer(store).search_flows(FlowFilter(correlation_id="o-3"))
    store.close()
    exported = tmp_path / "o-3.json"
    exported.write_text(export_otlp_json(shop.db, flow_id=o3.flow_id))
    imported = tmp_path / "imported.db"
    import_files(imported, [exported], show_progress=False)
    # WHEN the dashboard opens it, THEN the overview, the search and the flow all work (no queues: no DLQs)
    with dashboard_env(imported):
        overview = run_page(query={"range": "24h"})
        found = run_page("flows", {"range": "24h", "correlation_id": "o-3"})
        (flow_id,) = QueryLayer(SQLiteStore(imported, read_only=True)).search_flows(
            FlowFilter(correlation_id="o-3")
        )
        flow = run_page("flow_detail", {"flow": str(flow_id.flow_id)})
    for app in (overview, found, flow):
        assert not app.exception
    assert {m.label: m.value for m in overview.metric}["Dead letters waiting"] == "0"
    assert {m.label: m.value for m in flow.metric}["Spans"] == str(o3.span_count)
