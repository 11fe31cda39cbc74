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

from tests.support.raw import closed_after, stomp_open

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.timeout(120)]


async def trickle(url: str, data: bytes, pause: float, heart_beat: str = "0,0"):
    ws = await stomp_open(url, heart_beat)
    t0 = time.monotonic()
    try:
        for i in range(len(data)):
            await ws.send(data[i:i + 1].decode())
            await asyncio.sleep(pause)
    except ConnectionClosed:
        pass
    frames, code, _ = await closed_after(ws, 10)
    return frames, code, time.monotonic() - t0


def test_a_frame_that_trickles_in_is_refused():
    data = raw_frame("SEND", [("destination", "/start"), ("receipt", "slow")], json.dumps({"languageCode": "en"}))
    with DaphneServer(env={"RANDOMCHAT_FRAME_TIMEOUT": "1"}) as server:
        for heart_beat in ("0,0", "500,500"):  # the trickle would keep heart-beat checks happy
            frames, code, elapsed = asyncio.run(trickle(server.ws_url, data, 0.1, heart_beat))
            message = "Frame not completed within 1 s"
            assert frames == [f"ERROR\nmessage:{message}\ncontent-type:text/plain\ncontent-length:{len(message)}\n\n{message}\x00"]
            assert code == 4002
            assert 1 <= elapsed < 4
        assert server.log().count("kind=frame_timeout reason=Frame not completed within 1 s") == 2


def test_a_frame_split_over_messages_in_time_is_fine():
    async def split(url):
        ws = await stomp_open(url)
        frame = raw_frame("SEND", [("destination", "/start"), ("receipt", "r")], "{}")
        for _ in range(3):  # each frame takes 0.6 s: every one under the limit, the sum over it
            await ws.send(frame[:10].decode())
            await asyncio.sleep(0.6)
            await ws.send(frame[10:].decode())
            assert (await asyncio.wait_for(ws.recv(), 5)).startswith("RECEIPT")
        await ws.close()

    with DaphneServer(env={"RANDOMCHAT_FRAME_TIMEOUT": "1"}) as server:
        asyncio.run(split(server.ws_url))


def test_an_idle_connection_outside_pool_and_dialog_is_closed():
    async def scenario(url):
        idle = await stomp_open(url)
        idle_result = asyncio.create_task(closed_after(idle, 20))
        waiting = await stomp_open(url)
        await waiting.send(raw_frame("SEND", [("destination", "/start"), ("receipt", "w")], '{"languageCode": "xx"}').decode())
        assert (await asyncio.wait_for(waiting.recv(), 5)).startswith("RECEIPT")
        a, b = await stomp_open(url), await stomp_open(url)
        for ws in (a, b):
            await ws.send(raw_frame("SUBSCRIBE", [("id", "s"), ("destination", "/user/dialog")]).decode())
            await ws.send(raw_frame("SEND", [("destination", "/start")], '{"languageCode": "yy"}').decode())
        for ws in (a, b):
            assert json.loads((await asyncio.wait_for(ws.recv(), 5)).split("\n\n", 1)[1][:-1])["eventCode"] == 10
        beating = await stomp_open(url, heart_beat="300,0")

        async def beat():
            while True:
                await beating.send("\n")
                await asyncio.sleep(0.2)

        beats = asyncio.create_task(beat())

        frames, code, elapsed = await idle_result
        assert (frames, code) == ([], 4008)
        assert elapsed < 5
        await asyncio.sleep(2)  # twice the limit
        for ws in (waiting, a, b, beating):
            await ws.send(raw_frame("ACK", [("id", "1"), ("receipt", "alive")]).decode())
            assert (await asyncio.wait_for(ws.recv(), 5)).startswith("RECEIPT")
        beats.cancel()
        # Once its waiting is cancelled, the connection is idle too.
        await waiting.send(raw_frame("SEND", [("destination", "/stop")], "{}").decode())
        frames, code, elapsed = await closed_after(waiting, 20)
        assert code == 4008 and elapsed < 5
        for ws in (a, b, beating):
            await ws.close()

    with DaphneServer(env={"RANDOMCHAT_IDLE_TIMEOUT": "1", "RANDOMCHAT_HEARTBEAT_RECEIVE_MS": "300"}) as server:
        asyncio.run(scenario(server.ws_url))
        assert server.log().count("kind=idle_timeout") == 2
