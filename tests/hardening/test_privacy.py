"""Message contents never reach the logs; no IP address is stored."""

import logging

import pytest

from dialogs.models import Dialog, Message
from matching.models import PoolUser

from tests.support.inprocess import pair

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.timeout(60)]

SECRET = "my-secret-words-4711"


async def test_contents_never_logged(chat, caplog):
    caplog.set_level(logging.DEBUG)
    a, b = await chat(), await chat()
    event_a, _ = await pair(a, b)
    ids = {"chatUUID": event_a["chatUUID"], "senderUUID": event_a["senderUUID"]}
    await a.send_json("/message", {**ids, "content": SECRET})
    assert (await b.event())["content"] == SECRET
    await a.send_json("/message", {**ids, "content": SECRET * 300})  # refused: too long
    assert sorted([(await a.event())["eventCode"] for _ in range(2)]) == [20, 21]
    await a.send("SEND", [("destination", "/nowhere")], SECRET)  # a protocol error
    await a.expect_error("Unknown destination")
    await a.close()
    await b.event()
    assert caplog.records, "the flow logs something"
    assert not [r for r in caplog.records if SECRET in r.getMessage()]


def test_no_ip_address_fields():
    fields = {f.name for model in (PoolUser, Dialog, Message) for f in model._meta.get_fields()}
    assert not [name for name in fields if "ip" in name.split("_") or "addr" in name]


async def test_one_structured_line_per_connect_pair_end_refusal_and_protocol_error(chat, caplog):
    caplog.set_level(logging.INFO)
    a, b = await chat(), await chat()
    event_a, _ = await pair(a, b)
    ids = {"chatUUID": event_a["chatUUID"], "senderUUID": event_a["senderUUID"]}
    await a.send_json("/message", {**ids, "content": ""})
    await a.event()
    await a.send_json("/stop", {**ids, "content": None})
    await a.event(), await b.event()
    await b.send("FOO")
    await b.expect_error("Unknown command")
    lines = [r.getMessage() for r in caplog.records]

    def count(prefix):
        return len([line for line in lines if line.startswith(prefix)])

    assert count("event=connect session=") == 2
    assert count("event=pair session=") == 2
    assert count(f"event=dialog_end chat={ids['chatUUID']} reason=stop ended_by={ids['senderUUID']}") == 1
    assert count("event=refusal session=") == 1
    assert count("stomp rejected session=") == 1
