"""The Streamlit dashboard. It reads through the collector's query layer and never parses OTLP."""

__all__: list[str] = []
