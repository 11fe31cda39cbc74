"""The event loop's own PostgreSQL connection, for the flight of a /start alone in its batch.

Such a /start, as every /start of an idle server is, is stored and paired in one round trip
(dialogs.pairing.start_alone). On the database thread that round trip had two hand-overs
around it, to the thread and back, which an idle pair waited for. Here the event loop sends
the flight's statements and reads their answer itself (matching.pipeline.Flight): the same
statements, one transaction, and no thread between the /start and its 10.

On for PostgreSQL (RANDOMCHAT_PAIR_ON_LOOP): one database connection more per process,
which needs a session-mode pooler, as the pairing batch does. A connection that has news
while it sits idle (the server closed it) is replaced before it is used; one that failed is
then replaced at its next use. Its errors are Django's, so a database that is down refuses
the /start as `unavailable`, as on the thread.
"""

from __future__ import annotations


import psycopg
from django.conf import settings
from django.db import connection

from chat.loops import PerLoop
from matching.pipeline import Flight

from .postgresql.base import own_connection_params, quiet

APPLICATION_NAME = "randomchat pairing"


class _Slot:
    def __init__(self) -> None:
        self.conn: psycopg.AsyncConnection | None = None


_slots = PerLoop(_Slot)


def enabled() -> bool:
    return settings.RANDOMCHAT_PAIR_ON_LOOP and connection.vendor == "postgresql"


async def run(flight: Flight) -> None:
    """Run the flight on this event loop's connection, connecting first if need be."""
    slot = _slots.get()
    with connection.wrap_database_errors:
        if slot.conn is not None and not quiet(slot.conn):
            await close()
        if slot.conn is None:
            slot.conn = await _connect()
        await flight.run_async(slot.conn)


async def close() -> None:
    """Close this event loop's connection, if it has one."""
    slot = _slots.get()
    conn, slot.conn = slot.conn, None
    if conn is not None:
        await conn.close()


async def _connect() -> psycopg.AsyncConnection:
    """A connection set up as Django sets up its own: its time zone too, which Django's
    adapters take the server's timestamps in."""
    conn = await psycopg.AsyncConnection.connect(**_params(), autocommit=True)
    zone = connection.timezone_name
    try:
        if zone and conn.info.parameter_status("TimeZone") != zone:
            await conn.execute(connection.ops.set_time_zone_sql(), [zone])
    except BaseException:
        await conn.close()
        raise
    return conn


def _params() -> dict:
    """Django's connection parameters, its adapters included: the flight's values and rows are
    those of the statements on the thread."""
    return own_connection_params(APPLICATION_NAME, adapters=True)
