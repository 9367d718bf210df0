"""The ClickHouse span store, on the OpenTelemetry Collector ClickHouse exporter's ``otel_traces`` layout."""
