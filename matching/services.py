"""Pool services. Pairing is two-phase so that nobody is paired with a dead connection:

1. `pool_enter` stores the newcomer and, in the same transaction, claims the longest-waiting
   compatible user (status CLAIMED) for it (status PAIRING).
2. The claimed user's own connection confirms with `pair_confirm`, which creates the dialog.
   A claim its connection does not confirm in time is released by `pair_release`, which
   claims the next candidate.

Every service returns the notices to send once its transaction has committed.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field

from django.db import connection, transaction
from django.utils import timezone

from dialogs.models import Dialog
from dialogs.services import dialog_end
from chat import events
from chat.events import Notice
from chat.refusals import Refusal

from .models import PoolUser
from chat.requests import StartRequest
from .selectors import pool_candidates_for

Status = PoolUser.Status


@dataclass
class PoolResult:
    """What a pool service did, for the consumer that called it."""

    user_id: uuid.UUID | None = None
    dialog_id: uuid.UUID | None = None
    notices: list[Notice] = field(default_factory=list)


def offer(claimed: PoolUser, claimant: PoolUser) -> Notice:
    """Asks the claimed user's connection to confirm the pair."""
    return Notice(
        channel=claimed.channel_name,
        message={"type": "pair.offer", "claimed": str(claimed.pk), "claimant": str(claimant.pk)},
    )


def _retry(user: PoolUser) -> Notice:
    """Asks a user's connection to look for a partner again."""
    return Notice(channel=user.channel_name, message={"type": "pair.retry", "user": str(user.pk)})


def _lock_language(language: str) -> None:
    """Serialize pool entry per language, so two newcomers cannot both miss each other."""
    if connection.vendor == "postgresql":
        with connection.cursor() as cursor:
            cursor.execute("SELECT pg_advisory_xact_lock(hashtext(%s))", [f"randomchat.pool.{language}"])


def _lock_users(pks) -> dict[uuid.UUID, PoolUser]:
    """Lock users in primary-key order, the one order in which every service locks users."""
    return {u.pk: u for u in PoolUser.objects.select_for_update().filter(pk__in=list(pks)).order_by("pk")}


class _Moved(Exception):
    """The user changed between planning its locks and taking them."""


def _lock_plan(user: PoolUser) -> tuple[uuid.UUID | None, frozenset]:
    """The rows that releasing `user` changes: its active dialog, then the users involved."""
    if user.status == Status.PAIRED:
        row = (
            Dialog.objects.active_of([user])
            .values_list("pk", "first_id", "second_id")
            .first()
        )
        if row is not None:
            return row[0], frozenset(row[1:])
    if user.status == Status.PAIRING:
        claimed = PoolUser.objects.filter(claimed_by=user, status=Status.CLAIMED).values_list("pk", flat=True)
        return None, frozenset([user.pk, *claimed])
    return None, frozenset([user.pk])


def _lock_held(**filters) -> PoolUser | None:
    """Find a user and lock it with every row its release changes, in the pool's lock order:
    the dialog first, then users by primary key (as pair_confirm and dialog_stop lock them).

    Two services that lock shared rows in different orders (a confirmation and a release, a
    stop and the partner's disconnect) deadlock on PostgreSQL, and one of them fails.
    """
    for attempt in range(5):
        try:
            with transaction.atomic():  # a savepoint: rolling back releases a stale plan's locks
                return _lock_planned(filters, strict=attempt < 4)
        except _Moved:
            continue
    return None  # unreachable: the last attempt is not strict


def _lock_planned(filters: dict, *, strict: bool) -> PoolUser | None:
    user = PoolUser.objects.filter(**filters).first()
    if user is None:
        return None
    dialog_id, pks = _lock_plan(user)
    if dialog_id is not None:
        list(Dialog.objects.select_for_update(of=("self",)).filter(pk=dialog_id))
    user = _lock_users(pks)[user.pk]
    if not PoolUser.objects.filter(**filters).filter(pk=user.pk).exists():
        return None  # it left meanwhile: nothing to do
    if strict and _lock_plan(user) != (dialog_id, pks):
        raise _Moved
    return user


def _lock_in_pool(pk, status) -> PoolUser | None:
    """The user if it still has `status`, locked after its language (pool_enter's order)."""
    user = PoolUser.objects.filter(pk=pk, status=status).first()
    if user is None:
        return None
    _lock_language(user.language)
    return _lock_held(pk=pk, status=status)


def _claim_next(user: PoolUser) -> list[Notice]:
    """Claim the longest-waiting compatible user for `user`, or leave `user` waiting."""
    for candidate in pool_candidates_for(user).select_for_update(skip_locked=True)[:5]:
        claimed = PoolUser.objects.filter(pk=candidate.pk, status=Status.WAITING).update(
            status=Status.CLAIMED, claimed_by=user
        )
        if claimed == 1:
            user.status = Status.PAIRING
            user.save(update_fields=["status"])
            return [offer(candidate, user)]
    user.status = Status.WAITING
    user.save(update_fields=["status"])
    return []


def user_fields(request: StartRequest) -> dict:
    """The PoolUser columns a validated /start request fills."""
    return {
        "name": request.name,
        "language": request.language,
        "gender": request.attributes.gender,
        "age": request.attributes.age,
        "target_gender": request.target.gender,
        "target_age_min": request.target.age_min,
        "target_age_max": request.target.age_max,
    }


def pool_enter(*, channel_name: str, request: StartRequest, process_id=None) -> PoolResult:
    """Store a new user for this connection and claim a partner for it if one waits."""
    with transaction.atomic():
        _lock_language(request.language)
        held = (
            PoolUser.objects.filter(channel_name=channel_name, status__in=PoolUser.HELD)
            .values_list("status", flat=True)
            .first()
        )
        if held == Status.PAIRED:
            raise Refusal("already_in_dialog", "This connection is in a dialog; /stop it first")
        if held is not None:
            raise Refusal("already_waiting", "This connection already waits in the pool")
        user = PoolUser.objects.create(
            **user_fields(request), channel_name=channel_name, process_id=process_id
        )
        return PoolResult(user_id=user.pk, notices=_claim_next(user))


def pair_retry(*, user_id) -> PoolResult:
    """Look for a partner again for a user that went back to waiting."""
    with transaction.atomic():
        user = _lock_in_pool(user_id, Status.WAITING)
        if user is None:
            return PoolResult()
        return PoolResult(user_id=user.pk, notices=_claim_next(user))


def pair_confirm(*, claimed_id, claimant_id, channel_name: str) -> PoolResult:
    """Called by the claimed user's connection: make the pair final and create the dialog."""
    with transaction.atomic():
        users = _lock_users([claimed_id, claimant_id])
        claimed, claimant = users.get(uuid.UUID(str(claimed_id))), users.get(uuid.UUID(str(claimant_id)))
        if claimed is None or claimed.channel_name != channel_name:
            return PoolResult()
        if (
            claimant is None
            or claimed.status != Status.CLAIMED
            or claimed.claimed_by_id != claimant.pk
            or claimant.status != Status.PAIRING
        ):
            # Stale offer. A claimed user released as unresponsive is alive after all: it waits again.
            if claimed.status == Status.GONE and claimed.claimed_by_id == getattr(claimant, "pk", None):
                claimed.status, claimed.left_at = Status.WAITING, None
                claimed.save(update_fields=["status", "left_at"])
            if claimed.status == Status.WAITING:
                return PoolResult(notices=[_retry(claimed)])
            return PoolResult()
        now = timezone.now()
        for user in (claimed, claimant):
            user.status, user.paired_at = Status.PAIRED, now
            user.save(update_fields=["status", "paired_at"])
        dialog = Dialog.objects.create(first=claimed, second=claimant, language=claimed.language, started_at=now)
    return PoolResult(
        user_id=claimed.pk,
        dialog_id=dialog.pk,
        notices=[_paired_notice(dialog, claimed, claimant), _paired_notice(dialog, claimant, claimed)],
    )


def _paired_notice(dialog: Dialog, recipient: PoolUser, partner: PoolUser) -> Notice:
    service = {
        "partner": {
            "name": partner.name,
            "languageCode": partner.language,
            "userAttributes": partner.attributes,
        }
    }
    return Notice(
        channel=recipient.channel_name,
        message=events.chat_event(events.PAIRED, dialog.pk, sender=recipient.pk, service=service),
    )


def pair_release(*, claimant_id) -> PoolResult:
    """The claimed user did not confirm: it is gone; claim the next candidate instead."""
    with transaction.atomic():
        claimant = _lock_in_pool(claimant_id, Status.PAIRING)
        if claimant is None:
            return PoolResult()
        PoolUser.objects.filter(claimed_by=claimant, status=Status.CLAIMED).update(
            status=Status.GONE, left_at=timezone.now()
        )
        return PoolResult(user_id=claimant.pk, notices=_claim_next(claimant))


def pool_leave(*, channel_name: str, reason: str) -> PoolResult:
    """The connection's user leaves: gone while waiting, or its dialog ends with `reason`.

    Idempotent: a connection that holds no user changes nothing.
    """
    with transaction.atomic():
        user = _lock_held(channel_name=channel_name, status__in=PoolUser.HELD)
        return _release(user, reason) if user is not None else PoolResult()


def pool_release(*, user_ids, reason: str) -> list[Notice]:
    """Release users whose connections are gone (a dead process, a lost disconnect)."""
    notices = []
    for user_id in user_ids:
        with transaction.atomic():
            user = _lock_held(pk=user_id, status__in=PoolUser.HELD)
            if user is not None:
                notices += _release(user, reason).notices
    return notices


def _release(user: PoolUser, reason: str) -> PoolResult:
    if user.status == Status.PAIRED:
        dialog = Dialog.objects.active_of([user]).first()
        user.status, user.left_at = Status.ENDED, timezone.now()
        user.save(update_fields=["status", "left_at"])
        notices = dialog_end(dialog_id=dialog.pk, ended_by=user.pk, reason=reason) if dialog else []
        return PoolResult(user_id=user.pk, dialog_id=dialog and dialog.pk, notices=notices)
    return PoolResult(user_id=user.pk, notices=_leave_pool(user, reason))


def _leave_pool(user: PoolUser, reason: str) -> list[Notice]:
    notices = []
    if user.status == Status.CLAIMED and user.claimed_by_id is not None:
        # The claimant need not wait for its timeout.
        claimant = PoolUser.objects.filter(pk=user.claimed_by_id).values_list("channel_name", flat=True).first()
        if claimant:
            notices.append(Notice(channel=claimant, message={"type": "pair.declined", "claimant": str(user.claimed_by_id)}))
    elif user.status == Status.PAIRING:
        # The user it claimed is alive as far as we know: back to the pool, and it looks again.
        for claimed in PoolUser.objects.filter(claimed_by=user, status=Status.CLAIMED):
            claimed.status = Status.WAITING
            claimed.save(update_fields=["status"])
            notices.append(_retry(claimed))
    user.status = Status.CANCELLED if reason == "cancelled" else Status.GONE
    user.left_at = timezone.now()
    user.save(update_fields=["status", "left_at"])
    return notices


def pool_cancel(*, channel_name: str) -> PoolResult | None:
    """/stop while waiting: the user leaves the pool. None if the connection waits for nothing."""
    with transaction.atomic():
        user = _lock_held(channel_name=channel_name, status__in=PoolUser.IN_POOL)
        if user is None:
            return None
        notices = _leave_pool(user, "cancelled")
    cancelled = events.chat_event(events.LEFT, service={"reason": "cancelled"})
    return PoolResult(user_id=user.pk, notices=[*notices, Notice(channel=channel_name, message=cancelled)])
