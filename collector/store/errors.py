"""The errors a store raises, in a light module so that the CLI and the dashboard catch them without
importing a store implementation."""

from __future__ import annotations


class StoreError(RuntimeError):
    """The store cannot be opened or used as asked."""


class ClickHouseError(RuntimeError):
    """A ClickHouse statement failed or the server cannot be reached; the message says which."""
