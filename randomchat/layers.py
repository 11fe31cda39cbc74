"""The Redis channel layer, made to ride out a Redis restart.

channels-redis lets a connection error escape `receive()`, which kills the consumer (daphne
closes the WebSocket with 1011 and `disconnect()` never runs). Here `receive()` waits for
Redis instead. Nothing needs rebuilding once it is back, even if it restarted empty: events
are sent to connections' own channels, never to groups kept in Redis.
"""

from __future__ import annotations

import asyncio
import logging

from channels_redis.core import RedisChannelLayer as BaseRedisChannelLayer

from .notify import LAYER_UNAVAILABLE

logger = logging.getLogger(__name__)


class RedisChannelLayer(BaseRedisChannelLayer):
    async def receive(self, channel):
        delay = 0.1
        while True:
            try:
                return await super().receive(channel)
            except LAYER_UNAVAILABLE as exc:
                if delay == 0.1:
                    logger.warning("event=layer_unavailable channel=%s error=%s", channel, type(exc).__name__)
                await asyncio.sleep(delay)
                delay = min(delay * 2, 2.0)
