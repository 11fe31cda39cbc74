"""Hand-written STOMP bytes over the `websockets` library against a live daphne.

Frames here are byte literals (or built by tests/support/wire.py, never by our codec),
so the server's parser is checked against what the spec says, not against our encoder.
"""

from __future__ import annotations

import json

import pytest

from randomchat.stomp_consumer import CLOSE_POLICY, CLOSE_PROTOCOL_ERROR

from tests.support.wire import WireClient, frame

pytestmark = pytest.mark.django_db(transaction=True)

CONNECT = b"CONNECT\naccept-version:1.2\nhost:localhost\nheart-beat:0,0\n\n\x00"
SUBSCRIBE = b"SUBSCRIBE\nid:sub-0\ndestination:/user/dialog\nreceipt:r-sub\n\n\x00"
START_BOB = (
    b"SEND\ndestination:/start\ncontent-type:application/json\nreceipt:r-start\n\n"
    b'{"name":"Bob","languageCode":"ru",'
    b'"userAttributes":{"gender":"male","age":null},'
    b'"targetAttributes":{"gender":"female","age":null}}\x00'
)
# Alice goes through the Spring-style alias, with a content-length header.
START_ALICE_BODY = (
    b'{"name":"Alice","languageCode":"ru",'
    b'"userAttributes":{"gender":"female","age":null},'
    b'"targetAttributes":{"gender":"male","age":null}}'
)
START_ALICE = (
    b"SEND\ndestination:/app/start\ncontent-type:application/json\ncontent-length:%d\n\n" % len(START_ALICE_BODY)
    + START_ALICE_BODY
    + b"\x00"
)


async def open_connected(url: str, connect: bytes = CONNECT) -> WireClient:
    client = await WireClient(url).open_socket()
    await client.send(connect.decode())
    await client.expect("CONNECTED")
    await client.send(SUBSCRIBE.decode())
    receipt = await client.expect("RECEIPT")
    assert receipt.get("receipt-id") == "r-sub"
    return client


async def paired(url: str, bob_connect: bytes = CONNECT) -> tuple[WireClient, dict, WireClient, dict]:
    """Bob and Alice, subscribed and in a dialog; with their 10 events."""
    bob = await open_connected(url, bob_connect)
    await bob.send(START_BOB)
    assert (await bob.expect("RECEIPT")).get("receipt-id") == "r-start"
    alice = await open_connected(url)
    await alice.send(START_ALICE)
    bob_paired, alice_paired = (await bob.event()).body, (await alice.event()).body
    assert bob_paired["eventCode"] == alice_paired["eventCode"] == 10
    assert bob_paired["chatUUID"] == alice_paired["chatUUID"]
    return bob, bob_paired, alice, alice_paired


def message_frame(event: dict, content: str) -> bytes:
    payload = {"chatUUID": event["chatUUID"], "senderUUID": event["senderUUID"], "content": content}
    return frame("SEND", {"destination": "/message"}, json.dumps(payload, ensure_ascii=False).encode())


async def test_byte_literal_session(daphne_server):
    client = await WireClient(daphne_server.ws_url).open_socket(subprotocols=("v11.stomp", "v10.stomp", "v12.stomp"))
    assert client.ws.subprotocol == "v12.stomp"  # the highest offered, whatever the order
    await client.send(CONNECT.decode())
    connected = await client.expect("CONNECTED")
    assert connected.get("version") == "1.2"
    assert connected.get("heart-beat") == "10000,10000"
    assert connected.get("server").startswith("randomchat/")
    assert connected.get("session")
    assert connected.get("content-length") == "0" and connected.body == b""

    await client.send(SUBSCRIBE.decode())
    assert (await client.expect("RECEIPT")).get("receipt-id") == "r-sub"
    await client.send(START_BOB.decode())
    assert (await client.expect("RECEIPT")).get("receipt-id") == "r-start"

    alice = await open_connected(daphne_server.ws_url)
    await alice.send(START_ALICE.decode())
    for own, partner_name in ((client, "Alice"), (alice, "Bob")):
        message = await own.expect("MESSAGE")
        assert message.get("destination") == "/user/dialog"
        assert message.get("subscription") == "sub-0"
        assert message.get("message-id")
        assert message.get("content-type") == "application/json"
        assert int(message.get("content-length")) == len(message.body)
        event = message.json()
        assert event["eventCode"] == 10
        assert event["serviceContent"]["partner"]["name"] == partner_name
    alice_event = event  # the last 10 read is Alice's: her own senderUUID
    # Non-ASCII content, written as raw UTF-8 bytes.
    body = (
        b'{"chatUUID":"%s","senderUUID":"%s","content":"\xd0\x9f\xd1\x80\xd0\xb8\xd0\xb2\xd0\xb5\xd1\x82 \xe2\x9c\x93"}'
        % (alice_event["chatUUID"].encode(), alice_event["senderUUID"].encode())
    )
    await alice.send(b"SEND\ndestination:/message\ncontent-length:%d\n\n" % len(body) + body + b"\x00")
    for own in (client, alice):
        event = (await own.event()).body
        assert event["eventCode"] == 20
        assert event["content"] == "Привет ✓"
    # Every frame came as a text message.
    assert set(client.message_types) == {str}
    await client.close()
    await alice.close()


async def test_binary_messages(daphne_server):
    """Frames in binary WebSocket messages are as good as text ones; replies are text."""
    client = await WireClient(daphne_server.ws_url).open_socket()
    await client.send(CONNECT)
    await client.expect("CONNECTED")
    await client.send(SUBSCRIBE)
    await client.expect("RECEIPT")
    await client.send(START_BOB)
    assert (await client.expect("RECEIPT")).get("receipt-id") == "r-start"
    await client.send(b"SEND\ndestination:/stop\nreceipt:r-stop\n\n{}\x00")
    # The event travels through the channel layer: it may come before or after the RECEIPT.
    replies = {f.command: f for f in [await client.recv_frame(), await client.recv_frame()]}
    assert set(replies) == {"MESSAGE", "RECEIPT"}
    assert replies["RECEIPT"].get("receipt-id") == "r-stop"
    event = replies["MESSAGE"].json()
    assert event["eventCode"] == 30 and event["serviceContent"] == {"reason": "cancelled"}
    assert set(client.message_types) == {str}
    await client.close()


async def test_frame_split_across_messages(daphne_server):
    bob, bob_paired, alice, _ = await paired(daphne_server.ws_url)

    # Binary: cut inside the two bytes of "П".
    whole = message_frame(bob_paired, "Привет из двух кусков")
    cut = whole.index("П".encode()) + 1
    await bob.send(whole[:cut])
    await bob.assert_quiet(0.2)  # half a frame does nothing yet
    await bob.send(whole[cut:])
    for client in (bob, alice):
        event = (await client.event()).body
        assert (event["eventCode"], event["content"]) == (20, "Привет из двух кусков")

    # Text: three messages, cut inside the headers and inside the body.
    text = message_frame(bob_paired, "three pieces").decode()
    pieces = [text[:9], text[9:60], text[60:]]
    for piece in pieces:
        await bob.send(piece)
    for client in (bob, alice):
        assert ((await client.event()).body)["content"] == "three pieces"

    # One message, two frames, heart-beat EOLs around them.
    double = b"\n" + message_frame(bob_paired, "one") + b"\r\n\n" + message_frame(bob_paired, "two") + b"\n"
    await bob.send(double)
    for client in (bob, alice):
        assert [((await client.event()).body)["content"] for _ in range(2)] == ["one", "two"]
    await bob.close()
    await alice.close()


BAD_FRAMES = {
    "invalid content-length": b"SEND\ndestination:/message\ncontent-length:abc\n\n{}\x00",
    "header line without a colon": b"SEND\ndestination:/message\nno colon here\n\n{}\x00",
    "unknown command": b"FETCH\ndestination:/message\n\n\x00",
    "unknown destination": b"SEND\ndestination:/queue/other\nreceipt:r-bad\n\n{}\x00",
    "unknown header escape": b"SEND\ndestination:/mess\\qage\n\n{}\x00",
}


async def test_malformed_frames__one_error_then_close_others_unaffected(daphne_server):
    bob, bob_paired, alice, alice_paired = await paired(daphne_server.ws_url)
    for case, data in BAD_FRAMES.items():
        victim = await open_connected(daphne_server.ws_url)
        await victim.send(data)
        frames, closed = await victim.frames_until_closed(timeout=5)
        assert [f.command for f in frames] == ["ERROR"], f"{case}: {frames}"
        [error] = frames
        assert error.get("message"), case
        if b"receipt:" in data:
            assert error.get("receipt-id") == "r-bad", case
        assert closed.rcvd is not None, f"{case}: the server did not close the connection"
        # The pair next door chats on.
        await bob.send(message_frame(bob_paired, f"after {case}"))
        for client in (bob, alice):
            event = (await client.event()).body
            assert (event["eventCode"], event["content"]) == (20, f"after {case}")

    # Before CONNECT, anything else is an error too.
    early = await WireClient(daphne_server.ws_url).open_socket()
    await early.send(SUBSCRIBE)
    frames, closed = await early.frames_until_closed(timeout=5)
    assert [f.command for f in frames] == ["ERROR"]
    assert closed.rcvd is not None
    await alice.send(message_frame(alice_paired, "still here"))
    assert ((await bob.event()).body)["content"] == "still here"
    await bob.close()
    await alice.close()


async def test_error_close_is_clean_and_ends_the_dialog(daphne_server):
    """A connection closed after ERROR leaves its dialog like any other closing socket."""
    bob, bob_paired, alice, _ = await paired(daphne_server.ws_url)
    await bob.send(b"FETCH\n\n\x00")
    frames, closed = await bob.frames_until_closed(timeout=5)
    assert [f.command for f in frames] == ["ERROR"]
    left = (await alice.event(timeout=5)).body
    assert left == {
        "chatUUID": bob_paired["chatUUID"],
        "senderUUID": bob_paired["senderUUID"],
        "eventCode": 30,
        "serviceContent": {"reason": "disconnect"},
        "content": None,
    }
    assert closed.rcvd.code == CLOSE_PROTOCOL_ERROR
    await alice.close()


async def test_silent_client_is_dropped_and_partner_told_timeout(start_daphne):
    server = start_daphne(env={"RANDOMCHAT_HEARTBEAT_RECEIVE_MS": "300"})
    # Bob promises a heart-beat every 300 ms, then goes silent once paired.
    bob, bob_paired, alice, _ = await paired(server.ws_url, bob_connect=CONNECT.replace(b"0,0", b"300,0"))
    frames, closed = await bob.frames_until_closed(timeout=4)  # dropped after ~3 x 300 ms
    assert [f.command for f in frames] == []
    left = (await alice.event(timeout=5)).body
    assert left == {
        "chatUUID": bob_paired["chatUUID"],
        "senderUUID": bob_paired["senderUUID"],
        "eventCode": 30,
        "serviceContent": {"reason": "timeout"},
        "content": None,
    }
    assert closed.rcvd.code == CLOSE_POLICY
    await alice.close()


async def test_no_connect_frame__closed_after_timeout(start_daphne):
    server = start_daphne(env={"RANDOMCHAT_CONNECT_TIMEOUT": "0.5"})
    lurker = await WireClient(server.ws_url).open_socket()
    frames, closed = await lurker.frames_until_closed(timeout=4)
    assert frames == []
    assert closed.rcvd is not None and closed.rcvd.code == CLOSE_POLICY
