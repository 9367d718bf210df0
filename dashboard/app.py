"""The hopscope dashboard: ``hopscope dashboard`` runs this file with ``streamlit run``.

Pages only orchestrate: the query layer (through ``data``) gives frames, ``charts`` draws them (``waterfall``
the flow, ``service_map_dot`` the map), ``format`` says how numbers and times read. Page state lives in the
URL (``?range=1h&flow=42``), read and written through ``url_state``, so any view can be shared as a link.
"""

from __future__ import annotations

from pathlib import Path

import streamlit as st

from hopscope.dashboard.access import require_access
from hopscope.dashboard.find_flow import find_flow_box
from hopscope.dashboard.time_range import sidebar_controls

# Not "pages/": Streamlit would take that folder for its own page list on a first deep link.
PAGES = Path(__file__).parent / "views"

# The tab's icon as SVG text: Streamlit makes it a data: URL. (A ":material/...:" icon would be fetched from
# a font host on the internet by every browser that opens the dashboard.)
PAGE_ICON = (
    '<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 24 24">'
    '<path d="M5 5h9a4 4 0 0 1 0 8h-4a4 4 0 0 0 0 8h9" fill="none" stroke="#ff4b4b" stroke-width="2.4" '
    'stroke-linecap="round"/>'
    '<circle cx="5" cy="5" r="3" fill="#ff4b4b"/><circle cx="19" cy="21" r="3" fill="#ff4b4b"/></svg>'
)

st.set_page_config(page_title="hopscope", page_icon=PAGE_ICON, layout="wide")

navigation = st.navigation(
    [
        st.Page(PAGES / "overview.py", title="Overview", icon=":material/dashboard:", default=True),
        st.Page(PAGES / "service_map.py", title="Service map", icon=":material/hub:"),
        st.Page(PAGES / "flows.py", title="Flows", icon=":material/route:"),
        st.Page(PAGES / "flow_detail.py", title="Flow", icon=":material/timeline:"),
        st.Page(PAGES / "logs.py", title="Logs", icon=":material/article:"),
        st.Page(PAGES / "latency.py", title="Latency", icon=":material/speed:"),
        st.Page(PAGES / "queues.py", title="Queues", icon=":material/stacks:"),
        st.Page(PAGES / "dead_letters.py", title="Dead letters", icon=":material/report:"),
    ]
)
st.sidebar.title("hopscope")
require_access()  # the login form and nothing else until this session has logged in; the read-only line
sidebar_controls()
find_flow_box()
navigation.run()
