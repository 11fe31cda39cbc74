"""Rows as the services store them, and channel-layer helpers, for tests that skip the wire."""

from __future__ import annotations

import asyncio
import itertools
import json
import os
import uuid
from datetime import timedelta

import pytest
from asgiref.sync import async_to_sync
from channels.layers import get_channel_layer
from django.db.models import Q
from django.utils import timezone

from chat.requests import StartRequest, parse_start
from dialogs.models import Dialog, Message
from matching import services as pool
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


def request_of(data: dict | None = None, **fields) -> StartRequest:
    data = {"languageCode": "en", **(data or {}), **fields}
    return parse_start(json.dumps(data).encode())


def pool_user(data: dict | None = None, *, status=PoolUser.Status.WAITING, **extra) -> PoolUser:
    """A user stored the way pool_enter_many stores one."""
    request = request_of(data)
    return PoolUser.objects.create(
        **pool.user_fields(request),
        channel_name=extra.pop("channel_name", f"test.{uuid.uuid4().hex}"),
        status=status,
        **extra,
    )


def this_process() -> ServerProcess:
    """The ServerProcess row of the test process, as a consumer's would be."""
    return ServerProcess.objects.get_or_create(hostname=HOSTNAME, pid=os.getpid())[0]


def entry(channel: str, data: dict | None = None, **fields) -> pool.Entry:
    return pool.Entry(channel, request_of(data, **fields), this_process().pk)


def start_many(entries: list[pool.Entry], closed_channels=()) -> list:
    """What a batch of /starts does: dialogs.pairing.dialogs_start, as this process."""
    from dialogs.pairing import dialogs_start

    return dialogs_start(entries, process_id=this_process().pk, closed_channels=closed_channels)


def start(channel: str, data: dict | None = None, **fields):
    """One /start alone in its batch: a Started, or the Refusal raised."""
    [result] = start_many([entry(channel, data, **fields)])
    if isinstance(result, Exception):
        raise result
    return result


def aside(channel: str) -> pool.Entry:
    """A /start that pairs with nobody: a language no other test speaks, and a man who wants a
    woman (so two of them do not pair either)."""
    return entry(f"{channel}.aside", {"languageCode": "zz", "userAttributes": {"gender": "male"},
                                      "targetAttributes": {"gender": "female"}})


def start_in_a_batch(channel: str, data: dict | None = None, **fields):
    """One /start in a batch of several, which PostgreSQL pairs from a read of the pool
    rather than inside one statement (dialogs.pairing): beside it, one that pairs with nobody."""
    result, _ = start_many([entry(channel, data, **fields), aside(channel)])
    if isinstance(result, Exception):
        raise result
    return result


# A test of the pairing rule, run on both of PostgreSQL's ways to pair (dialogs.pairing): its
# `starter` is `start` or `start_in_a_batch`. SQLite pairs both in Python.
ALONE_OR_IN_A_BATCH = pytest.mark.parametrize("starter", [start, start_in_a_batch], ids=["alone", "in_a_batch"])


def pair(a: str = "chan.a", b: str = "chan.b", a_data=None, b_data=None) -> tuple[uuid.UUID, uuid.UUID, Dialog]:
    """Two users paired through the services, as their consumers would: (first, second, dialog)."""
    first = start(a, a_data)
    second = start(b, b_data)
    return first.user_id, second.user_id, dialog_of(second.user_id)


def dialog_of(user_id) -> Dialog | None:
    """The dialog a user was paired into, if any."""
    return Dialog.objects.filter(Q(first_id=user_id) | Q(second_id=user_id)).first()


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


def listed(response) -> list:
    """The rows an admin changelist page shows."""
    assert response.status_code == 200
    return list(response.context["cl"].result_list)


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
