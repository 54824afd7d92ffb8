"""Free TCP ports on loopback for servers that tests start (Ray heads, moto)."""

from __future__ import annotations

import socket
from contextlib import ExitStack


def free_ports(count: int) -> tuple[int, ...]:
    """`count` distinct TCP ports on 127.0.0.1 that nothing listens on at the moment of the call.

    Every socket stays bound until all are chosen: closing each before asking for the next
    lets the kernel hand the same port out twice, and a Ray head given one port for two of
    its components refuses to start. A port can still be taken by another process after
    return; the servers that use these bind them at once.
    """
    if count < 1:
        raise ValueError(f"count must be at least 1, got {count}")
    with ExitStack() as stack:
        ports = []
        for _ in range(count):
            sock = stack.enter_context(socket.socket())
            sock.bind(("127.0.0.1", 0))
            ports.append(int(sock.getsockname()[1]))
    return tuple(ports)


def free_port() -> int:
    """One free TCP port on 127.0.0.1 (see `free_ports`)."""
    (port,) = free_ports(1)
    return port
