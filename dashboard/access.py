"""Who may see the dashboard, and who may act on dead letters.

- With a password (``HOPSCOPE_DASHBOARD_PASSWORD``, or ``hopscope dashboard --password-file``), on any
  address, every browser session logs in first: until it has, the app shows the login form and nothing else.
- Without one, on a loopback address (127.0.0.0/8, ``::1``, ``localhost``), the dashboard is the operator's
  own: full access, as before.
- Without one, on any other address, anyone who can reach the port can look but not act: read-only, and
  every page says why. ``--read-only`` is read-only everywhere.

The address is Streamlit's own ``server.address`` (what it binds), so ``streamlit run dashboard/app.py`` by
hand is judged like ``hopscope dashboard``: no address means every interface, so read-only without a password.
"""

from __future__ import annotations

import hmac
import threading
import time

import streamlit as st

from hopscope.collector.loopback import is_loopback_host
from hopscope.dashboard.config import DashboardConfig, load_config
from hopscope.dashboard.plain_text import markdown_text

AUTHENTICATED = "access_authenticated"  # st.session_state: this browser session has logged in
LOGIN_ERROR = "access_login_error"
# A wrong password holds the check for this long, and checks are made one at a time for the whole process:
# at most about one guess a second however many sessions an attacker opens.
WRONG_PASSWORD_DELAY_SECONDS = 1.0
_checking = threading.Lock()


def bound_host() -> str:
    """The address Streamlit listens on; empty when it listens on every interface."""
    return str(st.get_option("server.address") or "")


def read_only_reason(config: DashboardConfig) -> str | None:
    """Why dead-letter actions are off for everyone, in one line; None when they are on."""
    if config.read_only:
        return "Read-only (--read-only): dead-letter actions are off."
    host = bound_host()
    if config.password is None and not is_loopback_host(host):
        return (
            f"Read-only: listening on {host or 'every interface'} without a password; "
            "dead-letter actions are off."
        )
    return None


def authenticated(config: DashboardConfig) -> bool:
    """True when no password is set, or this browser session has given it."""
    return config.password is None or st.session_state.get(AUTHENTICATED) is True


def may_act(config: DashboardConfig) -> bool:
    """Whether this viewer may redrive or delete dead letters: never read-only, never before logging in."""
    return read_only_reason(config) is None and authenticated(config)


def password_matches(given: str, password: str) -> bool:
    """A constant-time comparison (of bytes: ``compare_digest`` refuses non-ASCII text); a wrong password
    takes ``WRONG_PASSWORD_DELAY_SECONDS``, one check at a time across all sessions."""
    with _checking:
        if hmac.compare_digest(given.encode(), password.encode()):
            return True
        time.sleep(WRONG_PASSWORD_DELAY_SECONDS)
        return False


def log_in() -> None:
    """The login form's submit: remember the session, or say that the password was wrong."""
    password = load_config().password
    given = str(st.session_state.get("access_password", ""))
    st.session_state["access_password"] = ""  # not kept in the session once checked
    if password is None or password_matches(given, password):
        st.session_state[AUTHENTICATED] = True
        st.session_state.pop(LOGIN_ERROR, None)
    else:
        st.session_state[LOGIN_ERROR] = "Wrong password."


def log_out() -> None:
    st.session_state.clear()  # with the login, every pending dead-letter action and page state goes


def login_form() -> None:
    st.title("Log in")
    st.caption("This dashboard is shared with a password: ask whoever runs it.")
    with st.form("access_login"):
        st.text_input("Password", type="password", key="access_password")
        st.form_submit_button("Log in", type="primary", on_click=log_in)
    if LOGIN_ERROR in st.session_state:
        st.error(st.session_state[LOGIN_ERROR], icon=":material/lock:")


def require_access() -> None:
    """Called by the app before any page runs: the login form (and a stop) for a session that must log
    in; otherwise the sidebar's read-only line and, with a password, the "Log out" button."""
    config = load_config()
    if config.password is not None and not authenticated(config):
        login_form()
        st.stop()
    reason = read_only_reason(config)
    if reason is not None:
        st.sidebar.caption(f":material/lock: {markdown_text(reason)}")
    if config.password is not None:
        st.sidebar.button("Log out", key="access_log_out", icon=":material/logout:", on_click=log_out)
