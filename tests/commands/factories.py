"""Rows and channel-layer helpers shared by the command and admin tests."""

from __future__ import annotations

import asyncio
import itertools
import json
import os
from datetime import timedelta

from asgiref.sync import async_to_sync
from channels.layers import get_channel_layer
from django.utils import timezone

from dialogs.models import Dialog, Message
from matching.models import PoolUser, ServerProcess
from matching.processes import HOSTNAME

_serial = itertools.count()


def ago(seconds: float = 0, *, days: float = 0):
    return timezone.now() - timedelta(seconds=seconds, days=days)


def live_process() -> ServerProcess:
    """A process that is alive by both tests: fresh heartbeat, and this very pid on this host."""
    return ServerProcess.objects.create(hostname=HOSTNAME, pid=os.getpid())


def make_user(*, channel: str | None = None, status=PoolUser.Status.WAITING, language="en", **fields) -> PoolUser:
    return PoolUser.objects.create(
        channel_name=channel or f"test.channel.{next(_serial)}", status=status, language=language, **fields
    )


def make_dialog(
    first: PoolUser | None = None,
    second: PoolUser | None = None,
    *,
    ended_at=None,
    end_reason=None,
    ended_by=None,
    messages: int = 0,
    language="en",
    **fields,
) -> Dialog:
    """A dialog with its participants in the status that goes with it, and `messages` messages."""
    ended = ended_at is not None
    user_status = PoolUser.Status.ENDED if ended else PoolUser.Status.PAIRED
    first = first or make_user(status=user_status, language=language)
    second = second or make_user(status=user_status, language=language)
    dialog = Dialog.objects.create(
        first=first,
        second=second,
        language=language,
        status=Dialog.Status.ENDED if ended else Dialog.Status.ACTIVE,
        ended_at=ended_at,
        end_reason=(end_reason or Dialog.EndReason.STOP) if ended else None,
        ended_by=ended_by,
        **fields,
    )
    for i in range(messages):
        Message.objects.create(dialog=dialog, author=first if i % 2 == 0 else second, content=f"message {i}")
    return dialog


# Channel layer (the in-memory one of the default settings)


def new_channel() -> str:
    return async_to_sync(get_channel_layer().new_channel)()


def receive(channel: str, timeout: float = 2.0) -> dict:
    async def _receive():
        return await asyncio.wait_for(get_channel_layer().receive(channel), timeout)

    return async_to_sync(_receive)()


def receive_event(channel: str) -> dict:
    """The next chat event on `channel`, as the JSON body the client would get."""
    message = receive(channel)
    assert message["type"] == "chat.event", message
    return json.loads(message["body"])


def assert_nothing_on(channel: str, timeout: float = 0.2) -> None:
    try:
        message = receive(channel, timeout)
    except asyncio.TimeoutError:
        return
    raise AssertionError(f"unexpected message on {channel}: {message}")
