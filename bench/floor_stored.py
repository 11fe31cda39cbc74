"""A second floor for the idle pair across processes: bench/floor.py, but every pair is stored
in PostgreSQL before its 10s, and the partner's 10 reaches its own process on the commit's
NOTIFY; each 10 is written straight to its connection, not through the channel layer. It
keeps PROTOCOL.md §5's "every user and dialog stored before its 10 is sent" with the pool
shared by several processes, and does little else; bench/rush.py runs it on two daphnes, A
on one and B on the other, beside the floor.

Per /start, one transaction on an async psycopg connection in the event loop (no ORM, no
validation, no thread hop), in psycopg's pipeline mode as randomchat's batch: first the
language's lock, the oldest waiting user of the language and the newcomer's insert; then,
when it pairs, the update of both, the dialog's insert and a NOTIFY to the partner's process.
The commit is durable (its WAL flushed) before any 10 leaves: the newcomer's own 10 is
written once the commit has answered, and PostgreSQL delivers the NOTIFY only once it has
committed. Each process LISTENs on a channel of its own. One /start at a time per process:
a floor for the idle pair, not for a rush; it pairs and nothing more (a /message reaches
no one). FLOOR_DATABASE_URL names the database (its tables are created here).

With FLOOR_ONE_FLIGHT=1 the pair is decided inside PostgreSQL instead: the lock, then one
statement that picks the partner, stores both users and the dialog and NOTIFYs, then the
commit, all in one round trip.
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
import uuid

import psycopg
from floor import FloorConsumer  # configures Django first

from channels.routing import ProtocolTypeRouter, URLRouter
from django.urls import re_path

SCHEMA = (
    "CREATE TABLE IF NOT EXISTS floor_user (id bigserial PRIMARY KEY, channel text NOT NULL, language text NOT NULL,"
    " process integer NOT NULL, paired boolean NOT NULL DEFAULT false)",
    "CREATE INDEX IF NOT EXISTS floor_user_waiting ON floor_user (language, id) WHERE NOT paired",
    "CREATE TABLE IF NOT EXISTS floor_dialog (id uuid PRIMARY KEY, first bigint NOT NULL, second bigint NOT NULL,"
    " started_at timestamptz NOT NULL DEFAULT now())",
)
SCHEMA_LOCK = 7310  # two processes creating the tables at once would collide
PROCESS = os.getpid()
# FLOOR_ONE_FLIGHT=1: each pair decided inside PostgreSQL, in one round trip instead of two.
ONE_FLIGHT = os.environ.get("FLOOR_ONE_FLIGHT") == "1"


def notify_channel(process: int) -> str:
    return f"floor_{process}"


class _Database:
    """This process's pairing connection, its lock, and its listener (one event loop)."""

    def __init__(self) -> None:
        self.connection: psycopg.AsyncConnection | None = None
        self.lock = asyncio.Lock()
        self.listener: asyncio.Task | None = None

    async def ready(self) -> psycopg.AsyncConnection:
        """The pairing connection, once this process listens (call it under `lock`)."""
        if self.connection is None:
            url = os.environ["FLOOR_DATABASE_URL"]
            connection = await psycopg.AsyncConnection.connect(url, autocommit=True)
            await connection.execute("SELECT pg_advisory_lock(%s)", [SCHEMA_LOCK])
            for statement in SCHEMA:
                await connection.execute(statement)
            await connection.execute("SELECT pg_advisory_unlock(%s)", [SCHEMA_LOCK])
            listening = asyncio.get_running_loop().create_future()
            self.listener = asyncio.create_task(_listen(url, listening))
            self.listener.add_done_callback(_listener_ended)
            await listening
            self.connection = connection
        return self.connection


_database = _Database()


# This process's connections by channel name: a 10 is written straight to its connection.
_connections: dict[str, StoredFloorConsumer] = {}


async def _listen(url: str, listening: asyncio.Future) -> None:
    """The 10s that pairs made on other processes carry here: `<channel> <chat>`."""
    try:
        async with await psycopg.AsyncConnection.connect(url, autocommit=True) as connection:
            await connection.execute(f"LISTEN {notify_channel(PROCESS)}")
            listening.set_result(None)
            async for notify in connection.notifies():
                channel, chat = notify.payload.split(" ")
                await _paired(channel, chat)
    except Exception as exc:
        if not listening.done():  # the first /start fails with it instead of waiting forever
            listening.set_exception(exc)
        raise


def _listener_ended(task: asyncio.Task) -> None:
    # In the daphne's log, which the benchmark reports: a pair's 10 would be lost from now on.
    if not task.cancelled() and task.exception() is not None:
        print(f"floor_stored ERROR listener ended: {task.exception()!r}", file=sys.stderr, flush=True)


async def _paired(channel: str, chat: str) -> None:
    connection = _connections.get(channel)
    if connection is not None:
        await connection.floor_paired({"chat": chat})


class StoredFloorConsumer(FloorConsumer):
    async def connect(self) -> None:
        _connections[self.channel_name] = self
        await super().connect()

    async def disconnect(self, code) -> None:
        _connections.pop(self.channel_name, None)
        await super().disconnect(code)

    async def start(self, body: bytes) -> None:
        language = json.loads(body).get("languageCode", "")
        chat = uuid.uuid4()
        async with _database.lock:
            connection = await _database.ready()
            partner = await (_pair_in_one_flight if ONE_FLIGHT else _pair)(connection, self.channel_name, language, chat)
        if partner is None:
            return
        # Committed (the pipeline's Sync answered): the 10s may leave.
        partner_channel, partner_process = partner
        await self.floor_paired({"chat": str(chat)})
        if partner_process == PROCESS:
            await _paired(partner_channel, str(chat))


async def _pair(connection: psycopg.AsyncConnection, channel: str, language: str, chat: uuid.UUID) -> tuple | None:
    """Two round trips: the pair is decided here, from the oldest waiting user read in the first."""
    async with connection.pipeline():
        await connection.execute("SELECT pg_advisory_xact_lock(hashtext(%s))", [language])
        oldest = await connection.execute(
            "SELECT id, channel, process FROM floor_user WHERE language = %s AND NOT paired ORDER BY id LIMIT 1",
            [language])
        inserted = await connection.execute(
            "INSERT INTO floor_user (channel, language, process) VALUES (%s, %s, %s) RETURNING id",
            [channel, language, PROCESS])
        partner = await oldest.fetchone()
        [user] = await inserted.fetchone()
        if partner is None:
            return None
        partner_id, partner_channel, partner_process = partner
        await connection.execute("UPDATE floor_user SET paired = true WHERE id = ANY(%s)", [[partner_id, user]])
        await connection.execute("INSERT INTO floor_dialog (id, first, second) VALUES (%s, %s, %s)",
                                 [chat, partner_id, user])
        if partner_process != PROCESS:
            await connection.execute("SELECT pg_notify(%s, %s)",
                                     [notify_channel(partner_process), f"{partner_channel} {chat}"])
    return partner_channel, partner_process


async def _pair_in_one_flight(connection: psycopg.AsyncConnection, channel: str, language: str,
                              chat: uuid.UUID) -> tuple | None:
    """One round trip: the pair is decided inside PostgreSQL, by the statement that stores it
    (after the lock's, so that it sees every batch committed before it), and read once the
    Sync has committed it."""
    async with connection.pipeline():
        await connection.execute("SELECT pg_advisory_xact_lock(hashtext(%s))", [language])
        paired = await connection.execute(
            "WITH partner AS (SELECT id, channel, process FROM floor_user WHERE language = %(language)s AND NOT paired"
            " ORDER BY id LIMIT 1 FOR UPDATE),"
            " newcomer AS (INSERT INTO floor_user (channel, language, process, paired)"
            " SELECT %(channel)s, %(language)s, %(process)s, EXISTS (SELECT 1 FROM partner) RETURNING id),"
            " taken AS (UPDATE floor_user SET paired = true WHERE id IN (SELECT id FROM partner)),"
            " dialog AS (INSERT INTO floor_dialog (id, first, second)"
            " SELECT %(chat)s, partner.id, newcomer.id FROM partner, newcomer),"
            " notified AS (SELECT pg_notify('floor_' || process, channel || ' ' || %(chat)s::text) FROM partner"
            " WHERE process <> %(process)s)"
            " SELECT channel, process, (SELECT count(*) FROM notified) FROM partner",
            {"language": language, "channel": channel, "process": PROCESS, "chat": chat})
    partner = await paired.fetchone()
    return None if partner is None else partner[:2]


application = ProtocolTypeRouter({"websocket": URLRouter([re_path(r"^connect/?$", StoredFloorConsumer.as_asgi())])})
