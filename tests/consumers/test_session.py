"""CONNECT/STOMP, version negotiation, CONNECTED, DISCONNECT and receipts."""

import json

import pytest
from channels.db import database_sync_to_async

from matching.models import PoolUser
from randomchat import __version__
from randomchat.stomp_consumer import negotiate_version

# The pure-function tests need no database; the consumer tests get it through `stomp`.

START = json.dumps({"name": "Ann", "languageCode": "en"})


@pytest.mark.parametrize(
    ("accept_version", "expected"),
    [
        ("1.0,1.1,2.0", "1.1"),
        ("1.2,1.1,1.0", "1.2"),  # stompjs
        ("1.2", "1.2"),  # stomp.py
        ("1.1,1.2", "1.2"),  # Spring's Java client
        ("1.0", "1.0"),
        (" 1.1 , 1.0 ", "1.1"),
        (None, "1.0"),
        ("2.0", None),
        ("", None),
    ],
)
def test_negotiate_version(accept_version, expected):
    assert negotiate_version(accept_version) == expected


@pytest.mark.parametrize("command", ["CONNECT", "STOMP"])
@pytest.mark.parametrize(
    ("accept_version", "expected"), [("1.0,1.1,2.0", "1.1"), ("1.2,1.1,1.0", "1.2"), (None, "1.0")]
)
async def test_connect_negotiates_the_version(stomp, command, accept_version, expected):
    client = await stomp()
    connected = await client.connect(accept_version=accept_version, command=command)
    assert connected.get("version") == expected


async def test_connected_carries_version_heart_beat_server_session(stomp):
    first = await stomp()
    connected = await first.connect(accept_version="1.2", heart_beat="0,0")
    assert connected.command == "CONNECTED"
    assert connected.get("version") == "1.2"
    assert connected.get("heart-beat") == "10000,10000"  # the default wish
    assert connected.get("server") == f"randomchat/{__version__}"
    assert connected.get("session")
    other = await (await stomp()).connect()
    assert other.get("session") != connected.get("session")


async def test_connected_to_a_1_0_client_still_has_a_heart_beat_header(stomp):
    client = await stomp()
    connected = await client.connect(accept_version=None, heart_beat="1000,1000")
    assert connected.get("version") == "1.0"
    assert connected.get("heart-beat") == "0,0"  # heart-beating is a 1.1 feature


async def test_missing_host_and_unknown_connect_headers_are_fine(stomp):
    client = await stomp()
    await client.send_bytes(b"STOMP\naccept-version:1.2\nlogin:guest\npasscode:guest\nx-odd:a\\b\n\n\x00")
    assert (await client.expect("CONNECTED")).get("version") == "1.2"


async def test_no_common_version_is_an_error_listing_ours(stomp):
    client = await stomp()
    await client.send_bytes(b"CONNECT\naccept-version:2.0\n\n\x00")
    error = await client.expect_error("1.0,1.1,1.2")
    assert error.get("version") == "1.0,1.1,1.2"


@pytest.mark.parametrize(
    "frame",
    [
        b"SEND\ndestination:/start\n\n{}\x00",
        b"SUBSCRIBE\nid:1\ndestination:/user/dialog\n\n\x00",
        b"DISCONNECT\n\n\x00",
        b"CONNECTED\nversion:1.2\n\n\x00",
    ],
)
async def test_a_frame_before_connect_is_an_error(stomp, frame):
    client = await stomp()
    await client.send_bytes(frame)
    await client.expect_error()


async def test_a_frame_before_connect_with_a_receipt_gets_the_receipt_id(stomp):
    client = await stomp()
    await client.send_bytes(b"SUBSCRIBE\nid:1\ndestination:/user/dialog\nreceipt:77\n\n\x00")
    await client.expect_error("CONNECT", receipt_id="77")


@pytest.mark.parametrize("command", ["CONNECT", "STOMP"])
async def test_a_second_connect_is_an_error(stomp, command):
    client = await stomp(connect=True)
    await client.send(command, [("accept-version", "1.2")])
    await client.expect_error("connected")


@pytest.mark.parametrize("command", ["FOO", "send", "Connect", "MESSAGE", "RECEIPT", "ERROR"])
async def test_an_unknown_command_is_an_error(stomp, command):
    client = await stomp(connect=True)
    await client.send(command, [("destination", "/start")])
    await client.expect_error(command)


# Receipts


async def test_receipts_come_in_order_with_interleaved_frames_without_receipt(stomp):
    client = await stomp(connect=True)
    await client.send_bytes(
        b"SUBSCRIBE\nid:a\ndestination:/user/dialog\nreceipt:1\n\n\x00"
        b"SUBSCRIBE\nid:b\ndestination:/user/dialog\n\n\x00"
        b"UNSUBSCRIBE\nid:b\nreceipt:2\n\n\x00"
        b"ACK\nid:x\n\n\x00"
        b"NACK\nid:y\nreceipt:3\n\n\x00"
        b"BEGIN\ntransaction:t\n\n\x00"
        b"ABORT\ntransaction:t\nreceipt:4\n\n\x00"
    )
    await client.send("BEGIN", [("transaction", "t2"), ("receipt", "5")])
    await client.send("ACK", [("id", "z")])
    await client.send("COMMIT", [("transaction", "t2"), ("receipt", "6")])
    for receipt in "123456":
        await client.expect_receipt(receipt)
    await client.expect_nothing()


async def test_the_receipt_for_start_follows_storing_the_user(stomp):
    client = await stomp(connect=True)
    for i in range(3):
        await client.send("SUBSCRIBE", [("id", f"s{i}"), ("destination", "/user/dialog")])
    await client.send("SEND", [("destination", "/start"), ("receipt", "started")], START)
    await client.expect_receipt("started")
    users = await database_sync_to_async(lambda: list(PoolUser.objects.values_list("name", "status")))()
    assert users == [("Ann", "waiting")]


@pytest.mark.parametrize("in_transaction", [False, True])
async def test_the_10_of_the_start_that_pairs_follows_its_receipt(stomp, in_transaction):
    waiting = await stomp(ready=True)
    await waiting.send_json("/start", START, receipt=True)
    client = await stomp(ready=True)
    if in_transaction:  # the /start is handled at COMMIT: its 10 follows the COMMIT's receipt
        await client.send("BEGIN", [("transaction", "t")])
        await client.send("SEND", [("destination", "/start"), ("transaction", "t")], START)
        await client.send("COMMIT", [("transaction", "t"), ("receipt", "answered")])
    else:
        await client.send("SEND", [("destination", "/start"), ("receipt", "answered")], START)
    await client.expect_receipt("answered")
    assert json.loads((await client.expect("MESSAGE")).body)["eventCode"] == 10
    assert json.loads((await waiting.expect("MESSAGE")).body)["eventCode"] == 10
    await client.expect_nothing()


async def test_a_receipt_header_value_is_escaped_and_unescaped(stomp):
    client = await stomp(connect=True)
    await client.send("SUBSCRIBE", [("id", "1"), ("destination", "/user/dialog"), ("receipt", "a\\cb\\nc\\\\d")])
    await client.expect_receipt("a:b\nc\\d")


async def test_ack_and_nack_are_accepted_as_no_ops(stomp):
    client = await stomp(connect=True)
    await client.send("ACK", [("id", "nonexistent"), ("receipt", "1")])
    await client.send("NACK", [("id", "nonexistent"), ("subscription", "s"), ("receipt", "2")])
    await client.send("ACK", [("message-id", "m"), ("subscription", "s"), ("receipt", "3")])
    for receipt in "123":
        await client.expect_receipt(receipt)


# DISCONNECT


async def test_disconnect_with_receipt_gets_the_receipt_then_close(stomp):
    client = await stomp(connect=True)
    await client.send("DISCONNECT", [("receipt", "close-1")])  # what stompjs sends
    await client.expect_receipt("close-1")
    assert await client.expect_closed() in (None, 1000)  # no code means 1000
    await client.expect_nothing()


async def test_disconnect_without_receipt_is_a_clean_close_without_error(stomp, caplog):
    client = await stomp(connect=True)
    await client.send("DISCONNECT")
    assert await client.expect_closed() in (None, 1000)  # no code means 1000
    await client.expect_nothing()
    assert not [r for r in caplog.records if "stomp rejected" in r.getMessage()]


async def test_disconnect_ends_waiting_like_a_socket_close(stomp):
    client = await stomp(connect=True)
    await client.send("SEND", [("destination", "/start"), ("receipt", "in")], START)
    await client.expect_receipt("in")
    await client.send("DISCONNECT", [("receipt", "out")])
    await client.expect_receipt("out")
    await client.expect_closed()
    await client.close()  # the transport reports the close, as daphne would
    statuses = await database_sync_to_async(lambda: list(PoolUser.objects.values_list("status", flat=True)))()
    assert statuses == ["gone"]
