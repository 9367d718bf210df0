"""The OTLP wire format: requests decoded from and encoded to protobuf and JSON, attribute values as plain
Python.
"""
