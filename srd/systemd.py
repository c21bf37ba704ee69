"""sd_notify for ``Type=notify`` units: READY, RELOADING, STOPPING. A no-op outside systemd."""

from __future__ import annotations

import os
import socket
import time


def notify(*states: str) -> bool:
    """Send ``states`` (like ``READY=1``) to systemd; False when not run by systemd."""
    address = os.environ.get("NOTIFY_SOCKET")
    if not address:
        return False
    if address.startswith("@"):  # abstract namespace socket
        address = "\0" + address[1:]
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.connect(address)
        sock.sendall("\n".join(states).encode())
    return True


def reloading() -> bool:
    # systemd ≥ 253 wants MONOTONIC_USEC with RELOADING=1 for Type=notify-reload.
    return notify("RELOADING=1", f"MONOTONIC_USEC={time.monotonic_ns() // 1000}")
