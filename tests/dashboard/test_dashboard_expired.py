"""The dashboard's flow page and flow list on expired and partly expired flows (issue 16, item 2), with
Streamlit's AppTest on the real dashboard against a real SQLite file: a notice, never a traceback.

Expiry runs as the collector's writer runs it (``delete_spans_started_before``, then ``expire_before``), with
a cutoff one hour ago; the old spans were shifted two hours back.
"""

from __future__ import annotations

import time
from pathlib import Path

from streamlit.testing.v1 import AppTest

from hopscope.collector.store.sqlite.store import SQLiteStore
from tests.helpers.aged_spans import HOUR_NS, first_start, shifted, trace_of
from tests.helpers.dashboard_harness import dashboard_env, run_page
from tests.helpers.flow_chains import Services, consume_batch, order_chain, publish_order


def texts(app: AppTest) -> list[str]:
    return [
        str(element.value) for kind in (app.warning, app.info, app.markdown, app.caption) for element in kind
    ]


def batch_span_ids(services: Services) -> list[str]:
    return [format(span.context.span_id, "016x") for span in services.spans() if span.context is not None]


def test_an_expired_flow_shows_a_notice_before_and_after_its_row_goes(tmp_path: Path) -> None:
    # GIVEN an old order chain and a recent one
    db = tmp_path / "expired.db"
    store = SQLiteStore(db)
    old, new = Services(), Services()
    order_chain(old, "o-old")
    order_chain(new, "o-new")
    store.write([shifted(old.spans(), old=True), shifted(new.spans(), old=False)])
    expired = store.flow_of_trace(trace_of(old.spans()[0]))
    assert expired is not None
    cutoff = time.time_ns() - HOUR_NS
    store.record_retention(3_600)  # as a collector with --retention 1h does at start
    # WHEN the old spans are deleted but the flow's row not yet (the state the issue saw: a traceback)
    while store.delete_spans_started_before(cutoff, 1_000):
        pass
    assert store.resolve_flow(expired) == expired
    with dashboard_env(db):
        app = run_page("flow_detail", {"flow": str(expired)})
        # THEN the page says the flow is not stored and may have expired, without an exception
        assert not app.exception
        assert any(f"No flow {expired} is stored" in t and "expired" in t for t in texts(app))
    # WHEN the expiry has deleted the flow itself
    while store.expire_before(cutoff, 500):
        pass
    assert store.resolve_flow(expired) is None
    store.close()
    with dashboard_env(db):
        app = run_page("flow_detail", {"flow": str(expired)})
        listed = run_page("flows")
        # THEN the same notice, and the flow list still runs
        assert not app.exception and not listed.exception
        assert any(f"No flow {expired} is stored" in t and "expired" in t for t in texts(app))


def test_a_partly_expired_flow_shows_what_remains_and_says_what_is_gone(tmp_path: Path) -> None:
    # GIVEN an order from two hours ago processed now, in a batch with another order
    db = tmp_path / "partly.db"
    store = SQLiteStore(db)
    old, new = Services(), Services()
    one, two = publish_order(old, "o1"), publish_order(old, "o2")
    batch = consume_batch(new, [one, two], orders=["o1", "o2"])
    store.write([shifted(old.spans(), old=True), shifted(new.spans(), old=False)])
    flow_id = store.flow_of_trace(trace_of(one))
    assert flow_id is not None
    # WHEN retention deletes the orders' own spans
    cutoff = time.time_ns() - HOUR_NS
    while store.delete_spans_started_before(cutoff, 1_000):
        pass
    while store.expire_before(cutoff, 500):
        pass
    store.close()
    with dashboard_env(db):
        app = run_page("flow_detail", {"flow": str(flow_id)})
        # THEN the page shows the batch's spans and says, in plain text, which part is gone
        assert not app.exception
        notices = [t for t in texts(app) if t.startswith("Partly expired")]
        assert len(notices) == 1
        assert "2 of the 4 spans this flow counts are no longer stored" in notices[0]
        assert "the 2 that remain" in notices[0]
        kept_from = time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(first_start(new.spans(), batch) // 10**9))
        assert kept_from in notices[0]
        # ... and the span picker offers the two spans that remain, the batch's
        options = next(box for box in app.selectbox if box.label == "Span").options
        assert len(options) == 2 and all(o.endswith(tuple(batch_span_ids(new))) for o in options)
