"""Redis or PostgreSQL restarted under load, with clients chatting across two processes.

The tests stop the real services of this machine and start them again the way .ci/run
does; the guards (conftest.py) start them again whatever happens, and every daphne process
is stopped at the end.
"""

from __future__ import annotations

import asyncio
import contextlib
import time

import pytest
import websockets

from tests.support.events import LEFT, MESSAGE, PAIRED, START_REFUSED, STOP_REFUSED, start_body
from tests.support.wire import WireClient, close_all, pair

from . import helpers, services
from .load import Chatter

pytestmark = [pytest.mark.django_db(transaction=True)]

PAIRS = 6
OUTAGE = 3.0  # seconds the service stays down (besides stopping and starting it)
SETTLE = 25.0  # > RANDOMCHAT_LAYER_RETRY_SECONDS (15): notices retried through the outage arrive


async def chat_both_ways(a: WireClient, b: WireClient, tag: str, *, timeout: float = 15) -> None:
    for author, text in ((a, f"{tag} from {a.label}"), (b, f"{tag} from {b.label}")):
        marks = (len(a.events), len(b.events))
        await author.message(text)
        for client, mark in zip((a, b), marks):
            got = await client.wait_code(MESSAGE, timeout=timeout, start=mark, content=text)
            assert got.sender == author.user


async def new_pair_chats(p1, p2, tag: str) -> list[WireClient]:
    """Two new clients, one per process, pair and chat both ways."""
    n1, n2 = WireClient(p1.ws_url, f"{tag}-new@p1"), WireClient(p2.ws_url, f"{tag}-new@p2")
    await n1.open()
    await n2.open()
    await pair(n1, n2, start_body("New1", "sv"), start_body("New2", "sv"))
    await chat_both_ways(n1, n2, tag)
    return [n1, n2]


async def stored_exactly_once(chatter: Chatter) -> dict[str, int]:
    """Every message of the load that got a 20 anywhere is in the database exactly once."""
    seen = chatter.received_20s()
    counts = await helpers.message_counts([s.content for s in chatter.sent])
    not_once = {content: counts.get(content, 0) for content in seen if counts.get(content, 0) != 1}
    assert not not_once, f"messages that got a 20 but are not stored exactly once: {list(not_once.items())[:10]}"
    duplicated = {content: n for content, n in counts.items() if n > 1}
    assert not duplicated, f"stored more than once: {list(duplicated.items())[:10]}"
    return counts


def lost_messages(chatter: Chatter, counts: dict[str, int]) -> list[str]:
    """Stored (accepted) messages that did not reach both participants as a 20."""
    seen = chatter.received_20s()
    return [content for content in counts if len({label for label, _ in seen.get(content, [])}) < 2]


OUTAGES: list[tuple[float, float]] = []  # (down, up) monotonic times of the latest restart


async def restart(stop, start, *, during=None) -> float:
    """Stop a service, run `during()` while it is down, start it again; return the outage (s)."""
    down = None
    try:
        await asyncio.to_thread(stop)
        down = time.monotonic()
        if during is not None:
            await during()
        await asyncio.sleep(OUTAGE)
    finally:
        await asyncio.to_thread(start)
    up = time.monotonic()
    OUTAGES.append((down or up, up))
    return up - (down or up)


def when_sent(chatter: Chatter, contents: list[str]) -> str:
    """When these messages were sent, relative to the latest outage."""
    down, up = OUTAGES[-1]
    times = sorted(s.at - down for s in chatter.sent if s.content in set(contents))
    if not times:
        return "never sent"
    return (
        f"sent from {times[0]:+.1f} s to {times[-1]:+.1f} s relative to the service going down "
        f"(it answered again at {up - down:+.1f} s)"
    )


# Redis


@pytest.mark.timeout(180)
async def test_redis_restart_under_load_service_recovers(cluster, redis_guard, timings):
    """After Redis is back, new users pair and chat across processes; nothing is stored twice."""
    p1, p2 = cluster(2)
    chatter = await Chatter.across([p1, p2], PAIRS)
    others: list[WireClient] = []
    try:
        chatter.start()
        await asyncio.sleep(2)
        outage = await restart(services.redis_stop, services.redis_start)
        timings("Redis down", outage)
        assert services.redis_up()
        await asyncio.sleep(3)
        await chatter.stop()
        await chatter.settle(timeout=SETTLE)

        others += await new_pair_chats(p1, p2, "after-redis")
        await stored_exactly_once(chatter)
    finally:
        await close_all(chatter.clients + others)


@pytest.mark.timeout(180)
async def test_redis_restart_under_load_connections_and_dialogs_survive(cluster, redis_guard, timings):
    """Connections stay open, dialogs begun before the restart still deliver, nothing accepted is lost."""
    p1, p2 = cluster(2)
    chatter = await Chatter.across([p1, p2], PAIRS)
    during = [WireClient(p1.ws_url, "during@p1"), WireClient(p2.ws_url, "during@p2")]
    try:
        await asyncio.gather(*(c.open() for c in during))
        chatter.start()
        await asyncio.sleep(2)

        async def act():
            # Two compatible newcomers /start while Redis is down (their sockets may be gone already).
            for client, name in ((during[0], "During1"), (during[1], "During2")):
                with contextlib.suppress(websockets.ConnectionClosed):
                    await client.start(start_body(name, "de"))
                await asyncio.sleep(0.5)

        outage = await restart(services.redis_stop, services.redis_start, during=act)
        timings("Redis down", outage)
        await asyncio.sleep(3)
        await chatter.stop()
        await chatter.settle(timeout=SETTLE)
        counts = await stored_exactly_once(chatter)

        problems = []
        closed = [(c.label, c.close_code) for c in chatter.clients + during if not c.is_open]
        if closed:
            problems.append(f"connections closed by the outage: {closed}")
        errors = [(c.label, [f.get("message") for f in c.errors]) for c in chatter.clients + during if c.errors]
        if errors:
            problems.append(f"ERROR frames: {errors}")
        lost = lost_messages(chatter, counts)
        if lost:
            problems.append(
                f"{len(lost)} of {len(counts)} stored messages never reached both participants as 20, "
                f"{when_sent(chatter, lost)}, e.g. {lost[:5]}"
            )
        untold = [
            b.label
            for x, y in chatter.pairs
            for a, b in ((x, y), (y, x))
            if not a.is_open and b.is_open and not any(e.code == LEFT for e in b.events)
        ]
        if untold:
            problems.append(f"partners of connections closed by the outage got no 30: {untold}")
        for client in during:
            if client.is_open and not any(e.code in (PAIRED, START_REFUSED) for e in client.events):
                problems.append(f"{client.label}: /start during the outage got neither 10 nor 11: {client.describe()}")
        fresh_failed = []
        for a, b in chatter.pairs:
            if a.is_open and b.is_open:
                try:
                    await chat_both_ways(a, b, "fresh", timeout=5)
                except (AssertionError, websockets.ConnectionClosed) as exc:
                    fresh_failed.append(str(exc)[:200])
        if fresh_failed:
            problems.append(f"{len(fresh_failed)} of {PAIRS} dialogs begun before the restart no longer deliver: {fresh_failed[:2]}")
        assert not problems, "\n".join(problems)
    finally:
        await close_all(chatter.clients + during)


# PostgreSQL


@pytest.mark.timeout(180)
async def test_postgres_restart_under_load(cluster, pg_guard, timings):
    """Actions during the outage get x1 `unavailable` (or succeed), connections stay open,
    nothing accepted is lost, and the service works again without restarting daphne."""
    p1, p2 = cluster(2)
    chatter = await Chatter.across([p1, p2], PAIRS)
    during = [WireClient(p1.ws_url, "during@p1"), WireClient(p2.ws_url, "during@p2")]
    stoppers = [WireClient(p1.ws_url, "stopper@p1"), WireClient(p2.ws_url, "stopper@p2")]
    others: list[WireClient] = []
    try:
        await asyncio.gather(*(c.open() for c in during + stoppers))
        await pair(stoppers[0], stoppers[1], start_body("S1", "nl"), start_body("S2", "nl"))
        chatter.start()
        await asyncio.sleep(2)
        marks = {c: len(c.events) for c in during + stoppers}

        async def act():
            await during[0].start(start_body("During1", "de"))
            await during[1].start(start_body("During2", "de"))
            await stoppers[0].stop()
            # The refusals come while the database is still down.
            for client in during:
                refused = await client.wait_code(START_REFUSED, timeout=10, start=marks[client])
                assert refused.error == "unavailable", refused
            refused = await stoppers[0].wait_code(STOP_REFUSED, timeout=10, start=marks[stoppers[0]])
            assert refused.error == "unavailable", refused
            # (Its chatUUID/senderUUID echo: test_postgres_down_stop_refusal_echoes_what_was_sent.)

        outage = await restart(services.pg_stop, services.pg_start, during=act)
        timings("PostgreSQL down", outage)
        assert services.pg_up()
        await asyncio.sleep(3)
        await chatter.stop()
        await chatter.settle(timeout=SETTLE)

        everyone = chatter.clients + during + stoppers
        # Connections stayed open, without ERROR frames.
        assert not [(c.label, c.close_code) for c in everyone if not c.is_open]
        assert not [(c.label, [f.get("message") for f in c.errors]) for c in everyone if c.errors]
        # Every /message got its 20 or its 21, and every 21 says `unavailable`.
        unanswered = {c.label: chatter.unanswered(c) for c in chatter.clients if chatter.unanswered(c)}
        assert not unanswered, f"messages with neither 20 nor 21: {unanswered}"
        refusals = [e for c in chatter.clients for e in c.events if e.code == 21]
        assert {e.error for e in refusals} <= {"unavailable"}, {e.error for e in refusals}
        timings("/message refused 'unavailable' during the outage", len(refusals), f"of {len(chatter.sent)}")
        # Nothing accepted is lost: every stored message reached both participants, once.
        counts = await stored_exactly_once(chatter)
        lost = lost_messages(chatter, counts)
        assert not lost, f"{len(lost)} stored messages never reached both participants: {lost[:10]}"
        assert len(counts) + len(refusals) == len(chatter.sent)

        # The service works again, without restarting daphne: old dialogs chat...
        for a, b in chatter.pairs:
            await chat_both_ways(a, b, "after-postgres")
        # ...the refused /stop and /start are retried and succeed...
        marks = [len(c.events) for c in stoppers]
        await stoppers[0].stop()
        for client, mark in zip(stoppers, marks):
            left = await client.wait_code(LEFT, timeout=15, start=mark)
            assert left.service == {"reason": "stop"} and left.sender == stoppers[0].user
        await during[0].start(start_body("During1", "de"))
        await during[1].start(start_body("During2", "de"))
        first = await during[0].wait_code(PAIRED, timeout=15)
        assert (await during[1].wait_code(PAIRED, timeout=15)).chat == first.chat
        # ...and new users pair and chat across processes.
        others += await new_pair_chats(p1, p2, "after-postgres")
    finally:
        await close_all(chatter.clients + during + stoppers + others)


@pytest.mark.timeout(90)
async def test_postgres_down_stop_refusal_echoes_what_was_sent(cluster, pg_guard):
    """A 31 'unavailable' echoes chatUUID and senderUUID as sent (PROTOCOL.md section 4)."""
    p1, p2 = cluster(2)
    a, b = WireClient(p1.ws_url, "a@p1"), WireClient(p2.ws_url, "b@p2")
    try:
        await a.open()
        await b.open()
        await pair(a, b, start_body("A", "nl"), start_body("B", "nl"))
        mark = len(a.events)
        refused = []

        async def act():
            await a.stop()
            refused.append(await a.wait_code(STOP_REFUSED, timeout=10, start=mark))

        await restart(services.pg_stop, services.pg_start, during=act)
        [event] = refused
        assert event.error == "unavailable", event
        assert (event.chat, event.sender) == (a.chat, a.user), event
    finally:
        await close_all([a, b])
