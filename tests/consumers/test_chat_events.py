"""End to end through the chat: events 10 and 20 as MESSAGE frames on /user/dialog."""

import json

import pytest

from .test_subscriptions import check_message

pytestmark = pytest.mark.django_db(transaction=True)


async def test_pairing_and_a_message_arrive_as_message_frames(stomp):
    ann = await stomp(connect=True)
    bob = await stomp(subprotocols=["v11.stomp"])
    await bob.connect(accept_version="1.1")
    await ann.subscribe("ann-sub")
    await bob.subscribe("bob-sub")
    await ann.send("SEND", [("destination", "/start"), ("receipt", "a")], json.dumps({"name": "Ann", "languageCode": "it"}))
    await ann.expect_receipt("a")
    await bob.send("SEND", [("destination", "/app/start")], json.dumps({"name": "Bob", "languageCode": "IT"}))
    ann_paired = check_message(await ann.receive(timeout=5), "ann-sub")
    bob_paired = check_message(await bob.receive(timeout=5), "bob-sub")
    assert ann_paired["eventCode"] == bob_paired["eventCode"] == 10
    assert ann_paired["chatUUID"] == bob_paired["chatUUID"]
    assert ann_paired["serviceContent"]["partner"]["name"] == "Bob"
    text = "Ciao, Zoë: 5 € \\n"
    await ann.send(
        "SEND",
        [("destination", "/message"), ("receipt", "m")],
        json.dumps({"chatUUID": ann_paired["chatUUID"], "senderUUID": ann_paired["senderUUID"], "content": text},
                   ensure_ascii=False),
    )
    frames = {}
    for name, client, sub in (("ann", ann, "ann-sub"), ("bob", bob, "bob-sub")):
        while True:
            frame = await client.receive(timeout=5)
            if frame.command == "MESSAGE":
                break
            assert frame.command == "RECEIPT" and frame.get("receipt-id") == "m"
        frames[name] = frame
        event = check_message(frame, sub)
        assert event["eventCode"] == 20 and event["content"] == text
        assert event["senderUUID"] == ann_paired["senderUUID"]
    assert frames["ann"].get("message-id") != frames["bob"].get("message-id")
    assert int(frames["bob"].get("content-length")) == len(frames["bob"].body) > len(frames["bob"].body.decode())
