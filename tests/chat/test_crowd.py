"""Many /start at once through real consumers: everybody is paired exactly once."""

from __future__ import annotations

import asyncio
import os
import time
from collections import Counter

import pytest
from channels.db import database_sync_to_async
from django.db.models import Q

from dialogs.models import Dialog
from matching.models import PoolUser

from tests.support.inprocess import StompClient

CROWD = int(os.environ.get("RANDOMCHAT_TEST_CROWD", "200"))


@database_sync_to_async
def dialog_members() -> list[tuple[str, str]]:
    return [(str(a), str(b)) for a, b in Dialog.objects.values_list("first_id", "second_id")]


@database_sync_to_async
def statuses() -> Counter:
    return Counter(PoolUser.objects.values_list("status", flat=True))


async def test_crowd_start_at_once__everybody_paired_once(chat):
    clients: list[StompClient] = list(await asyncio.gather(*(chat() for _ in range(CROWD))))
    began = time.monotonic()
    await asyncio.gather(*(c.start(timeout=120) for c in clients))
    events = await asyncio.gather(*(c.event_with(10, timeout=120) for c in clients))
    elapsed = time.monotonic() - began

    members = await dialog_members()
    assert len(members) == CROWD // 2
    in_dialogs = Counter(user for pair in members for user in pair)
    assert len(in_dialogs) == CROWD and set(in_dialogs.values()) == {1}
    assert await statuses() == Counter({"paired": CROWD})
    # Each client got the 10 of its own dialog, with its own senderUUID, and so did its partner.
    by_chat: dict[str, set[str]] = {}
    for event in events:
        by_chat.setdefault(event["chatUUID"], set()).add(event["senderUUID"])
    assert {frozenset(v) for v in by_chat.values()} == {frozenset(pair) for pair in members}
    await asyncio.gather(*(c.expect_nothing(0.2) for c in clients))
    print(f"{CROWD} clients paired in {elapsed:.1f}s")
