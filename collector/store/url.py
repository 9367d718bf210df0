"""``--store URL``: which store a URL names, opened with the right driver.

``sqlite:///path`` (or a plain path, what ``--db`` gives), ``chdb:///path[?database=NAME]`` (ClickHouse
in-process) and ``clickhouse[s]://user:password@host:8123/database`` (a ClickHouse server, over HTTP).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import parse_qs, urlsplit

if TYPE_CHECKING:
    from hopscope.collector.store.base import SpanStore
    from hopscope.collector.store.clickhouse.client import ClickHouseClient

DEFAULT_CLICKHOUSE_DATABASE = "hopscope"
SCHEMES = ("sqlite", "chdb", "clickhouse", "clickhouses")


@dataclass(frozen=True)
class StoreUrl:
    scheme: str
    url: str
    path: Path | None = None  # sqlite and chdb
    database: str = DEFAULT_CLICKHOUSE_DATABASE

    @property
    def is_clickhouse(self) -> bool:
        return self.scheme != "sqlite"

    def display(self) -> str:
        """The URL without its password, for logs."""
        if self.path is not None:
            suffix = f"?database={self.database}" if self.scheme == "chdb" else ""
            return f"{self.scheme}://{self.path.resolve()}{suffix}"
        parts = urlsplit(self.url)
        host = f"{parts.hostname}:{parts.port}" if parts.port else str(parts.hostname)
        user = f"{parts.username}@" if parts.username else ""
        return f"{parts.scheme}://{user}{host}/{self.database}"


def parse_store_url(text: str) -> StoreUrl:
    """ValueError with the accepted forms for anything else."""
    parts = urlsplit(text)
    scheme = parts.scheme.lower()
    if scheme not in SCHEMES:
        if "://" not in text:  # a plain path: SQLite, as --db
            return StoreUrl("sqlite", text, Path(text))
        raise ValueError(
            f"invalid store URL {text!r}: use sqlite:///path, chdb:///path or "
            "clickhouse://user:password@host:8123/database"
        )
    if scheme in ("sqlite", "chdb"):
        path = (parts.netloc + parts.path) if parts.netloc else parts.path
        if not path:
            raise ValueError(f"invalid store URL {text!r}: no path (sqlite:///path/to/hopscope.db)")
        database = parse_qs(parts.query).get("database", [DEFAULT_CLICKHOUSE_DATABASE])[0]
        return StoreUrl(scheme, text, Path(path), database)
    if not parts.hostname:
        raise ValueError(f"invalid store URL {text!r}: no host (clickhouse://user:password@host:8123/db)")
    return StoreUrl(scheme, text, None, parts.path.strip("/") or DEFAULT_CLICKHOUSE_DATABASE)


def driver_module(url: StoreUrl) -> str | None:
    """The module the URL's driver needs (from the [clickhouse] extra), None for SQLite."""
    return {"chdb": "chdb", "clickhouse": "clickhouse_connect", "clickhouses": "clickhouse_connect"}.get(
        url.scheme
    )


def open_clickhouse_client(url: StoreUrl) -> ClickHouseClient:
    from hopscope.collector.store.clickhouse.client import ChdbClient, HttpClient  # noqa: PLC0415

    if url.scheme == "chdb":
        assert url.path is not None
        return ChdbClient(str(url.path.resolve()), url.database)
    parts = urlsplit(url.url)
    return HttpClient(parts._replace(path="/" + url.database).geturl())


def open_store(
    url: StoreUrl | str | Path, *, read_only: bool = False, stitch_only: bool = False
) -> SpanStore:
    """The store a URL names (a ``Path``: that SQLite file, as ``--db`` names it); StoreError (with the
    reason) when it cannot be opened. The driver's module is imported only now.

    ``stitch_only``: opened by a stitcher process beside the collector's writer (ingest/stitcher.py), which
    owns the file's upkeep (migration, checkpoints).
    """
    from hopscope.collector.store.errors import StoreError  # noqa: PLC0415 - parse_store_url stays light

    if isinstance(url, Path):
        url = StoreUrl("sqlite", str(url), url)
    elif isinstance(url, str):
        try:
            url = parse_store_url(url)
        except ValueError as exc:
            raise StoreError(str(exc)) from None
    if not url.is_clickhouse:
        from hopscope.collector.store.sqlite.store import SQLiteStore  # noqa: PLC0415

        assert url.path is not None
        return SQLiteStore(url.path, read_only=read_only, stitch_only=stitch_only)
    from hopscope.collector.store.clickhouse.store import ClickHouseStore  # noqa: PLC0415
    from hopscope.collector.store.errors import ClickHouseError  # noqa: PLC0415

    try:
        return ClickHouseStore(open_clickhouse_client(url), read_only=read_only, label=url.display())
    except ImportError:
        raise StoreError(
            f"{url.scheme}:// needs the 'clickhouse' extra (missing module {driver_module(url)!r}): "
            "pip install 'hopscope[clickhouse]'"
        ) from None
    except ClickHouseError as exc:
        raise StoreError(f"cannot open {url.display()}: {exc}") from exc
