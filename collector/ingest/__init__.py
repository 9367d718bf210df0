"""Receiving spans: the OTLP/HTTP and OTLP/gRPC receivers, body budgets, validation, the writer thread and
forwarding.
"""
