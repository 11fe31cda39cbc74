"""The per-connection limit on every inbound frame, heart-beats included."""

import pytest
from django.test import override_settings

from randomchat.metrics import REJECTED_FRAMES

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.timeout(60)]


async def test_frame_rate_limit__error_then_close(chat):
    with override_settings(RANDOMCHAT_RATE_FRAME=(0.001, 6)):
        before = REJECTED_FRAMES.labels("frame_rate_limited")._value.get()
        client = await chat()  # CONNECT and SUBSCRIBE: 2 frames
        await client.send_bytes(b"\n")  # a heart-beat is a frame too: 3
        await client.send("ACK", [("id", "1")])  # 4
        await client.send("UNSUBSCRIBE", [("id", "sub-0"), ("receipt", "u")])  # 5
        await client.expect_receipt("u")
        await client.send("SUBSCRIBE", [("id", "s"), ("destination", "/user/dialog"), ("receipt", "s")])  # 6
        await client.expect_receipt("s")
        await client.send("SUBSCRIBE", [("id", "t"), ("destination", "/user/dialog"), ("receipt", "t")])  # 7
        message = "Frame rate limit exceeded (more than 6 frames at once or 0.001 per second)"
        error = await client.expect_error(message, content_type="text/plain")
        assert error.get("message") == message
        assert error.body == message.encode()
        assert error.get("receipt-id") is None  # the frame was not handled
        assert REJECTED_FRAMES.labels("frame_rate_limited")._value.get() == before + 1


async def test_frame_rate_limit__heartbeats_in_one_message_count_one_each(chat):
    with override_settings(RANDOMCHAT_RATE_FRAME=(0.001, 10)):
        client = await chat()
        await client.send_bytes(b"\n" * 8)  # 2 + 8: the burst, all spent
        await client.expect_nothing()
        await client.send_bytes(b"\r\n")
        await client.expect_error("Frame rate limit exceeded (more than 10 frames at once")


async def test_frame_rate_limit__frames_after_the_limit_in_the_same_message_are_not_handled(chat):
    with override_settings(RANDOMCHAT_RATE_FRAME=(0.001, 3)):
        client = await chat()
        ack = b"ACK\nid:1\nreceipt:%d\n\n\x00"
        await client.send_bytes(ack % 1 + ack % 2 + ack % 3)
        await client.expect_receipt("1")
        await client.expect_error("Frame rate limit exceeded")


async def test_frame_rate_limit__refills_at_its_rate(chat):
    with override_settings(RANDOMCHAT_RATE_FRAME=(20, 3)):
        client = await chat()  # 2 of 3 spent
        for i in range(5):  # one frame every 0.1 s: 2 tokens come back in between
            await client.send("ACK", [("id", "1"), ("receipt", str(i))])
            await client.expect_receipt(str(i))
            await client.expect_nothing(0.1)


async def test_default_frame_limit__a_polite_burst_passes(chat):
    """A legitimate client: bursts of about 30 frames, heart-beats every second or more."""
    client = await chat()
    for i in range(40):
        await client.send("ACK", [("id", "1"), ("receipt", str(i))])
        await client.send_bytes(b"\n")
    for i in range(40):
        await client.expect_receipt(str(i))
    await client.expect_nothing()
