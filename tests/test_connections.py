"""The daemon, going away, ends its clients' connections itself, both the
accepted ones and those still waiting to be accepted, so that its gRPC
server has no call left to cancel when it stops (R11: a client must see
UNAVAILABLE, which a connection that ends gives, never CANCELLED)."""

from __future__ import annotations

import os
import socket

from choo_reference.connections import end_client_connections


def _ended(conn: socket.socket) -> bool:
    """Whether the peer ended conn: end of file, or reset."""
    conn.settimeout(5)
    try:
        return conn.recv(1) == b""
    except ConnectionResetError:
        return True


def test_accepted_and_waiting_connections_are_ended_and_no_other_socket(tmp_path):
    path = str(tmp_path / "d.sock")
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(path)
    listener.listen(8)
    listener.setblocking(False)  # as grpc's own
    accepted_client = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    accepted_client.connect(path)
    accepted, _ = listener.accept()  # the server's side, as grpc holds it
    waiting_client = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    waiting_client.connect(path)  # in the backlog, not accepted yet
    # A socket of the same process with another name is not touched.
    other_path = str(tmp_path / "other.sock")
    other = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    other.bind(other_path)
    other.listen(1)
    other_client = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    other_client.connect(other_path)
    other_accepted, _ = other.accept()
    try:
        os.unlink(path)  # as the daemon removes the socket's name first
        assert end_client_connections(path) == 2
        assert _ended(accepted_client)
        assert _ended(waiting_client)
        # The listener stays open (grpc's to close); the other pair still talks.
        assert listener.fileno() != -1
        other_client.sendall(b"x")
        other_accepted.settimeout(5)
        assert other_accepted.recv(1) == b"x"
    finally:
        for sock in (listener, accepted_client, accepted, waiting_client, other,
                     other_client, other_accepted):
            sock.close()


def test_a_name_written_as_grpc_writes_it_is_the_same_socket(tmp_path):
    # grpc binds "unix:///abs/d.sock" under the name "///abs/d.sock".
    path = str(tmp_path / "d.sock")
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind("//" + path)
    listener.listen(1)
    client = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    client.connect(path)
    accepted, _ = listener.accept()
    try:
        assert end_client_connections(path) == 1
        assert _ended(client)
    finally:
        for sock in (listener, client, accepted):
            sock.close()
