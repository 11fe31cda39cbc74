"""stomp.py's WSStompConnection, default settings, against a live daphne."""

from __future__ import annotations

import pytest

from .clients import StompPyClient
from .flow import run_drop_flow, run_seed_flow

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def stomppy(daphne_server):
    """Factory: a connected stomp.py client; all are closed after the test."""
    clients: list[StompPyClient] = []

    def connect(name: str) -> StompPyClient:
        client = StompPyClient(daphne_server.ws_url, name)
        clients.append(client)
        client.connect()
        return client

    yield connect
    for client in clients:
        client.close()


def test_connect__stomp_command_without_subprotocol(stomppy):
    client = stomppy("solo")
    [connected] = client.transcript.of_type("connected")
    headers = connected["headers"]
    # stomp.py sends STOMP (not CONNECT), offers no WebSocket subprotocol and no heart-beats.
    assert headers["version"] == "1.2"
    assert headers["server"].startswith("randomchat/")
    assert headers["session"]
    assert headers["heart-beat"] == "10000,10000"
    assert client.conn.is_connected()


def test_seed_flow(stomppy):
    bob, alice = stomppy("bob"), stomppy("alice")
    bob.subscribe()
    alice.subscribe()
    run_seed_flow(bob, alice)
    # stomp.py's disconnect() waited for the RECEIPT of its DISCONNECT before closing.
    assert bob.transcript.of_type("receipt")[-1]["headers"]["receipt-id"] == "bob-bye"
    assert not bob.conn.is_connected()


def test_socket_closed_without_disconnect_ends_dialog(stomppy):
    bob, alice = stomppy("bob"), stomppy("alice")
    bob.subscribe()
    alice.subscribe()
    run_drop_flow(bob, alice)
