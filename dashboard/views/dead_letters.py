"""Dead letters: each dead-letter queue's messages, each linked to its flow; redrive a queue to its source
or delete one message, each after a typed confirmation. A read-only dashboard, or a viewer who has not
logged in (dashboard/access.py), has no such buttons at all.

The queues come from the collector's polls (stored) and from SQS itself (live); the messages from a peek,
which SQS only allows by receiving them: a peek makes them visible again at once but raises their
ApproximateReceiveCount, as the AWS console's "poll for messages" does.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import pandas as pd
import streamlit as st

from hopscope.collector.aws.dlq import delete_message
from hopscope.collector.aws.redrive import RedriveProgress, redrive
from hopscope.collector.model.queues import QueueSummary
from hopscope.dashboard import access, data, url_state
from hopscope.dashboard.format import format_ago
from hopscope.dashboard.page_frame import page_context
from hopscope.dashboard.plain_text import markdown_label, markdown_names, markdown_text, shorten, whole_text
from hopscope.dashboard.time_range import refresh_interval

PEEK_LIMIT = 25
PENDING = "dead_letters_pending"  # the action waiting for its typed "yes"
CONFIRMED = "dead_letters_confirmed"  # the action confirmed, run at the top of the next run
CONFIRM_TEXT = "dead_letters_confirm_text"
CONFIRM_ERROR = "dead_letters_confirm_error"

context = page_context()
st.title("Dead letters")
st.caption(
    "Messages are read with a *peek*: received, then made visible again at once, never deleted. SQS has no "
    "other way to look, so, as on AWS, each peek raises their ApproximateReceiveCount by one. "
    f"The page peeks at most every {data.PEEK_TTL_SECONDS} s."
)


@dataclass(frozen=True)
class Action:
    """A redrive (the whole queue, to ``target``) or a delete (one message)."""

    kind: str  # "redrive" or "delete"
    queue: str
    queue_url: str
    target: str | None = None
    message_id: str | None = None

    @property
    def question(self) -> str:
        queue = markdown_text(self.queue)
        if self.kind == "redrive":
            target = markdown_text(self.target or "")
            return f"Move every message of **{queue}** back to **{target}**, to be processed again?"
        message = markdown_text(self.message_id or "")
        return f"Delete message **{message}** from **{queue}**? It cannot be brought back."


def stored_action(key: str, *, pop: bool = False) -> Action | None:
    """The action kept under ``key``: as a dict, since each rerun of the page defines ``Action`` anew."""
    value = st.session_state.pop(key, None) if pop else st.session_state.get(key)
    return Action(**value) if isinstance(value, dict) else None


def ask(action: Action) -> None:
    st.session_state[PENDING] = asdict(action)
    st.session_state[CONFIRM_TEXT] = ""
    st.session_state.pop(CONFIRM_ERROR, None)


def confirm() -> None:
    """The confirmation's button: only a typed "yes" lets the action run."""
    if str(st.session_state.get(CONFIRM_TEXT, "")).strip().lower() != "yes":
        st.session_state[CONFIRM_ERROR] = 'Type "yes" to go ahead, or cancel.'
        return
    pending = st.session_state.pop(PENDING, None)
    if pending is not None:  # None: a second click on a confirmation already taken
        st.session_state[CONFIRMED] = pending
    st.session_state.pop(CONFIRM_ERROR, None)


def cancel() -> None:
    st.session_state.pop(PENDING, None)
    st.session_state.pop(CONFIRM_ERROR, None)


def sqs() -> Any:
    return data.sqs_client(context.config.aws_endpoint_url, context.config.region)


def run_redrive(action: Action) -> None:
    """The redrive with its progress in a status box, then its result: moved, failed, left."""
    queue, target = markdown_label(action.queue), markdown_label(action.target or "")
    with st.status(f"Redriving {queue} to {target}…", expanded=True) as status:
        bar = st.progress(0.0, text="Starting")

        def progress(step: RedriveProgress) -> None:
            done = step.moved + step.failed
            fraction = min(1.0, done / step.total) if step.total else 0.0
            bar.progress(fraction, text=f"{step.moved} moved, {step.failed} failed of {step.total or '?'}")

        try:
            result = redrive(sqs(), action.queue_url, action.target, progress=progress)
        except Exception as exc:  # AWS errors and DLQError alike: one line, never a traceback
            status.update(label=f"Redrive of {queue} failed", state="error")
            st.error(f"Redrive of {queue} failed: {markdown_text(str(exc))}")
            return
        bar.progress(1.0, text="Done")
        summary = (
            f"Redrive of {queue} to {target}: {result.moved} moved, {result.failed} failed, "
            f"{result.left} left in {queue}"
        )
        status.update(label=summary, state="error" if result.failed else "complete", expanded=False)
    (st.warning if result.failed else st.success)(summary)
    if result.duplicated:
        st.warning(f"{result.duplicated} sent but not deleted from {queue}: they are in both queues.")
    if result.failure_reason:
        st.caption(f"Why: {markdown_text(result.failure_reason)}")


def run_delete(action: Action) -> None:
    queue, message = markdown_label(action.queue), markdown_label(action.message_id or "")
    with st.status(f"Deleting message {message} from {queue}…") as status:
        try:
            found = delete_message(sqs(), action.queue_url, action.message_id or "")
        except Exception as exc:
            status.update(label=f"Delete from {queue} failed", state="error")
            st.error(f"Delete from {queue} failed: {markdown_text(str(exc))}")
            return
        label = (
            f"Deleted message {message} from {queue}"
            if found
            else f"Message {message} is no longer visible in {queue}: nothing deleted"
        )
        status.update(label=label, state="complete" if found else "error")
    (st.success if found else st.warning)(label)


def run_confirmed() -> None:
    """The action confirmed in the previous step, before the queues are drawn, so they show its effect."""
    action = stored_action(CONFIRMED, pop=True)
    if action is None or not access.may_act(context.config):
        return
    try:
        (run_redrive if action.kind == "redrive" else run_delete)(action)
    finally:
        data.clear_dead_letter_cache()


def confirmation(action: Action) -> None:
    with st.container(border=True):
        st.warning(action.question, icon=":material/warning:")
        st.text_input('Type "yes" to confirm', key=CONFIRM_TEXT)
        if CONFIRM_ERROR in st.session_state:
            st.caption(st.session_state[CONFIRM_ERROR])
        go, stop = st.columns(2)
        go.button("Confirm", key="dead_letters_confirm", type="primary", on_click=confirm)
        stop.button("Cancel", key="dead_letters_cancel", on_click=cancel)


def actions(name: str, url: str, sources: list[str], letters: pd.DataFrame) -> None:
    """Redrive (to a source queue) and delete (one message); the caller leaves them out when read-only."""
    redrive_column, delete_column = st.columns(2)
    with redrive_column:
        if sources:
            target = (
                sources[0]
                if len(sources) == 1
                else st.selectbox("Redrive to", sources, key=f"redrive_target_{name}", format_func=shorten)
                or sources[0]
            )
            st.button(
                f"Redrive all to {markdown_label(target)}",
                key=f"redrive_{name}",
                icon=":material/replay:",
                on_click=ask,
                args=(Action("redrive", name, url, target=target),),
            )
        else:
            st.caption("No queue names it as its dead-letter queue: nowhere to redrive to.")
    with delete_column:
        if not letters.empty:
            ids = letters["message_id"].tolist()
            message_id = st.selectbox("Message", ids, key=f"delete_message_{name}") or ids[0]
            st.button(
                "Delete this message",
                key=f"delete_{name}",
                icon=":material/delete:",
                on_click=ask,
                args=(Action("delete", name, url, message_id=message_id),),
            )
    pending = stored_action(PENDING)
    if pending is not None and pending.queue == name:
        confirmation(pending)


def messages_table(letters: pd.DataFrame) -> None:
    st.dataframe(
        letters[["flow", "message_id", "receive_count", "age_seconds", "body", "message_attributes"]],
        hide_index=True,
        width="stretch",
        column_config={
            "flow": url_state.flow_link_column(),
            "message_id": st.column_config.TextColumn("Message id"),
            "receive_count": st.column_config.NumberColumn("Receives", help="ApproximateReceiveCount"),
            "age_seconds": st.column_config.NumberColumn("Age s", format="%.0f"),
            "body": st.column_config.TextColumn("Body", width="large"),
            "message_attributes": st.column_config.TextColumn("Message attributes"),
        },
    )


def dead_letter_queue(name: str, stored: QueueSummary | None, live: dict[str, Any] | None) -> None:
    """One dead-letter queue: its counts, its messages (when SQS is reachable) and the actions on them."""
    with st.container(border=True):
        st.subheader(markdown_label(name), anchor=False, help=whole_text(name))
        sources = list(live["sources"]) if live is not None else list(stored.sources if stored else [])
        st.caption(f"Dead-letter queue of {markdown_names(sources) or 'no queue now'}")
        latest = stored.latest if stored else None
        counts = st.columns(3)
        counts[0].metric(
            "Waiting", live["visible"] if live is not None else (latest.visible if latest else "-")
        )
        counts[1].metric(
            "In flight", live["in_flight"] if live is not None else (latest.in_flight if latest else "-")
        )
        counts[2].metric("Last polled", format_ago(stored.last_polled_unix_nano) if stored else "-")
        if live is None:
            st.caption("Not readable in SQS now: its messages cannot be shown.")
            return
        try:
            letters = data.dead_letters_frame(
                context.db, context.config.aws_endpoint_url, context.config.region, live["url"], PEEK_LIMIT
            )
        except Exception as exc:  # e.g. the queue was deleted since it was listed
            st.error(f"Cannot peek at {markdown_label(name)}: {markdown_text(str(exc))}")
            return
        if letters.empty:
            st.success("Empty: no dead letter waiting.", icon=":material/check_circle:")
        else:
            st.caption(f"The first {PEEK_LIMIT} messages at most, each linked to its flow.")
            messages_table(letters)
        if access.may_act(context.config):
            actions(name, live["url"], sources, letters)


@st.fragment(run_every=refresh_interval())
def dead_letters() -> None:
    run_confirmed()
    stored = {queue.name: queue for queue in data.queues(context.db) if queue.is_dead_letter_queue}
    endpoint = context.config.aws_endpoint_url
    listing, error = data.dead_letter_queues_frame(endpoint, context.config.region)
    live: dict[str, dict[str, Any]] = {}
    if error is not None:
        st.error(
            f"Cannot reach SQS {'at ' + endpoint if endpoint else '(AWS)'}: {markdown_text(error)}. "
            "Shown below is what the collector's polls stored; the messages, redrive and delete need SQS.",
            icon=":material/cloud_off:",
        )
    else:
        live = {str(row["name"]): {str(k): v for k, v in row.items()} for row in listing.to_dict("records")}
    reason = access.read_only_reason(context.config)
    if reason is not None:
        st.caption(f":material/lock: {markdown_text(reason)}")
    names = sorted(set(stored) | set(live))
    if not names:
        st.info("No dead-letter queue found: no queue has a RedrivePolicy.", icon=":material/check_circle:")
    for name in names:
        dead_letter_queue(name, stored.get(name), live.get(name))


dead_letters()
