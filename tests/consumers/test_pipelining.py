"""Frames that share a WebSocket message are handled one by one, in order: a frame is
parsed only after the frames before it were handled, so it sees the version they
negotiated and is never even parsed once they ended the session."""

import json

import pytest
from channels.db import database_sync_to_async

from matching.models import PoolUser

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.mark.parametrize("binary", [False, True])
async def test_frames_after_disconnect_in_the_same_message_are_not_parsed(stomp, binary):
    client = await stomp(connect=True)
    garbage = (
        b"SEND\ndestination:/nowhere\nreceipt:x\n\n\x00GARBAGE\n\n\x00"
        b"SEND\nno colon here\n\n\x00\r" + (b"\xff" if binary else b"x")
    )
    await client.send_bytes(b"DISCONNECT\nreceipt:bye\n\n\x00" + garbage, binary=binary)
    await client.expect_receipt("bye")
    assert await client.expect_closed() in (None, 1000)
    # Nor is anything sent after the close.
    await client.send("SEND", [("destination", "/start"), ("receipt", "late")], json.dumps({"languageCode": "en"}))
    await client.send_bytes(b"\xff\xfe not stomp at all\x00", binary=True)
    await client.expect_nothing()
    assert await database_sync_to_async(PoolUser.objects.count)() == 0


async def test_frames_after_an_error_in_the_same_message_are_not_parsed(stomp, caplog):
    client = await stomp(connect=True)
    await client.send_bytes(b"SEND\ndestination:/nowhere\n\n\x00SEND\nno colon here\n\n\x00")
    await client.expect_error("destination")
    assert len([r for r in caplog.records if "rejected" in r.getMessage()]) == 1


async def test_frames_before_a_malformed_one_are_handled_first(stomp):
    client = await stomp(connect=True)
    await client.send_bytes(
        b"SUBSCRIBE\nid:1\ndestination:/user/dialog\nreceipt:1\n\n\x00"
        b"SEND\ndestination:/start\nreceipt:2\n\nnot json\x00"
        b"SEND\nno colon here\n\n\x00"
    )
    await client.expect_receipt("1")
    assert json.loads((await client.expect("MESSAGE")).body)["eventCode"] == 11
    await client.expect_receipt("2")
    await client.expect_error("':'")


async def test_a_frame_pipelined_after_connect_uses_the_negotiated_1_0(stomp):
    client = await stomp()
    await client.send_bytes(
        b"CONNECT\n\n\x00"  # no accept-version: 1.0, where a backslash is just a backslash
        b"SUBSCRIBE\nid:a\\b\ndestination:/user/dialog\nreceipt:r\\c\n\n\x00"
        b"SEND\ndestination:/start\n\n[]\x00"
    )
    assert (await client.expect("CONNECTED")).get("version") == "1.0"
    client.parser.version = "1.0"
    await client.expect("RECEIPT", receipt_id="r\\c")
    assert (await client.expect("MESSAGE")).get("subscription") == "a\\b"


async def test_a_frame_pipelined_after_connect_uses_the_negotiated_1_1(stomp):
    client = await stomp()
    await client.send_bytes(
        b"CONNECT\naccept-version:1.1\n\n\x00"
        b"SUBSCRIBE\nid:a\\cb\ndestination:/user/dialog\nreceipt:ok\n\n\x00"
        b"SUBSCRIBE\nid:x\\ry\ndestination:/user/dialog\n\n\x00"  # \r is no 1.1 escape
    )
    assert (await client.expect("CONNECTED")).get("version") == "1.1"
    client.parser.version = "1.1"
    await client.expect_receipt("ok")
    await client.expect_error("escape")


async def test_a_frame_before_connect_is_echoed_in_1_0_terms(stomp):
    client = await stomp()
    await client.send_bytes(b"SUBSCRIBE\nid:1\nreceipt:a\\nb\n\n\x00")
    await client.expect_error("CONNECT", receipt_id="a\\nb")


async def test_a_counted_body_holding_nuls_is_one_frame(stomp):
    client = await stomp(connect=True)
    await client.subscribe()
    body = b'{"a":"\x00\x00"}\x00\x00'
    await client.send_bytes(
        b"SEND\ndestination:/start\nreceipt:1\ncontent-length:%d\n\n%s\x00" % (len(body), body)
        + b"\x00\x00\n"
        + b"SEND\ndestination:/start\nreceipt:2\n\nnot json\x00",
        binary=True,
    )
    for receipt in "12":
        assert json.loads((await client.expect("MESSAGE")).body)["serviceContent"]["error"] == "invalid_json"
        await client.expect_receipt(receipt)


async def test_a_flood_of_stray_nuls_is_cheap_and_harmless(stomp):
    client = await stomp(connect=True)
    await client.send_bytes(b"\x00" * 60_000 + b"ACK\nid:1\nreceipt:ok\n\n\x00" + b"\x00" * 4000, binary=True)
    await client.expect_receipt("ok")
