"""@stomp/stompjs under Node (default settings, `ws` as its WebSocket) against a live daphne.

tests/node/stomp-client.mjs runs one client per process and prints, as JSON lines,
every frame and heart-beat it sends and receives; these tests assert on those lines.
"""

from __future__ import annotations


import pytest

from dialogs.models import Message
from matching.models import PoolUser

from .clients import NodeStompClient
from .flow import ALICE, BOB, assert_paired, run_drop_flow, run_seed_flow, start_pair

pytestmark = pytest.mark.django_db(transaction=True)

LIMIT = 4096  # RANDOMCHAT_MAX_CONTENT_LENGTH's default


@pytest.fixture
def stompjs(node_bin, daphne_server):
    """Factory: a connected stompjs client in its own Node process; all end after the test."""
    clients: list[NodeStompClient] = []

    def connect(name: str, *, subscribe: bool = True) -> NodeStompClient:
        client = NodeStompClient(node_bin, daphne_server.ws_url, name)
        clients.append(client)
        client.connect()
        if subscribe:
            client.subscribe()
        return client

    yield connect
    for client in clients:
        client.close()


def sent(client: NodeStompClient, command: str) -> list[dict]:
    return [e for e in client.transcript.of_type("sent") if e["command"] == command]


def test_connect__subprotocol_version_and_default_heartbeats(stompjs):
    client = stompjs("solo", subscribe=False)
    [opened] = client.transcript.of_type("ws-open")
    assert opened["protocol"] == "v12.stomp"
    [connect] = sent(client, "CONNECT")
    assert connect["headers"]["accept-version"] == "1.2,1.1,1.0"
    assert connect["headers"]["heart-beat"] == "10000,10000"
    [connected] = client.transcript.of_type("connected")
    assert connected["headers"]["version"] == "1.2"
    assert connected["headers"]["heart-beat"] == "10000,10000"
    assert connected["headers"]["server"].startswith("randomchat/")
    # stompjs's own conclusion from the two heart-beat headers.
    client.transcript.wait_for(
        lambda e: e["type"] == "debug" and e["text"] == "send PING every 10000ms", timeout=2, what="PING setup"
    )
    client.transcript.wait_for(
        lambda e: e["type"] == "debug" and e["text"] == "check PONG every 10000ms", timeout=2, what="PONG setup"
    )


def test_seed_flow(stompjs):
    bob, alice = stompjs("bob"), stompjs("alice")
    run_seed_flow(bob, alice)
    # deactivate() sent DISCONNECT with a receipt, got the RECEIPT, and only then closed.
    [disconnect] = sent(bob, "DISCONNECT")
    receipt = disconnect["headers"]["receipt"]
    [farewell] = bob.transcript.of_type("disconnect")
    assert farewell["command"] == "RECEIPT"
    assert farewell["headers"]["receipt-id"] == receipt
    kinds = [e["type"] for e in bob.transcript.entries]
    assert kinds.index("disconnect") < kinds.index("ws-close") < kinds.index("deactivated")
    assert not bob.transcript.of_type("error")
    assert not alice.transcript.of_type("error")
    # Frames went as text messages, one frame per message (splitLargeFrames is off by default).
    assert all(not e["binary"] for e in bob.transcript.of_type("sent"))
    assert all(not e["binary"] for e in bob.transcript.of_type("received"))


def test_socket_dropped_ends_dialog(stompjs):
    bob, alice = stompjs("bob"), stompjs("alice")
    run_drop_flow(bob, alice)


def test_message_at_content_limit(stompjs):
    """4,096 characters (8 KiB of UTF-8) pass whole; one more is refused with 21."""
    bob, alice = stompjs("bob"), stompjs("alice")
    bob_paired, alice_paired = start_pair(bob, alice)
    chat, bob_id = bob_paired.chat, bob_paired.sender
    longest = ("Длинноесообщение" * 300)[: LIMIT - 1] + "!"
    assert len(longest) == LIMIT and len(longest.encode()) > 2 * LIMIT - 100

    bob.publish("/message", {"chatUUID": chat, "senderUUID": bob_id, "content": longest})
    for client in (bob, alice):
        event = client.next_event()
        assert event.code == 20, event.body
        assert event.body["content"] == longest
        assert event.sender == bob_id
    [frame] = [e for e in sent(bob, "SEND") if e["headers"]["destination"] == "/message"]
    assert frame["bodyLength"] > 2 * LIMIT  # one 8 KiB+ frame, not split

    bob.publish("/message", {"chatUUID": chat, "senderUUID": bob_id, "content": longest + "?"})
    refused = bob.next_event()
    assert refused.code == 21
    assert refused.body["serviceContent"]["error"] == "content_too_long"
    assert refused.body["serviceContent"]["field"] == "content"
    assert (refused.chat, refused.sender, refused.body["content"]) == (chat, bob_id, None)
    alice.assert_no_event()

    assert list(Message.objects.filter(dialog_id=chat).values_list("content", flat=True)) == [longest]
    assert alice_paired.chat == chat


def test_start_receipt_then_stop_cancels_waiting(stompjs):
    """/start with a receipt: RECEIPT once stored; /stop while waiting: 30 reason cancelled."""
    bob = stompjs("bob")
    bob.publish("/start", BOB, receipt="start-1")
    bob.wait_receipt("start-1")
    bob.publish("/stop", {})
    cancelled = bob.next_event()
    assert cancelled.body == {
        "chatUUID": None,
        "senderUUID": None,
        "eventCode": 30,
        "serviceContent": {"reason": "cancelled"},
        "content": None,
    }
    assert list(PoolUser.objects.values_list("name", "status")) == [("Bob", PoolUser.Status.CANCELLED)]


def test_default_heartbeats_flow_both_ways_while_waiting(stompjs):
    """Bob waits in the pool for one heart-beat interval: stompjs sends its PING, receives the
    server's EOL, stays connected, and is paired when Alice arrives."""
    bob = stompjs("bob")
    bob.publish("/start", BOB, receipt="waiting")
    bob.wait_receipt("waiting")
    _, connected = bob.transcript.wait_for(lambda e: e["type"] == "connected", timeout=1, what="CONNECTED")
    _, ping = bob.transcript.wait_for(lambda e: e["type"] == "sent-heartbeat", timeout=12, what="PING from stompjs")
    bob.transcript.wait_for(lambda e: e["type"] == "received-heartbeat", timeout=12, what="EOL from the server")
    assert ping["at"] - connected["at"] > 9, "stompjs pinged sooner than the negotiated 10 s"
    assert not bob.transcript.of_type("ws-close")
    assert not bob.transcript.of_type("error")

    alice = stompjs("alice")
    alice.publish("/start", ALICE)
    assert_paired(bob.next_event(), partner=ALICE)
    assert_paired(alice.next_event(), partner=BOB)
    assert len(bob.transcript.of_type("connected")) == 1, "stompjs had to reconnect"
