"""How long a connection may take: RANDOMCHAT_FRAME_TIMEOUT bounds how long a frame may
take to arrive; RANDOMCHAT_IDLE_TIMEOUT closes a silent connection with heart-beats off
that is in no dialog and not in the pool."""

import asyncio
import json
import time

import pytest
from websockets.exceptions import ConnectionClosed

from tests.support.inprocess import raw_frame
from tests.support.live import DaphneServer
from tests.support.wire import RawFrame, WireClient

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.timeout(120)]


async def connected(url: str, heartbeat: str = "0,0") -> WireClient:
    return await WireClient(url).open(headers={"heart-beat": heartbeat}, subscribe=False)


async def closed_after(client: WireClient, timeout: float) -> tuple[list[RawFrame], int | None, float]:
    """The frames until the server closes, the close code, and how long from now that took."""
    t0 = time.monotonic()
    frames, _ = await client.frames_until_closed(timeout)
    return frames, client.close_code, time.monotonic() - t0


async def trickle(url: str, data: bytes, pause: float, heart_beat: str = "0,0"):
    client = await connected(url, heart_beat)
    t0 = time.monotonic()
    try:
        for i in range(len(data)):
            await client.send(data[i:i + 1].decode())
            await asyncio.sleep(pause)
    except ConnectionClosed:
        pass
    frames, code, _ = await closed_after(client, 10)
    return frames, code, time.monotonic() - t0


def test_a_frame_that_trickles_in_is_refused():
    data = raw_frame("SEND", [("destination", "/start"), ("receipt", "slow")], json.dumps({"languageCode": "en"}))
    with DaphneServer(env={"RANDOMCHAT_FRAME_TIMEOUT": "1"}) as server:
        for heart_beat in ("0,0", "500,500"):  # the trickle would keep heart-beat checks happy
            frames, code, elapsed = asyncio.run(trickle(server.ws_url, data, 0.1, heart_beat))
            message = "Frame not completed within 1 s"
            headers = (("message", message), ("content-type", "text/plain"), ("content-length", str(len(message))))
            assert frames == [RawFrame("ERROR", headers, message.encode())]
            assert code == 4002
            assert 1 <= elapsed < 4
        assert server.log().count("kind=frame_timeout reason=Frame not completed within 1 s") == 2


def test_a_frame_split_over_messages_in_time_is_fine():
    async def split(url):
        client = await connected(url)
        frame = raw_frame("SEND", [("destination", "/start"), ("receipt", "r")], "{}")
        for _ in range(3):  # each frame takes 0.6 s: every one under the limit, the sum over it
            await client.send(frame[:10].decode())
            await asyncio.sleep(0.6)
            await client.send(frame[10:].decode())
            await client.expect("RECEIPT", 5)
        await client.close()

    with DaphneServer(env={"RANDOMCHAT_FRAME_TIMEOUT": "1"}) as server:
        asyncio.run(split(server.ws_url))


def test_an_idle_connection_outside_pool_and_dialog_is_closed():
    async def scenario(url):
        idle = await connected(url)
        idle_result = asyncio.create_task(closed_after(idle, 20))
        waiting = await connected(url)
        await waiting.send(raw_frame("SEND", [("destination", "/start"), ("receipt", "w")], '{"languageCode": "xx"}').decode())
        await waiting.expect("RECEIPT", 5)
        a, b = await connected(url), await connected(url)
        for client in (a, b):
            await client.send(raw_frame("SUBSCRIBE", [("id", "s"), ("destination", "/user/dialog")]).decode())
            await client.send(raw_frame("SEND", [("destination", "/start")], '{"languageCode": "yy"}').decode())
        for client in (a, b):
            assert json.loads((await client.expect("MESSAGE", 5)).body)["eventCode"] == 10
        beating = await connected(url, heartbeat="300,0")

        async def beat():
            while True:
                await beating.send("\n")
                await asyncio.sleep(0.2)

        beats = asyncio.create_task(beat())

        frames, code, elapsed = await idle_result
        assert (frames, code) == ([], 4008)
        assert elapsed < 5
        await asyncio.sleep(2)  # twice the limit
        for client in (waiting, a, b, beating):
            await client.send(raw_frame("ACK", [("id", "1"), ("receipt", "alive")]).decode())
            await client.expect("RECEIPT", 5)
        beats.cancel()
        # Once its waiting is cancelled, the connection is idle too.
        await waiting.send(raw_frame("SEND", [("destination", "/stop")], "{}").decode())
        frames, code, elapsed = await closed_after(waiting, 20)
        assert code == 4008 and elapsed < 5
        for client in (a, b, beating):
            await client.close()

    with DaphneServer(env={"RANDOMCHAT_IDLE_TIMEOUT": "1", "RANDOMCHAT_HEARTBEAT_RECEIVE_MS": "300"}) as server:
        asyncio.run(scenario(server.ws_url))
        assert server.log().count("kind=idle_timeout") == 2
