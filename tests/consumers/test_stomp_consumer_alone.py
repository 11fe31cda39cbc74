"""StompConsumer without the chat: the protocol layer knows nothing but its subclass's tables."""

import logging

import pytest

from randomchat.stomp.frames import Frame
from randomchat.stomp_consumer import StompConsumer


class EchoConsumer(StompConsumer):
    destinations = {"/echo": "send_echo", "/boom": "send_boom"}
    event_destination = "/user/echo"

    async def send_echo(self, frame: Frame) -> None:
        await self.deliver({"body": frame.body})

    async def send_boom(self, frame: Frame) -> None:
        raise RuntimeError("a bug in a handler")


APP = EchoConsumer.as_asgi()


async def test_destinations_and_events_come_from_the_subclass(stomp):
    client = await stomp(app=APP, connect=True)
    await client.send("SUBSCRIBE", [("id", "e"), ("destination", "/user/echo"), ("receipt", "s")])
    await client.expect_receipt("s")
    await client.send("SEND", [("destination", "/app/echo"), ("receipt", "1")], "héllo")
    message = await client.expect("MESSAGE", destination="/user/echo", subscription="e")
    assert message.body == "héllo".encode()
    assert message.get("content-length") == str(len("héllo".encode()))
    await client.expect_receipt("1")


async def test_the_chat_destinations_are_unknown_here(stomp):
    client = await stomp(app=APP, connect=True)
    await client.send("SUBSCRIBE", [("id", "e"), ("destination", "/user/dialog")])
    await client.expect_error("destination")


async def test_a_failing_handler_gets_an_error_frame_not_a_crash(stomp, caplog):
    caplog.set_level(logging.INFO)
    other = await stomp(app=APP, connect=True)
    client = await stomp(app=APP, connect=True)
    await client.send("SEND", [("destination", "/boom"), ("receipt", "b")])
    error = await client.expect_error("internal", receipt_id="b")
    assert "a bug" not in error.get("message") and b"a bug" not in error.body  # no internals leak
    failures = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert len(failures) == 1 and failures[0].exc_info is not None  # the bug is logged with its traceback
    await other.send("ACK", [("id", "1"), ("receipt", "fine")])
    await other.expect_receipt("fine")
