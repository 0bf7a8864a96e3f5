"""The connections clients made to the daemon's Unix socket, found among
this process's file descriptors, so that the daemon can end them itself
before its gRPC server stops.

Why: grpc's server, as it stops, cancels every call it has received but
not yet handed to a handler, and the client sees CANCELLED. A client whose
connection ends sees UNAVAILABLE for every call still on it, which is what
a call to a daemon that is going away must get (R11). So the daemon, once
it refuses calls, removes the socket's name (no new connection can come),
ends the connections still waiting to be accepted, then ends the accepted
ones, and only then stops its server: nothing is left for it to cancel.
"""

from __future__ import annotations

import os
import socket
import stat
from collections.abc import Iterator

# Linux lists a process's descriptors under /proc; macOS and the BSDs under /dev/fd.
_FD_DIRS = ("/proc/self/fd", "/dev/fd")


def _descriptors() -> list[int]:
    for folder in _FD_DIRS:
        try:
            return [int(name) for name in os.listdir(folder)]
        except OSError:
            continue
    return []


def _named(sock: socket.socket, path: str) -> bool:
    try:
        name = sock.getsockname()
    except OSError:
        return False
    # grpc names a socket it binds from "unix:///abs" as "///abs": the same file.
    return isinstance(name, str) and bool(name) and os.path.normpath(name) == path


def _sockets_of(path: str) -> Iterator[tuple[socket.socket, bool]]:
    """(a duplicate of each socket of this process named path, whether it
    listens). The caller closes each duplicate; the original stays grpc's."""
    path = os.path.normpath(os.path.abspath(path))
    for fd in _descriptors():
        try:
            if not stat.S_ISSOCK(os.fstat(fd).st_mode):
                continue
            sock = socket.socket(fileno=os.dup(fd))
        except OSError:
            continue  # closed meanwhile, or not a socket Python knows
        try:
            if sock.family == socket.AF_UNIX and _named(sock, path):
                listening = bool(sock.getsockopt(socket.SOL_SOCKET, socket.SO_ACCEPTCONN))
                yield sock, listening
        except OSError:
            pass
        finally:
            sock.close()


def end_client_connections(path: str) -> int:
    """End every connection to the socket path: first those still waiting
    to be accepted, then the accepted ones. The socket's name must be gone
    already, so that none can come after. Returns how many were ended."""
    ended = 0
    # Each duplicate is closed as the generator moves on: use it in the loop.
    for sock, listening in _sockets_of(path):
        if listening:
            ended += _refuse_waiting(sock)
    for sock, listening in _sockets_of(path):
        if not listening:
            try:
                sock.shutdown(socket.SHUT_RDWR)  # acts on the connection, not on our duplicate
                ended += 1
            except OSError:
                pass  # the client left meanwhile
    return ended


def _refuse_waiting(listener: socket.socket) -> int:
    """Accept and close whatever waits in listener's backlog."""
    refused = 0
    listener.setblocking(False)  # grpc's own descriptor is non-blocking already
    while True:
        try:
            conn, _ = listener.accept()
        except (BlockingIOError, InterruptedError):
            return refused
        except OSError:
            return refused
        conn.close()
        refused += 1
