"""This process's place among the servers: registration, heartbeat, cleanup loop."""

from __future__ import annotations

import asyncio
import logging

from channels.db import database_sync_to_async
from channels.layers import get_channel_layer
from django.conf import settings

from dialogs import pairing, resume
from matching import processes
from matching.liveness import HeartbeatWatch
from matching.maintenance import pool_timeout

from chat.events import Notice
from chat.loops import spawn
from chat.notify import send_notices
from moderation.services import BANNED, banned_hashes

from . import metrics, pair_notify

logger = logging.getLogger(__name__)

live_channels: set[str] = set()
"""Channel names of this process's open connections."""
closing_channels: set[str] = set()
"""Channel names of this process's connections that closed while they may still hold a user
(their leave has not committed; the heartbeat's reconcile releases it if the leave failed):
pairing skips their users."""
live_addresses: dict[str, str] = {}
"""The hashed address of each open connection, by channel name (moderation bans)."""

GRACE_END_SLACK = 0.05  # seconds after the grace, so that the database's clock agrees it ran out

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
            await in_own_thread(processes.process_presence_hold)(process)
            _registered.clear()
            _registered[loop] = process
            spawn(_beat_forever(process))
            pair_notify.listen(live_channels)
            logger.info("process registered id=%s", process.pk)
    return process


async def _beat_forever(process) -> None:
    layer = get_channel_layer()
    watch = HeartbeatWatch(settings.RANDOMCHAT_PROCESS_TIMEOUT, max_gap=2 * settings.RANDOMCHAT_PROCESS_HEARTBEAT)
    while True:
        await asyncio.sleep(settings.RANDOMCHAT_PROCESS_HEARTBEAT)
        try:
            await beat_once(process, layer, watch)
        except Exception:
            watch.forget()  # what it saw before an outage of its own proves nothing
            logger.exception("process heartbeat failed id=%s", process.pk)


def in_own_thread(function):
    """The heartbeat must not queue behind the consumers' database work (one shared thread):
    a busy process would look dead to the others."""
    return database_sync_to_async(function, thread_sensitive=False)


async def beat_once(process, layer, watch: HeartbeatWatch) -> None:
    last_beat = process.last_seen
    notices = []
    if await in_own_thread(processes.process_beat)(process):
        logger.warning("process registered again id=%s: it had been taken for dead", process.pk)
        notices += await in_own_thread(processes.process_tell_stranded)(live_channels=set(live_channels), since=last_beat)
    await in_own_thread(processes.process_presence_hold)(process)  # again, if its connection was lost
    beats, gone = await in_own_thread(processes.process_heartbeats)(alive=process)
    silent = {**watch.observe(beats, asyncio.get_running_loop().time()), **gone}
    released, released_notices = await in_own_thread(pairing.process_release)(silent=silent)
    for gone_process in released:
        logger.info("process released id=%s host=%s pid=%s", gone_process.pk, gone_process.hostname, gone_process.pid)
    notices += released_notices
    closed = set(closing_channels)
    notices += await in_own_thread(pairing.process_reconcile)(process, set(live_channels))
    closing_channels.difference_update(closed)  # their users, if any, were released
    if settings.RANDOMCHAT_MAX_WAIT:
        notices += await in_own_thread(pool_timeout)(process_id=process.pk, max_wait=settings.RANDOMCHAT_MAX_WAIT)
    notices += await graces_expire()
    banned = await in_own_thread(banned_hashes)() if live_addresses else set()
    notices += [Notice(channel, BANNED) for channel, hashed in list(live_addresses.items()) if hashed in banned]
    await send_notices(layer, notices)


async def graces_expire() -> list[Notice]:
    """End the dialogs whose resume grace ran out (any process's); the notices to send."""
    ended, notices = await in_own_thread(resume.graces_expire)()
    metrics.GRACES_EXPIRED.inc(ended)
    return notices


def grace_end_later(seconds: float) -> None:
    """End a grace that just began on time; the heartbeat ends it too, should this process die."""
    loop = asyncio.get_running_loop()
    loop.call_later(seconds + GRACE_END_SLACK, lambda: spawn(_grace_end()))


async def _grace_end() -> None:
    try:
        await send_notices(get_channel_layer(), await graces_expire())
    except Exception:
        logger.exception("event=grace_end_failed")  # the heartbeat tries again
