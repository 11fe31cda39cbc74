"""Operator work on the pool: its status, pruning it, removing users from it.

Used by the `pool_status` and `prune_pool` commands and by the admin. Each service sends
the notices its work produced once its transactions have committed.
"""

from __future__ import annotations

import uuid
from collections import Counter
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from datetime import datetime, timedelta

from django.db import transaction
from django.db.models import Count, Min
from django.utils import timezone

from dialogs.models import Dialog
from chat import events
from chat.events import Notice
from chat.notify import send_notices_sync

from .models import PoolUser
from .processes import held_users, process_release_dead, processes_dead
from .services import pool_release

Status = PoolUser.Status

UNSPECIFIED_GENDER = "unspecified"


def _send_after_commit(notices: list[Notice]) -> None:
    if notices:
        transaction.on_commit(lambda: send_notices_sync(notices))


@dataclass
class PoolStatus:
    """A snapshot of the pool; `as_dict()` gives the keys `pool_status --json` prints."""

    waiting: int
    by_language: dict[str, int]
    by_gender: dict[str, int]
    by_language_and_gender: dict[str, dict[str, int]]
    oldest_wait_seconds: float | None
    pairing: int
    active_dialogs: int

    def as_dict(self) -> dict:
        return asdict(self)


def pool_status(*, now: datetime | None = None) -> PoolStatus:
    """Waiting users by language and gender, the longest wait, and the active dialogs."""
    now = now or timezone.now()
    waiting = PoolUser.objects.filter(status=Status.WAITING)
    rows = waiting.values_list("language", "gender").annotate(n=Count("pk")).order_by()
    by_language: Counter[str] = Counter()
    by_gender: Counter[str] = Counter()
    crossed: dict[str, Counter[str]] = {}
    for language, gender, n in rows:
        gender = gender or UNSPECIFIED_GENDER
        by_language[language] += n
        by_gender[gender] += n
        crossed.setdefault(language, Counter())[gender] += n
    oldest = waiting.aggregate(oldest=Min("created_at"))["oldest"]
    return PoolStatus(
        waiting=sum(by_language.values()),
        by_language=dict(sorted(by_language.items())),
        by_gender=dict(sorted(by_gender.items())),
        by_language_and_gender={lang: dict(sorted(c.items())) for lang, c in sorted(crossed.items())},
        oldest_wait_seconds=None if oldest is None else max(0.0, (now - oldest).total_seconds()),
        pairing=PoolUser.objects.filter(status__in=[Status.CLAIMED, Status.PAIRING]).count(),
        active_dialogs=Dialog.objects.filter(status=Dialog.Status.ACTIVE).count(),
    )


def _pool_remove_one(user_id, *, statuses, reason: str) -> list[Notice] | None:
    """Take one user out of the pool (status CANCELLED) and tell its connection why.

    None if the user was no longer in one of `statuses`. The row is locked first, so that
    pool_release, which would end the dialog of a user paired meanwhile, only ever sees a
    user still in the pool (on SQLite the IMMEDIATE transaction serializes writers).
    """
    with transaction.atomic():
        user = PoolUser.objects.select_for_update().filter(pk=user_id, status__in=statuses).first()
        if user is None:
            return None
        # "cancelled" is the release reason that leaves the user CANCELLED, not GONE:
        # its connection is alive, only its waiting was ended.
        notices = pool_release(user_ids=[user.pk], reason="cancelled")
    left = events.chat_event(events.LEFT, service={"reason": reason})
    return [*notices, Notice(channel=user.channel_name, message=left)]


@dataclass
class PoolRemoval:
    removed: list[uuid.UUID] = field(default_factory=list)
    skipped: list[uuid.UUID] = field(default_factory=list)
    """Users not in the pool (paired, ended, gone, cancelled): left as they were."""


def pool_remove(*, user_ids: Iterable, reason: str = "admin") -> PoolRemoval:
    """An operator removes users from the pool; each gets 30 with chatUUID null and `reason`.

    Only users still in the pool (waiting, or in the middle of a pairing) are removed; a
    user in a dialog is left alone (end its dialog instead).
    """
    result = PoolRemoval()
    notices: list[Notice] = []
    for user_id in user_ids:
        sent = _pool_remove_one(user_id, statuses=PoolUser.IN_POOL, reason=reason)
        if sent is None:
            result.skipped.append(user_id)
        else:
            result.removed.append(user_id)
            notices += sent
    _send_after_commit(notices)
    return result


@dataclass
class PoolPruneReport:
    """What `pool_prune` did, or with `dry_run` would do."""

    dry_run: bool
    dead_processes: int = 0
    gone_waiting: int = 0
    """Users in the pool whose connection was on a dead process."""
    gone_dialogs: int = 0
    """Active dialogs with a participant on a dead process; the partner got 30 "disconnect"."""
    timed_out: int = 0
    """Waiting users, connection alive, who waited longer than max_wait; told 30 "timeout"."""
    max_wait: float | None = None

    def as_dict(self) -> dict:
        return asdict(self)


def _gone_on(process_ids) -> tuple[set, set]:
    """The pool users and the active dialogs held by these processes."""
    users = held_users(process_ids=process_ids)
    in_pool = set(PoolUser.objects.filter(pk__in=users, status__in=PoolUser.IN_POOL).values_list("pk", flat=True))
    dialogs = set(Dialog.objects.active_of(users).values_list("pk", flat=True))
    return in_pool, dialogs


def pool_prune(*, max_wait: float | None = None, dry_run: bool = False, now: datetime | None = None) -> PoolPruneReport:
    """Release what dead server processes held, then remove users who waited too long.

    Dead processes are released as `process_release_dead` does it (their users leave with
    reason "disconnect", their partners are told). With `max_wait` (seconds), a waiting user
    whose connection is alive and who waited longer is removed and told 30 "timeout".
    """
    now = now or timezone.now()
    report = PoolPruneReport(dry_run=dry_run, max_wait=max_wait)
    notices: list[Notice] = []

    if dry_run:
        dead = processes_dead(now=now)
        in_pool, dialogs = _gone_on([p.pk for p in dead])
    else:
        # Read before the release (it forgets the processes), counting only those it released.
        before = {p.pk: _gone_on([p.pk]) for p in processes_dead(now=now)}
        dead, notices = process_release_dead()
        in_pool, dialogs = set(), set()
        for process in dead:
            users, chats = before.get(process.pk, (set(), set()))
            in_pool |= users
            dialogs |= chats
    report.dead_processes, report.gone_waiting, report.gone_dialogs = len(dead), len(in_pool), len(dialogs)

    if max_wait is not None:
        dead_ids = [p.pk for p in dead]
        overdue = (
            PoolUser.objects.filter(status=Status.WAITING, created_at__lt=now - timedelta(seconds=max_wait))
            .exclude(process_id__in=dead_ids)
            .order_by("created_at")
            .values_list("pk", flat=True)
        )
        if dry_run:
            report.timed_out = overdue.count()
        else:
            for user_id in list(overdue):
                sent = _pool_remove_one(user_id, statuses=[Status.WAITING], reason="timeout")
                if sent is not None:
                    report.timed_out += 1
                    notices += sent

    _send_after_commit(notices)
    return report
