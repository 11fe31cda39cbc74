"""Operator work on the pool: removing waiting users from it (the admin, `prune_pool`).

Its status and pruning, which also concern dialogs, are dialogs.maintenance's.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from django.db import transaction
from django.utils import timezone

from chat import events
from chat.events import Notice
from chat.notify import send_notices_sync

from .models import PoolUser
from .services import pool_leave_waiting

Status = PoolUser.Status


def send_after_commit(notices: list[Notice]) -> None:
    if notices:
        transaction.on_commit(lambda: send_notices_sync(notices))


def pool_remove_one(user_id, *, reason: str) -> list[Notice] | None:
    """Take one waiting user out of the pool (CANCELLED: its connection is alive, only its
    waiting ended) and tell its connection why. None if it no longer waits."""
    user = pool_leave_waiting(user_id=user_id, status=Status.CANCELLED)
    if user is None:
        return None
    left = events.chat_event(events.LEFT, service={"reason": reason})
    return [Notice(channel=user.channel_name, message=left)]


def pool_timeout(*, process_id, max_wait: float, now: datetime | None = None) -> list[Notice]:
    """PROTOCOL.md §7.3: this process's users who have waited `max_wait` seconds leave the
    pool, and each is told 30 "timeout". Each process tells its own users; a dead one's are
    released with it."""
    overdue = PoolUser.objects.filter(
        process_id=process_id, status=Status.WAITING,
        created_at__lte=(now or timezone.now()) - timedelta(seconds=max_wait),
    ).values_list("pk", flat=True)
    notices: list[Notice] = []
    for user_id in list(overdue):
        notices += pool_remove_one(user_id, reason="timeout") or []
    return notices


@dataclass
class PoolRemoval:
    removed: list[uuid.UUID] = field(default_factory=list)
    skipped: list[uuid.UUID] = field(default_factory=list)
    """Users not in the pool (paired, ended, gone, cancelled): left as they were."""


def pool_remove(*, user_ids: Iterable, reason: str = "admin") -> PoolRemoval:
    """An operator removes users from the pool; each gets 30 with chatUUID null and `reason`.

    Only users still waiting are removed; a user in a dialog is left alone (end its dialog
    instead).
    """
    result = PoolRemoval()
    notices: list[Notice] = []
    for user_id in user_ids:
        sent = pool_remove_one(user_id, reason=reason)
        if sent is None:
            result.skipped.append(user_id)
        else:
            result.removed.append(user_id)
            notices += sent
    send_after_commit(notices)
    return result
