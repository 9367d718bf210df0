"""Span stores: the interface and its SQLite implementation."""

from hopscope.collector.store.base import SpanStore
from hopscope.collector.store.sqlite import SCHEMA_VERSION, SQLiteStore, StoreError

__all__ = ["SCHEMA_VERSION", "SQLiteStore", "SpanStore", "StoreError"]
