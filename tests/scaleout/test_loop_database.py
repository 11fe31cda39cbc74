"""randomchat.loop_database: the flight of a /start alone in its batch, run by the event loop
on a PostgreSQL connection of its own; a connection the server closed is replaced, and a
database that is down is Django's error, which the consumer refuses as `unavailable`."""

from __future__ import annotations

import asyncio
import os
import resource

import psycopg
import pytest
from channels.db import database_sync_to_async
from django.db import connection

from django.utils import timezone

from chat.refusals import DATABASE_UNAVAILABLE
from dialogs.pairing import Started
from matching.models import PoolUser
from matching.pipeline import Flight, Rows
from matching.services import new_user, pool_enter_unheld
from randomchat import loop_database
from randomchat.consumers import start_alone_write
from randomchat.pair_notify import conninfo
from randomchat.postgresql.base import quiet
from tests.support.factories import dialog_of, entry
from tests.support.live import free_port

pytestmark = [pytest.mark.django_db(transaction=True)]


@pytest.fixture
async def on_the_loop(settings, services_ready):
    settings.RANDOMCHAT_PAIR_ON_LOOP = True
    yield
    await loop_database.close()


def backend_of_this_loop() -> int | None:
    with connection.cursor() as cursor:
        cursor.execute("SELECT pid FROM pg_stat_activity WHERE application_name = %s AND datname = current_database()",
                       [f"{loop_database.APPLICATION_NAME} {os.getpid()}"])
        row = cursor.fetchone()
    return row and row[0]


async def test_a_lone_pair_is_stored_by_the_loop(on_the_loop):
    first, second = await database_sync_to_async(lambda: [entry("chan.a"), entry("chan.b")])()
    waiting = await start_alone_write(first)
    paired = await start_alone_write(second)
    assert isinstance(paired, Started) and {notice.channel for notice in paired.notices} == {"chan.a", "chan.b"}
    dialog = await database_sync_to_async(dialog_of)(paired.user_id)
    assert (dialog.first_id, dialog.second_id) == (waiting.user_id, paired.user_id)
    assert await database_sync_to_async(backend_of_this_loop)() is not None


async def test_a_connection_the_server_closed_is_replaced(on_the_loop):
    first, second = await database_sync_to_async(lambda: [entry("chan.a"), entry("chan.b")])()
    waiting = await start_alone_write(first)
    backend = await database_sync_to_async(backend_of_this_loop)()

    def terminate() -> None:
        with connection.cursor() as cursor:
            cursor.execute("SELECT pg_terminate_backend(%s)", [backend])

    await database_sync_to_async(terminate)()
    for _ in range(100):  # until the backend is gone: its notice is then on the socket
        if await database_sync_to_async(backend_of_this_loop)() is None:
            break
        await asyncio.sleep(0.02)
    paired = await start_alone_write(second)
    assert (await database_sync_to_async(dialog_of)(paired.user_id)).first_id == waiting.user_id
    assert await database_sync_to_async(backend_of_this_loop)() not in (None, backend)


async def test_a_database_that_is_down_is_djangos_error(on_the_loop, monkeypatch):
    [lone] = await database_sync_to_async(lambda: [entry("chan.a")])()
    params = loop_database._params
    monkeypatch.setattr(loop_database, "_params", lambda: {**params(), "host": "127.0.0.1", "port": free_port()})
    with pytest.raises(DATABASE_UNAVAILABLE):
        await start_alone_write(lone)


async def test_a_flight_that_fails_midway_stores_nothing(on_the_loop):
    [lone] = await database_sync_to_async(lambda: [entry("chan.a")])()

    def steps():
        pool_enter_unheld([new_user(lone, timezone.now())], {"en"})
        yield  # sent: the server has stored the user in the flight's transaction
        raise RuntimeError("a bug in the flight's next step")

    with pytest.raises(RuntimeError):
        await loop_database.run(Flight(steps()))
    assert not await database_sync_to_async(PoolUser.objects.filter(channel_name="chan.a").exists)()
    assert isinstance(await start_alone_write(lone), Started)  # and the connection serves the next


async def test_the_connection_reads_timestamps_in_djangos_time_zone(on_the_loop, monkeypatch):
    # Django's adapters take the server's timestamps as UTC: the session must be in UTC, as
    # Django sets its own, whatever the server's default.
    params = loop_database._params
    monkeypatch.setattr(loop_database, "_params", lambda: {**params(), "options": "-c TimeZone=Asia/Tokyo"})
    [lone] = await database_sync_to_async(lambda: [entry("chan.a")])()
    waiting = await start_alone_write(lone)
    stored = await database_sync_to_async(PoolUser.objects.get)(pk=waiting.user_id)
    read = {}

    def steps():
        read["rows"] = Rows(f"SELECT created_at FROM {PoolUser._meta.db_table} WHERE id = %s", [waiting.user_id])
        yield

    await loop_database.run(Flight(steps()))
    assert read["rows"].all() == [(stored.created_at,)]


def test_the_health_check_takes_any_descriptor(services_ready):
    # select() refuses descriptors of 1024 and more; a process with a thousand WebSockets has them.
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard != resource.RLIM_INFINITY and hard < 1200:
        pytest.skip(f"this process may open {hard} files, too few for a descriptor past 1023")
    resource.setrlimit(resource.RLIMIT_NOFILE, (max(soft, 1200), hard))
    held = [os.open(os.devnull, os.O_RDONLY) for _ in range(1100)]
    try:
        with psycopg.connect(**conninfo(), autocommit=True) as conn:
            assert conn.fileno() >= 1024
            assert quiet(conn)
    finally:
        for fd in held:
            os.close(fd)
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
