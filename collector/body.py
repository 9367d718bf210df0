"""Reading request bodies with a per-request limit and a shared memory budget."""

from __future__ import annotations

from starlette.requests import Request

from hopscope.collector.otlp_codec import BodyTooLargeError


class BudgetExhaustedError(RuntimeError):
    """Bodies in flight already use the memory budget; the client should retry later."""


class InflightBudget:
    """Bytes of request bodies held at once across all requests.

    Only touched from the event loop thread, so it needs no lock.
    """

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.used = 0

    def take(self, size: int) -> None:
        if self.used + size > self.limit:
            raise BudgetExhaustedError(f"{self.used} bytes of request bodies are already in memory")
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
