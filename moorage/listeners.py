"""The one way Moorage opens a TCP listening socket for its HTTP listeners (gateway, dashboard, ops port), so
IPv6 hosts, address reuse and a busy port behave the same on every listener."""

from __future__ import annotations

import socket


def bind(host: str, port: int, backlog: int = 128) -> socket.socket:
    """A non-blocking listening socket on ``host:port``; ``OSError`` (closed socket) names a busy port."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, port))
        sock.listen(backlog)
        sock.setblocking(False)
    except OSError:
        sock.close()
        raise
    return sock
