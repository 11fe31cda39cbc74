"""The Redis channel layer, made to ride out a Redis restart.

channels-redis lets a connection error escape `receive()`, which kills the consumer (daphne
closes the WebSocket with 1011 and `disconnect()` never runs). Here `receive()` waits for
Redis instead, and once it answers again hands the consumer a `layer.reconnected` message:
Redis may have restarted empty, so the consumer joins its dialog's group again.
"""

from __future__ import annotations

import asyncio
import logging

from channels_redis.core import RedisChannelLayer as BaseRedisChannelLayer

from .notify import LAYER_UNAVAILABLE

logger = logging.getLogger(__name__)

RECONNECTED = {"type": "layer.reconnected"}


class RedisChannelLayer(BaseRedisChannelLayer):
    async def receive(self, channel):
        delay = 0.1
        failed = False
        while True:
            try:
                if failed:
                    await self.send(channel, RECONNECTED)  # succeeds once Redis answers again
                return await super().receive(channel)
            except LAYER_UNAVAILABLE as exc:
                if not failed:
                    logger.warning("event=layer_unavailable channel=%s error=%s", channel, type(exc).__name__)
                failed = True
                await asyncio.sleep(delay)
                delay = min(delay * 2, 2.0)
