"""The hopscope collector: OTLP/HTTP receiver, span store and query API.

Needs the ``collector`` extra: ``pip install 'hopscope[collector]'``. Names are imported lazily so that
``hopscope.collector.settings`` stays importable (by the CLI's ``--help``) on a bare install.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from hopscope.collector.app import create_app
    from hopscope.collector.settings import CollectorSettings
    from hopscope.collector.store.base import SpanStore
    from hopscope.collector.store.url import open_store

__all__ = ["CollectorSettings", "SpanStore", "create_app", "open_store"]

_HOMES = {
    "CollectorSettings": "hopscope.collector.settings",
    "SpanStore": "hopscope.collector.store.base",
    "open_store": "hopscope.collector.store.url",
    "create_app": "hopscope.collector.app",
}


def __getattr__(name: str) -> Any:
    home = _HOMES.get(name)
    if home is None:
        raise AttributeError(f"module 'hopscope.collector' has no attribute {name!r}")
    return getattr(importlib.import_module(home), name)
