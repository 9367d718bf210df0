"""Page state kept in the URL's query parameters (``?range=1h&flow=42``), so that any view can be shared as a
link.

A link can be edited by hand: each reader here returns the type the page wants and falls back to a default
on anything else, never failing. Writers remove a parameter when its value is empty, so that the URL says
only what differs from the page's defaults. Links between pages (``flow_detail?flow=ID``) are built here too.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Mapping

import streamlit as st
from streamlit.elements.lib.column_types import ColumnConfig

FLOW_PAGE = "flow_detail"
# What a flow link column shows of a link: the flow id.
_FLOW_LINK_TEXT = rf"{FLOW_PAGE}\?flow=(\d+)"


def text(name: str, default: str = "") -> str:
    """The parameter's value (the first, when it is given more than once), or ``default``."""
    return st.query_params.get(name, default)


def texts(name: str) -> list[str]:
    """Every value of a repeatable parameter (``?attr=a:1&attr=b:2``)."""
    return st.query_params.get_all(name)


def choice(name: str, options: Collection[str], default: str) -> str:
    """The parameter when it is one of ``options``, else ``default``."""
    value = text(name, default)
    return value if value in options else default


def positive_int(name: str) -> int | None:
    """The parameter as a whole number from 1 up, or None."""
    value = text(name)
    return int(value) if value.isdigit() and int(value) > 0 else None


def put(name: str, value: str | list[str] | None) -> None:
    """Write the parameter (a list: repeated), or remove it when ``value`` is empty."""
    if value:
        st.query_params[name] = value
    elif name in st.query_params:
        del st.query_params[name]


def put_all(values: Mapping[str, str | list[str] | None]) -> None:
    for name, value in values.items():
        put(name, value)


def remove(*names: str) -> None:
    for name in names:
        put(name, None)


def kept(names: Collection[str]) -> dict[str, str]:
    """The parameters of ``names`` that the URL holds: what a switch to another page carries along."""
    return {name: st.query_params[name] for name in names if name in st.query_params}


def select(
    name: str,
    label: str,
    options: list[str],
    *,
    key: str,
    default: str | None = None,
    format_func: Callable[[str], str] = str,
) -> str:
    """A select whose choice is kept in the URL as ``?name=``: it starts at the URL's value when that is one
    of ``options`` (else at ``default``, else the first), and writes each change back."""
    current = text(name)
    start = current if current in options else default
    chosen = st.selectbox(
        label,
        options,
        index=options.index(start) if start in options else 0,
        format_func=format_func,
        key=key,
    )
    chosen = chosen if chosen is not None else options[0]
    if chosen != current:
        put(name, chosen)
    return chosen


def flow_link(flow_id: int) -> str:
    """The flow page's URL for one flow, relative to the dashboard: for a table's link column."""
    return f"{FLOW_PAGE}?flow={flow_id}"


def flow_link_column() -> ColumnConfig:
    """A table column of ``flow_link`` values, each shown as its flow id."""
    return st.column_config.LinkColumn("Flow", display_text=_FLOW_LINK_TEXT)
