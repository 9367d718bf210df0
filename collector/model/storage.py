"""What a store takes on disk: the figures ``/healthz``, the dashboard's overview and the free-disk warning
show, and the rule that calls free space low."""

from __future__ import annotations

from dataclasses import dataclass

# Free space is low under 1 GiB, or under 5% of a filesystem smaller than 20 GiB (so that a small volume,
# a tmpfs, a container's disk, is not low from its first byte). At the tens of MB a minute that a busy
# collector writes, 1 GiB is minutes to an hour of room: enough to act, not so much that a well-filled
# large disk warns for ever.
LOW_FREE_BYTES = 1 << 30
LOW_FREE_FRACTION = 0.05


@dataclass(frozen=True, slots=True)
class StorageFacts:
    """One look at a store's footprint (``StorageReader.storage_facts``).

    ``retention_seconds`` is what the collector that writes the store recorded there (``--retention``):
    0 when it keeps spans for ever, None when no collector recorded one (an older database, or spans
    written only by OpenTelemetry Collectors). ``free_bytes`` and ``disk_bytes`` are the filesystem
    holding the store, None where the store cannot know them.
    """

    location: str  # the database file, or the ClickHouse database (for messages)
    size_bytes: int  # every file of the store (SQLite: the file, its -wal and -shm; ClickHouse: its parts)
    oldest_span_unix_nano: int | None  # the earliest start time of a span kept; None when none is
    free_bytes: int | None
    disk_bytes: int | None
    retention_seconds: int | None

    @property
    def low_free_bytes(self) -> int | None:
        """Under this much free space the disk is low (None when the filesystem's size is unknown)."""
        return None if self.disk_bytes is None else low_free_threshold(self.disk_bytes)

    @property
    def disk_low(self) -> bool:
        """Free space is known and under the threshold."""
        threshold = self.low_free_bytes
        return self.free_bytes is not None and threshold is not None and self.free_bytes < threshold


def low_free_threshold(disk_bytes: int) -> int:
    """Free bytes under which a filesystem of ``disk_bytes`` is low: 1 GiB, or 5% of a small one."""
    return min(LOW_FREE_BYTES, int(disk_bytes * LOW_FREE_FRACTION))


def byte_size(count: int) -> str:
    """``1.5 GiB``: a byte count for people."""
    if count < 1024:
        return f"{count} B"
    size = float(count)
    for unit in ("KiB", "MiB", "GiB"):
        size /= 1024
        if size < 1024:
            return f"{size:.1f} {unit}"
    return f"{size / 1024:.1f} TiB"
