"""SUBSCRIBE / UNSUBSCRIBE, pending events, and the MESSAGE frames that carry events."""

import json

import pytest
from django.test import override_settings

pytestmark = pytest.mark.django_db(transaction=True)

EVENT_KEYS = {"chatUUID", "senderUUID", "eventCode", "serviceContent", "content"}


async def refuse_start(client, receipt=None):
    """A /start with a body that is not JSON: the chat answers with event 11."""
    headers = [("destination", "/start")] + ([("receipt", receipt)] if receipt else [])
    await client.send("SEND", headers, "{not json")


def check_message(frame, subscription):
    assert frame.command == "MESSAGE"
    assert frame.get("destination") == "/user/dialog"
    assert frame.get("subscription") == subscription
    assert frame.get("message-id")
    assert frame.get("content-type") == "application/json"
    assert frame.get("content-length") == str(len(frame.body))
    event = json.loads(frame.body)
    assert set(event) == EVENT_KEYS
    return event


async def test_message_frames_carry_the_protocol_headers(stomp):
    client = await stomp(connect=True)
    await client.subscribe("my-sub")
    ids = set()
    for _ in range(3):
        await refuse_start(client)
        frame = await client.receive()
        event = check_message(frame, "my-sub")
        assert event["eventCode"] == 11
        assert event["chatUUID"] is event["senderUUID"] is event["content"] is None
        assert event["serviceContent"]["error"] == "invalid_json"
        ids.add(frame.get("message-id"))
    assert len(ids) == 3
    await client.expect_nothing()


async def test_message_ids_are_unique_and_content_length_counts_bytes(stomp):
    client = await stomp(connect=True)
    await client.subscribe("s")
    await client.send("SEND", [("destination", "/message")], json.dumps({"chatUUID": "Zoë €", "content": "hi"}))
    await refuse_start(client)
    first, second = await client.receive(), await client.receive()
    for frame in (first, second):
        check_message(frame, "s")
    assert first.get("message-id") != second.get("message-id")
    assert len(first.body) > len(first.body.decode())  # non-ASCII: bytes, not characters
    assert json.loads(first.body)["chatUUID"] == "Zoë €"  # echoed as sent


@pytest.mark.parametrize("version", ["1.0", "1.1", "1.2"])
async def test_subscription_ids_round_trip_through_header_escaping(stomp, version):
    client = await stomp()
    await client.connect(accept_version=version)
    sub_id, wire = {"1.0": ("a:b", "a:b"), "1.1": ("a:b\\x", "a\\cb\\\\x"), "1.2": ("a:b\\x", "a\\cb\\\\x")}[version]
    await client.send("SUBSCRIBE", [("id", wire), ("destination", "/user/dialog"), ("receipt", "r")])
    await client.expect_receipt("r")
    await refuse_start(client)
    check_message(await client.receive(), sub_id)


async def test_a_1_0_subscription_without_id_uses_the_destination(stomp):
    client = await stomp()
    await client.connect(accept_version=None)
    await client.send("SUBSCRIBE", [("destination", "/user/dialog"), ("receipt", "r")])
    await client.expect_receipt("r")
    await refuse_start(client)
    check_message(await client.receive(), "/user/dialog")
    await client.send("UNSUBSCRIBE", [("destination", "/user/dialog"), ("receipt", "u")])
    await client.expect_receipt("u")


@pytest.mark.parametrize("version", ["1.1", "1.2"])
async def test_subscribe_needs_an_id_in_1_1_and_later(stomp, version):
    client = await stomp()
    await client.connect(accept_version=version)
    await client.send("SUBSCRIBE", [("destination", "/user/dialog"), ("receipt", "r")])
    await client.expect_error("id", receipt_id="r")


async def test_subscribe_needs_a_destination(stomp):
    client = await stomp(connect=True)
    await client.send("SUBSCRIBE", [("id", "1")])
    await client.expect_error("destination")


async def test_a_duplicate_subscription_id_is_an_error(stomp):
    client = await stomp(connect=True)
    await client.subscribe("dup")
    await client.send("SUBSCRIBE", [("id", "dup"), ("destination", "/user/dialog"), ("receipt", "2")])
    await client.expect_error("dup", receipt_id="2")


@pytest.mark.parametrize("destination", ["/user/other", "/start", "/topic/dialog", "", "/user/dialog/"])
async def test_subscribe_to_an_unknown_destination_is_an_error(stomp, destination):
    client = await stomp(connect=True)
    await client.send("SUBSCRIBE", [("id", "1"), ("destination", destination)])
    await client.expect_error("destination")


async def test_the_subscription_limit(stomp):
    with override_settings(RANDOMCHAT_MAX_SUBSCRIPTIONS=2):
        client = await stomp(connect=True)
        await client.subscribe("1", receipt="r1")
        await client.subscribe("2", receipt="r2")
        await client.send("SUBSCRIBE", [("id", "3"), ("destination", "/user/dialog")])
        await client.expect_error("subscriptions")


async def test_every_subscription_to_events_gets_each_event(stomp):
    client = await stomp(connect=True)
    await client.subscribe("1", receipt="r1")
    await client.subscribe("2", receipt="r2")
    await refuse_start(client)
    first, second = await client.receive(), await client.receive()
    assert {first.get("subscription"), second.get("subscription")} == {"1", "2"}
    assert first.get("message-id") != second.get("message-id")
    assert first.body == second.body


async def test_unsubscribe_of_an_unknown_id_is_an_error(stomp):
    client = await stomp(connect=True)
    await client.send("UNSUBSCRIBE", [("id", "never"), ("receipt", "u")])
    await client.expect_error("never", receipt_id="u")


async def test_unsubscribe_needs_an_id(stomp):
    client = await stomp(connect=True)
    await client.subscribe("1")
    await client.send("UNSUBSCRIBE", [("destination", "/user/dialog")])
    await client.expect_error("id")


async def test_after_unsubscribe_no_message_arrives_on_that_id(stomp):
    client = await stomp(connect=True)
    await client.subscribe("old", receipt="s1")
    await client.send("UNSUBSCRIBE", [("id", "old"), ("receipt", "u")])
    await client.expect_receipt("u")
    await refuse_start(client, receipt="refused")
    await client.expect_receipt("refused")
    await client.expect_nothing()
    # The event waited for a subscription; it arrives on the new one, never on "old".
    await client.send("SUBSCRIBE", [("id", "new"), ("destination", "/user/dialog")])
    check_message(await client.receive(), "new")
    # The old id is free again.
    await client.subscribe("old", receipt="s2")


async def test_events_before_subscribe_are_delivered_when_it_subscribes(stomp):
    client = await stomp(connect=True)
    await refuse_start(client, receipt="1")
    await client.send("SEND", [("destination", "/message"), ("receipt", "2")], "[]")
    await client.expect_receipt("1")
    await client.expect_receipt("2")
    await client.expect_nothing()
    await client.send("SUBSCRIBE", [("id", "late"), ("destination", "/user/dialog"), ("receipt", "s")])
    codes = [check_message(await client.receive(), "late")["eventCode"] for _ in range(2)]
    assert codes == [11, 21]  # in the order they were produced
    await client.expect_receipt("s")  # the receipt follows the handling, delivery included
    await client.expect_nothing()


async def test_pending_events_are_bounded(stomp, caplog):
    with override_settings(RANDOMCHAT_MAX_PENDING_EVENTS=2):
        client = await stomp(connect=True)
        await refuse_start(client, receipt="1")
        await refuse_start(client, receipt="2")
        await client.expect_receipt("1")
        await client.expect_receipt("2")
        await refuse_start(client, receipt="3")
        await client.expect_error("SUBSCRIBE")
    rejected = [r for r in caplog.records if "stomp rejected" in r.getMessage()]
    assert len(rejected) == 1
