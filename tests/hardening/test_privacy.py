"""Message contents never reach the logs; no IP address is stored."""

import logging

import pytest

from dialogs.models import Dialog, Message
from matching.models import PoolUser

from .conftest import pair

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.timeout(60)]

SECRET = "my-secret-words-4711"


async def test_contents_never_logged(chat_client, caplog):
    caplog.set_level(logging.DEBUG)
    a, event_a, b, _ = await pair(chat_client)
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
