"""Reading request bodies with a per-request limit and a shared memory budget.

The budget counts what a request costs while it is held, not only its bytes: decoding a body builds the
request's messages (and, for JSON, a parsed document first), and the store's rows stay queued until the
commit. Measured on the ingest bench's spans (``bench/README.md``, "Memory"), a byte of protobuf costs
about 7 bytes until it is committed, a byte of OTLP JSON about 13 at its peak.
"""

from __future__ import annotations

from starlette.requests import Request

from hopscope.collector.otlp.codec import BodyTooLargeError, Encoding

# Bytes of memory a request holds per byte of its (inflated) body, from decoding until the commit.
COST_PER_BODY_BYTE = {Encoding.PROTOBUF: 7, Encoding.JSON: 14}


def holding_cost(body_bytes: int, encoding: Encoding) -> int:
    """What holding a decoded request of ``body_bytes`` costs in memory, for the in-flight budget."""
    return body_bytes * COST_PER_BODY_BYTE[encoding]


class BudgetExhaustedError(RuntimeError):
    """Bodies in flight already use the memory budget; the client should retry later."""


class InflightBudget:
    """Memory held at once by requests being read, decoded and committed, across all requests.

    Only touched from the event loop thread, so it needs no lock.
    """

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.used = 0

    def take(self, size: int, *, holding: int | None = None) -> None:
        """Charge ``size`` bytes, or raise BudgetExhaustedError (answered 503 / RESOURCE_EXHAUSTED).

        ``holding`` is what the caller's request already holds. A request that alone costs more than the
        whole budget is let in when nothing else is in flight, so that any body within --max-body-bytes
        is accepted sooner or later, one at a time: memory stays within the larger of the budget and one
        request's cost.
        """
        alone = holding is not None and self.used == holding
        if self.used + size > self.limit and not alone:
            raise BudgetExhaustedError(f"{self.used} bytes of memory are already held by requests in flight")
        self.used += size

    def give_back(self, size: int) -> None:
        self.used -= size


class BodyReader:
    """Reads one request's body within ``limit`` bytes, charging it to the shared budget."""

    def __init__(self, budget: InflightBudget, limit: int) -> None:
        self._budget = budget
        self.limit = limit
        self.charged = 0

    def charge(self, size: int) -> None:
        self._budget.take(size)
        self.charged += size

    def charge_holding(self, body_bytes: int, encoding: Encoding) -> None:
        """Before decoding: charge what holding the decoded request will cost (see holding_cost)."""
        extra = holding_cost(body_bytes, encoding) - self.charged
        if extra > 0:
            self._budget.take(extra, holding=self.charged)
            self.charged += extra

    async def read(self, request: Request) -> bytes:
        declared = request.headers.get("content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.limit:
            raise BodyTooLargeError(f"body of {declared} bytes is over the limit of {self.limit} bytes")
        chunks: list[bytes] = []
        size = 0
        async for chunk in request.stream():
            size += len(chunk)
            if size > self.limit:
                raise BodyTooLargeError(f"body is over the limit of {self.limit} bytes")
            self.charge(len(chunk))
            chunks.append(chunk)
        return b"".join(chunks)

    def release(self) -> None:
        self._budget.give_back(self.charged)
        self.charged = 0
