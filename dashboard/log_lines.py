"""Log lines as the pages show them (the flow page's list under the waterfall, the Logs page): a table of text
cells, errors emphasised by a mark and a colour, and one line's whole body and attributes.

Every body, logger, service and attribute is untrusted: the table's cells, ``st.code`` and ``st.text`` show
text as it is, and anything that reaches Markdown goes through ``plain_text``.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any

import pandas as pd
import streamlit as st

from hopscope.collector.model.logs import LogLine
from hopscope.dashboard.plain_text import markdown_label, markdown_text

ERROR_MARK = "✖"
WARN_MARK = "▲"
ERROR_STYLE = "color: #c62828; font-weight: bold"
WARN_STYLE = "color: #ef6c00"
STYLED_ROWS = 1_000
# Where the way to send logs is told: no lines, or none matching.
LOGS_OFF_HINT = (
    "Functions send their log lines with hopscope's instrumentation: `configure(logs=True)`, or "
    "`OTEL_LOGS_EXPORTER=otlp` in their environment (any OpenTelemetry SDK can send OTLP logs to the "
    "collector's `/v1/logs`)."
)


def level_text(line: LogLine) -> str:
    """The severity's range name, marked ✖ for an error and ▲ for a warning: seen in a table without
    colour too."""
    if line.is_error:
        return f"{ERROR_MARK} {line.severity}"
    return f"{WARN_MARK} {line.severity}" if line.severity == "WARN" else line.severity


def emphasised(frame: pd.DataFrame, lines: Sequence[LogLine]) -> Any:
    """``frame`` (a row per line of ``lines``) as a Styler: error rows red and bold, warnings orange. Past
    ``STYLED_ROWS`` the frame as it is (the ✖ and ▲ marks remain): styling costs about 0.15 s per thousand
    rows on every rerun."""
    if len(lines) > STYLED_ROWS:
        return frame
    styles = [
        ERROR_STYLE if line.is_error else WARN_STYLE if line.severity == "WARN" else "" for line in lines
    ]

    def row_style(row: pd.Series) -> list[str]:
        return [styles[int(row.name)]] * len(row)  # type: ignore[call-overload]

    return frame.style.apply(row_style, axis=1)


def value_text(value: object) -> str:
    """An attribute's value as one text cell (they mix strings, numbers, booleans, lists and maps)."""
    return value if isinstance(value, str) else json.dumps(value, ensure_ascii=False, default=str)


def attributes_frame(attributes: Mapping[str, object]) -> pd.DataFrame:
    rows = [{"key": key, "value": value_text(value)} for key, value in sorted(attributes.items())]
    return pd.DataFrame(rows, columns=["key", "value"])  # type: ignore[no-any-return, unused-ignore]


def line_details(line: LogLine, where: str) -> None:
    """One line whole: where it is (``where``: Markdown of the page's own), its logger, its body as code
    (text, however long), its attributes and resource as tables."""
    level, logger = markdown_text(level_text(line)), markdown_label(line.scope or "-")
    st.markdown(f"**{level}** · {markdown_label(line.service)} · logger {logger} · {where}")
    st.code(line.body, language=None, wrap_lines=True)
    attributes, resource = st.tabs([f"Attributes ({len(line.attributes)})", "Resource"])
    with attributes:
        st.dataframe(attributes_frame(line.attributes), hide_index=True, width="stretch")
    with resource:
        st.dataframe(attributes_frame(line.resource), hide_index=True, width="stretch")
