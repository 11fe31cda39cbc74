"""A pair's 10 for a connection of another process rides on the pairing's commit.

Through Redis that 10 left once the pairing process had its commit's answer: back on its
event loop, a layer send, then the other process's read, ~0.8 ms of an idle pair across
two processes (bench/README.md, "The idle pair across processes"). A NOTIFY sent in the
pairing's transaction is delivered by PostgreSQL itself as the transaction commits, and
never if it rolls back, so a 10 still follows its stored dialog.

Each process LISTENs on a connection of its own, which holds the process's listen lock (a
session advisory lock) from its LISTEN on. The pairing's statement notifies only the
processes whose lock is held as it runs; the 10s of the others (an older version, a
listening connection being replaced) go through the layer as before. A listening
connection that is lost may lose what was sent to it: the next one, once it listens, sends
this process's connections the 10s of their active dialogs again, and a connection takes a
dialog's 10 once (randomchat.consumers).

On for PostgreSQL with randomchat's Redis layer (RANDOMCHAT_PAIR_NOTIFY): one database
connection more per process, which needs a session-mode pooler, as the pairing batch does.
"""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import Callable, Collection

import psycopg
from channels.db import database_sync_to_async
from channels.layers import get_channel_layer
from django.conf import settings
from django.db import connection
from psycopg import sql

from chat.events import Notice
from chat.loops import PerLoop, spawn
from chat.notify import Backoff, send_notices
from dialogs.pairing import pairs_again
from matching.pipeline import Rows
from matching.processes import HELD_ELSEWHERE

from . import metrics

logger = logging.getLogger(__name__)

LISTENER_NAME = "randomchat listen"
# Connection parameters of Django's that are no libpq keywords.
_NOT_CONNINFO = ("cursor_factory", "context", "prepare_threshold")


def conninfo() -> dict:
    """psycopg's connection parameters for the database Django uses."""
    return {k: v for k, v in connection.get_connection_params().items() if k not in _NOT_CONNINFO}


def enabled(layer) -> bool:
    return settings.RANDOMCHAT_PAIR_NOTIFY and connection.vendor == "postgresql" and hasattr(layer, "notify_payload")


def notify_send(notices: list[Notice]) -> Callable[[], list[Notice]]:
    """In the caller's transaction, a NOTIFY for each notice to a consumer of a process that
    listens; returns the function that tells, once the transaction committed, which of
    `notices` rode on it."""
    layer = get_channel_layer()
    if not enabled(layer):
        return list
    notified = [(index, *payload) for index, notice in enumerate(notices)
                if (payload := layer.notify_payload(notice.channel, notice.message)) is not None]
    if not notified:
        return list
    indexes, channels, keys, payloads = (list(column) for column in zip(*notified))
    ridden = Rows(
        "SELECT n.i, pg_notify(n.c, n.p) FROM unnest(%s::int[], %s::text[], %s::bigint[], %s::text[]) AS n(i, c, k, p)"
        f" WHERE {HELD_ELSEWHERE.format('n.k')}",
        [indexes, channels, keys, payloads],
    )
    return lambda: [notices[index] for index, _ in ridden.all()]


class _Listener:
    def __init__(self) -> None:
        self.task: asyncio.Task | None = None


_listeners = PerLoop(_Listener)


def listen(live_channels: Collection[str]) -> None:
    """Start this event loop's listening task, once; `live_channels`: this process's connections."""
    layer = get_channel_layer()
    listener = _listeners.get()
    if listener.task is None and enabled(layer):
        listener.task = spawn(_listen(layer, live_channels))


async def _listen(layer, live_channels: Collection[str]) -> None:
    """Deliver what other processes' pairings carry here, through database outages."""
    params = conninfo()
    params["application_name"] = f"{LISTENER_NAME} {os.getpid()}"  # for operators (pg_stat_activity)
    listen_sql = sql.SQL("LISTEN {}").format(sql.Identifier(layer.notify_channel()))
    backoff, failing = Backoff(0.1, 2.0), False
    while True:
        try:
            async with await psycopg.AsyncConnection.connect(**params, autocommit=True) as conn:
                await conn.execute(listen_sql)
                await conn.execute("SELECT pg_advisory_lock(%s)", [layer.listen_key()])
                # What was committed for this process while it did not listen, sent again.
                resent = await database_sync_to_async(pairs_again)(channel_names=set(live_channels))
                await send_notices(layer, resent)
                if failing:
                    logger.info("event=pair_notify_available resent=%s", len(resent))
                    failing = False
                    backoff.reset()
                async for notify in conn.notifies():
                    layer.deliver_notified(notify.payload)
                    metrics.PAIRS_NOTIFIED.inc()
        except Exception as exc:  # noqa: BLE001 - the listener must outlive any failure
            if not failing:
                logger.warning("event=pair_notify_unavailable error=%s", type(exc).__name__)
                failing = True
            await asyncio.sleep(backoff.next())
