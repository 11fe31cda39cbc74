"""Floods against a real daphne: the flooder is read at its budget, everyone else stays fast.

The floods are written as raw WebSocket frames straight onto the socket (masked with a zero
key, which is valid), so that flooding costs the test process next to nothing.
"""

import asyncio
import time

import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed

from tests.support.live import DaphneServer

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.timeout(120)]

CONNECT = "CONNECT\naccept-version:1.2\nheart-beat:0,0\n\n\x00"


def raw_text_frame(payload: bytes) -> bytes:
    """One client WebSocket text frame (masked with key 0), payload under 126 bytes."""
    assert len(payload) < 126
    return bytes([0x81, 0x80 | len(payload), 0, 0, 0, 0]) + payload


async def stomp_connect(url):
    ws = await connect(url, subprotocols=["v12.stomp"], compression=None, ping_interval=None)
    await ws.send(CONNECT)
    assert (await asyncio.wait_for(ws.recv(), 10)).startswith("CONNECTED")
    return ws


async def round_trips(url, stop: asyncio.Event) -> list[float]:
    """A polite client: an ACK with a receipt every 0.1 s, timed until `stop`."""
    ws = await stomp_connect(url)
    samples = []
    try:
        while not stop.is_set():
            t0 = time.monotonic()
            await ws.send(f"ACK\nid:1\nreceipt:{len(samples)}\n\n\x00")
            assert (await asyncio.wait_for(ws.recv(), 30)).startswith(f"RECEIPT\nreceipt-id:{len(samples)}\n")
            samples.append(time.monotonic() - t0)
            await asyncio.sleep(0.1)
    finally:
        await ws.close()
    return samples


async def paced_flood(url):
    counted = await stomp_connect(url)  # its frames all carry receipts
    t0 = time.monotonic()  # its budget started with CONNECT, a little earlier
    counted.transport.write(b"".join(raw_text_frame(b"ACK\nid:1\nreceipt:%d\n\n\x00" % i) for i in range(N)))
    blind = await stomp_connect(url)  # heart-beats as fast as TCP takes them, never done
    blind.transport.write(raw_text_frame(b"\n") * 200_000)
    stop = asyncio.Event()
    others = asyncio.get_running_loop().create_task(round_trips(url, stop))
    arrivals = []
    try:
        while len(arrivals) < N:
            frame = await asyncio.wait_for(counted.recv(), 30)
            arrivals.append((frame, time.monotonic() - t0))
    finally:
        stop.set()
        samples = await others
        counted.transport.abort()
        blind.transport.abort()
    return arrivals, samples


N = 300
RATE, BURST = 100, 20


def test_flooders_are_read_at_their_budget__another_connection_stays_fast():
    env = {
        "RANDOMCHAT_INBOUND_FRAMES_PER_S": str(RATE),
        "RANDOMCHAT_INBOUND_FRAMES_BURST": str(BURST),
        # Only the pacing here: the frame limit would close the flooders.
        "RANDOMCHAT_RATE_FRAME_PER_S": "1000000",
        "RANDOMCHAT_RATE_FRAME_BURST": "1000000",
    }
    with DaphneServer(env=env) as server:
        arrivals, samples = asyncio.run(paced_flood(server.ws_url))
        # Nothing dropped, nothing reordered.
        assert [frame for frame, _ in arrivals] == [f"RECEIPT\nreceipt-id:{i}\ncontent-length:0\n\n\x00" for i in range(N)]
        # The k-th receipt (k frames handled, and CONNECT) no earlier than the budget allows;
        # a slow machine only makes it later. 2 frames of slack for timer resolution.
        for k, (_, t) in enumerate(arrivals, 1):
            assert k + 1 <= BURST + 1 + RATE * t + 2, f"receipt {k} after {t:.3f} s: read faster than the budget"
        # Meanwhile the other connection's round trips stay fast (typically a few ms).
        assert len(samples) >= 10
        assert max(samples) < 2.0, sorted(samples)[-5:]
        assert "Traceback" not in server.log()


async def sustained_flood(url):
    ws = await stomp_connect(url)
    t0 = time.monotonic()
    ws.transport.write(raw_text_frame(b"\n") * 100_000)
    error = await asyncio.wait_for(ws.recv(), 60)
    t_error = time.monotonic() - t0
    try:
        extra = await asyncio.wait_for(ws.recv(), 10)
        raise AssertionError(f"a frame after the ERROR: {extra!r}")
    except ConnectionClosed as exc:
        closed = exc
    t_closed = time.monotonic() - t0
    ws.transport.abort()
    return error, t_error, closed, t_closed


def test_sustained_flood__paced_then_error_and_close_with_the_defaults():
    with DaphneServer() as server:
        error, t_error, closed, t_closed = asyncio.run(sustained_flood(server.ws_url))
        message = "Frame rate limit exceeded (more than 200 frames at once or 20 per second)"
        assert error == (
            f"ERROR\nmessage:{message}\ncontent-type:text/plain\ncontent-length:{len(message)}\n\n{message}\x00"
        )
        # Paced at 50 frames/s after a burst of 100, the frame budget (200 at once, 20/s)
        # runs out after about (200 - 101) / (50 - 20) = 3.3 s, not at once.
        assert t_error > 2.0
        assert closed.rcvd is not None and closed.rcvd.code == 4002
        # The rest of the flood does not keep the connection alive: the close handshake
        # times out after 1 s.
        assert t_closed - t_error < 10
        assert "kind=frame_rate_limited" in server.log()
