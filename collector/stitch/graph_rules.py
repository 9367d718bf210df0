"""What every span store's service graph shares: the minute buckets, how long a hop waits for its partner,
and which client spans are calls to external dependencies.

The edges themselves are defined in ``hopscope.collector.store.sqlite.graph`` (counted while stitching)
and computed again at query time by ``hopscope.collector.store.clickhouse.graph``; both read these.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Final

from hopscope.collector.model.conventions import MESSAGING_SYSTEM
from hopscope.collector.model.destinations import DESTINATION_KEYS, destination_node

BUCKET_NS: Final = 60 * 1_000_000_000
# A hop whose partner has not arrived after this long never will (an uninstrumented caller, a sampled-out
# producer): it is given up, so pending_hops stays small. At query time: how far outside the range a
# partner (a client parent, a producer) is looked for.
PENDING_HOP_TTL_NS: Final = 3600 * 1_000_000_000
# An HTTP client span with no server span beneath it after this long counts as a call to an external
# dependency (named from server.address); until then its server span may still arrive.
EXTERNAL_GRACE_NS: Final = 60 * 1_000_000_000
# A client span with one of these attributes is a call to an external dependency (AWS SDK, RPC, database)...
DEPENDENCY_KEYS: Final = ("rpc.system", "db.system")
# ... named from the first of these that is set.
EXTERNAL_KEYS: Final = ("rpc.service", "db.system", "server.address")
# A destination node is "{system}:{name}" as model/destinations.py reads them, this system when none is set.
DEFAULT_MESSAGING_SYSTEM: Final = "messaging"
# A dependency call that names a destination (vanilla botocore's SQS calls name their queue) is a call to
# that destination's node, not to "external:SQS": a publish edge when it sends (these rpc.method values, or
# a messaging.operation.type that sends), an external edge to the destination for any other call
# (ReceiveMessage, DeleteMessage, GetQueueAttributes...). One that names none (ListQueues) stays external.
SEND_METHODS: Final = frozenset(
    {"SendMessage", "SendMessageBatch", "Publish", "PublishBatch", "PutEvents", "PutRecord", "PutRecords"}
)
SEND_OPERATION_TYPES: Final = frozenset({"send", "publish"})
RPC_METHOD: Final = "rpc.method"
OPERATION_TYPE: Final = "messaging.operation.type"
# Every attribute client_edge reads.
CLIENT_EDGE_KEYS: Final = frozenset(
    {*DEPENDENCY_KEYS, *EXTERNAL_KEYS, *DESTINATION_KEYS, RPC_METHOD, OPERATION_TYPE, MESSAGING_SYSTEM}
)
EDGE_KINDS: Final = ("sync", "publish", "consume", "subscription", "external")


def client_edge(attributes: Mapping[str, object]) -> tuple[str, str] | None:
    """(target node, edge kind) of a CLIENT span's call to a dependency (``rpc.system`` or ``db.system``):
    its destination's node (publish or external, see ``SEND_METHODS``) when it names one, else
    ``external:{rpc.service | db.system | server.address}``; None when it is no dependency call."""
    if not any(key in attributes for key in DEPENDENCY_KEYS):
        return None
    destination = destination_node(attributes, DEFAULT_MESSAGING_SYSTEM)
    if destination is not None:
        sends = (
            attributes.get(RPC_METHOD) in SEND_METHODS
            or attributes.get(OPERATION_TYPE) in SEND_OPERATION_TYPES
        )
        return destination, "publish" if sends else "external"
    external = next((attributes[key] for key in EXTERNAL_KEYS if attributes.get(key)), None)
    return None if external is None else (f"external:{external}", "external")
