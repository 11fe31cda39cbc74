"""This process's place among the servers: registration, heartbeat, cleanup loop."""

from __future__ import annotations

import asyncio
import logging

from channels.db import database_sync_to_async
from channels.layers import get_channel_layer
from django.conf import settings

from matching import processes

from chat.notify import send_notices

logger = logging.getLogger(__name__)

live_channels: set[str] = set()
"""Channel names of this process's open connections."""

_registered: dict[asyncio.AbstractEventLoop, object] = {}
_registering: dict[asyncio.AbstractEventLoop, asyncio.Lock] = {}


async def current_process():
    """Register this process on first use and start its heartbeat loop (one per event loop).

    One registration at a time: when hundreds of connections /start at once, each used to
    insert its own row and delete the extra one behind the busy database thread, and those
    rows, never beating, were released as a dead process's by the other processes.
    """
    loop = asyncio.get_running_loop()
    process = _registered.get(loop)
    if process is not None:
        return process
    lock = _registering.get(loop)
    if lock is None:
        _registering.clear()  # a closed loop (tests) leaves nothing behind
        lock = _registering[loop] = asyncio.Lock()
    async with lock:
        process = _registered.get(loop)
        if process is None:
            process = await database_sync_to_async(processes.process_register)()
            _registered.clear()
            _registered[loop] = process
            loop.create_task(_beat_forever(process))
            logger.info("process registered id=%s", process.pk)
    return process


async def _beat_forever(process) -> None:
    layer = get_channel_layer()
    while True:
        await asyncio.sleep(settings.RANDOMCHAT_PROCESS_HEARTBEAT)
        try:
            await beat_once(process, layer)
        except Exception:
            logger.exception("process heartbeat failed id=%s", process.pk)


def in_own_thread(function):
    """The heartbeat must not queue behind the consumers' database work (one shared thread):
    a busy process would look dead to the others."""
    return database_sync_to_async(function, thread_sensitive=False)


async def beat_once(process, layer) -> None:
    await in_own_thread(processes.process_beat)(process)
    dead, notices = await in_own_thread(processes.process_release_dead)(alive=process)
    for gone in dead:
        logger.info("process released id=%s host=%s pid=%s", gone.pk, gone.hostname, gone.pid)
    notices += await in_own_thread(processes.process_reconcile)(process, set(live_channels))
    await send_notices(layer, notices)
