"""``hopscope demo``: a serverless order system on a local moto server, traced end to end.

Its Lambda handlers use only ``hopscope.instrumentation``'s public API (they are the README's examples);
the event-source runner does what Lambda's event source mappings and SNS/EventBridge deliveries do.
"""

__all__: list[str] = []
