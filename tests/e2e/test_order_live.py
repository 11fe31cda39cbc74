"""PROTOCOL.md §4 "Order" on a live daphne: messages racing the partner's /stop, many rounds."""

from __future__ import annotations

import asyncio

import pytest

from tests.support.events import LEFT, MESSAGE, MESSAGE_REFUSED, start_body
from tests.support.wire import WireClient, close_all, pair

pytestmark = [pytest.mark.django_db(transaction=True)]

ROUNDS = 25
TIMEOUT = 15
# A /start per round: above the default rate limit of /start (1 per second, burst 5); and
# the same two connections pair again each round (no rematch window).
SERVER_ENV = {"RANDOMCHAT_RATE_START_BURST": str(2 * ROUNDS), "RANDOMCHAT_REMATCH_WINDOW": "0"}


async def crossing_between(a: WireClient, b: WireClient) -> None:
    """Open a and b, run the crossing rounds, and close them whatever happened."""
    try:
        await a.open()
        await b.open()
        await crossing_rounds(a, b)
    finally:
        await close_all([a, b])


async def crossing_rounds(a: WireClient, b: WireClient, rounds: int = ROUNDS) -> None:
    """Each round pairs a and b; a sends three messages while b sends /stop.

    For both: the accepted messages (the same ones, in the same order), then the 30, and
    nothing of the dialog after it but a's refusals (21 dialog_ended)."""
    for i in range(rounds):
        ea, _ = await pair(a, b, start_body(f"A{i}"), start_body(f"B{i}"), timeout=TIMEOUT)
        chat = ea.chat
        marks = {a: len(a.events), b: len(b.events)}
        await asyncio.gather(*(a.message(f"r{i}-m{n}") for n in range(3)), b.stop())
        await a.wait_code(LEFT, timeout=TIMEOUT, start=marks[a])
        await b.wait_code(LEFT, timeout=TIMEOUT, start=marks[b])
        await a.wait_event(
            lambda _: sum(e.code in (MESSAGE, MESSAGE_REFUSED) for e in a.events[marks[a]:]) >= 3,
            timeout=TIMEOUT, what="an answer to each of the three messages", start=marks[a],
        )
        await asyncio.sleep(0.3)  # anything late would arrive now
        delivered = {}
        for name, client in (("sender", a), ("stopper", b)):
            events = [e for e in client.events[marks[client]:] if e.chat == chat]
            codes = [e.code for e in events]
            ordered = [code for code in codes if code != MESSAGE_REFUSED]
            assert ordered[-1] == LEFT and set(ordered[:-1]) <= {MESSAGE}, (i, name, codes)
            refusals = [e for e in events if e.code == MESSAGE_REFUSED]
            assert all(e.error == "dialog_ended" for e in refusals), (i, name, refusals)
            assert all(codes.index(LEFT) < codes.index(MESSAGE_REFUSED) for _ in refusals), (i, name, codes)
            delivered[name] = [e.content for e in events if e.code == MESSAGE]
        assert delivered["sender"] == delivered["stopper"], (i, delivered)
        assert len(delivered["sender"]) + sum(e.code == MESSAGE_REFUSED for e in a.events[marks[a]:]) == 3


@pytest.mark.timeout(180)
async def test_messages_crossing_a_stop_never_follow_the_30(start_daphne):
    server = start_daphne(env=SERVER_ENV)
    await crossing_between(WireClient(server.ws_url, "A"), WireClient(server.ws_url, "B"))
