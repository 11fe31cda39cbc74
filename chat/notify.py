"""Sends the notices that services return, once their transaction has committed.

The database row is the record and a notice only tells about it, so a channel layer that is
down (Redis restarting) is tried again for a while instead of losing the notice.
"""

from __future__ import annotations

import asyncio
import collections
import logging

from asgiref.sync import async_to_sync
from redis import exceptions as redis_errors
from channels.exceptions import ChannelFull
from channels.layers import get_channel_layer
from django.conf import settings

from .events import Notice
from .loops import PerLoop

logger = logging.getLogger(__name__)

LAYER_UNAVAILABLE = (OSError, redis_errors.ConnectionError, redis_errors.TimeoutError)


# How long an admin action or a command waits for the layer to come back.
WAITING_SECONDS = 15.0


class Backoff:
    """Pauses between tries that double from `first` up to `most`."""

    __slots__ = ("first", "most", "delay")

    def __init__(self, first: float = 0.05, most: float = 1.0) -> None:
        self.first, self.most = first, most
        self.delay = first

    def next(self) -> float:
        delay, self.delay = self.delay, min(self.delay * 2, self.most)
        return delay

    def reset(self) -> None:
        self.delay = self.first


async def with_retry(operation, *args, seconds: float = WAITING_SECONDS):
    """Await operation(*args), retrying with backoff while the layer is unavailable."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + seconds
    backoff = Backoff()
    while True:
        try:
            return await operation(*args)
        except LAYER_UNAVAILABLE as exc:
            delay = backoff.next()
            if loop.time() + delay > deadline:
                raise
            logger.warning("channel layer unavailable, retrying error=%s", type(exc).__name__)
            await asyncio.sleep(delay)


class _Later:
    """Notices the layer could not take, to be sent in order once it can."""

    def __init__(self) -> None:
        self.notices: collections.deque[tuple[float, object, Notice]] = collections.deque()
        self.task: asyncio.Task | None = None


_later = PerLoop(_Later)


async def send_notices(layer, notices: list[Notice]) -> None:
    """In order, each through the layer, even a connection's own: its events then reach it in
    one queue, in the order their transactions committed, behind what already waits there.

    While the layer is down, what it cannot take goes out later, in order, for up to
    RANDOMCHAT_LAYER_RETRY_SECONDS: the database is the record, and a handler that waited out
    an outage would hold its connection's every later frame.
    """
    later = _later.get()
    for index, notice in enumerate(notices):
        if later.notices:  # behind what already waits
            _send_later(later, layer, notices[index:])
            return
        try:
            await layer.send(notice.channel, notice.message)
        except ChannelFull:
            _dropped(notice, "channel_full")
        except LAYER_UNAVAILABLE as exc:
            logger.warning("channel layer unavailable, sending later error=%s", type(exc).__name__)
            _send_later(later, layer, notices[index:])
            return


def _dropped(notice: Notice, reason: str) -> None:
    # The database is the record; a connection this far behind is stuck or gone.
    logger.warning("event=notice_dropped channel=%s reason=%s", notice.channel, reason)


def _send_later(later: _Later, layer, notices: list[Notice]) -> None:
    deadline = asyncio.get_running_loop().time() + settings.RANDOMCHAT_LAYER_RETRY_SECONDS
    later.notices.extend((deadline, layer, notice) for notice in notices)
    if later.task is None:
        later.task = asyncio.get_running_loop().create_task(_drain(later))


async def _drain(later: _Later) -> None:
    loop = asyncio.get_running_loop()
    backoff = Backoff()
    try:
        while later.notices:
            deadline, layer, notice = later.notices[0]
            try:
                await layer.send(notice.channel, notice.message)
            except ChannelFull:
                _dropped(notice, "channel_full")
            except LAYER_UNAVAILABLE:
                delay = backoff.next()
                if loop.time() + delay <= deadline:
                    await asyncio.sleep(delay)
                    continue
                _dropped(notice, "layer_unavailable")
            later.notices.popleft()
            backoff.reset()
    finally:
        later.task = None


async def send_notices_waiting(layer, notices: list[Notice]) -> None:
    """For callers outside a server's loop (admin actions, commands): wait out a short outage."""
    for notice in notices:
        try:
            await with_retry(layer.send, notice.channel, notice.message)
        except ChannelFull:
            _dropped(notice, "channel_full")


def send_notices_sync(notices: list[Notice]) -> None:
    """For admin actions and commands, which run outside any consumer."""
    if notices:
        async_to_sync(send_notices_waiting)(get_channel_layer(), notices)
