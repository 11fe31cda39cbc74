"""Every refusal of PROTOCOL.md §4 through the real consumer: 11, 21 and 31 with their slugs."""

from __future__ import annotations

import json
import uuid

import pytest
from channels.db import database_sync_to_async
from django.test import override_settings

from dialogs.models import Dialog, Message
from matching.models import PoolUser

from tests.support.inprocess import StompClient, pair


async def refusal(client: StompClient, code: int, slug: str, *, chat=None, sender=None, field=None) -> dict:
    """The next event is the refusal `slug` with code `code`; ids are echoed as sent."""
    event = await client.event()
    assert event["eventCode"] == code, event
    assert (event["chatUUID"], event["senderUUID"], event["content"]) == (chat, sender, None), event
    error = event["serviceContent"]
    assert error["error"] == slug, error
    assert isinstance(error["detail"], str) and error["detail"], error
    expected_keys = {"error", "detail", "field"} if field is not None else {"error", "detail"}
    assert set(error) == expected_keys, error
    assert error.get("field") == field
    return error


@database_sync_to_async
def stored() -> tuple[int, int, int, list]:
    statuses = sorted(PoolUser.objects.values_list("status", flat=True))
    return PoolUser.objects.count(), Dialog.objects.count(), Message.objects.count(), statuses


@pytest.fixture
async def in_dialog(chat):
    """Two paired clients and their 10 events."""
    a, b = await chat(), await chat()
    ea, eb = await pair(a, b)
    return a, b, ea, eb


# 11: /start refused


@pytest.mark.parametrize("body", [b"nope", b"", b"[1, 2]", b'{"languageCode": "en"', "[" * 5000, b"\xff"])
async def test_start__invalid_json(chat, body):
    a = await chat()
    await a.send_json("/start", body, receipt=True)
    await refusal(a, 11, "invalid_json")
    assert await stored() == (0, 0, 0, [])
    await a.start()  # the connection is still usable
    await a.expect_nothing(0.3)
    assert (await stored())[0] == 1


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({}, "languageCode"),
        ({"languageCode": "english"}, "languageCode"),
        ({"languageCode": "en", "name": ""}, "name"),
        ({"languageCode": "en", "name": "x" * 65}, "name"),
        ({"languageCode": "en", "name": "a\u0000b"}, "name"),
        ({"languageCode": "en", "name": "\ud800"}, "name"),
        ({"languageCode": "en", "userAttributes": {"gender": "m"}}, "userAttributes.gender"),
        ({"languageCode": "en", "userAttributes": {"age": True}}, "userAttributes.age"),
        ({"languageCode": "en", "userAttributes": {"age": 151}}, "userAttributes.age"),
        ({"languageCode": "en", "targetAttributes": {"age": {"min": 30, "max": 20}}}, "targetAttributes.age"),
        ({"languageCode": "en", "targetAttributes": {"age": {"max": -1}}}, "targetAttributes.age.max"),
        ({"languageCode": "en", "targetAttributes": []}, "targetAttributes"),
    ],
)
async def test_start__invalid_field(chat, body, field):
    a = await chat()
    await a.send_json("/start", json.dumps(body), receipt=True)  # json.dumps keeps a lone surrogate as \ud800
    await refusal(a, 11, "invalid_field", field=field)
    assert await stored() == (0, 0, 0, [])


async def test_start__already_waiting(chat):
    a = await chat()
    await a.start()
    before = await stored()
    await a.start(languageCode="de")
    await refusal(a, 11, "already_waiting")
    assert await stored() == before


async def test_start__already_in_dialog(in_dialog):
    a, b, ea, eb = in_dialog
    before = await stored()
    await a.start()
    await refusal(a, 11, "already_in_dialog")
    assert await stored() == before
    await b.message(eb["chatUUID"], eb["senderUUID"], "still here")
    assert (await a.event_with(20))["content"] == "still here"


@override_settings(RANDOMCHAT_RATE_START=(0.001, 2))
async def test_start__rate_limited(chat):
    a = await chat()
    await a.send_json("/start", b"nope", receipt=True)
    await refusal(a, 11, "invalid_json")
    await a.start()
    await a.start()
    await refusal(a, 11, "rate_limited")
    assert (await stored())[0] == 1


# 21: /message refused


async def test_message__invalid_json(in_dialog):
    a, b, ea, eb = in_dialog
    await a.send_json("/message", b"{oops", receipt=True)
    await refusal(a, 21, "invalid_json")
    await b.expect_nothing(0.3)


@pytest.mark.parametrize(
    ("chat_id", "sender", "content", "field"),
    [
        ("not-a-uuid", "mine", "hi", "chatUUID"),
        (None, "mine", "hi", "chatUUID"),
        ("mine", "bad", "hi", "senderUUID"),
        ("mine", None, "hi", "senderUUID"),
        ("mine", "mine", None, "content"),
        ("mine", "mine", 42, "content"),
        ("mine", "mine", ["hi"], "content"),
        ("mine", "mine", "nul\u0000inside", "content"),
        ("mine", "mine", "lone \udc00", "content"),
    ],
)
async def test_message__invalid_field(in_dialog, chat_id, sender, content, field):
    a, b, ea, eb = in_dialog
    chat_id = ea["chatUUID"] if chat_id == "mine" else chat_id
    sender = ea["senderUUID"] if sender == "mine" else sender
    await a.message(chat_id, sender, content)
    await refusal(a, 21, "invalid_field", chat=chat_id, sender=sender, field=field)
    await b.expect_nothing(0.3)
    assert (await stored())[2] == 0


async def test_message__unknown_chat(in_dialog):
    a, b, ea, eb = in_dialog
    chat_id = str(uuid.uuid4()).upper()  # echoed exactly as sent
    await a.message(chat_id, ea["senderUUID"], "hi")
    await refusal(a, 21, "unknown_chat", chat=chat_id, sender=ea["senderUUID"], field="chatUUID")


async def test_message__not_participant__speaking_as_the_partner(in_dialog):
    a, b, ea, eb = in_dialog
    await a.message(ea["chatUUID"], eb["senderUUID"], "I am b")
    await refusal(a, 21, "not_participant", chat=ea["chatUUID"], sender=eb["senderUUID"], field="senderUUID")
    await b.expect_nothing(0.3)
    assert (await stored())[2] == 0


async def test_message__not_participant__another_connections_user(in_dialog, chat):
    a, b, ea, eb = in_dialog
    c, d = await chat(), await chat()
    ec, _ = await pair(c, d)
    # c's own, valid senderUUID, into a's dialog.
    await c.message(ea["chatUUID"], ec["senderUUID"], "intruder")
    await refusal(c, 21, "not_participant", chat=ea["chatUUID"], sender=ec["senderUUID"], field="senderUUID")
    # c knows a's ids: still not its user.
    await c.message(ea["chatUUID"], ea["senderUUID"], "I am a")
    await refusal(c, 21, "not_participant", chat=ea["chatUUID"], sender=ea["senderUUID"], field="senderUUID")
    # a connection with no user at all.
    e = await chat()
    await e.message(ea["chatUUID"], ea["senderUUID"], "I am a")
    await refusal(e, 21, "not_participant", chat=ea["chatUUID"], sender=ea["senderUUID"], field="senderUUID")
    await a.expect_nothing(0.3)
    await b.expect_nothing(0.3)
    assert (await stored())[2] == 0


async def test_message__dialog_ended(in_dialog):
    a, b, ea, eb = in_dialog
    await b.stop(eb["chatUUID"], eb["senderUUID"])
    await a.event_with(30)
    await b.event_with(30)
    await a.message(ea["chatUUID"], ea["senderUUID"], "too late")
    await refusal(a, 21, "dialog_ended", chat=ea["chatUUID"], sender=ea["senderUUID"], field="chatUUID")
    await b.expect_nothing(0.3)
    assert (await stored())[2] == 0


async def test_message__empty_content(in_dialog):
    a, b, ea, eb = in_dialog
    await a.message(ea["chatUUID"], ea["senderUUID"], "")
    await refusal(a, 21, "empty_content", chat=ea["chatUUID"], sender=ea["senderUUID"], field="content")
    await b.expect_nothing(0.3)


async def test_message__content_length_limit(in_dialog):
    a, b, ea, eb = in_dialog
    await a.message(ea["chatUUID"], ea["senderUUID"], "ж" * 4096)
    assert (await b.event_with(20))["content"] == "ж" * 4096
    assert (await a.event_with(20))["content"] == "ж" * 4096
    await a.message(ea["chatUUID"], ea["senderUUID"], "ж" * 4097)
    await refusal(a, 21, "content_too_long", chat=ea["chatUUID"], sender=ea["senderUUID"], field="content")
    await b.expect_nothing(0.3)
    assert (await stored())[2] == 1


async def flood(chat) -> tuple[StompClient, StompClient, dict]:
    """A pair whose first client has used up its message rate (2 messages, no refill)."""
    a, b = await chat(), await chat()
    ea, _ = await pair(a, b)
    for text in ("one", "two"):
        await a.message(ea["chatUUID"], ea["senderUUID"], text)
        await a.event_with(20)
        await b.event_with(20)
    await a.message(ea["chatUUID"], ea["senderUUID"], "three")
    return a, b, ea


@override_settings(RANDOMCHAT_RATE_MESSAGE=(0.001, 2))
async def test_message__rate_limited(chat):
    a, b, ea = await flood(chat)
    event = await a.event()
    assert (event["eventCode"], event["serviceContent"]["error"]) == (21, "rate_limited")
    assert event["serviceContent"]["detail"]
    await b.expect_nothing(0.3)
    assert (await stored())[2] == 2


@override_settings(RANDOMCHAT_RATE_MESSAGE=(0.001, 2))
async def test_message__rate_limited_echoes_ids(chat):
    a, b, ea = await flood(chat)
    await refusal(a, 21, "rate_limited", chat=ea["chatUUID"], sender=ea["senderUUID"])


# 31: /stop refused


async def test_stop__not_in_dialog(chat):
    a = await chat()
    await a.send_json("/stop", {}, receipt=True)
    await refusal(a, 31, "not_in_dialog")
    await a.stop()
    await refusal(a, 31, "not_in_dialog")


async def test_stop__invalid_json(in_dialog):
    a, b, ea, eb = in_dialog
    await a.send_json("/stop", b"stop!", receipt=True)
    await refusal(a, 31, "invalid_json")
    await b.expect_nothing(0.3)


async def test_stop__invalid_field(in_dialog):
    a, b, ea, eb = in_dialog
    await a.stop("nope", ea["senderUUID"])
    await refusal(a, 31, "invalid_field", chat="nope", sender=ea["senderUUID"], field="chatUUID")
    await a.stop(ea["chatUUID"], 12)  # not a string: nothing to echo
    await refusal(a, 31, "invalid_field", chat=ea["chatUUID"], field="senderUUID")
    await a.send_json("/stop", {}, receipt=True)  # in a dialog: the chatUUID is missing, not the dialog
    await refusal(a, 31, "invalid_field", field="chatUUID")
    await b.expect_nothing(0.3)


async def test_stop__unknown_chat(in_dialog):
    a, b, ea, eb = in_dialog
    chat_id = str(uuid.uuid4())
    await a.stop(chat_id, ea["senderUUID"])
    await refusal(a, 31, "unknown_chat", chat=chat_id, sender=ea["senderUUID"], field="chatUUID")


async def test_stop__not_participant(in_dialog, chat):
    a, b, ea, eb = in_dialog
    await a.stop(ea["chatUUID"], eb["senderUUID"])  # a ends the dialog as b
    await refusal(a, 31, "not_participant", chat=ea["chatUUID"], sender=eb["senderUUID"], field="senderUUID")
    c = await chat()
    await c.stop(ea["chatUUID"], ea["senderUUID"])
    await refusal(c, 31, "not_participant", chat=ea["chatUUID"], sender=ea["senderUUID"], field="senderUUID")
    await b.expect_nothing(0.3)
    assert (await stored())[1:3] == (1, 0)
    assert (await database_sync_to_async(Dialog.objects.get)()).status == "active"


async def test_stop__dialog_ended(in_dialog):
    a, b, ea, eb = in_dialog
    await a.stop(ea["chatUUID"], ea["senderUUID"])
    await a.event_with(30)
    await b.event_with(30)
    for client, event in ((a, ea), (b, eb)):
        await client.stop(event["chatUUID"], event["senderUUID"])
        await refusal(client, 31, "dialog_ended", chat=event["chatUUID"], sender=event["senderUUID"],
                      field="chatUUID")


async def test_message__lone_surrogate_in_ids_is_echoed(in_dialog):
    a, b, ea, eb = in_dialog
    await a.send_json("/message", b'{"chatUUID": "\\ud800", "senderUUID": "x", "content": "hi"}', receipt=True)
    await refusal(a, 21, "invalid_field", chat="\ud800", sender="x", field="chatUUID")
