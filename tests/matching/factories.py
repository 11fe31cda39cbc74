"""Pool users for tests, stored the way pool_enter_many stores them, and /starts."""

from __future__ import annotations

import json
import os
import uuid

from matching.models import PoolUser, ServerProcess
from matching.processes import HOSTNAME
from chat.requests import StartRequest, parse_start
from matching.services import Entry, user_fields


def request_of(data: dict | None = None, **fields) -> StartRequest:
    data = {"languageCode": "en", **(data or {}), **fields}
    return parse_start(json.dumps(data).encode())


def pool_user(data: dict | None = None, *, status=PoolUser.Status.WAITING, **extra) -> PoolUser:
    request = request_of(data)
    return PoolUser.objects.create(
        **user_fields(request),
        channel_name=extra.pop("channel_name", f"test.{uuid.uuid4().hex}"),
        status=status,
        **extra,
    )


def this_process() -> ServerProcess:
    """The ServerProcess row of the test process, as a consumer's would be."""
    return ServerProcess.objects.get_or_create(hostname=HOSTNAME, pid=os.getpid())[0]


def entry(channel: str, data: dict | None = None, **fields) -> Entry:
    return Entry(channel, request_of(data, **fields), this_process().pk)


def start_many(entries: list[Entry], live_channels=None) -> list:
    """What a batch of /starts does: dialogs.pairing.dialogs_start, as this process."""
    from dialogs.pairing import dialogs_start

    return dialogs_start(entries, process_id=this_process().pk, live_channels=live_channels)


def start(channel: str, data: dict | None = None, **fields):
    """One /start alone in its batch: a Started, or the Refusal raised."""
    [result] = start_many([entry(channel, data, **fields)])
    if isinstance(result, Exception):
        raise result
    return result
