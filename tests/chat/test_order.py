"""Both participants see a dialog's events in the order they were committed."""

from __future__ import annotations

import asyncio

import pytest

from .client import paired

pytestmark = pytest.mark.timeout(120)


def body(event: dict, content) -> dict:
    return {"chatUUID": event["chatUUID"], "senderUUID": event["senderUUID"], "content": content}


async def test_messages_sent_at_the_same_moment_arrive_in_one_order_for_both(chat):
    a, b = await chat(), await chat()
    await a.start()
    await b.start()
    ea, eb = await paired(a, b)
    for i in range(20):
        await asyncio.gather(
            a.send("/message", body(ea, f"a{i}"), receipt=False),
            b.send("/message", body(eb, f"b{i}"), receipt=False),
        )
        seen_by_a = [(await a.event_with(20))["content"] for _ in range(2)]
        seen_by_b = [(await b.event_with(20))["content"] for _ in range(2)]
        assert seen_by_a == seen_by_b, f"round {i}"
