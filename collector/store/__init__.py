"""Span stores: role protocols (base), errors, store URLs, and the SQLite and ClickHouse implementations.

Nothing is imported here, so that ``store.errors`` and ``store.url`` stay light.
"""
