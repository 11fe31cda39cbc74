"""Every limit and rate limit reached, each with its exact response."""

import pytest
from django.test import override_settings

from dialogs.models import Message

from tests.support.inprocess import pair

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.timeout(60)]


async def test_frame_size_limit__error_then_close(chat):
    with override_settings(RANDOMCHAT_MAX_FRAME_SIZE=1024):
        client = await chat()
        await client.send("SEND", [("destination", "/message")], "x" * 1100)
        await client.expect_error("exceeds the size limit of 1024 bytes")


async def test_header_count_limit(chat):
    with override_settings(RANDOMCHAT_MAX_HEADERS=5):
        client = await chat()
        await client.send("SEND", [("destination", "/message")] + [(f"h{i}", "v") for i in range(6)], "{}")
        await client.expect_error("More than 5 headers")


async def test_header_line_limit(chat):
    with override_settings(RANDOMCHAT_MAX_HEADER_LINE=100):
        client = await chat()
        await client.send("SEND", [("destination", "/message"), ("x", "y" * 200)], "{}")
        await client.expect_error("Header line longer than 100 bytes")


async def test_pending_events_limit(stomp):
    with override_settings(RANDOMCHAT_MAX_PENDING_EVENTS=3):
        client = await stomp()
        await client.connect()
        for _ in range(3):
            await client.send_json("/start", "not json")
        await client.expect_nothing()
        await client.send_json("/start", "not json")
        await client.expect_error("More than 3 events wait for a SUBSCRIBE")


async def test_subscription_limit(chat):
    with override_settings(RANDOMCHAT_MAX_SUBSCRIPTIONS=2):
        client = await chat()  # holds one subscription
        await client.subscribe("second", receipt="s2")
        await client.send("SUBSCRIBE", [("id", "third"), ("destination", "/user/dialog")])
        await client.expect_error("More than 2 subscriptions")


async def test_transaction_limit(chat):
    with override_settings(RANDOMCHAT_MAX_TRANSACTIONS=2):
        client = await chat()
        await client.send("BEGIN", [("transaction", "t1")])
        await client.send("BEGIN", [("transaction", "t2")])
        await client.send("BEGIN", [("transaction", "t3")])
        await client.expect_error("More than 2 open transactions")


async def test_content_limit__4096_accepted_4097_refused_and_not_stored(chat):
    a, b = await chat(), await chat()
    event_a, _ = await pair(a, b)
    ids = {"chatUUID": event_a["chatUUID"], "senderUUID": event_a["senderUUID"]}
    await a.send_json("/message", {**ids, "content": "é" * 4096})
    assert (await a.event())["eventCode"] == 20
    assert (await b.event())["content"] == "é" * 4096
    await a.send_json("/message", {**ids, "content": "é" * 4097})
    refused = await a.event()
    assert refused == {
        **ids,
        "eventCode": 21,
        "content": None,
        "serviceContent": {
            "error": "content_too_long",
            "detail": "content is longer than 4096 characters",
            "field": "content",
        },
    }
    await b.expect_nothing()
    assert [len(m.content) async for m in Message.objects.all()] == [4096]


async def test_start_rate_limit__x1_rate_limited(chat):
    with override_settings(RANDOMCHAT_RATE_START=(0.001, 2)):
        client = await chat()
        # Two tokens: two /start that are refused for another reason still take them.
        await client.send_json("/start", {})
        await client.send_json("/start", {})
        assert [(await client.event())["serviceContent"]["error"] for _ in range(2)] == ["invalid_field"] * 2
        await client.send_json("/start", {"languageCode": "en"})
        event = await client.event()
        assert event == {
            "chatUUID": None,
            "senderUUID": None,
            "eventCode": 11,
            "serviceContent": {"error": "rate_limited", "detail": "Too many requests; slow down"},
            "content": None,
        }


async def test_message_rate_limit__x1_then_sustained_abuse_closes(chat):
    with override_settings(RANDOMCHAT_RATE_MESSAGE=(0.001, 3), RANDOMCHAT_RATE_ABUSE_LIMIT=4):
        a, b = await chat(), await chat()
        event_a, _ = await pair(a, b)
        ids = {"chatUUID": event_a["chatUUID"], "senderUUID": event_a["senderUUID"]}
        for i in range(3):
            await a.send_json("/message", {**ids, "content": f"m{i}"})
            assert (await a.event())["eventCode"] == 20
        for _ in range(3):
            await a.send_json("/message", {**ids, "content": "over"})
            event = await a.event()
            assert (event["eventCode"], event["serviceContent"]["error"]) == (21, "rate_limited")
        await a.send_json("/message", {**ids, "content": "over"})
        await a.expect_error("Rate limit exceeded 4 times in a row")
        assert sorted([m.content async for m in Message.objects.all()]) == ["m0", "m1", "m2"]
        await a.close()  # the transport reports the close, as daphne does
        # The partner learns that the dialog ended.
        for _ in range(3):
            assert (await b.event())["eventCode"] == 20
        left = await b.event()
        assert (left["eventCode"], left["serviceContent"]) == (30, {"reason": "disconnect"})
