"""A Redis outage longer than the notices' old retry window (15 s), with two daphnes.

Senders used to be closed with ERROR "Internal server error" after their messages were
stored, so a client that resent stored a duplicate. Now every action during the outage gets
its answer without a close: a 20 (stored; the partner gets it once Redis is back) or a 21
`unavailable` (nothing stored). The daphnes reach Redis through a proxy whose link the test
cuts, so no other test run on the machine loses its Redis.
"""

from __future__ import annotations

import asyncio
import os

import pytest

from . import helpers, services
from .test_outage import chat_both_ways
from tests.support.events import MESSAGE, MESSAGE_REFUSED, start_body
from tests.support.proxy import CuttableProxy
from tests.support.wire import WireClient, close_all, pair

pytestmark = [pytest.mark.django_db(transaction=True)]

OUTAGE = 20.0
PAIRS = 3


@pytest.mark.timeout(180)
async def test_a_long_redis_outage_answers_every_message_and_loses_none(cluster):
    with CuttableProxy(*services.redis_address()) as proxy:
        p1, p2 = cluster(2, REDIS_URL=proxy.url(os.environ["REDIS_URL"]), RANDOMCHAT_RATE_MESSAGE_BURST=1000)
        pairs = [(WireClient(p1.ws_url, f"A{i}@p1"), WireClient(p2.ws_url, f"B{i}@p2")) for i in range(PAIRS)]
        everyone = [c for pair_ in pairs for c in pair_]
        try:
            await asyncio.gather(*(c.open() for c in everyone))
            for i, (a, b) in enumerate(pairs):
                await pair(a, b, start_body(f"A{i}", "pt"), start_body(f"B{i}", "pt"))
            sent: dict[str, WireClient] = {}
            proxy.set_cut(True)
            loop = asyncio.get_running_loop()
            end = loop.time() + OUTAGE
            n = 0
            while loop.time() < end:
                for a, _ in pairs:
                    content = f"during-{n}-{a.label}"
                    sent[content] = a
                    await a.message(content)
                n += 1
                await asyncio.sleep(1)
            proxy.set_cut(False)
            await asyncio.sleep(10)  # the late notices go out

            assert not [(c.label, c.close_code) for c in everyone if not c.is_open]
            assert not [(c.label, [f.get("message") for f in c.errors]) for c in everyone if c.errors]
            answers = {}
            for a, _ in pairs:
                for event in a.events:
                    if event.code == MESSAGE and event.content in sent:
                        answers[event.content] = "20"
                refusals = [e for e in a.events if e.code == MESSAGE_REFUSED]
                assert {e.error for e in refusals} <= {"unavailable"}, refusals
            stored = await helpers.message_counts(sent)
            assert {c: n for c, n in stored.items() if n != 1} == {}, "stored more than once"
            acknowledged = set(answers)
            assert acknowledged == set(stored), "every stored message, and only those, got its 20 at the sender"
            refused = sum(e.code == MESSAGE_REFUSED for a, _ in pairs for e in a.events)
            assert len(stored) + refused == len(sent), "every message got an answer"
            for a, b in pairs:  # the partner got every stored message too, in the sender's order
                got = [e.content for e in b.events if e.code == MESSAGE and e.content in sent]
                mine = [e.content for e in a.events if e.code == MESSAGE and e.content in sent]
                assert got == mine, (b.label, got, mine)
            for a, b in pairs:
                await chat_both_ways(a, b, "after-redis")
        finally:
            await close_all(everyone)
