"""clientMessageId: a /message resent with the same key is stored once and answered as the first."""

from __future__ import annotations

import pytest
from channels.db import database_sync_to_async

from dialogs.models import Message

from tests.support.inprocess import paired

pytestmark = pytest.mark.timeout(60)


def body(event: dict, content, **extra) -> dict:
    return {"chatUUID": event["chatUUID"], "senderUUID": event["senderUUID"], "content": content, **extra}


stored = database_sync_to_async(lambda content: Message.objects.filter(content=content).count())


async def dialog(chat):
    a, b = await chat(), await chat()
    await a.start()
    await b.start()
    ea, eb = await paired(a, b)
    return a, b, ea, eb


async def test_a_resend_with_the_same_key_is_stored_once_and_answered_again(chat):
    a, b, ea, _ = await dialog(chat)
    for _ in range(2):
        await a.send_json("/message", body(ea, "hello", clientMessageId="k-1"), receipt=True)
        again = await a.event_with(20)
        assert (again["content"], again["senderUUID"], again["chatUUID"]) == ("hello", ea["senderUUID"], ea["chatUUID"])
    assert (await b.event_with(20))["content"] == "hello"
    await b.expect_nothing(0.3)  # the partner got it once
    assert await stored("hello") == 1


async def test_different_keys_and_no_key_are_different_messages(chat):
    a, b, ea, _ = await dialog(chat)
    for extra in ({"clientMessageId": "k-1"}, {"clientMessageId": "k-2"}, {}, {"clientMessageId": None}):
        await a.send_json("/message", body(ea, "same text", **extra), receipt=True)
    assert [(await b.event_with(20))["content"] for _ in range(4)] == ["same text"] * 4
    assert await stored("same text") == 4


async def test_a_resend_after_the_dialog_ended_is_answered_as_the_first(chat):
    a, b, ea, eb = await dialog(chat)
    await a.send_json("/message", body(ea, "last words", clientMessageId="k-9"), receipt=True)
    await a.event_with(20)
    await b.stop(eb["chatUUID"], eb["senderUUID"])
    await a.event_with(30)
    await a.send_json("/message", body(ea, "last words", clientMessageId="k-9"), receipt=True)
    assert (await a.event_with(20))["content"] == "last words"
    assert await stored("last words") == 1


async def test_the_key_of_another_sender_is_its_own(chat):
    a, b, ea, eb = await dialog(chat)
    await a.send_json("/message", body(ea, "from a", clientMessageId="shared"), receipt=True)
    await b.send_json("/message", body(eb, "from b", clientMessageId="shared"), receipt=True)
    assert [(await b.event_with(20))["content"] for _ in range(2)] == ["from a", "from b"]


@pytest.mark.parametrize("key", ["", "x" * 65, 7, ["k"], "tab\there"])
async def test_an_invalid_key_is_refused(chat, key):
    a, _, ea, _ = await dialog(chat)
    await a.send_json("/message", body(ea, "text", clientMessageId=key), receipt=True)
    refused = await a.event_with(21)
    assert (refused["serviceContent"]["error"], refused["serviceContent"]["field"]) == ("invalid_field", "clientMessageId")
    assert await stored("text") == 0
