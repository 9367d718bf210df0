"""The two stores are laid out module for module alike, so that a reader can diff them side by side."""

from __future__ import annotations

import pkgutil
from types import ModuleType

import hopscope.collector.store.clickhouse as clickhouse
import hopscope.collector.store.sqlite as sqlite


def _modules(package: ModuleType) -> set[str]:
    return {module.name for module in pkgutil.iter_modules(package.__path__)}


def test_both_stores_have_the_same_modules_for_the_same_concerns() -> None:
    # ClickHouse has one more: the client over chdb and clickhouse-connect; SQLite one: the span windows
    # (ClickHouse partitions its tables by time itself)
    assert _modules(clickhouse) - {"client"} == _modules(sqlite) - {"windows"}
    assert {"store", "schema", "spans", "flows", "red", "graph", "queues"} <= _modules(sqlite)


def test_each_store_package_names_its_modules() -> None:
    for package in (sqlite, clickhouse):
        assert package.__doc__ is not None
        missing = {name for name in _modules(package) if f"``{name}``" not in package.__doc__}
        assert not missing, f"{package.__name__}'s docstring does not name {sorted(missing)}"
