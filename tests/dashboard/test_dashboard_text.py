"""Span data as text, without a browser: the escaping helpers (property tests with hypothesis, a CommonMark
renderer standing in for Streamlit's), the DOT and Plotly builders on hostile names, and every page's
Markdown under Streamlit's AppTest on the hostile database of tests/helpers/hostile_spans.py."""

from __future__ import annotations

import html
import json
import re
from collections.abc import Iterator
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import pytest
from google.protobuf.message import Message
from hypothesis import example, given, settings
from hypothesis import strategies as st
from markdown_it import MarkdownIt
from streamlit.testing.v1 import AppTest

from hopscope.collector.model.flows import FlowFilter
from hopscope.collector.model.graph import GraphEdge, GraphNode, ServiceGraph
from hopscope.collector.model.red import RedStats
from hopscope.collector.query import layer as query
from hopscope.collector.query.layer import QueryLayer
from hopscope.collector.store.sqlite.store import SQLiteStore
from hopscope.dashboard import data
from hopscope.dashboard.plain_text import (
    ELLIPSIS,
    HOVER_CHARS,
    markdown_text,
    one_line,
    plotly_hover,
    plotly_text,
    shorten,
)
from hopscope.dashboard.service_map_dot import NODE_LABEL_CHARS, dot_string, service_map_dot
from hopscope.dashboard.waterfall import LABEL_TRACE, LEGEND_CHARS, ROW_LABEL_CHARS, waterfall_figure
from tests.helpers.dashboard_harness import dashboard_env, run_page
from tests.helpers.hostile_spans import HostileNames, build_hostile_database, hostile

TRACKER = "http://127.0.0.1:9"
# Text that is rich in what Markdown, HTML, LaTeX, directives, shortcodes and autolinks react to.
SPECIAL = [*"\\`*_~[]()<>&$|#!:-+=./@ \n\t\r", "http://", "www.", ":red[", ":material/x:", ":+1:", "1."]
hostile_text = st.lists(st.sampled_from(SPECIAL) | st.text(max_size=3), max_size=40).map("".join)
# CommonMark (markdown-it's reference preset) with GFM's tables and strikethrough, as Streamlit has them.
COMMONMARK = MarkdownIt("commonmark").enable(["table", "strikethrough"])
# What Streamlit's remark plugins would still find in a text node: an emoji shortcode, an autolink literal.
EMOJI = re.compile(r":\+1:|:-1:|:[A-Za-z0-9_-]+:")
AUTOLINK = re.compile(r"https?://|www(?=\.)|[-.\w+]@", re.IGNORECASE)
PAYLOAD_MARKS = (
    "![px](",
    "[Reset your password](",
    "<img",
    "<script",
    "$\\frac",
    ":red[",
    "](http",
    "<a href",
)
# A payload left as Markdown: its first character after an even number of backslashes (so not escaped).
UNESCAPED_PAYLOAD = re.compile(r"(?:^|[^\\])(?:\\\\)*(?:" + "|".join(map(re.escape, PAYLOAD_MARKS)) + ")")


class _Rendered(HTMLParser):
    """The tags and the text of rendered HTML."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.tags: list[str] = []
        self.lines: list[str] = [""]

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append(tag)
        if tag == "br":
            self.lines.append("")

    def handle_data(self, data: str) -> None:
        self.lines[-1] += data.replace("\n", "")


def _shown(markdown: str) -> _Rendered:
    rendered = _Rendered()
    rendered.feed(COMMONMARK.render(markdown))
    return rendered


def _trimmed(lines: list[str]) -> list[str]:
    """Lines as compared: without the invisible word joiners, leading spaces are shown as no-break spaces,
    markdown-it trims a paragraph with Python's ``strip`` (no-break spaces too, which remark keeps), and
    trailing spaces are not seen."""
    lines = [line.replace("\u2060", "").replace("\u00a0", " ").rstrip() for line in lines]
    return [lines[0].lstrip(), *lines[1:]]


def _displayed_lines(text: str) -> list[str]:
    """What a reader should see: each line, control characters as U+FFFD, no blank space around it all."""
    text = text.replace("\r\n", "\n").replace("\r", "\n").replace("\t", " ")
    text = re.sub(r"[\x00-\x09\x0b-\x1f\x7f-\x9f]", "\ufffd", text).strip()
    return text.split("\n")


# -- markdown_text -------------------------------------------------------------------------------------------


@settings(max_examples=400, deadline=None)
@given(hostile_text)
@example(hostile("x", TRACKER))
@example("# h\n    code\n1. li\n- li\n> q\n---\n===\n| a | b |\n|---|---|\n<div>\n[r]: /u\n```\n~~~\n")
@example("a\\\n\\b\\")
def test_markdown_text_renders_as_exactly_its_characters(text: str) -> None:
    # GIVEN any text; WHEN escaped and rendered by a CommonMark renderer
    escaped = markdown_text(text)
    shown = _shown(escaped)
    # THEN it is one paragraph of text and line breaks, nothing else ...
    assert set(shown.tags) <= {"p", "br"}, (escaped, shown.tags)
    # ... showing the same characters (the invisible joiners and no-break spaces aside)
    assert _trimmed(shown.lines) == _trimmed(_displayed_lines(text)), escaped


@settings(max_examples=400, deadline=None)
@given(hostile_text)
def test_markdown_text_leaves_nothing_for_latex_directives_shortcodes_or_autolinks(text: str) -> None:
    escaped = markdown_text(text)
    # no unescaped "$" (LaTeX) and no unescaped ":name" (directives, Material icons)
    assert not re.search(r"(?<!\\)(?:\\\\)*\$", escaped), escaped
    assert not re.search(r"(?<!\\)(?:\\\\)*:[\w+-]", escaped), escaped
    assert ":material/" not in escaped
    # once the escapes are resolved (what the text nodes hold), no shortcode or bare link is left
    shown = "\n".join(_shown(escaped).lines)
    assert not EMOJI.search(shown), shown
    assert not AUTOLINK.search(shown), shown


def test_plain_names_read_the_same_in_the_markdown_source() -> None:
    # names the pages compare and users read: nothing to escape in them
    for name in ("shipping-dlq", "orders-api", "o-3", "POST /orders", "carrier rejected the address"):
        assert markdown_text(name) == name


# -- shorten, plotly -----------------------------------------------------------------------------------------


@given(st.text(max_size=300), st.integers(min_value=1, max_value=120))
def test_shorten_keeps_both_ends_within_the_limit(text: str, limit: int) -> None:
    short = shorten(text, limit)
    flat = one_line(text)
    assert len(short) <= limit
    if len(flat) <= limit:
        assert short == flat
    else:
        # the text may hold an ellipsis of its own: one of the short form's is the cut
        assert any(
            short[cut] == ELLIPSIS
            and flat.startswith(short[:cut])
            and flat.endswith(short[cut + 1 :])
            and cut >= len(short) - cut - 1
            for cut in range(len(short))
        ), (flat, short)


@settings(max_examples=300, deadline=None)
@given(hostile_text)
def test_plotly_text_holds_no_tag_entity_or_latex_of_its_own(text: str) -> None:
    shown = plotly_text(text)
    assert "<" not in shown and ">" not in shown and "$" not in shown
    assert re.fullmatch(r"(?:[^&]|&amp;|&lt;|&gt;|&#36;)*", shown), shown
    assert html.unescape(shown) == one_line(text)
    hover = plotly_hover(text * 50)
    parts = hover.split("<br>")
    assert all("<" not in part and ">" not in part for part in parts)
    assert sum(len(html.unescape(part)) for part in parts) <= HOVER_CHARS


# -- the service map's DOT -----------------------------------------------------------------------------------

_DOT_STRING = r'"(?:[^"\\\n]|\\.)*"'
_DOT_LINE = re.compile(rf"^  {_DOT_STRING}(?: -> {_DOT_STRING})? \[((?:\w+={_DOT_STRING}(?:, )?)+)\];$")
_DOT_ATTRIBUTE = re.compile(rf"(\w+)=({_DOT_STRING})")


def _dot_text(literal: str) -> str:
    """What Graphviz shows for a label string this module wrote (``\\n`` a line break, ``&amp;`` a ``&``)."""
    return re.sub(r"\\(.)", lambda m: "\n" if m[1] == "n" else m[1], literal[1:-1]).replace("&amp;", "&")


@settings(max_examples=300, deadline=None)
@given(hostile_text)
def test_dot_string_cannot_end_early_and_shows_its_text(text: str) -> None:
    literal = dot_string(text)
    assert re.fullmatch(_DOT_STRING, literal), literal
    assert _dot_text(literal) == one_line(text)


@settings(max_examples=100, deadline=None)
@given(st.lists(hostile_text, min_size=2, max_size=4, unique=True))
def test_the_service_map_of_hostile_names_has_only_its_own_attributes(names: list[str]) -> None:
    # GIVEN services and a queue named anything, joined by hops
    red = RedStats(4, 4 / 3600, 1, 0.25, 12.0, 80.0, 95.0)
    nodes = [GraphNode(f"service:{name}", "service", name) for name in names[:-1]]
    nodes.append(GraphNode(f"aws_sqs:{names[-1]}", "queue", names[-1]))
    edges = [GraphEdge(node.id, nodes[-1].id, "publish", red, None, None, None, 0) for node in nodes[:-1]]
    # WHEN drawn
    dot = service_map_dot(ServiceGraph(nodes, edges), None).splitlines()
    # THEN each node and edge is one line of quoted strings, with only the attributes the map writes
    body = dot[4:-1]
    assert len(body) == len(nodes) + len(edges)
    statements = []
    for line in body:
        match = _DOT_LINE.match(line)
        assert match, line
        statements.append(dict(_DOT_ATTRIBUTE.findall(match[1])))
        assert set(statements[-1]) <= {"label", "shape", "style", "color", "fillcolor", "tooltip"}, line
    labels = [_dot_text(attributes["label"]) for attributes in statements[: len(nodes)]]
    assert [label.split("\n")[0] for label in labels] == [shorten(name, NODE_LABEL_CHARS) for name in names]


# -- the hostile database: the waterfall's figure, and every page's Markdown ---------------------------------


@pytest.fixture(scope="module")
def hostile_db(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, HostileNames, int]:
    db = tmp_path_factory.mktemp("hostile") / "hostile.db"
    names = build_hostile_database(db, TRACKER)
    store = SQLiteStore(db, read_only=True)
    (flow,) = QueryLayer(store).search_flows(FlowFilter())
    store.close()
    return db, names, flow.flow_id


def _strings(value: Any) -> Iterator[tuple[str, str]]:
    """Every (key, string) pair in a plotly figure's JSON."""
    if isinstance(value, dict):
        for key, item in value.items():
            if isinstance(item, str):
                yield key, item
            else:
                for inner_key, text in _strings(item):
                    yield inner_key if inner_key != "" else key, text
    elif isinstance(value, list):
        for item in value:
            if isinstance(item, str):
                yield "", item
            else:
                yield from _strings(item)


def test_the_waterfall_of_a_hostile_flow_escapes_every_name_and_keeps_labels_short(
    hostile_db: tuple[Path, HostileNames, int],
) -> None:
    db, names, flow_id = hostile_db
    store = SQLiteStore(db, read_only=True)
    detail = QueryLayer(store).flow(flow_id)
    store.close()
    assert detail is not None
    figure = json.loads(waterfall_figure(detail).to_json())
    texts = [
        (key, text) for key, text in _strings(figure) if key in ("name", "text", "hovertext", "ticktext")
    ]
    # the row labels are the text of the label trace, after their indentation and ▾/▸ (or ⇶)
    labels = next(trace["text"] for trace in figure["data"] if trace["name"] == LABEL_TRACE)
    ticks = [re.sub(r"^\u2003*(?:[▾▸] )?(?:⇶ )?", "", label) for label in labels]
    long_label = f"{names.worker} · {names.long_span}"
    assert plotly_text(shorten(long_label, ROW_LABEL_CHARS)) in ticks
    for key, text in texts:
        markup = re.sub(r"</?b>|<br>", "", text)
        assert "<" not in markup and ">" not in markup and "$" not in markup, (key, text)
    assert len(ticks) == len(detail.spans)
    assert all(len(html.unescape(tick)) <= ROW_LABEL_CHARS for tick in ticks)
    legend = [trace["name"] for trace in figure["data"] if trace["type"] == "bar"]
    assert all(len(html.unescape(name)) <= LEGEND_CHARS for name in legend)
    # the whole long name is in its bar's hover box
    hovers = [html.unescape(text.replace("<br>", "")) for key, text in texts if key == "hovertext"]
    assert any(long_label.replace(" ", "") in hover.replace(" ", "") for hover in hovers)


def _markdown_strings(app: AppTest) -> list[str]:
    """Every string of the page that Streamlit renders as Markdown: bodies, labels, help and progress text."""
    found: list[str] = []

    def walk(message: Message) -> None:
        for descriptor, value in message.ListFields():
            values = value if descriptor.is_repeated else [value]
            if descriptor.type == descriptor.TYPE_MESSAGE:
                for item in values:
                    walk(item)
            elif descriptor.type == descriptor.TYPE_STRING and descriptor.name in (
                "body",
                "label",
                "help",
                "text",
            ):
                found.extend(values)

    def nodes(node: Any) -> Iterator[Any]:
        yield node
        for child in getattr(node, "children", {}).values():
            yield from nodes(child)

    for node in nodes(app._tree):
        proto = getattr(node, "proto", None)
        if isinstance(proto, Message):
            walk(proto)
    return found


def _pages(names: HostileNames, flow_id: int) -> list[tuple[str, dict[str, str]]]:
    failing, cid = hostile("failing-queue", TRACKER), hostile("cid", TRACKER)
    return [
        ("overview", {"range": "24h"}),
        ("service_map", {"range": "24h"}),
        ("flows", {"range": "24h", "correlation_id": cid, "attr": f"hopscope.correlation_id:{cid}"}),
        ("flow_detail", {"flow": str(flow_id), "range": "24h"}),
        ("latency", {"range": "24h"}),
        ("queues", {"range": "24h"}),
        ("queues", {"range": "24h", "queue": failing}),
        ("queues", {"range": "24h", "queue": names.dead_letter_queue}),
        ("dead_letters", {"range": "24h"}),
    ]


def test_every_page_gives_streamlit_span_data_only_as_escaped_markdown(
    hostile_db: tuple[Path, HostileNames, int],
) -> None:
    db, names, flow_id = hostile_db
    shown: list[str] = []
    with dashboard_env(db, aws_endpoint_url="http://127.0.0.1:1"):  # nothing listens: SQS unreachable
        for page, query_params in _pages(names, flow_id):
            app = run_page(None if page == "overview" else page, query_params)
            assert not app.exception, page
            for text in _markdown_strings(app):
                assert not UNESCAPED_PAYLOAD.search(text), (page, text)
                shown.append(text)
    # the payloads are there, escaped: on the flow page, the queues' pages, the search's caption
    assert any("!\\[px\\](http\u2060://127.0.0.1\\:9/op.png)" in text for text in shown)
    assert any("!\\[px\\](http\u2060://127.0.0.1\\:9/error.png)" in text for text in shown)
    assert any("with correlation id cid !\\[px\\](http\u2060://" in text for text in shown)
    assert any("with hopscope.correlation\\_id=cid !\\[px\\](http\u2060://" in text for text in shown)
    assert any("\\$\\\\frac{1}{2}\\$ \\:red\\[alert\\]" in text for text in shown)


def test_a_flow_cut_at_the_read_cap_says_so(
    hostile_db: tuple[Path, HostileNames, int], monkeypatch: pytest.MonkeyPatch
) -> None:
    # GIVEN answers capped at 3 spans, and a flow of 5
    db, _, flow_id = hostile_db
    monkeypatch.setattr(query, "MAX_ANSWER_SPANS", 3)
    data.flow_detail.clear()  # what the other tests' runs cached was read without the cap
    try:
        with dashboard_env(db):
            # WHEN its page opens
            app = run_page("flow_detail", {"flow": str(flow_id), "range": "24h"})
    finally:
        data.flow_detail.clear()
    # THEN it says that it shows the first 3 of the 5 spans, and the summary counts all 5
    assert not app.exception
    assert any("Showing the first 3 spans of 5" in warning.value for warning in app.warning)
    assert {metric.label: metric.value for metric in app.metric}["Spans"] == "5"
