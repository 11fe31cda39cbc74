"""Heart-beats: negotiation and the monitor's decisions (pure functions), on the wire, and the connect timeout."""

import asyncio
import logging

import pytest
from django.test import override_settings

from randomchat.heartbeat import Deadlines, beat_due, lapsed
from randomchat.stomp import HEARTBEAT
from randomchat.stomp_consumer import CLOSE_POLICY
from randomchat.stomp_consumer import ProtocolError, negotiate_heartbeat, parse_heartbeat

from tests.support.inprocess import Closed

# The pure-function tests need no database; the consumer tests get it through `stomp`.


@pytest.mark.parametrize(
    ("client", "server", "expected"),
    [
        # (cx, cy), (sx, sy) -> (server->client, client->server)
        ((0, 0), (0, 0), (0, 0)),
        ((0, 0), (10000, 10000), (0, 0)),
        ((10000, 10000), (0, 0), (0, 0)),
        ((0, 5000), (10000, 10000), (10000, 0)),  # cx == 0: the client never sends
        ((5000, 0), (10000, 10000), (0, 10000)),  # cy == 0: the client wants none
        ((5000, 5000), (0, 10000), (0, 10000)),  # sx == 0: the server never sends
        ((5000, 5000), (10000, 0), (10000, 0)),  # sy == 0: the server wants none
        ((0, 5000), (10000, 0), (10000, 0)),
        ((5000, 0), (0, 10000), (0, 10000)),
        ((0, 5000), (0, 10000), (0, 0)),
        ((5000, 0), (10000, 0), (0, 0)),
        ((20000, 1000), (10000, 10000), (10000, 20000)),  # max of each pair
        ((1000, 20000), (10000, 10000), (20000, 10000)),
    ],
)
def test_negotiate_heartbeat(client, server, expected):
    assert negotiate_heartbeat(client, server) == expected


@pytest.mark.parametrize(
    ("value", "expected"),
    [(None, (0, 0)), ("0,0", (0, 0)), ("100,2000", (100, 2000)), (" 10 , 20 ", (10, 20)),
     ("9" * 50 + ",1", (2**31 - 1, 1))],
)
def test_parse_heartbeat(value, expected):
    assert parse_heartbeat(value) == expected


@pytest.mark.parametrize("value", ["", "100", "a,b", "1,2,3", "-1,0", "1.5,0", "²,1", "١,1", ",", "0x10,0"])
def test_parse_heartbeat_rejects_invalid_values(value):
    with pytest.raises(ProtocolError):
        parse_heartbeat(value)


def test_deadlines_from_negotiated_intervals():
    assert Deadlines.negotiated(10000, 0, grace=3, frame=30, idle=120) == Deadlines(10.0, 0.0, 3, 30, 120)
    # heart-beats in make the idle limit moot: silence is a heart-beat timeout
    assert Deadlines.negotiated(0, 5000, grace=3, frame=30, idle=120) == Deadlines(0.0, 5.0, 3, 30, 0)
    assert Deadlines(10, 5, 3, 30, 0).tick == 2.5
    assert Deadlines(0, 0, 3, 0, 0).tick == 0


@pytest.mark.parametrize(
    ("deadlines", "now", "partial_since", "idle_since", "kind"),
    [
        (Deadlines(0, 1, 3, 0, 0), 102.9, None, 100, None),
        (Deadlines(0, 1, 3, 0, 0), 103.1, None, 100, "heartbeat_timeout"),
        (Deadlines(0, 1, 3, 2, 0), 103.1, 100, 100, "heartbeat_timeout"),  # silence comes first
        (Deadlines(0, 0, 3, 2, 0), 103.1, None, 100, None),
        (Deadlines(0, 0, 3, 2, 0), 103.1, 101.2, 100, None),
        (Deadlines(0, 0, 3, 2, 0), 103.1, 101, 100, "frame_timeout"),
        (Deadlines(0, 0, 3, 0, 5), 104.9, None, 100, None),
        (Deadlines(0, 0, 3, 0, 5), 105.1, None, 100, "idle_timeout"),
        (Deadlines(0, 0, 3, 0, 5), 105.1, None, 101, None),  # a session excused it at 101
    ],
)
def test_lapsed(deadlines, now, partial_since, idle_since, kind):
    lapse = lapsed(deadlines, now, last_inbound=100, partial_since=partial_since, idle_since=idle_since)
    assert (lapse and lapse.kind) == kind


@pytest.mark.parametrize(("now", "due"), [(100.4, False), (100.5, True), (101.5, True)])
def test_a_beat_is_due_when_the_next_tick_would_be_late(now, due):
    assert beat_due(Deadlines(1, 0, 3, 0, 0), now, last_outbound=100) is due  # tick 0.5
    assert beat_due(Deadlines(0, 1, 3, 0, 0), now, last_outbound=100) is False  # none to send


@pytest.mark.parametrize("value", ["abc", "100", "-1,0", "²,1", "1,2,3"])
async def test_an_invalid_heart_beat_header_is_an_error(stomp, value):
    client = await stomp()
    await client.send("CONNECT", [("accept-version", "1.2"), ("heart-beat", value)])
    await client.expect_error("heart-beat")


@pytest.mark.parametrize("version", ["1.1", "1.2"])
async def test_connected_states_the_configured_server_wish(stomp, version):
    with override_settings(RANDOMCHAT_HEARTBEAT=(2500, 7500)):
        client = await stomp()
        connected = await client.connect(accept_version=version, heart_beat="100,100")
    assert connected.get("heart-beat") == "2500,7500"


async def _collect(client, seconds):
    """Items (frames and HEARTBEATs with their arrival time) until `seconds` pass; stops at a close."""
    loop = asyncio.get_running_loop()
    start = loop.time()
    items = []
    while (left := seconds - (loop.time() - start)) > 0:
        if await client.ws.receive_nothing(timeout=left, interval=0.005):
            break
        try:
            items.append((loop.time() - start, await client.receive_item()))
        except Closed as closed:
            items.append((loop.time() - start, closed))
            break
    return items


async def test_the_server_sends_eols_on_time_when_idle(stomp):
    with override_settings(RANDOMCHAT_HEARTBEAT=(100, 0)):
        client = await stomp()
        await client.connect(heart_beat="0,100")
        items = await _collect(client, 1.0)
    times = [t for t, item in items if item is HEARTBEAT]
    assert len(times) == len(items), items
    assert len(times) >= 8
    gaps = [b - a for a, b in zip([0.0, *times], times)]
    assert max(gaps) <= 0.15, gaps  # never idle for more than the interval (plus scheduling slack)


async def test_a_heart_beat_follows_the_last_frame_once_idle(stomp):
    with override_settings(RANDOMCHAT_HEARTBEAT=(200, 0)):
        client = await stomp()
        await client.connect(heart_beat="0,200")
        await client.send("SUBSCRIBE", [("id", "1"), ("destination", "/user/dialog"), ("receipt", "r")])
        await client.expect_receipt("r")
        item = await client.receive_item(timeout=1)
    assert item is HEARTBEAT


async def test_a_silent_client_is_dropped_after_three_intervals(stomp, caplog):
    caplog.set_level(logging.INFO)
    with override_settings(RANDOMCHAT_HEARTBEAT=(0, 100)):
        client = await stomp()
        await client.connect(heart_beat="100,0")
        items = await _collect(client, 1.5)
    assert len(items) == 1, items
    when, closed = items[0]
    assert isinstance(closed, Closed) and closed.code == CLOSE_POLICY
    assert 0.3 <= when <= 0.6
    rejected = [r for r in caplog.records if "stomp rejected" in r.getMessage()]
    assert len(rejected) == 1 and "heart-beat" in rejected[0].getMessage()


@pytest.mark.parametrize("keepalive", [b"\n", b"\r\n"])
async def test_inbound_eols_keep_the_connection_alive(stomp, keepalive):
    with override_settings(RANDOMCHAT_HEARTBEAT=(0, 100)):
        client = await stomp()
        await client.connect(heart_beat="100,0")
        for _ in range(12):  # 1.2 s, four times the grace
            await asyncio.sleep(0.1)
            await client.send_bytes(keepalive)
        await client.send("SUBSCRIBE", [("id", "1"), ("destination", "/user/dialog"), ("receipt", "alive")])
        await client.expect_receipt("alive")


async def test_any_inbound_byte_resets_the_read_timer(stomp):
    with override_settings(RANDOMCHAT_HEARTBEAT=(0, 100)):
        client = await stomp()
        await client.connect(heart_beat="100,0")
        frame = b"ACK\nid:1\n\n\x00"
        for i in range(12):  # a frame trickling in, one byte per 100 ms
            await asyncio.sleep(0.1)
            await client.send_bytes(frame[i % len(frame):i % len(frame) + 1])
        await client.expect_nothing(0.1)


@pytest.mark.parametrize(
    ("client_hb", "server_hb", "sends", "drops"),
    [
        ("0,0", (100, 100), False, False),
        ("0,100", (100, 100), True, False),  # cx == 0
        ("100,0", (100, 100), False, True),  # cy == 0
        ("100,100", (0, 100), False, True),  # sx == 0
        ("100,100", (100, 0), True, False),  # sy == 0
        ("100,100", (0, 0), False, False),
        ("100,100", (100, 100), True, True),
    ],
)
async def test_heart_beats_on_the_wire_for_every_zero_case(stomp, client_hb, server_hb, sends, drops):
    with override_settings(RANDOMCHAT_HEARTBEAT=server_hb):
        client = await stomp()
        await client.connect(heart_beat=client_hb)
        items = await _collect(client, 0.7)
    heartbeats = [t for t, item in items if item is HEARTBEAT]
    closes = [item for _, item in items if isinstance(item, Closed)]
    assert bool(heartbeats) is sends, items
    assert bool(closes) is drops, items
    assert len(heartbeats) + len(closes) == len(items)


async def test_a_1_0_client_gets_no_heart_beats(stomp):
    with override_settings(RANDOMCHAT_HEARTBEAT=(100, 100)):
        client = await stomp()
        await client.connect(accept_version="1.0", heart_beat="100,100")
        await client.expect_nothing(0.5)


# Connect timeout


async def test_no_connect_within_the_timeout_closes(stomp, caplog):
    caplog.set_level(logging.INFO)
    with override_settings(RANDOMCHAT_CONNECT_TIMEOUT=0.2):
        client = await stomp()
        await client.send_bytes(b"\n")  # heart-beats are not a CONNECT
        assert await client.expect_closed(timeout=2) == CLOSE_POLICY
    rejected = [r for r in caplog.records if "stomp rejected" in r.getMessage()]
    assert len(rejected) == 1 and "CONNECT" in rejected[0].getMessage()


async def test_a_partial_connect_does_not_beat_the_timeout(stomp):
    with override_settings(RANDOMCHAT_CONNECT_TIMEOUT=0.2):
        client = await stomp()
        await client.send_bytes(b"CONNECT\naccept-")
        assert await client.expect_closed(timeout=2) == CLOSE_POLICY


async def test_a_connect_in_time_cancels_the_timeout(stomp):
    with override_settings(RANDOMCHAT_CONNECT_TIMEOUT=0.2, RANDOMCHAT_HEARTBEAT=(0, 0)):
        client = await stomp()
        await client.connect()
        await client.expect_nothing(0.5)
        await client.send("SUBSCRIBE", [("id", "1"), ("destination", "/user/dialog"), ("receipt", "r")])
        await client.expect_receipt("r")
