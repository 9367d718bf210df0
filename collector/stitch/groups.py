"""The store-neutral part of flow stitching: folding a batch's :class:`TraceFacts` and joining them in memory.

Every store's stitcher starts the same way: one :class:`TraceFacts` per trace (:func:`combine`), then the
traces of the batch joined by links and shared message keys (:func:`connected_groups`). What differs is only
how each group meets the flows already stored.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Mapping, Set
from typing import TypeVar

from hopscope.collector.stitch.facts import TraceFacts, earlier_entry

_T = TypeVar("_T")

# The largest timestamp a store holds: "no start yet" for a flow or an entry span.
MAX_NS = 2**63 - 1
# A trace that links to more traces than this is a batch (one consumer invocation for many messages): its
# links would merge the flows of unrelated messages, so they join nothing. The per-message spans that
# hopscope's process_batch makes are traces of their own, linked to one producer each, and join as usual.
MAX_JOINING_LINKED_TRACES = 1


def combine(traces: Iterable[TraceFacts]) -> dict[bytes, TraceFacts]:
    """One TraceFacts per trace: a group commit may carry the same trace from several requests.

    The first TraceFacts of each trace is the one kept, and the others are folded into it (in place).
    """
    combined: dict[bytes, TraceFacts] = {}
    for facts in traces:
        if facts.trace_id in combined:
            fold(combined[facts.trace_id], facts)
        else:
            combined[facts.trace_id] = facts
    return combined


def fold(into: TraceFacts, facts: TraceFacts) -> None:
    """Add ``facts`` to ``into``: counts add up, times widen, the smaller entry candidate wins, sets unite."""
    into.span_count += facts.span_count
    into.start_unix_nano = min(into.start_unix_nano, facts.start_unix_nano)
    into.end_unix_nano = max(into.end_unix_nano, facts.end_unix_nano)
    into.error_count += facts.error_count
    into.max_receive_count = max(into.max_receive_count, facts.max_receive_count)
    into.entry = earlier_entry(into.entry, facts.entry)
    into.operations |= facts.operations
    into.correlation_ids |= facts.correlation_ids
    into.linked_traces |= facts.linked_traces
    into.message_keys |= facts.message_keys
    into.link_keys |= facts.link_keys


def is_batch(facts: TraceFacts) -> bool:
    """True for a trace that links to several traces: it is shared by their flows, it joins none."""
    return len(facts.linked_traces) > MAX_JOINING_LINKED_TRACES


def only_batches(members: list[bytes], batch: Mapping[bytes, TraceFacts], batches: Set[bytes]) -> bool:
    """True when every trace of a group that brings spans is a batch trace: the group's spans are shared."""
    return all(t in batches for t in members if t in batch and batch[t].span_count)


def link_keys_by_trace(batch: Mapping[bytes, TraceFacts]) -> dict[bytes, set[tuple[str, str]]]:
    """The message keys that links name, by the trace they name (see TraceFacts.link_keys)."""
    keys: dict[bytes, set[tuple[str, str]]] = {}
    for facts in batch.values():
        for message_id, destination, linked in facts.link_keys:
            keys.setdefault(linked, set()).add((message_id, destination))
    return keys


def connected_groups(batch: dict[bytes, TraceFacts], batches: Set[bytes] = frozenset()) -> list[list[bytes]]:
    """Trace ids joined within the batch by links or shared message keys (linked ids included).

    The links of a batch trace (``batches``: those of the batch and those stored as batch traces before)
    join nothing. A key that a link carries joins the linked trace, not the trace of the span carrying it.
    """
    parent: dict[object, object] = {}

    def find(node: object) -> object:
        root = parent.setdefault(node, node)
        while root != parent[root]:
            root = parent[root]
        while parent[node] != root:
            parent[node], node = root, parent[node]
        return root

    def join(a: object, b: object) -> None:
        parent[find(a)] = find(b)

    for trace_id, facts in batch.items():
        find(trace_id)
        if trace_id not in batches and len(facts.linked_traces) <= MAX_JOINING_LINKED_TRACES:
            for linked in facts.linked_traces:
                join(trace_id, linked)
        for key in facts.message_keys:
            join(trace_id, key)
        for message_id, destination, linked in facts.link_keys:
            join(linked, (message_id, destination))
    groups: dict[object, list[bytes]] = {}
    for node in parent:
        if isinstance(node, bytes):
            groups.setdefault(find(node), []).append(node)
    return list(groups.values())


def meet_stored_flows(
    members: list[bytes],
    batch: dict[bytes, TraceFacts],
    known: Mapping[bytes, tuple[int, ...]],
    key_flows: Mapping[tuple[str, str], Iterable[int]],
    standing: Callable[[int], int],
    *,
    link_keys: Mapping[bytes, set[tuple[str, str]]] | None = None,
) -> tuple[TraceFacts, int, set[int]]:
    """One connected group against the stored flows: the group's facts folded into one, how many of its
    traces bring their first spans, and the standing flows it touches (through its traces or message keys).

    ``known`` maps a stored trace to (its flow, its span count, ...); ``standing`` resolves a flow id that
    this batch may already have merged away; ``link_keys`` (link_keys_by_trace) the keys links name.
    """
    total = TraceFacts(b"")
    new_with_spans = 0
    touched = {standing(known[t][0]) for t in members if t in known}
    if link_keys:
        for trace_id in members:
            for key in link_keys.get(trace_id, ()):
                touched.update(standing(flow_id) for flow_id in key_flows.get(key, ()))
    for facts in (batch[t] for t in members if t in batch):
        fold(total, facts)
        previous = known.get(facts.trace_id)
        new_with_spans += previous is None or previous[1] == 0
        for key in facts.message_keys:
            touched.update(standing(flow_id) for flow_id in key_flows.get(key, ()))
    return total, new_with_spans, touched


def chunks(items: list[_T], size: int = 500) -> Iterator[list[_T]]:
    """``items`` in consecutive slices of at most ``size``."""
    for start in range(0, len(items), size):
        yield items[start : start + size]
