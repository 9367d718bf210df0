"""Plain values every layer shares: flows, RED, the service graph, queues, latency histograms, attribute
names.
"""
