"""Server processes: each live one beats; what a dead one held is released.

A process is dead when its heartbeat is older than RANDOMCHAT_PROCESS_TIMEOUT, or, on this
host, when its pid no longer runs (so `prune_pool` notices a SIGKILL at once).
"""

from __future__ import annotations

import os
import socket
from datetime import timedelta

from django.conf import settings
from django.db import transaction
from django.utils import timezone

from chat import events
from chat.events import Notice

from .models import PoolUser, ServerProcess
from .services import pool_release

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
    return list(
        PoolUser.objects.filter(process_id__in=process_ids, status__in=PoolUser.HELD).values_list("pk", flat=True)
    )


def process_release(*, silent: dict) -> tuple[list[ServerProcess], list[Notice]]:
    """Release every user held by each silent process, then forget the process; `silent`
    maps each to the last_seen it was judged on, and one that has beaten since is spared."""
    released: list[ServerProcess] = []
    notices: list[Notice] = []
    for pk, last_seen in silent.items():
        with transaction.atomic():
            # Locked: a beat of that process waits, then finds its row gone and registers again.
            process = ServerProcess.objects.select_for_update().filter(pk=pk, last_seen=last_seen).first()
            if process is None:
                continue
            notices += pool_release(user_ids=held_users(process_ids=[pk]), reason="disconnect")
            ServerProcess.objects.filter(pk=pk).delete()
        released.append(process)
    return released, notices


def process_release_dead() -> tuple[list[ServerProcess], list[Notice]]:
    """Release what the processes `processes_dead` names held (prune_pool)."""
    return process_release(silent={p.pk: p.last_seen for p in processes_dead()})


def process_tell_stranded(*, live_channels: set[str], since) -> list[Notice]:
    """This process was taken for dead at `since` or later, and its waiting users were
    removed from the pool while their connections lived on: each gets 30 "timeout", as
    a user who waited too long does, and may /start again. (Those in a dialog got its 30.)"""
    stranded = PoolUser.objects.filter(
        channel_name__in=live_channels, status=PoolUser.Status.GONE, left_at__gte=since
    ).values_list("channel_name", flat=True)
    timeout = events.chat_event(events.LEFT, service={"reason": "timeout"})
    return [Notice(channel=channel, message=timeout) for channel in stranded]


def process_reconcile(process: ServerProcess, live_channels: set[str]) -> list[Notice]:
    """Release users of this process whose connection closed without a clean leave."""
    lost = [
        pk
        for pk, channel in PoolUser.objects.filter(process=process, status__in=PoolUser.HELD).values_list(
            "pk", "channel_name"
        )
        if channel not in live_channels
    ]
    return pool_release(user_ids=lost, reason="disconnect") if lost else []
