"""Pool services: users enter the pool many at a time and are paired in the same
transaction; a waiting user leaves or cancels.

Creating the dialog of a pair belongs to `dialogs`, which calls `pool_enter_many` inside
its own transaction (dialogs.pairing), so that no pair is committed without its dialog.
"""

from __future__ import annotations

import uuid
from collections import Counter, defaultdict
from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass
from datetime import timedelta

from django.db import connection, transaction
from django.utils import timezone

from chat.refusals import Refusal

from .models import PoolUser, ServerProcess
from .processes import process_alive, processes_alive
from chat.requests import StartRequest
from chat.tokens import ResumeToken
from .pipeline import Rows, any_of, prepared, send, values
from .selectors import pool_candidates_many

_TABLE = PoolUser._meta.db_table
_USER_FIELDS = PoolUser._meta.concrete_fields
_USER_COLUMNS = ", ".join(field.column for field in _USER_FIELDS)
_CHANNEL_COLUMN = 1 + _USER_FIELDS.index(PoolUser._meta.get_field("channel_name"))
# The held statuses written out, as the constraint one_held_user_per_connection names them: so
# that the planner can read a connection's held user from that constraint's index (with a
# parameter it cannot, and a prepared statement's generic plan scanned the whole pool).
_HELD_STATUS = f"status IN ({', '.join(repr(str(status)) for status in PoolUser.HELD)})"
_PAIRED_AT = PoolUser._meta.get_field("paired_at")

Status = PoolUser.Status

# Candidates read per newcomer beyond those its batch may take; past a read whose users cannot
# be paired (on dead processes, say), twice as many are read.
CANDIDATE_PAGE = 8


@dataclass(frozen=True, slots=True)
class Entry:
    """A validated /start of one connection, held by the process `process_id`;
    `avoids_nobody` when no dialog of the connection ended within the rematch window (its
    first /start, say), so that it has no partner to avoid (PROTOCOL.md §7.2)."""

    channel_name: str
    request: StartRequest
    process_id: uuid.UUID | None = None
    resume_grace: int = 0  # PROTOCOL.md §7.1: what the connection was granted at CONNECT
    resume_token: ResumeToken | None = None  # given with a grant; only its hash is stored
    avoids_nobody: bool = False

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

    A connection of this process: it has not closed (`closed_channels`: those of its
    connections that closed while they may still hold a user). A connection of another
    process: that process is alive (matching.processes.process_alive), as the candidate
    read brought it along, else as processes_alive reads it once per batch. A user whose
    process was forgotten (released as dead) is never reachable.
    """

    def __init__(self, process_id: uuid.UUID | None, closed_channels: Collection[str]):
        self.process_id = process_id
        self.closed_channels = closed_channels
        self._alive: set | None = None

    def __call__(self, user: PoolUser) -> bool:
        if user.process_id is None:
            return False
        if user.process_id == self.process_id:
            return user.channel_name not in self.closed_channels
        present = getattr(user, "process_present", None)
        if present is not None:
            process = ServerProcess(pk=user.process_id, hostname=user.process_hostname, pid=user.process_pid,
                                    last_seen=user.process_last_seen)
            return process_alive(process, present=present)
        if self._alive is None:
            self._alive = processes_alive()
        return user.process_id in self._alive


def pool_enter_unheld(users: list[PoolUser], languages: set[str]) -> Rows:
    """Store each user unless its connection already holds one, and return the status of
    the user each of those connections holds.

    On PostgreSQL one statement, which first locks the languages (in one order: no deadlock
    between two batches), so that two newcomers in different transactions cannot both miss
    each other: every later statement of the transaction sees what the batches before it
    committed. On SQLite, where one writer runs at a time, the check and then the insert.
    """
    channel_in, channels = any_of("channel_name", [user.channel_name for user in users])
    held = f"SELECT channel_name, status FROM {_TABLE} WHERE {channel_in} AND {_HELD_STATUS}"
    rows, values_params = values(_USER_FIELDS, users)
    insert = f"INSERT INTO {_TABLE} ({_USER_COLUMNS}) SELECT * FROM {rows} AS v"
    if connection.vendor != "postgresql":
        statuses_held = Rows(held, channels)
        send(f"{insert} WHERE NOT EXISTS (SELECT 1 FROM {_TABLE} WHERE channel_name = v.column{_CHANNEL_COLUMN}"
             f" AND {_HELD_STATUS})", values_params)
        return statuses_held
    locks = ("(SELECT count(pg_advisory_xact_lock(k)) FROM (SELECT DISTINCT hashtext('randomchat.pool.' || l)"
             " AS k FROM unnest(%s::text[]) AS l ORDER BY k) AS keys) >= 0")
    return Rows(
        f"WITH held AS ({held} AND {locks}),"
        f" stored AS ({insert} WHERE v.column{_CHANNEL_COLUMN} NOT IN (SELECT channel_name FROM held))"
        f" SELECT channel_name, status FROM held",
        [*channels, sorted(languages), *values_params],
    )


def held_refusal(held: str | None) -> Refusal | None:
    """Why a connection that holds a user in status `held` cannot take another."""
    if held == Status.PAIRED:
        return Refusal("already_in_dialog", "This connection is in a dialog; /stop it first")
    if held is not None:
        return Refusal("already_waiting", "This connection already waits in the pool")
    return None


def _partner_for(
    user: PoolUser, taken: set, reachable: Reachable, avoid: Collection[str], read: tuple[list[PoolUser], bool]
) -> PoolUser | None:
    """The longest-waiting compatible user not `taken`, whose connection is reachable and
    not one of `avoid` (the connections its own just had a dialog with): from the batch's
    `read` of its candidates, or, if that read stopped short and none of it fits, from reads
    of twice as many, in the batch's transaction (locked as the first read was)."""
    rows, complete = read
    while True:
        for candidate in rows:
            if candidate.pk != user.pk and candidate.pk not in taken and candidate.channel_name not in avoid \
                    and reachable(candidate):
                return candidate
        if complete:
            return None
        limit = 2 * len(rows) + CANDIDATE_PAGE
        [rows] = pool_candidates_many([(user, limit)])()
        complete = len(rows) < limit


def _profile(user: PoolUser) -> tuple:
    """What decides a user's candidates: users alike share one read."""
    return (user.language, user.gender, user.age, user.target_gender, user.target_age_min, user.target_age_max)


def _candidates_read(users: list[PoolUser]) -> Callable[[], dict[tuple, tuple[list[PoolUser], bool]]]:
    """The batch's candidates in one statement: per profile, the oldest of its candidates, as
    many as its newcomers can pass over (each newcomer of the language takes at most two of
    them: itself and a partner) plus a page; and whether that read reached the end. A
    newcomer that must pass over recent partners too may find the read short: the rest is
    paged (_partner_for)."""
    per_language = Counter(user.language for user in users)
    wanted: dict[tuple, tuple[PoolUser, int]] = {}
    for user in users:
        limit = CANDIDATE_PAGE + 2 * per_language[user.language]
        key = _profile(user)
        if key not in wanted or wanted[key][1] < limit:
            wanted[key] = (user, limit)
    read = pool_candidates_many(list(wanted.values()))
    return lambda: {key: (rows, len(rows) < limit) for (key, (_, limit)), rows in zip(wanted.items(), read())}


def new_user(entry: Entry, created_at) -> PoolUser:
    """The user a /start stores, not yet saved."""
    return PoolUser(**user_fields(entry.request), **entry.resume_fields(), channel_name=entry.channel_name,
                    process_id=entry.process_id, created_at=created_at)


def pool_enter_many(
    entries: Sequence[Entry],
    *,
    process_id=None,
    closed_channels: Collection[str] = (),
    recent_partners: Callable[[], Mapping[str, Collection[str]]] = dict,
    with_users: Callable[[list[PoolUser]], None] | None = None,
) -> list[Entered | Refusal]:
    """Store a user for each entry and pair it, in entry order, with the longest-waiting
    compatible reachable user (an earlier entry of the batch included) whose connection is
    not among its connection's `recent_partners()` (no rematch).

    Runs in the caller's transaction: dialogs.pairing creates the pairs' dialogs in it. The
    held check, the insert and the candidate read go out together, and the update waits
    for no answer (matching.pipeline): the caller's insert checks it (pool_paired_by).
    `with_users` sends what the caller stores with the new users, while the server runs
    those first statements: a user whose connection already held one is not stored, and
    its statements must leave it out.
    """
    now = timezone.now()
    fresh: dict[str, PoolUser] = {}  # a second /start of one connection in one batch is refused
    for entry in entries:
        if entry.channel_name not in fresh:
            # Distinct times keep the batch's own order for "longest waiting first".
            fresh[entry.channel_name] = new_user(entry, now + timedelta(microseconds=len(fresh)))
    users = list(fresh.values())
    held_rows = pool_enter_unheld(users, {entry.request.language for entry in entries})
    read = _candidates_read(users)
    if with_users is not None:
        with_users(users)
    held = dict(held_rows.all())
    results: list[Entered | Refusal] = []
    for entry in entries:
        user = fresh.pop(entry.channel_name, None)  # None: the connection's second /start in this batch
        refusal = held_refusal(held.get(entry.channel_name, None if user else Status.WAITING))
        results.append(Entered(user) if refusal is None else refusal)
    entered = [r.user for r in results if isinstance(r, Entered)]
    partners = _pair(
        entered, Reachable(process_id, closed_channels), recent_partners(), read(),
        paired_at=now + timedelta(microseconds=len(users)),
    )
    return [Entered(r.user, partners.get(r.user.pk)) if isinstance(r, Entered) else r for r in results]


def _pair(
    users: list[PoolUser], reachable: Reachable, recent_partners: Mapping[str, Collection[str]],
    read: dict[tuple, tuple[list[PoolUser], bool]], *, paired_at,
) -> dict[uuid.UUID, PoolUser]:
    """Pair the new `users` in order; user id -> partner for both sides of every pair."""
    partners: dict[uuid.UUID, PoolUser] = {}
    taken: dict[str, set] = defaultdict(set)  # per language: the users paired by this batch
    for user in users:
        if user.pk in partners:
            continue
        avoid = recent_partners.get(user.channel_name, ())
        partner = _partner_for(user, taken[user.language], reachable, avoid, read[_profile(user)])
        if partner is None:
            continue
        partners[user.pk], partners[partner.pk] = partner, user
        taken[user.language] |= {user.pk, partner.pk}
    if partners:
        id_in, ids = any_of("id", [prepared(PoolUser._meta.pk, pk) for pk in partners])
        send(f"UPDATE {_TABLE} SET status = %s, paired_at = %s WHERE {id_in} AND status = %s",
             [Status.PAIRED, prepared(_PAIRED_AT, paired_at), *ids, Status.WAITING])
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
