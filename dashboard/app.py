"""The hopscope dashboard: ``hopscope dashboard`` runs this file with ``streamlit run``.

Pages only orchestrate: the query layer (through ``data``) gives frames, ``charts`` draws them. Page state
lives in the URL (``?range=1h&flow=42``), so any view can be shared as a link.
"""

from __future__ import annotations

from pathlib import Path

import streamlit as st

from hopscope.dashboard.time_range import sidebar_controls

# Not "pages/": Streamlit would take that folder for its own page list on a first deep link.
PAGES = Path(__file__).parent / "views"

st.set_page_config(page_title="hopscope", page_icon=":material/conversion_path:", layout="wide")

navigation = st.navigation(
    [
        st.Page(PAGES / "overview.py", title="Overview", icon=":material/dashboard:", default=True),
        st.Page(PAGES / "service_map.py", title="Service map", icon=":material/hub:"),
        st.Page(PAGES / "flows.py", title="Flows", icon=":material/route:"),
        st.Page(PAGES / "flow_detail.py", title="Flow", icon=":material/timeline:"),
        st.Page(PAGES / "latency.py", title="Latency", icon=":material/speed:"),
        st.Page(PAGES / "queues.py", title="Queues", icon=":material/stacks:"),
        st.Page(PAGES / "dead_letters.py", title="Dead letters", icon=":material/report:"),
    ]
)
st.sidebar.title("hopscope")
sidebar_controls()
navigation.run()
