"""Errors of the node process that an operator fixes outside Motus, with stable codes.

``InUse``: something the node or a command needs is held by another process (a TCP
port, the database's lock). ``motus`` reports it as one line on stderr with what to
do, and exit status 3 (docs/cli.md, "Exit status")."""

from __future__ import annotations

import errno
import socket


class InUse(Exception):
    """A port or the database is held by another process."""

    code = "in_use"


class PortInUse(InUse):
    code = "port_in_use"


class DatabaseLocked(InUse):
    code = "db_locked"


def ensure_port_free(host: str, port: int, what: str, flag: str) -> None:
    """Raise PortInUse if another process listens on ``host:port``.

    Checked before the port is opened for real because a listener that sets
    SO_REUSEPORT (py-libp2p's does) would otherwise share a port another node holds,
    and the kernel would hand each node half of the connections. A plain bind (with
    SO_REUSEADDR, which does not skip a live listener) fails on any listening socket.
    Port 0 (any free port) is never busy."""
    if port == 0:
        return
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((host, port))
        except OSError as exc:
            if exc.errno != errno.EADDRINUSE:
                raise
            raise PortInUse(
                f"{what} port {host}:{port} is in use by another process (another node?): "
                f"stop it, or choose another port with {flag}") from None
