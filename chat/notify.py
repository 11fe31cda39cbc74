"""Sends the notices that services return, once their transaction has committed.

The database row is the record and a notice only tells about it, so a channel layer that is
briefly down (Redis restarting) is retried for a while instead of losing the notice.
"""

from __future__ import annotations

import asyncio
import logging

from asgiref.sync import async_to_sync
from redis import exceptions as redis_errors
from channels.exceptions import ChannelFull
from channels.layers import get_channel_layer
from django.conf import settings

from .events import Notice

logger = logging.getLogger(__name__)

LAYER_UNAVAILABLE = (OSError, redis_errors.ConnectionError, redis_errors.TimeoutError)


async def with_retry(operation, *args):
    """Await operation(*args), retrying with backoff while the layer is unavailable."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + settings.RANDOMCHAT_LAYER_RETRY_SECONDS
    delay = 0.05
    while True:
        try:
            return await operation(*args)
        except LAYER_UNAVAILABLE as exc:
            if loop.time() + delay > deadline:
                raise
            logger.warning("channel layer unavailable, retrying error=%s", type(exc).__name__)
            await asyncio.sleep(delay)
            delay = min(delay * 2, 1.0)


async def send_notices(layer, notices: list[Notice]) -> None:
    """In order, each through the layer, even a connection's own: its events then reach it in
    one queue, in the order their transactions committed, behind what already waits there."""
    for notice in notices:
        try:
            await with_retry(layer.send, notice.channel, notice.message)
        except ChannelFull:
            # The database is the record; a connection this far behind is stuck or gone.
            logger.warning("event=notice_dropped channel=%s reason=channel_full", notice.channel)


def send_notices_sync(notices: list[Notice]) -> None:
    """For admin actions and commands, which run outside any consumer."""
    if notices:
        async_to_sync(send_notices)(get_channel_layer(), notices)
