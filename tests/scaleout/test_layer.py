"""randomchat.layers.RedisChannelLayer: local channels skip Redis; others still go through it.

Two layer instances on the test's Redis stand for two processes (each has its own client
prefix and local consumers, as a daphne has).
"""

from __future__ import annotations

import asyncio

import pytest
from channels.exceptions import ChannelFull
from django.conf import settings

from randomchat.layers import RedisChannelLayer
from chat.notify import with_retry

from . import services

pytestmark = pytest.mark.timeout(60)


@pytest.fixture
async def layers_with(services_ready):
    """`layers_with(**config)` -> two layers on the test's Redis, as two processes would have,
    with `config` over the settings' layer config; all are flushed and closed after the test."""
    made: list[RedisChannelLayer] = []

    def make(**config) -> list[RedisChannelLayer]:
        pair = [RedisChannelLayer(**{**settings.CHANNEL_LAYERS["default"]["CONFIG"], **config}) for _ in range(2)]
        made.extend(pair)
        return pair

    yield make
    for layer in made:
        await layer.flush()
        await layer.close_pools()


@pytest.fixture
def layers(layers_with):
    return layers_with()


async def consumer(layer, channel) -> asyncio.Task:
    """A receive() waiting, as a consumer's is between messages."""
    receiving = asyncio.ensure_future(layer.receive(channel))
    await asyncio.sleep(0.1)
    return receiving


async def stop(receiving: asyncio.Task) -> None:
    """What channels does when a consumer stops: cancel its receive."""
    receiving.cancel()
    with pytest.raises(asyncio.CancelledError):
        await receiving


async def redis_keys(layer) -> list:
    """This layer's keys (the daphnes of other tests leave theirs to expire)."""
    async with layer.connection(0) as connection:
        return await connection.keys(f"{layer.prefix}*{layer.client_prefix}*")


async def test_local_send__never_touches_redis_and_keeps_order(layers, monkeypatch):
    local, _ = layers
    channel = await local.new_channel()
    receiving = await consumer(local, channel)

    async def through_redis(*args):
        raise AssertionError("a local message went to Redis")

    monkeypatch.setattr(local, "send_to_redis", through_redis)
    await local.send(channel, {"type": "chat.event", "n": 1})
    assert (await asyncio.wait_for(receiving, 5))["n"] == 1
    for n in range(2, 12):  # sent while the consumer is busy: queued locally, in order
        await local.send(channel, {"type": "chat.event", "n": n})
    assert [(await local.receive(channel))["n"] for _ in range(10)] == list(range(2, 12))
    assert await redis_keys(local) == []
    await stop(asyncio.ensure_future(local.receive(channel)))


async def test_send_from_another_process__reaches_the_consumer_through_redis_in_order(layers):
    local, remote = layers
    channel = await local.new_channel()
    receiving = await consumer(local, channel)
    await remote.send(channel, {"type": "chat.event", "n": 0})
    assert (await asyncio.wait_for(receiving, 5))["n"] == 0
    # More than one read takes (receive_batch), sent while the consumer is busy.
    for n in range(1, 251):
        await remote.send(channel, {"type": "chat.event", "n": n})
    got = [(await asyncio.wait_for(local.receive(channel), 5))["n"] for _ in range(250)]
    assert got == list(range(1, 251))
    await stop(asyncio.ensure_future(local.receive(channel)))


async def test_sends_of_one_moment__share_one_pipeline_and_each_reaches_its_consumer(layers, monkeypatch):
    local, remote = layers
    channels = [await local.new_channel() for _ in range(50)]
    receiving = [await consumer(local, channel) for channel in channels]
    pipelines = []
    client = remote.connection(0)  # one Redis: every channel's
    pipeline = client.pipeline
    monkeypatch.setattr(client, "pipeline", lambda *a, **k: pipelines.append(1) or pipeline(*a, **k))
    # As a pairing batch's connections do: each sends its partner's 10, all at once.
    await asyncio.gather(*(remote.send(channel, {"type": "chat.event", "n": n}) for n, channel in enumerate(channels)))
    assert len(pipelines) == 1
    assert [(await asyncio.wait_for(r, 5))["n"] for r in receiving] == list(range(50))
    # Over capacity: only that sender hears of it.
    full = await remote.new_channel()
    sends = [remote.send(full, {"type": "chat.event", "n": n}) for n in range(settings.CHANNEL_LAYERS["default"]["CONFIG"]["capacity"] + 1)]
    results = await asyncio.gather(*sends, return_exceptions=True)
    assert [type(r) for r in results if r is not None] == [ChannelFull]


async def test_stopped_consumer__is_not_local_any_more(layers):
    # Its messages then expire in Redis instead of waiting in this process forever.
    local, _ = layers
    channel = await local.new_channel()
    receiving = await consumer(local, channel)
    reader = local.loops[asyncio.get_running_loop()].reader
    await stop(receiving)
    # No consumer left on this loop: the reader stops after the read under way.
    await asyncio.wait_for(reader, local.block_seconds + 3)
    assert local.loops == {}
    await local.send(channel, {"type": "chat.event", "n": 1})
    assert await redis_keys(local) != []


async def test_message_the_reader_took_for_a_channel_nobody_receives_from__waits_for_its_receive(layers):
    local, remote = layers
    mine, later = await local.new_channel(), await local.new_channel()
    await remote.send(later, {"type": "chat.event", "n": 1})
    await remote.send(mine, {"type": "chat.event", "n": 2})
    # The reader takes both (one read); `later` has no receive() yet.
    assert (await asyncio.wait_for(local.receive(mine), 5))["n"] == 2
    assert (await asyncio.wait_for(local.receive(later), 5))["n"] == 1
    await stop(asyncio.ensure_future(local.receive(mine)))
    await stop(asyncio.ensure_future(local.receive(later)))


async def test_message_the_reader_took_for_a_channel_nobody_receives_from__expires(layers_with):
    local, remote = layers_with(expiry=1)
    mine, gone = await local.new_channel(), await local.new_channel()
    await remote.send(gone, {"type": "chat.event"})
    await remote.send(mine, {"type": "chat.event"})
    await asyncio.wait_for(local.receive(mine), 5)
    assert gone in local.unclaimed
    await asyncio.sleep(local.block_seconds + 1.5)  # past its expiry, and the reader swept
    assert local.unclaimed == {}
    with pytest.raises(asyncio.TimeoutError):
        await asyncio.wait_for(local.receive(gone), 0.5)
    await stop(asyncio.ensure_future(local.receive(mine)))


async def test_consumer_that_stopped_without_cancelling__is_forgotten(layers):
    # channels leaves a receive that had already returned when its consumer stopped.
    local, _ = layers
    local.stale_after, local.block_seconds, local.expiry = 0.2, 1, 1  # expiry: how often it sweeps
    channel, other = await local.new_channel(), await local.new_channel()
    await local.send(channel, {"type": "chat.event"})  # not local yet: through Redis
    receiving = await consumer(local, channel)
    assert (await asyncio.wait_for(receiving, 5))["type"] == "chat.event"
    waiting = await consumer(local, other)  # waits all along: never forgotten
    await asyncio.sleep(2.5)
    assert list(local.loops[asyncio.get_running_loop()].mailboxes) == [other]
    await stop(waiting)


async def test_sender__may_reuse_its_message(layers):
    local, remote = layers
    channel = await local.new_channel()
    for sender in (local, remote):
        receiving = await consumer(local, channel)
        message = {"type": "chat.event", "n": 1}
        await sender.send(channel, message)
        message["n"] = 2
        assert (await asyncio.wait_for(receiving, 5))["n"] == 1
    await stop(asyncio.ensure_future(local.receive(channel)))


async def test_channel_full__at_capacity(layers_with):
    local, remote = layers_with(capacity=3)
    # A local consumer that is busy: its mailbox holds `capacity` messages.
    channel = await local.new_channel()
    receiving = await consumer(local, channel)
    await local.send(channel, {"type": "chat.event", "n": 0})
    await asyncio.wait_for(receiving, 5)
    for n in range(3):
        await local.send(channel, {"type": "chat.event", "n": n})
    with pytest.raises(ChannelFull):
        await local.send(channel, {"type": "chat.event", "n": 3})
    # Another process's channel: `capacity` messages wait in Redis.
    theirs = await remote.new_channel()
    for n in range(3):
        await local.send(theirs, {"type": "chat.event", "n": n})
    with pytest.raises(ChannelFull):
        await local.send(theirs, {"type": "chat.event", "n": 3})
    await stop(asyncio.ensure_future(local.receive(channel)))


async def test_healthz_channel__goes_through_redis(layers):
    local, _ = layers
    channel = await local.new_channel("healthz.")
    await local.send(channel, {"type": "healthz.ping"})
    assert await redis_keys(local) != []
    assert (await asyncio.wait_for(local.receive(channel), 5))["type"] == "healthz.ping"
    assert local.loops == {}


async def test_receive_waiting_while_redis_restarts__gets_messages_afterwards(layers, redis_guard):
    local, remote = layers
    channel = await local.new_channel()
    receiving = await consumer(local, channel)
    await asyncio.to_thread(services.redis_stop)
    await asyncio.sleep(1)  # the reader meets the outage and retries
    assert not receiving.done()
    await local.send(channel, {"type": "chat.event", "n": 1})  # local: needs no Redis
    assert (await asyncio.wait_for(receiving, 5))["n"] == 1
    receiving = asyncio.ensure_future(local.receive(channel))
    await asyncio.to_thread(services.redis_start)
    await with_retry(remote.send, channel, {"type": "chat.event", "n": 2})
    assert (await asyncio.wait_for(receiving, 10))["n"] == 2
    await stop(asyncio.ensure_future(local.receive(channel)))
