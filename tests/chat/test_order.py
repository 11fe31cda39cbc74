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


async def test_no_message_after_the_30_when_a_message_and_a_stop_cross(chat):
    for i in range(10):
        a, b = await chat(), await chat()
        await a.start()
        await b.start()
        ea, eb = await paired(a, b)
        await asyncio.gather(
            a.send("/message", body(ea, f"a{i}"), receipt=False),
            b.send("/stop", body(eb, None), receipt=False),
        )
        for client in (a, b):
            codes = []
            while 30 not in codes:
                codes.append((await client.event())["eventCode"])
            await client.nothing(0.2)  # no 20 of this dialog after its 30
            assert codes in ([30], [20, 30], [21, 30], [30, 21]), (i, codes)
        await a.close()
        await b.close()
