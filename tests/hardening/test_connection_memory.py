"""What one connection may make the server hold: RANDOMCHAT_MAX_CONNECTION_BYTES bounds
the frame being received, the frames of open transactions and the events waiting for a
SUBSCRIBE, together."""

import asyncio

import pytest
from django.test import override_settings
from websockets.exceptions import ConnectionClosed

from randomchat.stomp_consumer import held_size
from randomchat.stomp import FrameParser
from tests.support.inprocess import raw_frame
from tests.support.live import DaphneServer

from tests.support.inprocess import pair
from tests.support.wire import WireClient

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.timeout(120)]


def send_in(transaction: str, body: str) -> bytes:
    return raw_frame("SEND", [("destination", "/message"), ("transaction", transaction)], body)


def frame_cost(transaction: str, body: str) -> int:
    (frame,) = FrameParser().feed(send_in(transaction, body))
    return held_size(frame)


# In process


@override_settings(RANDOMCHAT_MAX_CONNECTION_BYTES=20_000)
async def test_transactions_are_bounded_by_bytes__abort_frees_them(chat):
    client = await chat()
    body = "x" * 4000
    fits = 20_000 // frame_cost("t1", body)
    for name in ("t1", "t2"):  # twice: ABORT gave the first transaction's bytes back
        await client.send("BEGIN", [("transaction", name)])
        for _ in range(fits):
            await client.send_bytes(send_in(name, body))
        await client.send("ABORT", [("transaction", name), ("receipt", name)])
        await client.expect_receipt(name)
    await client.send("BEGIN", [("transaction", "t3")])
    for _ in range(fits):
        await client.send_bytes(send_in("t3", body))
    await client.send_bytes(send_in("t3", body))
    error = await client.expect_error("More than 20000 bytes buffered for this connection")
    assert error.get("receipt-id") is None


@override_settings(RANDOMCHAT_MAX_CONNECTION_BYTES=20_000)
async def test_many_tiny_frames_count_what_they_cost_not_their_wire_bytes(chat):
    client = await chat()
    await client.send("BEGIN", [("transaction", "t")])
    tiny = send_in("t", "")
    assert len(tiny) < 60
    # Well under 20,000 bytes on the wire, and no transaction frame limit reached (64).
    for _ in range(20_000 // frame_cost("t", "")):
        await client.send_bytes(tiny)
    await client.send_bytes(tiny)
    await client.expect_error("More than 20000 bytes buffered")


@override_settings(RANDOMCHAT_MAX_CONNECTION_BYTES=20_000)
async def test_a_partial_frame_counts_with_the_transactions(chat):
    client = await chat()
    await client.send("BEGIN", [("transaction", "t")])
    for _ in range(4):  # about 18,000 bytes
        await client.send_bytes(send_in("t", "x" * 4000))
    await client.send_bytes(b"SEND\ndestination:/message\n\n" + b"y" * 6000)  # alone it would fit
    await client.expect_error("More than 20000 bytes buffered")


@override_settings(RANDOMCHAT_MAX_CONNECTION_BYTES=20_000, RANDOMCHAT_MAX_PENDING_EVENTS=1000)
async def test_events_waiting_for_a_subscribe_count_too(chat):
    a, b = await chat(), await chat()
    event_a, _ = await pair(a, b)
    await b.send("UNSUBSCRIBE", [("id", "sub-0"), ("receipt", "u")])
    await b.expect_receipt("u")
    ids = {"chatUUID": event_a["chatUUID"], "senderUUID": event_a["senderUUID"]}
    for _ in range(5):  # each 20 event carries the 4,000 characters once more
        await a.send_json("/message", {**ids, "content": "z" * 4000})
        assert (await a.event())["eventCode"] == 20
    await b.expect_error("More than 20000 bytes buffered")


# Against a real daphne



def rss_kib(pid: int, field: str) -> int:
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise AssertionError(f"{field} not in /proc/{pid}/status")


async def hold_transactions(url: str, connections: int) -> list[str]:
    """The issue's attack: 8 transactions of 64 frames of about 60 KiB, on each connection."""
    body = b"b" * 60_000
    frame = lambda t: b"SEND\ndestination:/message\ntransaction:%s\ncontent-length:60000\n\n" % t + body + b"\x00"  # noqa: E731

    async def one() -> str:
        client = await WireClient(url).open(subscribe=False)
        try:
            for t in range(8):
                await client.send(b"BEGIN\ntransaction:%d\n\n\x00" % t)
                for _ in range(64):
                    await client.send(frame(b"%d" % t))
        except ConnectionClosed:
            pass
        frames, _ = await client.frames_until_closed(30)
        await client.close()
        return f"{frames[0].command}: {frames[0].get('message')}" if frames else "closed"

    return await asyncio.gather(*(one() for _ in range(connections)))


def test_open_transactions_hold_a_bounded_amount_of_memory():
    with DaphneServer() as server:
        pid = server.process.pid

        async def warm_up():
            client = await WireClient(server.ws_url).open(subscribe=False)
            await client.close()

        asyncio.run(warm_up())
        before = rss_kib(pid, "VmHWM")
        errors = asyncio.run(hold_transactions(server.ws_url, 8))
        peak = rss_kib(pid, "VmHWM") - before
        assert all(e.startswith("ERROR: More than 262144 bytes buffered for this connection") for e in errors), errors
        # Was 230 MB for these 8 connections; now each holds at most 256 KiB.
        assert peak < 30 * 1024, f"peak RSS grew by {peak} KiB"
        print(f"8 connections x 8 transactions: peak RSS +{peak} KiB")


