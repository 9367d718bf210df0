"""Whether an address a server binds reaches only this machine: one test for the collector's Host check and
the dashboard's access rule (which may not import the collector's HTTP room)."""

from __future__ import annotations

import ipaddress


def is_loopback_host(host: str | None) -> bool:
    """True for ``localhost`` and loopback IP addresses (127.0.0.0/8, ``::1``, bracketed or not); False for
    anything else, including no address at all (a server then listens on every interface)."""
    if not host:
        return False
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False
