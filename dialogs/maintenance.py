"""Operator work on dialogs and the pool: ending dialogs from the admin, purging old ended
ones (and the pool users who left without one), the pool's status, and pruning it of dead
processes' users and long waits."""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass
from datetime import datetime, timedelta

from django.db import transaction
from django.db.models import Count, Exists, Min, OuterRef, Q, QuerySet
from django.utils import timezone

from matching.maintenance import pool_remove_one, send_after_commit
from matching.models import PoolUser
from matching.processes import held_users, processes_dead
from chat.events import Notice
from chat.notify import send_notices_sync

from .models import Dialog, Message
from .pairing import process_release_dead
from .services import dialog_end

Status = PoolUser.Status
UNSPECIFIED_GENDER = "unspecified"

PURGE_BATCH_SIZE = 1000


def dialog_end_many(*, dialog_ids: Iterable, reason: str = Dialog.EndReason.ADMIN) -> list:
    """End each active dialog (nobody's doing: ended_by is null); both participants get 30 `reason`.

    Returns the ids of the dialogs it ended; ended or unknown ones are skipped.
    """
    ended, notices = [], []
    for dialog_id in dialog_ids:
        sent: list[Notice] = dialog_end(dialog_id=dialog_id, ended_by=None, reason=str(reason))
        if sent:
            ended.append(dialog_id)
            notices += sent
    if notices:
        transaction.on_commit(lambda: send_notices_sync(notices))
    return ended


@dataclass
class DialogPurgeReport:
    """What `dialog_purge` deleted, or with `dry_run` would delete."""

    dry_run: bool
    dialogs: int = 0
    messages: int = 0
    participants: int = 0
    """Pool users that only the purged dialogs referenced."""
    left_users: int = 0
    """Pool users who left the pool (cancelled, or their connection went) before the cutoff
    and that no dialog references."""
    batches: int = 0

    def as_dict(self) -> dict:
        return asdict(self)


def _participant_ids(dialogs: QuerySet) -> QuerySet:
    # ended_by is always one of the two participants, or null.
    return PoolUser.objects.filter(
        Q(pk__in=dialogs.values("first")) | Q(pk__in=dialogs.values("second"))
    ).values("pk")


def _unreferenced(users: QuerySet, *, dialogs: QuerySet, messages: QuerySet) -> QuerySet:
    """`users` that none of `dialogs` and `messages` references and no connection holds."""
    return (
        users.exclude(status__in=PoolUser.HELD)
        .exclude(Exists(dialogs.filter(first=OuterRef("pk"))))
        .exclude(Exists(dialogs.filter(second=OuterRef("pk"))))
        .exclude(Exists(dialogs.filter(ended_by=OuterRef("pk"))))
        .exclude(Exists(messages.filter(author=OuterRef("pk"))))
    )


def _participants_only_in(dialogs: QuerySet) -> QuerySet:
    """Participants of `dialogs` that nothing else references and no connection holds."""
    return _unreferenced(
        PoolUser.objects.filter(pk__in=_participant_ids(dialogs)),
        dialogs=Dialog.objects.exclude(pk__in=dialogs.values("pk")),
        messages=Message.objects.exclude(dialog__in=dialogs.values("pk")),
    )


def _left_before(cutoff: datetime) -> QuerySet:
    """Users who left the pool without a dialog that is kept: they cancelled, or their
    connection went, before `cutoff` (rows older than left_at count by creation)."""
    left = PoolUser.objects.filter(status__in=PoolUser.LEFT_POOL).filter(
        Q(left_at__lt=cutoff) | Q(left_at__isnull=True, created_at__lt=cutoff)
    )
    return _unreferenced(left, dialogs=Dialog.objects.all(), messages=Message.objects.all())


def dialog_purge(
    *,
    older_than: timedelta,
    dry_run: bool = False,
    batch_size: int = PURGE_BATCH_SIZE,
    progress: Callable[[int, int, str], None] | None = None,
    now: datetime | None = None,
) -> DialogPurgeReport:
    """Delete dialogs that ended more than `older_than` ago, their messages, and the
    participants only they referenced, in batches of `batch_size` dialogs; then the pool
    users who left the pool as long ago without a dialog that is kept.

    `progress(done, total, "dialogs" or "pool users")` is called after each batch when
    there is more than one.
    """
    cutoff = (now or timezone.now()) - older_than
    expired = Dialog.objects.filter(status=Dialog.Status.ENDED, ended_at__lt=cutoff)
    report = DialogPurgeReport(dry_run=dry_run)
    total = expired.count()
    if dry_run:
        report.dialogs = total
        report.messages = Message.objects.filter(dialog__in=expired.values("pk")).count()
        report.participants = _participants_only_in(expired).count()
        report.left_users = _left_before(cutoff).count()
        report.batches = -(-total // batch_size) + -(-report.left_users // batch_size)  # ceilings
        return report

    while True:
        with transaction.atomic():
            batch_ids = list(expired.order_by("ended_at", "pk").values_list("pk", flat=True)[:batch_size])
            if not batch_ids:
                break
            batch = Dialog.objects.filter(pk__in=batch_ids)
            participants = list(_participants_only_in(batch).values_list("pk", flat=True))
            report.messages += Message.objects.filter(dialog__in=batch_ids).delete()[0]
            report.dialogs += Dialog.objects.filter(pk__in=batch_ids).delete()[1].get(Dialog._meta.label, 0)
            report.participants += PoolUser.objects.filter(pk__in=participants).delete()[1].get(
                PoolUser._meta.label, 0
            )
        report.batches += 1
        if progress is not None and total > batch_size:
            progress(report.dialogs, total, "dialogs")

    left = _left_before(cutoff)
    total = left.count()
    while True:
        with transaction.atomic():
            batch_ids = list(left.order_by("created_at", "pk").values_list("pk", flat=True)[:batch_size])
            if not batch_ids:
                break
            # The same conditions again: a row that changed meanwhile stays.
            report.left_users += left.filter(pk__in=batch_ids).delete()[1].get(PoolUser._meta.label, 0)
        report.batches += 1
        if progress is not None and total > batch_size:
            progress(report.left_users, total, "pool users")
    return report


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
        pairing=PoolUser.objects.filter(status__in=PoolUser.CLAIMING).count(),
        active_dialogs=Dialog.objects.filter(status=Dialog.Status.ACTIVE).count(),
    )


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
                sent = pool_remove_one(user_id, reason="timeout")
                if sent is not None:
                    report.timed_out += 1
                    notices += sent

    send_after_commit(notices)
    return report
