"""Server processes: each live one beats; what a dead one held is released (dialogs.pairing).

A process is dead when its heartbeat is older than RANDOMCHAT_PROCESS_TIMEOUT, or, on this
host, when its pid no longer runs (so `prune_pool` notices a SIGKILL at once).
"""

from __future__ import annotations

import os
import socket
from datetime import timedelta

from django.conf import settings
from django.db import DEFAULT_DB_ALIAS, connection, connections
from django.db.models import BooleanField
from django.db.models.expressions import RawSQL
from django.utils import timezone

from chat import events
from chat.events import Notice

from .models import PoolUser, ServerProcess

HOSTNAME = socket.gethostname()


def process_register() -> ServerProcess:
    return ServerProcess.objects.create(hostname=HOSTNAME, pid=os.getpid())


def process_beat(process: ServerProcess) -> bool:
    """Refresh this process's heartbeat; True if it had been taken for dead and was
    registered again (its users were released meanwhile)."""
    now = timezone.now()
    if ServerProcess.objects.filter(pk=process.pk).update(last_seen=now):
        process.last_seen = now
        return False
    process.last_seen = now
    process.save(force_insert=True)
    return True


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _gone_here(process: ServerProcess) -> bool:
    """A process of this host whose pid no longer runs: dead, whatever its heartbeat says."""
    return process.hostname == HOSTNAME and not _pid_alive(process.pid)


def process_heartbeats(*, alive: ServerProcess) -> tuple[dict, dict]:
    """The other processes' last_seen, and those of them that are certainly dead (this host, no pid)."""
    beats, gone = {}, {}
    for process in ServerProcess.objects.exclude(pk=alive.pk).only("hostname", "pid", "last_seen"):
        beats[process.pk] = process.last_seen
        if _gone_here(process):
            gone[process.pk] = process.last_seen
    return beats, gone


def processes_dead(*, now=None) -> list[ServerProcess]:
    """Processes whose heartbeat is older than the timeout by the database's rows alone: for
    an operator's `prune_pool`; a running process judges by what it watched (liveness.py)."""
    now = now or timezone.now()
    stale = now - timedelta(seconds=settings.RANDOMCHAT_PROCESS_TIMEOUT)
    return [p for p in ServerProcess.objects.all() if p.last_seen < stale or _gone_here(p)]


def held_users(*, process_ids) -> list:
    """Users the processes' connections hold; a detached one waits for a resume on any process
    or the end of its grace (dialogs.resume), not for its old process."""
    return list(
        PoolUser.objects.filter(process_id__in=process_ids, status__in=PoolUser.HELD, detached_at__isnull=True)
        .values_list("pk", flat=True)
    )


def process_tell_stranded(*, live_channels: set[str], since) -> list[Notice]:
    """This process was taken for dead at `since` or later, and its waiting users were
    removed from the pool while their connections lived on: each gets 30 "timeout", as
    a user who waited too long does, and may /start again. (Those in a dialog got its 30.)"""
    stranded = PoolUser.objects.filter(
        channel_name__in=live_channels, status=PoolUser.Status.GONE, left_at__gte=since
    ).values_list("channel_name", flat=True)
    timeout = events.chat_event(events.LEFT, service={"reason": "timeout"})
    return [Notice(channel=channel, message=timeout) for channel in stranded]


def lost_users(process: ServerProcess, live_channels: set[str]) -> list:
    """Users of this process whose connection closed without a clean leave (a detached one
    left on purpose)."""
    return [
        pk
        for pk, channel in PoolUser.objects.filter(
            process=process, status__in=PoolUser.HELD, detached_at__isnull=True
        ).values_list("pk", "channel_name")
        if channel not in live_channels
    ]


# Presence: on PostgreSQL each process holds a session advisory lock on a connection of its
# own. When the process dies, SIGKILLed or on another host, the server drops the connection
# and the lock with it at once, long before its heartbeat goes stale: pairing reads the held
# locks and pairs nobody with a user of a dead process.

_presence: dict = {}  # {process id: the connection that holds its lock}, one at most


def presence_key(process_id) -> int:
    """The process's advisory lock: 63 bits of its id (pg_locks shows it as classid, objid)."""
    return process_id.int >> 65


def process_presence_hold(process: ServerProcess) -> None:
    """Take the process's presence lock, or take it again after its connection was lost;
    a registration that replaces another (a new event loop, in tests) drops the old one's.
    Nothing on SQLite: one process serves it."""
    if connection.vendor != "postgresql":
        return
    holder = _presence.get(process.pk)
    if holder is not None and holder.is_usable():
        return
    process_presence_release()
    holder = connections.create_connection(DEFAULT_DB_ALIAS)
    holder.inc_thread_sharing()  # taken at registration, checked by the heartbeat thread
    with holder.cursor() as cursor:
        cursor.execute("SELECT pg_advisory_lock(%s)", [presence_key(process.pk)])
    _presence[process.pk] = holder


def process_presence_release() -> None:
    """Drop this process's presence lock (tests, before their database is dropped)."""
    while _presence:
        _, holder = _presence.popitem()
        holder.close()


# Whether another session holds the advisory lock of key `{}`, in SQL: a shared try of it
# fails only against its holder's exclusive lock, and takes the key from nobody (it ends with
# the transaction). It looks at that key alone, where reading pg_locks copies the server's
# whole lock table, ~0.3 ms, twice on a pairing's way.
HELD_ELSEWHERE = "NOT pg_try_advisory_xact_lock_shared({})"
# presence_key of the process id column `{}`, in SQL.
PRESENCE_KEY = "(('x' || left(replace({}::text, '-', ''), 16))::bit(64) >> 1)::bigint"


def process_alive(process: ServerProcess, *, present: bool) -> bool:
    """Whether pairing may count on `process`'s connections: its heartbeat is fresh, on this
    host its pid runs, and it holds its presence lock (`present`; always, on SQLite)."""
    return present and process.last_seen >= stale_before() and not _gone_here(process)


def stale_before():
    """A process that has not beaten since is dead."""
    return timezone.now() - timedelta(seconds=settings.RANDOMCHAT_PROCESS_TIMEOUT)


def processes_alive() -> set:
    """Ids of the processes whose connections can be paired now (process_alive), in one
    statement. Pairing errs towards "dead": it only waits longer."""
    rows = ServerProcess.objects.only("hostname", "pid", "last_seen")
    if connection.vendor != "postgresql":
        return {process.pk for process in rows if process_alive(process, present=True)}
    rows = rows.annotate(present=RawSQL(HELD_ELSEWHERE.format(PRESENCE_KEY.format("id")), [],
                                        output_field=BooleanField()))
    return {process.pk for process in rows if process_alive(process, present=process.present)}
