"""A client that stops reading is closed once its unsent backlog passes the bound."""

import asyncio
import json
from types import SimpleNamespace

import pytest
import websockets
from django.test import override_settings

from randomchat.backpressure import check_backlog
from tests.support.live import DaphneServer


def transport(unsent: int, buffer_size: int = 65536):
    return SimpleNamespace(dataBuffer=b"x" * unsent, offset=0, _tempDataLen=0, bufferSize=buffer_size)


@override_settings(RANDOMCHAT_SLOW_READER_BYTES=1000, RANDOMCHAT_SLOW_READER_SECONDS=10)
def test_check_backlog__bytes_and_time_bounds():
    protocol = SimpleNamespace(transport=transport(500, buffer_size=100))
    assert check_backlog(protocol, now=0.0) is None  # buffer full: the clock starts
    assert check_backlog(protocol, now=9.0) is None
    assert check_backlog(protocol, now=10.5) == "send buffer full for 10s"
    protocol.transport = transport(10, buffer_size=100)
    assert check_backlog(protocol, now=11.0) is None  # drained: the clock resets
    protocol.transport = transport(500, buffer_size=100)
    assert check_backlog(protocol, now=12.0) is None
    protocol.transport = transport(1001)
    assert check_backlog(protocol, now=12.0) == "unsent backlog of 1001 bytes"


def body(message: str) -> dict:
    return json.loads(message.split("\n\n", 1)[1].rstrip("\x00"))


async def chat_client(url, **kwargs):
    ws = await websockets.connect(url, **kwargs)
    await ws.send("CONNECT\naccept-version:1.2\nheart-beat:0,0\n\n\x00")
    assert (await ws.recv()).startswith("CONNECTED")
    await ws.send("SUBSCRIBE\nid:0\ndestination:/user/dialog\n\n\x00")
    await ws.send('SEND\ndestination:/start\nreceipt:r\n\n{"languageCode":"en"}\x00')
    assert (await ws.recv()).startswith("RECEIPT")
    return ws


async def flood_until_partner_leaves(url) -> tuple[int, dict]:
    # max_queue=1: the slow client's library stops reading its socket.
    slow = await chat_client(url, max_queue=1)
    fast = await chat_client(url)
    paired = body(await fast.recv())
    message = "SEND\ndestination:/message\n\n" + json.dumps(
        {"chatUUID": paired["chatUUID"], "senderUUID": paired["senderUUID"], "content": "x" * 4000}
    ) + "\x00"
    try:
        for sent in range(5000):
            await fast.send(message)
            while True:
                event = body(await asyncio.wait_for(fast.recv(), 10))
                if event["eventCode"] == 30:
                    return sent, event
                if event["eventCode"] == 20:
                    break
        raise AssertionError("the slow reader was never closed")
    finally:
        await fast.close()
        slow.transport.abort()


@pytest.mark.django_db(transaction=True)
@pytest.mark.timeout(120)
def test_slow_reader_closed__partner_gets_disconnect():
    env = {
        "RANDOMCHAT_SLOW_READER_BYTES": str(256 * 1024),
        "RANDOMCHAT_RATE_MESSAGE_PER_S": "100000",
        "RANDOMCHAT_RATE_MESSAGE_BURST": "100000",
        # The fast client sends thousands of frames as fast as it can: not what this tests.
        "RANDOMCHAT_RATE_FRAME_PER_S": "100000",
        "RANDOMCHAT_RATE_FRAME_BURST": "100000",
        "RANDOMCHAT_INBOUND_FRAMES_PER_S": "100000",
        "RANDOMCHAT_INBOUND_FRAMES_BURST": "100000",
        "RANDOMCHAT_INBOUND_BYTES_PER_S": str(1 << 30),
        "RANDOMCHAT_INBOUND_BYTES_BURST": str(1 << 30),
    }
    with DaphneServer(env=env) as server:
        sent, event = asyncio.run(flood_until_partner_leaves(server.ws_url))
        assert event["serviceContent"] == {"reason": "disconnect"}
        # Bounded: kernel socket buffers take some, the server at most 256 KiB more.
        assert sent * 4000 < 16 * 1024 * 1024
        assert "event=slow_reader_closed reason=unsent backlog" in server.log()
