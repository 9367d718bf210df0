"""The ClickHouse span store, on the OpenTelemetry Collector ClickHouse exporter's ``otel_traces`` layout.

Module for module as ``store/sqlite/``, plus ``client``:

- ``store``: ``ClickHouseStore``, which stitches the span feed and composes the parts below;
- ``client``: one small interface over chdb (in-process) and clickhouse-connect (a server, over HTTP);
- ``schema``: every table's DDL (the exporter's, hopscope's span feed, flow and queue tables);
- ``spans``: spans as the exporter's rows, inserted (as sent), read back as OTLP, deleted by age;
- ``flows``: the flow stitcher (SQLite's union-find, written as row versions) and the flow readers;
- ``red``: RED rollups per minute, aggregated from the spans at query time;
- ``graph``: service-graph hop rollups computed at query time, the queue names seen, and the latency
  histogram's bins in SQL (which ``red`` uses too);
- ``queues``: the SQS poller's queues and depth samples;
- ``logs``: log records as rows of the exporter's ``otel_logs``, inserted, searched, read back as OTLP,
  deleted by age;
- ``fate``: successful deliveries (counted while stitching, for duplicates) and dead-letter peeks;
- ``expiry``: ``--retention`` as a TTL on every hopscope_* table (ClickHouse drops rows when it merges);
- ``storage``: the tables' size on disk, the oldest span kept, free space and the recorded retention.
"""
