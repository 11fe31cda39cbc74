"""Pool services: users enter the pool many at a time and are paired in the same
transaction; a waiting user leaves or cancels.

Creating the dialog of a pair belongs to `dialogs`, which calls `pool_enter_many` inside
its own transaction (dialogs.pairing), so that no pair is committed without its dialog.
"""

from __future__ import annotations

import uuid
from collections import defaultdict
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass
from datetime import timedelta

from django.db import connection, transaction
from django.utils import timezone

from chat.refusals import Refusal

from .models import PoolUser
from .processes import processes_alive
from chat.requests import StartRequest
from chat.tokens import ResumeToken
from .selectors import pool_candidates_for

Status = PoolUser.Status

# Candidates read per query; a page of users on dead processes is skipped and the next read.
CANDIDATE_PAGE = 8


@dataclass(frozen=True, slots=True)
class Entry:
    """A validated /start of one connection, held by the process `process_id`."""

    channel_name: str
    request: StartRequest
    process_id: uuid.UUID | None = None
    resume_grace: int = 0  # PROTOCOL.md §7.1: what the connection was granted at CONNECT
    resume_token: ResumeToken | None = None  # given with a grant; only its hash is stored

    def resume_fields(self) -> dict:
        """The PoolUser columns of the user's resume token."""
        if self.resume_token is None:
            return {}
        token = self.resume_token
        return {"resume_grace": self.resume_grace, "resume_selector": token.selector, "resume_verifier": token.verifier_hash}


@dataclass(frozen=True, slots=True)
class Entered:
    """The user an entry created, and the partner it was paired with (None: it waits)."""

    user: PoolUser
    partner: PoolUser | None = None


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


class Reachable:
    """Whether a waiting user's connection can take a pair now, without asking it.

    A connection of this process: it is open (`live_channels`; None when the caller holds
    no connections to check, as in tools and service tests). A connection of another
    process: that process is alive (matching.processes.processes_alive, read once per
    batch). A user whose process was forgotten (released as dead) is never reachable.
    """

    def __init__(self, process_id: uuid.UUID | None, live_channels: Collection[str] | None):
        self.process_id = process_id
        self.live_channels = live_channels
        self._alive: set | None = None

    def __call__(self, user: PoolUser) -> bool:
        if user.process_id is None:
            return False
        if user.process_id == self.process_id:
            return self.live_channels is None or user.channel_name in self.live_channels
        if self._alive is None:
            self._alive = processes_alive()
        return user.process_id in self._alive


def _lock_languages(languages: set[str]) -> None:
    """Serialize pool entry per language (in one order: no deadlock between two batches),
    so that two newcomers in different transactions cannot both miss each other."""
    if connection.vendor == "postgresql" and languages:
        with connection.cursor() as cursor:
            cursor.execute(
                "SELECT pg_advisory_xact_lock(k) FROM"
                " (SELECT DISTINCT hashtext('randomchat.pool.' || l) AS k FROM unnest(%s::text[]) AS l) AS keys"
                " ORDER BY k",
                [sorted(languages)],
            )


def held_refusal(held: str | None) -> Refusal | None:
    """Why a connection that holds a user in status `held` cannot take another."""
    if held == Status.PAIRED:
        return Refusal("already_in_dialog", "This connection is in a dialog; /stop it first")
    if held is not None:
        return Refusal("already_waiting", "This connection already waits in the pool")
    return None


def _partner_for(user: PoolUser, taken: set, reachable: Reachable, avoid: Collection[str]) -> PoolUser | None:
    """The longest-waiting compatible user not `taken`, whose connection is reachable and
    not one of `avoid` (the connections its own just had a dialog with)."""
    candidates = pool_candidates_for(user).exclude(pk__in=taken)
    if avoid:
        candidates = candidates.exclude(channel_name__in=avoid)
    candidates = candidates.select_for_update(skip_locked=True)
    start = 0
    while True:
        page = list(candidates[start:start + CANDIDATE_PAGE])
        for candidate in page:
            if reachable(candidate):
                return candidate
        if len(page) < CANDIDATE_PAGE:
            return None
        start += CANDIDATE_PAGE


def pool_enter_many(
    entries: Sequence[Entry],
    *,
    process_id=None,
    live_channels: Collection[str] | None = None,
    recent_partners: Mapping[str, Collection[str]] | None = None,
) -> list[Entered | Refusal]:
    """Store a user for each entry and pair it, in entry order, with the longest-waiting
    compatible reachable user (an earlier entry of the batch included) whose connection is
    not among its connection's `recent_partners` (no rematch); one result per entry.

    Runs in the caller's transaction: dialogs.pairing creates the pairs' dialogs in it.
    """
    _lock_languages({entry.request.language for entry in entries})
    channels = [entry.channel_name for entry in entries]
    held = dict(
        PoolUser.objects.filter(channel_name__in=channels, status__in=PoolUser.HELD).values_list("channel_name", "status")
    )
    now = timezone.now()
    results: list[Entered | Refusal] = []
    users = []
    for entry in entries:
        refusal = held_refusal(held.get(entry.channel_name))
        if refusal is not None:
            results.append(refusal)
            continue
        held[entry.channel_name] = Status.WAITING  # a second /start of one connection in one batch
        # Distinct times keep the batch's own order for "longest waiting first".
        user = PoolUser(**user_fields(entry.request), **entry.resume_fields(),
                        channel_name=entry.channel_name, process_id=entry.process_id,
                        created_at=now + timedelta(microseconds=len(users)))
        users.append(user)
        results.append(Entered(user))
    PoolUser.objects.bulk_create(users)
    partners = _pair(
        users, Reachable(process_id, live_channels), recent_partners or {},
        paired_at=now + timedelta(microseconds=len(users)),
    )
    return [Entered(r.user, partners.get(r.user.pk)) if isinstance(r, Entered) else r for r in results]


def _pair(
    users: list[PoolUser], reachable: Reachable, recent_partners: Mapping[str, Collection[str]], *, paired_at
) -> dict[uuid.UUID, PoolUser]:
    """Pair the new `users` in order; user id -> partner for both sides of every pair."""
    partners: dict[uuid.UUID, PoolUser] = {}
    taken: dict[str, set] = defaultdict(set)  # per language: the users paired by this batch
    for user in users:
        if user.pk in partners:
            continue
        partner = _partner_for(user, taken[user.language], reachable, recent_partners.get(user.channel_name, ()))
        if partner is None:
            continue
        partners[user.pk], partners[partner.pk] = partner, user
        taken[user.language] |= {user.pk, partner.pk}
    if partners:
        changed = PoolUser.objects.filter(pk__in=list(partners), status=Status.WAITING).update(
            status=Status.PAIRED, paired_at=paired_at
        )
        if changed != len(partners):  # they are locked (SQLite: one writer): this cannot happen
            raise RuntimeError("a waiting user changed under the pairing batch")
        for user in partners.values():
            user.status, user.paired_at = Status.PAIRED, paired_at
    return partners


def pool_leave_waiting(*, user_id, status: str = Status.GONE) -> PoolUser | None:
    """A waiting user leaves the pool (GONE, or CANCELLED by its own /stop); None if it no
    longer waits (a batch paired it meanwhile: its dialog ends instead)."""
    with transaction.atomic():
        user = PoolUser.objects.select_for_update().filter(pk=user_id, status__in=PoolUser.IN_POOL).first()
        if user is None:
            return None
        user.status, user.left_at = status, timezone.now()
        user.save(update_fields=["status", "left_at"])
        return user


def pool_cancel(*, channel_name: str) -> PoolUser | None:
    """/stop while waiting: the connection's waiting user leaves. None if nothing waits."""
    user_id = (
        PoolUser.objects.filter(channel_name=channel_name, status__in=PoolUser.IN_POOL)
        .values_list("pk", flat=True)
        .first()
    )
    return None if user_id is None else pool_leave_waiting(user_id=user_id, status=Status.CANCELLED)
