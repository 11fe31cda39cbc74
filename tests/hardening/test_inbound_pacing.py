"""Inbound pacing (randomchat/inbound.py): a connection over its budget is not read for a while."""

from types import SimpleNamespace

import pytest
from django.test import override_settings
from twisted.internet.task import Clock

from randomchat.inbound import QUEUE_POLL, Pacer
from randomchat.ratelimit import TokenBucket


class Transport:
    def __init__(self):
        self.reading = True
        self.calls = []

    def pauseProducing(self):
        self.reading = False
        self.calls.append("pause")

    def resumeProducing(self):
        self.reading = True
        self.calls.append("resume")


class Queue:
    def __init__(self, size=0):
        self.size = size

    def qsize(self):
        return self.size


def protocol(queue_size=0):
    """What the pacer uses of daphne's WebSocketProtocol; consumeData only counts its calls."""
    proto = SimpleNamespace(STATE_OPEN=1, STATE_CLOSED=3, state=1, transport=Transport(),
                            application_queue=Queue(queue_size), consumed=0)

    def consume():
        proto.consumed += 1

    proto.consumeData = consume
    return proto


def paced(queue_size=0) -> tuple[Clock, SimpleNamespace, Pacer]:
    """A fake clock, a fake protocol, and the Pacer between them."""
    clock, proto = Clock(), protocol(queue_size)
    return clock, proto, Pacer(proto, clock.callLater)


def test_budget__burst_free_then_debt_is_the_pause():
    budget = TokenBucket(10, 5)
    assert [budget.spend(1, 0.0) for _ in range(5)] == [0.0] * 5
    assert budget.spend(1, 0.0) == pytest.approx(0.1)
    assert budget.spend(1, 0.0) == pytest.approx(0.2)
    assert budget.spend(1, 0.3) == 0.0  # refilled 3, paid the debt of 2 and this one
    assert budget.spend(4, 10.0) == 0.0  # full again (5), never more
    assert budget.spend(2, 10.0) == pytest.approx(0.1)


@override_settings(RANDOMCHAT_INBOUND_FRAMES=(10, 5), RANDOMCHAT_INBOUND_BYTES=(1e9, 1e9), RANDOMCHAT_INBOUND_QUEUE=32)
def test_pacer__frames_past_the_burst_pause_reading_until_refilled():
    clock, proto, pacer = paced()
    for _ in range(5):
        pacer.frame_read(10, 0.0)
    assert proto.transport.calls == [] and not pacer.paused
    pacer.frame_read(10, 0.0)
    assert pacer.paused and proto.transport.calls == ["pause"]
    clock.advance(0.099)
    assert pacer.paused
    clock.advance(0.002)
    # What the last read left is parsed first; nothing paused again, so reading goes on.
    assert not pacer.paused and proto.consumed == 1 and proto.transport.calls == ["pause", "resume"]
    assert proto.transport.calls.count("pause") == 1


@override_settings(RANDOMCHAT_INBOUND_FRAMES=(1e9, 1e9), RANDOMCHAT_INBOUND_BYTES=(1024, 4096), RANDOMCHAT_INBOUND_QUEUE=32)
def test_pacer__bytes_budget_one_large_frame_pays_its_debt():
    clock, proto, pacer = paced()
    pacer.frame_read(4096, 0.0)
    assert not pacer.paused
    pacer.frame_read(10 * 1024, 0.0)  # let in whole, then 10 s without reading
    assert pacer.paused
    clock.advance(9.9)
    assert proto.transport.calls == ["pause"]
    clock.advance(0.2)
    assert proto.transport.calls == ["pause", "resume"]


@override_settings(RANDOMCHAT_INBOUND_FRAMES=(1e9, 1e9), RANDOMCHAT_INBOUND_BYTES=(1e9, 1e9), RANDOMCHAT_INBOUND_QUEUE=8)
def test_pacer__long_application_queue_pauses_until_half_drained():
    clock, proto, pacer = paced(queue_size=7)
    pacer.frame_read(10, 0.0)
    assert not pacer.paused
    proto.application_queue.size = 8
    pacer.frame_read(10, 0.0)
    assert pacer.paused
    proto.application_queue.size = 4
    clock.advance(QUEUE_POLL)
    assert pacer.paused and proto.consumed == 0  # not below half yet: look again later
    proto.application_queue.size = 3
    clock.advance(QUEUE_POLL)
    assert not pacer.paused and proto.consumed == 1 and proto.transport.calls == ["pause", "resume"]


@override_settings(RANDOMCHAT_INBOUND_FRAMES=(10, 1), RANDOMCHAT_INBOUND_BYTES=(1e9, 1e9), RANDOMCHAT_INBOUND_QUEUE=32)
def test_pacer__pauses_again_when_the_buffered_rest_is_over_budget():
    clock, proto, pacer = paced()

    def consume():  # the rest of the last read holds two frames: the second pauses again
        proto.consumed += 1
        pacer.frame_read(10, 0.1)
        pacer.frame_read(10, 0.1)

    proto.consumeData = consume
    pacer.frame_read(10, 0.0)
    pacer.frame_read(10, 0.0)
    clock.advance(0.1)
    assert pacer.paused and "resume" not in proto.transport.calls  # never read in between
    assert proto.transport.calls == ["pause", "pause"]  # paused twice, never resumed


@override_settings(RANDOMCHAT_INBOUND_FRAMES=(10, 1), RANDOMCHAT_INBOUND_BYTES=(1e9, 1e9), RANDOMCHAT_INBOUND_QUEUE=32)
def test_pacer__closed_connection_is_not_resumed():
    clock, proto, pacer = paced()
    pacer.frame_read(10, 0.0)
    pacer.frame_read(10, 0.0)
    proto.state = proto.STATE_CLOSED
    clock.advance(1)
    assert proto.consumed == 0 and proto.transport.calls == ["pause"]
