"""The Logs page and the flow page's log list (AppTest), over orders whose functions logged through the real
OpenTelemetry SDK (tests/helpers/flow_logs.py), stored by the real SQLite store: a search by correlation id,
service, severity and text, kept in the URL; hostile bodies stay text; an empty answer says so."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pandas as pd
import pytest

from hopscope.dashboard.waterfall import ERROR_COLOUR, LOG_TRACE
from tests.helpers.dashboard_harness import dashboard_env, run_page
from tests.helpers.flow_logs import HOSTILE_BODY, LoggedShop, build_logged_database

O1_BODIES = [
    "order o-1 received",
    "order o-1 published",
    "charging order o-1",
    "shipping order o-1",
    HOSTILE_BODY,
    "carrier down for o-1",
]


@pytest.fixture(scope="module")
def logged(tmp_path_factory: pytest.TempPathFactory) -> LoggedShop:
    return build_logged_database(tmp_path_factory.mktemp("logs") / "logs.db")


def _lines(app: Any) -> pd.DataFrame:
    """The page's table of log lines (the one with a body column)."""
    frame: pd.DataFrame = next(frame.value for frame in app.dataframe if "body" in frame.value.columns)
    return frame


def _markdown(app: Any) -> list[str]:
    """Every text the page hands to Markdown: headings, captions, Markdown, alerts."""
    return [
        element.value
        for kind in ("title", "subheader", "caption", "markdown", "info", "warning", "error")
        for element in app.get(kind)
    ]


def test_the_logs_page_searches_by_correlation_id_service_severity_and_text(logged: LoggedShop) -> None:
    with dashboard_env(logged.db):
        # GIVEN a search by correlation id in the URL: o-1's lines, newest first, each linked to o-1's flow
        app = run_page("logs", {"range": "24h", "correlation_id": "o-1"})
        assert not app.exception
        found = _lines(app)
        assert found["body"].tolist() == O1_BODIES[::-1]
        assert found["time"].is_monotonic_decreasing
        assert set(found["flow"]) == {f"flow_detail?flow={logged.flows['o-1']}"}
        assert set(found["correlation_id"]) == {"o-1"}
        assert found["level"].tolist()[:2] == ["✖ ERROR", "▲ WARN"]  # errors marked, not only coloured
        assert app.text_input[0].value == "o-1"  # the form starts at the URL's search

        # by service: billing's two lines, one per order
        app = run_page("logs", {"range": "24h", "service": "billing"})
        assert not app.exception
        assert sorted(_lines(app)["body"]) == ["charging order o-1", "charging order o-2"]

        # by lowest severity: WARN and above over both orders is the warning and the error
        app = run_page("logs", {"range": "24h", "severity": "warn"})
        assert not app.exception
        assert _lines(app)["body"].tolist() == ["carrier down for o-1", HOSTILE_BODY]
        app = run_page("logs", {"range": "24h", "severity": "error"})
        assert _lines(app)["body"].tolist() == ["carrier down for o-1"]

        # by text, in any case
        app = run_page("logs", {"range": "24h", "q": "CARRIER DOWN"})
        assert not app.exception
        assert _lines(app)["body"].tolist() == ["carrier down for o-1"]

        # WHEN the form searches another order, THEN the URL says so and the table follows
        app = run_page("logs", {"range": "24h"})
        assert len(_lines(app)) == 10
        app.text_input[0].input("o-2")
        next(button for button in app.button if button.label == "Search").click().run()
        assert not app.exception
        assert app.query_params["correlation_id"] == "o-2"
        assert _lines(app)["body"].tolist() == [
            "shipping order o-2",
            "charging order o-2",
            "order o-2 published",
            "order o-2 received",
        ]

        # a hand-edited URL (unknown severity, a limit that is no number) searches without them
        app = run_page("logs", {"range": "24h", "severity": "loud", "limit": "many", "correlation_id": "o-2"})
        assert not app.exception
        assert len(_lines(app)) == 4


def test_hostile_text_stays_text_and_an_empty_answer_says_so(logged: LoggedShop) -> None:
    with dashboard_env(logged.db):
        # GIVEN a search for Markdown that a body holds
        app = run_page("logs", {"range": "24h", "q": "**bold** [link](javascript:"})
        assert not app.exception
        # THEN the body is a table cell, exactly as logged ...
        assert _lines(app)["body"].tolist() == [HOSTILE_BODY]
        # ... and the search, said back in the caption, is escaped for Markdown
        said = [text for text in _markdown(app) if "containing" in text]
        assert said and "\\*\\*bold\\*\\* \\[link\\](javascript:" in said[0]
        assert not any("**bold**" in text or "[link](javascript" in text for text in _markdown(app))

        # an unknown correlation id: no table, and what to search or send instead
        app = run_page("logs", {"range": "24h", "correlation_id": "<b>nope</b>"})
        assert not app.exception
        assert not [frame for frame in app.dataframe if "body" in frame.value.columns]
        captions = [caption.value for caption in app.caption]
        assert "No log lines with correlation id \\<b>nope\\</b> in this time range." in captions
        assert any(
            "configure(logs=True)" in caption and "OTEL_LOGS_EXPORTER=otlp" in caption for caption in captions
        )


def test_the_flow_page_lists_the_flows_lines_and_filters_them_to_a_span(logged: LoggedShop) -> None:
    o1 = logged.orders["o-1"].span_ids
    with dashboard_env(logged.db):
        # GIVEN o-1's flow page: every line of its three traces, oldest first, under the waterfall
        app = run_page("flow_detail", {"flow": str(logged.flows["o-1"]), "range": "24h"})
        assert not app.exception
        lines = _lines(app)
        assert lines["body"].tolist() == O1_BODIES
        assert lines["at_ms"].is_monotonic_increasing and lines["at_ms"].iloc[0] >= 0
        assert lines["span"].tolist()[2] == "billing · order-events process"
        # ... each a marker on the waterfall, on its span's row, the error one red
        [chart] = app.get("plotly_chart")
        figure = json.loads(chart.proto.spec)
        markers = next(trace for trace in figure["data"] if trace["name"] == LOG_TRACE)
        assert markers["customdata"] == [
            o1[name]
            for name in (
                "POST /orders",
                "order-events publish",
                "order-events process",
                *["shipping process"] * 3,
            )
        ]
        assert markers["marker"]["color"][-1] == ERROR_COLOUR
        assert (
            len(set(markers["marker"]["color"][:4])) == 1
            and ERROR_COLOUR not in markers["marker"]["color"][:4]
        )

        # WHEN the URL names the shipping span with its lines only (as a click on its bar does)
        app = run_page(
            "flow_detail",
            {
                "flow": str(logged.flows["o-1"]),
                "range": "24h",
                "span": o1["shipping process"],
                "lines": "span",
            },
        )
        assert not app.exception
        # THEN the list holds its three lines, and "All lines" brings back the rest
        assert _lines(app)["body"].tolist() == O1_BODIES[3:]
        next(button for button in app.button if button.label == "All lines").click().run()
        assert not app.exception
        assert "lines" not in app.query_params
        assert _lines(app)["body"].tolist() == O1_BODIES

        # a flow whose functions logged nothing says how to turn log export on
        app = run_page("flow_detail", {"flow": str(logged.flows["o-3"]), "range": "24h"})
        assert not app.exception
        assert any("configure(logs=True)" in caption.value for caption in app.caption)


def test_the_logs_page_and_a_flows_lines_on_clickhouse(tmp_path: Path, chdb_url: str) -> None:
    # GIVEN the same orders stored in the real ClickHouse engine (otel_logs)
    logged = build_logged_database(tmp_path / "unused.db", chdb_url)
    with dashboard_env(tmp_path / "unused.db", store=chdb_url):
        # THEN the Logs page finds o-1's warning and error, each linked to its flow ...
        app = run_page("logs", {"range": "24h", "correlation_id": "o-1", "severity": "warn"})
        assert not app.exception
        found = _lines(app)
        assert found["body"].tolist() == ["carrier down for o-1", HOSTILE_BODY]
        assert set(found["flow"]) == {f"flow_detail?flow={logged.flows['o-1']}"}
        # ... and the flow page lists its lines in order
        app = run_page("flow_detail", {"flow": str(logged.flows["o-1"]), "range": "24h"})
        assert not app.exception
        assert _lines(app)["body"].tolist() == O1_BODIES
