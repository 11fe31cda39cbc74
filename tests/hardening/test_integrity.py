"""Over many dialogs, every message delivered as 20 is stored exactly once; nothing refused is."""

import asyncio
import collections

import pytest

from dialogs.models import Message

from tests.support.inprocess import pair

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.timeout(120)]


@pytest.fixture(autouse=True)
def no_message_rate_limit(settings):
    """Each client sends 36 messages as fast as the server answers, more than the default
    burst. Rate limits have their own tests; here every message must reach the database."""
    settings.RANDOMCHAT_RATE_MESSAGE = (1000.0, 1000.0)

DIALOGS = 8
ROUNDS = 12


async def talk(a, event_a, b, event_b, n: int, delivered: collections.Counter, refused: set):
    mine = {"chatUUID": event_a["chatUUID"], "senderUUID": event_a["senderUUID"]}
    impersonating = {"chatUUID": event_a["chatUUID"], "senderUUID": event_b["senderUUID"]}
    for i in range(ROUNDS):
        ok, too_long, fake = f"ok-{n}-{i}", f"long-{n}-{i}-" + "x" * 5000, f"fake-{n}-{i}"
        await a.send_json("/message", {**mine, "content": ok})
        await a.send_json("/message", {**mine, "content": too_long})
        await a.send_json("/message", {**impersonating, "content": fake})
        refused.update({too_long, fake})
        events = [await a.event() for _ in range(3)]
        assert sorted(e["eventCode"] for e in events) == [20, 21, 21]
        for event in events:
            if event["eventCode"] == 20:
                delivered[event["content"]] += 1
        received = await b.event()
        assert (received["eventCode"], received["content"]) == (20, ok)
        delivered[received["content"]] += 1


async def test_every_delivered_message_stored_once(chat):
    delivered: collections.Counter = collections.Counter()
    refused: set = set()
    pairs = []
    for _ in range(DIALOGS):
        a, b = await chat(), await chat()
        event_a, event_b = await pair(a, b)
        pairs.append((a, event_a, b, event_b))
    await asyncio.gather(*(talk(*p, n, delivered, refused) for n, p in enumerate(pairs)))
    stored = collections.Counter([m.content async for m in Message.objects.all()])
    assert len(stored) == DIALOGS * ROUNDS
    assert all(count == 1 for count in stored.values())
    # Each accepted message reached both participants; each is stored once.
    assert set(delivered) == set(stored)
    assert all(count == 2 for count in delivered.values())
    assert not refused & set(stored)
