"""A message's fate on the dashboard, with Streamlit's AppTest on the real app against a real SQLite file
(SDK spans written by the store, a dead letter recorded as the SQS poller records it): the flow page tells
each message's fate as plain text, the flow list filters on fates, and the queue page shows each consumer's
duplicate-delivery rate, each equal to what the query layer answers.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import streamlit as st

from hopscope.collector.model.fate import DeadLetterPeek, DeadLetterSighting
from hopscope.collector.query.layer import QueryLayer
from hopscope.collector.store.sqlite.store import SQLiteStore
from hopscope.dashboard.plain_text import markdown_text
from tests.helpers.dashboard_harness import dashboard_env, run_page
from tests.helpers.fates import MS, T0, deliver, send
from tests.helpers.flow_chains import Services, post

# A message id as anyone can send it: Markdown, HTML, LaTeX and a link, which must show as these characters.
HOSTILE_ID = "*m-1* <b>bold</b> $x^2$ [link](http://example.com)"


@pytest.fixture(scope="module")
def fates_db(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, int]]:
    """Order 1 (a hostile message id) delivered twice successfully, order 2 failed twice and now in
    orders-dlq, order 3 processed once; returns the file and each order's flow."""
    services = Services()
    one, two, three = (send(services, order, at, HOSTILE_ID if order == "1" else None) for order, at in
                       (("1", 0), ("2", 10), ("3", 20)))  # fmt: skip
    deliver(services, one, "1", 1, 100, message_id=HOSTILE_ID)
    deliver(services, one, "1", 2, 1_100, message_id=HOSTILE_ID)
    deliver(services, two, "2", 1, 110, ok=False)
    deliver(services, two, "2", 2, 1_110, ok=False)
    deliver(services, three, "3", 1, 120)
    db = tmp_path_factory.mktemp("fates") / "hopscope.db"
    store = SQLiteStore(db)
    try:
        post(store, services.spans())
        store.record_dead_letters(
            T0 + 5_000 * MS, [DeadLetterPeek("orders-dlq", (DeadLetterSighting("m-2"),), complete=True)]
        )
        flows = {
            "1": store.flow_of_message(HOSTILE_ID, "orders"),
            "2": store.flow_of_message("m-2", "orders"),
            "3": store.flow_of_message("m-3", "orders"),
        }
    finally:
        store.close()
    assert None not in flows.values()
    return db, {order: int(flow_id) for order, flow_id in flows.items() if flow_id is not None}


def _flow_page_markdown(db: Path, flow_id: int) -> list[str]:
    st.cache_data.clear()
    with dashboard_env(db):
        page = run_page("flow_detail", {"flow": str(flow_id)})
    assert not page.exception
    return [element.value for element in page.markdown]


def test_the_flow_page_tells_each_messages_fate_as_plain_text(fates_db: tuple[Path, dict[str, int]]) -> None:
    db, flows = fates_db
    # THEN the duplicate delivery's line holds the hostile id escaped: Markdown shows its characters
    line = f"{HOSTILE_ID} to orders: Processed successfully more than once by billing: 1 duplicate delivery"
    assert f":material/content_copy: {markdown_text(line)}" in _flow_page_markdown(db, flows["1"])
    assert markdown_text(HOSTILE_ID) != HOSTILE_ID  # (the escaping did something)
    # and the dead-lettered and the processed messages are told too
    assert ":material/report: m-2 to orders: failed 2 deliveries; in dead-letter queue orders-dlq now" in (
        _flow_page_markdown(db, flows["2"])
    )
    assert ":material/check_circle: m-3 to orders: Processed by billing" in _flow_page_markdown(
        db, flows["3"]
    )


def _shown_flow_ids(app: object) -> list[int]:
    table = app.dataframe[0].value  # type: ignore[attr-defined]
    return [int(link.rpartition("=")[2]) for link in table["link"]]


def test_the_flow_list_filters_on_fates_and_shows_their_counts(fates_db: tuple[Path, dict[str, int]]) -> None:
    db, flows = fates_db
    st.cache_data.clear()
    with dashboard_env(db):
        app = run_page("flows", {"range": "24h"})
        assert not app.exception
        assert sorted(_shown_flow_ids(app)) == sorted(flows.values())
        table = app.dataframe[0].value
        counts = {
            flow_id: (int(dead), int(duplicates))
            for flow_id, dead, duplicates in zip(
                _shown_flow_ids(app), table["dead_lettered"], table["duplicate_deliveries"], strict=True
            )
        }
        assert counts == {flows["1"]: (0, 1), flows["2"]: (1, 0), flows["3"]: (0, 0)}

        # WHEN "Delivered twice" is switched on and the search submitted
        next(toggle for toggle in app.toggle if toggle.label == "Delivered twice").set_value(True)
        next(button for button in app.button if button.label == "Search").click().run()
        assert not app.exception
        assert app.query_params["duplicates"] == "true"
        assert _shown_flow_ids(app) == [flows["1"]]
        assert any("with a duplicate delivery" in caption.value for caption in app.caption)

        # and a link with ?dead_lettered=true opens the list of flows with a message in a dead-letter queue
        app = run_page("flows", {"range": "24h", "dead_lettered": "true"})
    assert not app.exception
    assert _shown_flow_ids(app) == [flows["2"]]
    assert next(toggle for toggle in app.toggle if toggle.label == "In a dead-letter queue").value


def test_the_queue_page_shows_each_consumers_duplicate_rate(fates_db: tuple[Path, dict[str, int]]) -> None:
    db, _ = fates_db
    store = SQLiteStore(db, read_only=True)
    try:
        rates = QueryLayer(store).duplicate_rates(0)
    finally:
        store.close()
    st.cache_data.clear()
    with dashboard_env(db):
        app = run_page("queues", {"range": "24h"})
    assert not app.exception
    table = app.dataframe[0].value
    shown = list(zip(table["queue"], table["consumer"], table["messages"], table["duplicate_deliveries"],
                     table["duplicate_rate"], strict=True))  # fmt: skip
    assert shown == [
        (r.destination, r.consumer_service, r.messages, r.duplicate_deliveries, r.rate) for r in rates
    ]
    assert shown == [("orders", "billing", 2, 1, 0.5)]
