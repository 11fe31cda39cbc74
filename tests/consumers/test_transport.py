"""The WebSocket layer: subprotocols, text and binary messages, streaming, EOL heart-beats."""

import json

import pytest
from channels.db import database_sync_to_async

from matching.models import PoolUser

from tests.support.inprocess import ALL_SUBPROTOCOLS

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.mark.parametrize(
    ("offered", "selected"),
    [
        (["v11.stomp", "v10.stomp", "v12.stomp"], "v12.stomp"),  # RMQ raw_websocket_SUITE order
        (ALL_SUBPROTOCOLS, "v12.stomp"),
        (["v10.stomp"], "v10.stomp"),
        (["v10.stomp", "v11.stomp"], "v11.stomp"),
        (["chat", "v11.stomp"], "v11.stomp"),
    ],
)
async def test_highest_offered_subprotocol_is_selected(stomp, offered, selected):
    client = await stomp(subprotocols=offered)
    assert client.subprotocol == selected


@pytest.mark.parametrize("path", ["/connect", "/connect/"])
async def test_no_subprotocol_offered_is_accepted_and_speaks_stomp(stomp, path):
    client = await stomp(subprotocols=None, path=path)
    assert client.subprotocol is None
    connected = await client.connect(accept_version="1.2")
    assert connected.get("version") == "1.2"


async def test_the_version_comes_from_accept_version_not_the_subprotocol(stomp):
    client = await stomp(subprotocols=["v10.stomp"])
    assert client.subprotocol == "v10.stomp"
    connected = await client.connect(accept_version="1.2,1.1")
    assert connected.get("version") == "1.2"


@pytest.mark.parametrize("binary", [False, True])
async def test_text_and_binary_messages_are_accepted(stomp, binary):
    client = await stomp()
    await client.send_bytes(b"CONNECT\naccept-version:1.2\nheart-beat:0,0\n\n\x00", binary=binary)
    assert (await client.expect("CONNECTED")).get("version") == "1.2"
    client.parser.version = "1.2"
    await client.send_bytes(b"SUBSCRIBE\nid:0\ndestination:/user/dialog\nreceipt:r1\n\n\x00", binary=binary)
    await client.expect_receipt("r1")


async def test_several_frames_in_one_message(stomp):
    client = await stomp()
    await client.send_bytes(
        b"CONNECT\naccept-version:1.2\n\n\x00\n"
        b"SUBSCRIBE\nid:s\ndestination:/user/dialog\nreceipt:1\n\n\x00\r\n"
        b"SEND\ndestination:/start\nreceipt:2\ncontent-type:application/json\n\nnot json\x00\n\n"
        b"SEND\ndestination:/app/start\nreceipt:3\n\n[]\x00"
    )
    await client.expect("CONNECTED", version="1.2")
    client.parser.version = "1.2"
    await client.expect_receipt("1")
    first = await client.expect("MESSAGE", subscription="s")
    assert json.loads(first.body)["eventCode"] == 11
    await client.expect_receipt("2")
    second = await client.expect("MESSAGE", subscription="s")
    assert json.loads(second.body)["serviceContent"]["error"] == "invalid_json"
    await client.expect_receipt("3")
    await client.expect_nothing()


async def test_a_frame_split_across_messages_is_reassembled(stomp):
    client = await stomp(connect=True)
    frame = b"SUBSCRIBE\nid:split\ndestination:/user/dialog\nreceipt:done\n\n\x00"
    for i in range(0, len(frame), 5):
        await client.send_bytes(frame[i:i + 5])
    await client.expect_receipt("done")


async def test_a_split_inside_a_multibyte_character_is_reassembled_at_byte_level(stomp):
    client = await stomp(connect=True)
    body = json.dumps({"name": "Zoë €", "languageCode": "fr"}, ensure_ascii=False).encode()
    frame = (
        "SEND\ndestination:/start\nx-note:€uro\nreceipt:r\n".encode()
        + f"content-length:{len(body)}\n\n".encode()
        + body
        + b"\x00"
    )
    cuts = [frame.index("€".encode()) + 1, frame.index("ë".encode()) + 1, frame.rindex("€".encode()) + 2]
    pieces = [frame[a:b] for a, b in zip([0, *cuts], [*cuts, len(frame)])]
    for piece in pieces:
        with pytest.raises(UnicodeDecodeError):  # every piece cuts a character
            piece.decode("utf-8")
        await client.send_bytes(piece, binary=True)
    await client.expect_receipt("r")
    names = await database_sync_to_async(lambda: list(PoolUser.objects.values_list("name", flat=True)))()
    assert names == ["Zoë €"]


async def test_a_large_frame_in_8k_pieces_like_stompjs_split_large_frames(stomp):
    client = await stomp(connect=True)
    await client.subscribe()
    body = b"x" * 40_000
    frame = b"SEND\ndestination:/start\nreceipt:big\n\n" + body + b"\x00"
    for i in range(0, len(frame), 8 * 1024):
        await client.send_bytes(frame[i:i + 8 * 1024])
    message = await client.expect("MESSAGE")
    assert json.loads(message.body)["serviceContent"]["error"] == "invalid_json"
    await client.expect_receipt("big")


@pytest.mark.parametrize("eols", [b"\n", b"\r\n", b"\n\n\n", b"\r\n\n\r\n", b"\x00\n"])
async def test_eol_heartbeats_are_never_an_error(stomp, eols):
    client = await stomp()
    await client.send_bytes(eols)  # before CONNECT
    await client.send_bytes(eols + b"CONNECT\naccept-version:1.2\n\n\x00" + eols)
    await client.expect("CONNECTED")
    await client.send_bytes(eols, binary=True)
    await client.send_bytes(eols + b"SUBSCRIBE\nid:1\ndestination:/user/dialog\nreceipt:ok\n\n\x00" + eols)
    await client.expect_receipt("ok")
    await client.expect_nothing()


async def test_a_crlf_heartbeat_split_between_messages(stomp):
    client = await stomp(connect=True)
    await client.send_bytes(b"\r")
    await client.send_bytes(b"\n")
    await client.send("SUBSCRIBE", [("id", "1"), ("destination", "/user/dialog"), ("receipt", "ok")])
    await client.expect_receipt("ok")


@pytest.mark.parametrize("binary", [False, True])
async def test_empty_messages_are_ignored(stomp, binary):
    client = await stomp(connect=True)
    await client.send_bytes(b"", binary=binary)
    await client.send("SUBSCRIBE", [("id", "1"), ("destination", "/user/dialog"), ("receipt", "ok")])
    await client.expect_receipt("ok")
