"""Queues: each polled queue's depth over time (visible, in flight, delayed, oldest age), its latest counts,
its last poll error, and its dead-letter queue beside it. The chosen queue is kept in the URL (``?queue=``).
Below, each consumer's duplicate-delivery rate per queue (from the spans: model/fate.py).
"""

from __future__ import annotations

import pandas as pd
import streamlit as st

from hopscope.collector.model.queues import QueueSummary
from hopscope.dashboard import data, url_state
from hopscope.dashboard.charts import queue_age_figure, queue_messages_figure
from hopscope.dashboard.format import format_age, format_ago
from hopscope.dashboard.page_frame import page_context
from hopscope.dashboard.plain_text import markdown_label, markdown_names, markdown_text, whole_text
from hopscope.dashboard.time_range import refresh_interval

context = page_context()
st.title("Queues")


def choose_queue(queues: dict[str, QueueSummary]) -> QueueSummary:
    """The queue of ``?queue=``; by default the first with a dead-letter queue (both are shown), else the
    first that is not one."""
    names = list(queues)
    with_dlq = [name for name in names if queues[name].dlq_name]
    working = [name for name in names if not queues[name].is_dead_letter_queue]
    choice = url_state.select(
        "queue",
        "Queue",
        names,
        key="queues_queue",
        default=(with_dlq or working or names)[0],
        format_func=lambda name: f"{name} (dead-letter queue)" if queues[name].is_dead_letter_queue else name,
    )
    return queues[choice]


def queue_panel(queue: QueueSummary) -> None:
    """One queue: latest counts, its poll state, and its depth over the page's time range."""
    tr = context.time_range
    st.subheader(markdown_label(queue.name), anchor=False, help=whole_text(queue.name))
    if queue.is_dead_letter_queue:
        st.caption(f":material/report: Dead-letter queue of {markdown_names(queue.sources)}")
    elif queue.dlq_name:
        st.caption(
            f"Moves a message to {markdown_label(queue.dlq_name)} after {queue.max_receive_count or '?'} "
            "receives"
        )
    if queue.last_error:
        st.warning(
            f"The last poll failed ({format_ago(queue.last_error_unix_nano)}): "
            f"{markdown_text(queue.last_error)}",
            icon=":material/sync_problem:",
        )
    latest = queue.latest
    counts = st.columns(4)
    counts[0].metric("Visible", latest.visible if latest else "-")
    counts[1].metric("In flight", latest.in_flight if latest else "-")
    counts[2].metric("Delayed", latest.delayed if latest else "-")
    counts[3].metric(
        "Oldest age",
        format_age(latest.oldest_age_seconds if latest else None),
        help=f"age source: {markdown_text(latest.age_source)}" if latest and latest.age_source else None,
    )
    st.caption(f"Polled {format_ago(queue.last_polled_unix_nano)}")

    depth = data.queue_depth_frame(context.db, queue.name, tr.since_unix_nano, tr.until_unix_nano)
    if depth.empty:
        st.caption("No depth samples in this time range.")
        return
    st.plotly_chart(queue_messages_figure(depth), width="stretch", key=f"queue_messages_{queue.name}")
    if depth["oldest_age_seconds"].isna().all():
        st.caption("Oldest message's age: not known in this time range (the queue was empty at each poll).")
        return
    st.plotly_chart(queue_age_figure(depth), width="stretch", key=f"queue_oldest_{queue.name}")


def all_queues(queues: list[QueueSummary]) -> None:
    st.dataframe(
        pd.DataFrame(
            [
                {
                    "queue": queue.name,
                    "dead_letter_queue": queue.dlq_name or ("(is one)" if queue.is_dead_letter_queue else ""),
                    "visible": queue.latest.visible if queue.latest else None,
                    "in_flight": queue.latest.in_flight if queue.latest else None,
                    "delayed": queue.latest.delayed if queue.latest else None,
                    "oldest_age_seconds": queue.latest.oldest_age_seconds if queue.latest else None,
                    "polled": format_ago(queue.last_polled_unix_nano),
                    "last_error": queue.last_error or "",
                }
                for queue in queues
            ]
        ),
        hide_index=True,
        width="stretch",
        column_config={
            "queue": st.column_config.TextColumn("Queue"),
            "dead_letter_queue": st.column_config.TextColumn("Dead-letter queue"),
            "visible": st.column_config.NumberColumn("Visible"),
            "in_flight": st.column_config.NumberColumn("In flight"),
            "delayed": st.column_config.NumberColumn("Delayed"),
            "oldest_age_seconds": st.column_config.NumberColumn("Oldest age s", format="%.0f"),
            "polled": st.column_config.TextColumn("Polled"),
            "last_error": st.column_config.TextColumn("Last poll error"),
        },
    )


def duplicate_rates() -> None:
    """Per queue and consumer service: the messages it processed in the page's time range, and how many
    were processed successfully again (SQS delivers at least once: a visibility timeout that ran out while
    a message was being processed hands it to another invocation)."""
    rates = data.duplicate_rates_frame(context.db, context.time_range.since_unix_nano)
    st.subheader(
        "Duplicate deliveries",
        anchor=False,
        help="A duplicate delivery is a message processed successfully more than once by the same consumer: "
        "the idempotency SQS asks of every handler, made visible.",
    )
    if rates.empty:
        st.caption("No consumer processed a message with a message id in this time range.")
        return
    st.dataframe(
        rates,
        hide_index=True,
        width="stretch",
        column_config={
            "queue": st.column_config.TextColumn("Queue"),
            "consumer": st.column_config.TextColumn("Consumer"),
            "messages": st.column_config.NumberColumn("Messages processed"),
            "duplicate_deliveries": st.column_config.NumberColumn("Duplicate deliveries"),
            "duplicate_rate": st.column_config.NumberColumn("Duplicate rate", format="percent"),
        },
    )


@st.fragment(run_every=refresh_interval())
def queues_page() -> None:
    summaries = data.queues(context.db)
    if not summaries:
        st.info(
            "No queue has been polled yet. Run the collector with `--sqs` to record queue depth.",
            icon=":material/stacks:",
        )
        duplicate_rates()
        return
    queues = {queue.name: queue for queue in summaries}
    asked = url_state.text("queue")
    if asked and asked not in queues:  # a link (the service map's) to a queue the collector does not poll
        st.warning(
            f"Queue {markdown_label(asked)} is not polled, so its depth is unknown: add it to the "
            "collector's `--sqs` queues. Showing the polled queues instead.",
            icon=":material/stacks:",
        )
    chosen = choose_queue(queues)
    # The source on the left, its dead-letter queue on the right, whichever of the two was chosen.
    source: QueueSummary | None = chosen
    dead_letters: QueueSummary | None = queues.get(chosen.dlq_name or "")
    if chosen.is_dead_letter_queue:
        source, dead_letters = queues.get(chosen.sources[0]), chosen
    left, right = st.columns(2, gap="large")
    with left:
        if source is not None:
            queue_panel(source)
        else:
            source_name, name = markdown_label(chosen.sources[0]), markdown_label(chosen.name)
            st.caption(f"{source_name} (the source of {name}) is not polled.")
    with right:
        if dead_letters is not None:
            queue_panel(dead_letters)
        elif chosen.dlq_name:
            st.caption(f"Its dead-letter queue {markdown_label(chosen.dlq_name)} is not polled.")
        else:
            st.caption(
                f"{markdown_label(chosen.name)} has no dead-letter queue: a failing message is retried until "
                "it expires."
            )
    if chosen.is_dead_letter_queue and len(chosen.sources) > 1:
        st.caption(f"Also the dead-letter queue of {markdown_names(chosen.sources[1:])}.")
    st.subheader("All queues")
    all_queues(summaries)
    duplicate_rates()


queues_page()
