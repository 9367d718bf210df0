"""AWS operations the collector, the CLI and the dashboard share: clients, the error classifier, queue
polling, dead letters, redrive.

boto3 is imported when a client is first made, not here.
"""
