"""Operator work on dialogs: ending them from the admin, purging old ended ones."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass
from datetime import datetime, timedelta

from django.db import transaction
from django.db.models import Exists, OuterRef, Q, QuerySet
from django.utils import timezone

from matching.models import PoolUser
from chat.events import Notice
from chat.notify import send_notices_sync

from .models import Dialog, Message
from .services import dialog_end

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
    batches: int = 0

    def as_dict(self) -> dict:
        return asdict(self)


def _participant_ids(dialogs: QuerySet) -> QuerySet:
    # ended_by is always one of the two participants, or null.
    return PoolUser.objects.filter(
        Q(pk__in=dialogs.values("first")) | Q(pk__in=dialogs.values("second"))
    ).values("pk")


def _participants_only_in(dialogs: QuerySet) -> QuerySet:
    """Participants of `dialogs` that nothing else references and no connection holds."""
    others = Dialog.objects.exclude(pk__in=dialogs.values("pk"))
    return (
        PoolUser.objects.filter(pk__in=_participant_ids(dialogs))
        .exclude(status__in=PoolUser.HELD)
        .exclude(Exists(others.filter(first=OuterRef("pk"))))
        .exclude(Exists(others.filter(second=OuterRef("pk"))))
        .exclude(Exists(others.filter(ended_by=OuterRef("pk"))))
        .exclude(Exists(Message.objects.filter(author=OuterRef("pk")).exclude(dialog__in=dialogs.values("pk"))))
    )


def dialog_purge(
    *,
    older_than: timedelta,
    dry_run: bool = False,
    batch_size: int = PURGE_BATCH_SIZE,
    progress: Callable[[int, int], None] | None = None,
    now: datetime | None = None,
) -> DialogPurgeReport:
    """Delete dialogs that ended more than `older_than` ago, their messages, and the
    participants only they referenced, in batches of `batch_size` dialogs.

    `progress(done, total)` is called after each batch when there is more than one.
    """
    cutoff = (now or timezone.now()) - older_than
    expired = Dialog.objects.filter(status=Dialog.Status.ENDED, ended_at__lt=cutoff)
    report = DialogPurgeReport(dry_run=dry_run)
    total = expired.count()
    if dry_run:
        report.dialogs = total
        report.messages = Message.objects.filter(dialog__in=expired.values("pk")).count()
        report.participants = _participants_only_in(expired).count()
        report.batches = -(-total // batch_size)
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
            progress(report.dialogs, total)
    return report
