"""A pair's 10 for a connection of another process rides on the pairing's commit.

Through Redis that 10 left once the pairing process had its commit's answer: back on its
event loop, a layer send, then the other process's read, ~0.8 ms of an idle pair across
two processes (bench/README.md, "The idle pair across processes"). A NOTIFY sent in the
pairing's transaction is delivered by PostgreSQL itself as the transaction commits, and
never if it rolls back, so a 10 still follows its stored dialog.

The NOTIFY carries the pair as stored (the dialog, the partner, the newcomer's card, as
JSON), and the listening process builds the 10. `notified` is its SQL, which the pairing
puts in its own statements (dialogs.pairing): in a lone /start's pairing statement, in a
batch's last flight.

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
import json
import logging
import re
from collections.abc import Collection

import psycopg
from channels.db import database_sync_to_async
from channels.layers import get_channel_layer
from django.conf import settings
from django.db import connection
from psycopg import sql

from chat.loops import PerLoop, spawn
from chat.notify import Backoff, send_notices
from dialogs.pairing import paired_message, pairs_again
from matching.processes import HELD_ELSEWHERE

from . import metrics
from .layers import CONSUMER_PREFIX
from .postgresql.base import own_connection_params

logger = logging.getLogger(__name__)

LISTENER_NAME = "randomchat listen"
def conninfo() -> dict:
    """psycopg's connection parameters for the listening connection."""
    return own_connection_params(LISTENER_NAME, adapters=False)


def enabled(layer) -> bool:
    return settings.RANDOMCHAT_PAIR_NOTIFY and connection.vendor == "postgresql" and hasattr(layer, "deliver_notified")


# A consumer's channel on randomchat's layer is `<CONSUMER_PREFIX><its process's client prefix>!...`;
# the prefix is 32 hex digits, which CLIENT_OF takes (else NULL), and LISTEN_KEY is the listen
# key of a prefix (RedisChannelLayer.listen_key).
CLIENT_OF = "substring({} from '^%s([0-9a-f]{{32}})!')" % re.escape(CONSUMER_PREFIX)
LISTEN_KEY = "(('x' || substr({}, 17, 16))::bit(64) >> 1)::bigint"


def notified(told: str) -> tuple[str, list] | None:
    """In a pairing's statement: the SELECT that sends, for each row of the relation `told`
    (chat, id, channel_name, card: a stored dialog, a user of it, and the card of its
    partner), the NOTIFY that carries that user's 10 to its process when it is another
    process that listens; its rows name the channels whose 10 rides on the commit. None when
    no 10 rides (RANDOMCHAT_PAIR_NOTIFY off, SQLite, another channel layer)."""
    layer = get_channel_layer()
    if not enabled(layer):
        return None
    return (
        "SELECT channel_name, pg_notify(%s || '.' || client, json_build_object("
        "'chat', chat, 'channel', channel_name, 'sender', id, 'partner', card::json)::text)"
        f" FROM (SELECT *, {CLIENT_OF.format('channel_name')} AS client FROM {told}) AS t"
        # In this order: a channel of another process first, then whether that process listens
        # (an advisory lock's test, as the regular expression, only on the rows told).
        f" WHERE CASE WHEN client <> %s THEN {HELD_ELSEWHERE.format(LISTEN_KEY.format('client'))} ELSE false END",
        [layer.prefix, layer.client_prefix],
    )


def deliver(layer, payload: str) -> None:
    """The 10 a NOTIFY carried here, to its consumer. One that cannot be read is logged and
    dropped: the listener goes on with the others."""
    try:
        pair = json.loads(payload)
        channel, message = pair["channel"], paired_message(pair["chat"], pair["sender"], pair["partner"])
    except (ValueError, TypeError, KeyError):
        logger.exception("event=pair_notify_unreadable")
        return
    layer.deliver_notified(channel, message)


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
                    deliver(layer, notify.payload)
                    metrics.PAIRS_NOTIFIED.inc()
        except Exception as exc:  # noqa: BLE001 - the listener must outlive any failure
            if not failing:
                logger.warning("event=pair_notify_unavailable error=%s", type(exc).__name__)
                failing = True
            await asyncio.sleep(backoff.next())
