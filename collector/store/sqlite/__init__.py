"""The SQLite span store (the embedded default): one file, WAL, stitched as spans arrive.

Module for module as ``store/clickhouse/`` (which adds ``client``; this one adds ``windows``):

- ``store``: ``SQLiteStore``, which owns the connections and transactions and composes the parts below;
- ``schema``: every table's DDL, version 1 and the migrations since, applied on open;
- ``spans``: spans prepared as rows, inserted (a re-sent span once), read back as OTLP, deleted by age;
- ``windows``: the span tables, one per window of time that retention drops whole, and the view over them;
- ``flows``: the flow stitcher (a union-find over traces) and the flow readers;
- ``red``: RED rollups per minute, updated while stitching, and their reader;
- ``graph``: service-graph hop rollups, updated while stitching, their reader and the queue names seen;
- ``queues``: the SQS poller's queues and depth samples;
- ``logs``: log records prepared as rows, inserted (a re-sent record once), searched, read back as OTLP,
  deleted by age;
- ``fate``: successful deliveries (counted while stitching, for duplicates) and dead-letter peeks;
- ``expiry``: ``--retention`` beyond spans (flows and every row pointing to them, rollups, orphans), a short
  transaction at a time;
- ``storage``: the file's size on disk, the oldest span kept, free space and the recorded retention.
"""
