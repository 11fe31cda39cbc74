"""200 compatible clients start at once: exactly 100 dialogs, everybody in exactly one."""

from __future__ import annotations

import asyncio
import time
from collections import defaultdict

import pytest
from channels.db import database_sync_to_async

from dialogs.models import Dialog
from matching.models import PoolUser

from tests.support.wire import WireClient

pytestmark = pytest.mark.django_db(transaction=True)

CROWD = 200
TIME_LIMIT = 60.0  # seconds for connecting, pairing and settling
SETTLE = 1.0  # quiet time after the last pairing in which no second pairing may show up


async def _connect(url: str, index: int) -> WireClient:
    return await WireClient(url).open(timeout=30)


async def test_crowd_of_200_pairs_into_100_dialogs(daphne_server):
    names = [f"crowd-{index:03d}" for index in range(CROWD)]
    began = time.monotonic()
    async with asyncio.timeout(TIME_LIMIT):
        clients = await asyncio.gather(*(_connect(daphne_server.ws_url, i) for i in range(CROWD)))
        connected = time.monotonic()
        # Everybody compatible: one language, no targets.
        await asyncio.gather(
            *(client.send_json("/start", {"name": name, "languageCode": "en"}) for client, name in zip(clients, names))
        )
        paired = [event.body for event in await asyncio.gather(*(client.event(timeout=TIME_LIMIT) for client in clients))]
        done = time.monotonic()
        # Nobody gets a second pairing (or anything else) afterwards.
        await asyncio.gather(*(client.assert_quiet(SETTLE) for client in clients))
    print(f"{CROWD} clients: connected in {connected - began:.1f} s, paired in {done - connected:.1f} s")

    assert all(event["eventCode"] == 10 for event in paired), [e for e in paired if e["eventCode"] != 10][:3]
    senders = [event["senderUUID"] for event in paired]
    assert len(set(senders)) == CROWD, "a senderUUID was handed out twice"

    by_chat: dict[str, list[int]] = defaultdict(list)
    for index, event in enumerate(paired):
        by_chat[event["chatUUID"]].append(index)
    assert len(by_chat) == CROWD // 2
    assert all(len(members) == 2 for members in by_chat.values()), {
        chat: members for chat, members in by_chat.items() if len(members) != 2
    }
    for first, second in by_chat.values():
        # Symmetric: each one's partner is the other one, never itself.
        assert paired[first]["serviceContent"]["partner"]["name"] == names[second]
        assert paired[second]["serviceContent"]["partner"]["name"] == names[first]

    def stored() -> tuple[set, set, dict]:
        active = Dialog.objects.filter(status=Dialog.Status.ACTIVE)
        pairs = {str(d.pk): {str(d.first_id), str(d.second_id)} for d in active}
        users = dict(PoolUser.objects.values_list("pk", "name"))
        return set(pairs), pairs, {str(pk): name for pk, name in users.items()}

    chats, pairs, users = await database_sync_to_async(stored)()
    assert chats == set(by_chat)
    participants = set().union(*pairs.values())
    assert participants == set(senders) and len(participants) == CROWD
    for chat, (first, second) in by_chat.items():
        assert pairs[chat] == {senders[first], senders[second]}
    assert {users[sender] for sender in senders} == set(names)
    assert len(users) == CROWD, "more users stored than clients started"
    statuses = await database_sync_to_async(lambda: set(PoolUser.objects.values_list("status", flat=True)))()
    assert statuses == {PoolUser.Status.PAIRED}

    await asyncio.gather(*(client.close() for client in clients))
