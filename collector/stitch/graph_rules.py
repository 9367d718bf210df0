"""What every span store's service graph shares: the minute buckets, how long a hop waits for its partner,
and which client spans are calls to external dependencies.

The edges themselves are defined in ``hopscope.collector.store.sqlite.graph`` (counted while stitching)
and computed again at query time by ``hopscope.collector.store.clickhouse.graph``; both read these.
"""

from __future__ import annotations

from typing import Final

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
# A destination node is "{messaging.system}:{messaging.destination.name}", this system when none is set.
DEFAULT_MESSAGING_SYSTEM: Final = "messaging"
EDGE_KINDS: Final = ("sync", "publish", "consume", "subscription", "external")
