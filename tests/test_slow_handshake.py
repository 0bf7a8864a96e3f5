"""The suite's channels, and the CLI's, reconnect promptly to a daemon that restarts, yet
wait for a daemon that is slow to answer a new connection: a busy machine
can take more than a few hundred milliseconds to send HTTP/2 SETTINGS, and
a correct daemon must not fail a rule for it."""

from __future__ import annotations

import socket
import threading
from concurrent import futures

import grpc
import pytest

from choo.v1 import daemon_pb2, daemon_pb2_grpc
from choo_conformance.process import RECONNECT_PROMPTLY
from choo_reference.client import CHANNEL_OPTIONS

HANDSHAKE_DELAY_S = 1.5


class _Healthy(daemon_pb2_grpc.DaemonServiceServicer):
    def Health(self, request, context):
        return daemon_pb2.HealthResponse(healthy=True, version="test")


def _relay(a: socket.socket, b: socket.socket) -> None:
    try:
        while data := a.recv(65536):
            b.sendall(data)
    except OSError:
        pass
    finally:
        for end in (a, b):
            end.close()


class SlowToAnswer:
    """A Unix socket in front of a server that holds each new connection
    for a while before passing anything on: a daemon too busy to answer."""

    def __init__(self, path: str, server_path: str) -> None:
        self._listener = socket.socket(socket.AF_UNIX)
        self._listener.bind(path)
        self._listener.listen()
        self._server_path = server_path
        self._closed = threading.Event()
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while not self._closed.is_set():
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            threading.Thread(target=self._serve, args=(client,), daemon=True).start()

    def _serve(self, client: socket.socket) -> None:
        self._closed.wait(HANDSHAKE_DELAY_S)  # the slowness under test, not a wait for an event
        server = socket.socket(socket.AF_UNIX)
        server.connect(self._server_path)
        threading.Thread(target=_relay, args=(server, client), daemon=True).start()
        _relay(client, server)

    def close(self) -> None:
        self._closed.set()
        self._listener.close()


@pytest.fixture
def slow_daemon(tmp_path):
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=2))
    daemon_pb2_grpc.add_DaemonServiceServicer_to_server(_Healthy(), server)
    server.add_insecure_port(f"unix://{tmp_path}/d.sock")
    server.start()
    front = SlowToAnswer(str(tmp_path / "slow.sock"), str(tmp_path / "d.sock"))
    yield f"unix://{tmp_path}/slow.sock"
    front.close()
    server.stop(None)


@pytest.mark.parametrize("options", [RECONNECT_PROMPTLY, CHANNEL_OPTIONS], ids=["suite", "cli"])
def test_a_daemon_slow_to_answer_a_new_connection_is_waited_for(slow_daemon, options):
    with grpc.insecure_channel(slow_daemon, options=options) as channel:
        stub = daemon_pb2_grpc.DaemonServiceStub(channel)
        answer = stub.Health(daemon_pb2.HealthRequest(), timeout=HANDSHAKE_DELAY_S * 10)
    assert answer.healthy
