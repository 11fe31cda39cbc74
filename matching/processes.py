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

from chat.events import Notice

from .models import PoolUser, ServerProcess
from .services import pool_release

HOSTNAME = socket.gethostname()


def process_register() -> ServerProcess:
    return ServerProcess.objects.create(hostname=HOSTNAME, pid=os.getpid())


def process_beat(process: ServerProcess) -> None:
    """Refresh this process's heartbeat; re-register it if it was taken for dead."""
    now = timezone.now()
    if not ServerProcess.objects.filter(pk=process.pk).update(last_seen=now):
        process.last_seen = now
        process.save(force_insert=True)


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def processes_dead(*, now=None, alive: ServerProcess | None = None) -> list[ServerProcess]:
    """Dead processes; `alive` (the caller itself) never is."""
    now = now or timezone.now()
    stale = now - timedelta(seconds=settings.RANDOMCHAT_PROCESS_TIMEOUT)
    dead = []
    others = ServerProcess.objects.exclude(pk=alive.pk) if alive is not None else ServerProcess.objects.all()
    for process in others:
        if process.last_seen < stale or (process.hostname == HOSTNAME and not _pid_alive(process.pid)):
            dead.append(process)
    return dead


def held_users(*, process_ids) -> list:
    return list(
        PoolUser.objects.filter(process_id__in=process_ids, status__in=PoolUser.HELD).values_list("pk", flat=True)
    )


def process_release_dead(*, alive: ServerProcess | None = None) -> tuple[list[ServerProcess], list[Notice]]:
    """Release every user held by a dead process, then forget the process."""
    dead = processes_dead(alive=alive)
    notices: list[Notice] = []
    for process in dead:
        notices += pool_release(user_ids=held_users(process_ids=[process.pk]), reason="disconnect")
        with transaction.atomic():
            ServerProcess.objects.filter(pk=process.pk, last_seen=process.last_seen).delete()
    return dead, notices


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
