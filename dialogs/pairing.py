"""Pairing as the chat sees it: users enter the pool and paired ones get their dialog in
one transaction; users leave, and their dialogs end. The pool itself is matching's.

`dialogs_start` is a group-commit writer (randomchat.batching.Batch): every /start that
arrives while the previous batch is written goes into the next transaction.
"""

from __future__ import annotations

import json
import logging
import uuid
from datetime import timedelta
from collections import defaultdict
from collections.abc import Callable, Collection
from dataclasses import dataclass, field

from django.conf import settings
from django.db import connection, transaction
from django.utils import timezone

from matching import processes
from matching.models import PoolUser, ServerProcess
from matching.pipeline import Flight, Rows, any_of, pipelined_atomic, prepared, send, values
from matching.selectors import pool_paired_by, pool_partner
from matching.services import (
    Entered, Entry, held_refusal, new_user, pool_enter_many, pool_enter_unheld, pool_leave_waiting,
)
from chat import events
from chat.events import Notice
from chat.refusals import Refusal

from .models import Dialog
from .services import dialog_end

logger = logging.getLogger(__name__)

# A leave looks its user up again when a batch paired it meanwhile; that happens once at most,
# so a third look-up is only there to end the loop.
LEAVE_ATTEMPTS = 3
Status = PoolUser.Status


@dataclass
class Started:
    """What a /start did: the user it created, and the notices of its pair if it made one."""

    user_id: uuid.UUID
    notices: list[Notice] = field(default_factory=list)


Notified = Callable[[str], tuple[str, list] | None]


def dialogs_start(
    entries: list[Entry], *, process_id=None, closed_channels: Collection[str] = (),
    with_users: Callable[[list[PoolUser]], None] | None = None, notified: Notified | None = None,
) -> list[Started | Refusal]:
    """Store every entry's user, pair who can be paired and create their dialogs, in one
    transaction; the 10s go out once it has committed. `with_users` sends what the caller
    stores with the batch's new users (the chat: their addresses; see pool_enter_many), and
    `notified`, given the name of a relation of users to tell of their new dialog (chat, id,
    channel_name, card: their partner's), is the SQL that tells those it can as the
    transaction commits (the chat: the 10s that ride on the commit, randomchat.pair_notify);
    their notices are left out of the results.

    On PostgreSQL the statements go out in flights (matching.pipeline). A /start alone in
    its batch, as every /start of an idle server is, has its pair decided by the statement
    that stores it: one flight (start_alone). A batch of several is paired here, in entry
    order, from one read of the candidates of all: one flight for what pairing reads, a
    second for what it writes."""
    if len(entries) == 1 and connection.vendor == "postgresql":
        flight, finish = start_alone(entries[0], process_id=process_id, closed_channels=closed_channels,
                                     with_users=with_users, notified=notified)
        flight.run()
        return [finish()]
    with pipelined_atomic():
        entered = pool_enter_many(
            entries, process_id=process_id, closed_channels=closed_channels,
            recent_partners=recent_partners([entry.channel_name for entry in entries if not entry.avoids_nobody]),
            with_users=with_users,
        )
        pairs = [e for e in entered if isinstance(e, Entered) and e.partner is not None]
        dialogs = {}
        for e in pairs:
            if e.partner.pk not in dialogs:  # both sides of a pair may be in the batch
                first, second = _first_and_second(e.user, e.partner)
                dialogs[e.user.pk] = Dialog(first=first, second=second, language=first.language,
                                            started_at=first.paired_at)
        _dialogs_insert(list(dialogs.values()))
        told = tell_pairs(notified, list(dialogs.values()))
    ridden = told()
    return [_started(e, dialogs, ridden) if isinstance(e, Entered) else e for e in entered]


def tell_pairs(notified: Notified | None, dialogs: list[Dialog]) -> Callable[[], set[str]]:
    """Send `notified` over both users of each new dialog; returns the function that reads,
    once the transaction committed, the channels it told."""
    tell = notified("told") if notified is not None and dialogs else None
    if tell is None:
        return set
    sql, params = tell
    sides = [(dialog, user, partner) for dialog in dialogs
             for user, partner in ((dialog.first, dialog.second), (dialog.second, dialog.first))]
    told = Rows(
        "WITH told AS (SELECT * FROM unnest(%s::uuid[], %s::uuid[], %s::text[], %s::text[]) AS t(chat, id, channel_name, card))"
        f" {sql}",
        [[dialog.pk for dialog, _, _ in sides], [user.pk for _, user, _ in sides],
         [user.channel_name for _, user, _ in sides], [json.dumps(partner_card(partner)) for _, _, partner in sides],
         *params],
    )
    return lambda: {row[0] for row in told.all()}


def _first_and_second(a: PoolUser, b: PoolUser) -> tuple[PoolUser, PoolUser]:
    """A dialog's first user is the one who came first."""
    return tuple(sorted((a, b), key=lambda u: (u.created_at, u.pk)))


def start_alone(
    entry: Entry, *, process_id, closed_channels: Collection[str],
    with_users: Callable[[list[PoolUser]], None] | None, notified: Notified | None,
) -> tuple[Flight, Callable[[], Started | Refusal]]:
    """A /start alone in its batch, on PostgreSQL, in one round trip: its held check and
    insert, then one statement that picks its partner (matching.selectors.pool_partner, the
    rule of pool_enter_many in SQL), marks both paired and stores their dialog. Deciding from
    a read of the pool, as a batch of several does, takes a second round trip, which an idle
    pair across processes waits for (~0.6 ms on the development VM; bench/README.md,
    "Deciding a lone pair inside PostgreSQL").

    Returns the flight of its statements, to be run by the caller (on the database thread,
    or by the event loop: randomchat.consumers), and the function that tells, once it ran,
    what the /start did. Each statement is made as late as it can be: the server runs one
    while the next is made (the held check and insert first; the users' addresses, which no
    later statement reads, last)."""
    made = {}

    def steps():
        user = made["user"] = new_user(entry, timezone.now())
        made["held"] = pool_enter_unheld([user], {user.language})
        yield
        made["dialog"] = dialog = Dialog(first=user, second=user, language=user.language,
                                         started_at=user.created_at + timedelta(microseconds=1))
        made["paired"] = _pair_stored(entry, user, dialog, process_id=process_id, closed_channels=closed_channels,
                                      notified=notified)
        yield
        if with_users is not None:
            with_users([user])

    def finish() -> Started | Refusal:
        refusal = held_refusal(dict(made["held"].all()).get(entry.channel_name))
        if refusal is not None:
            return refusal
        user, dialog = made["user"], made["dialog"]
        found = made["paired"].all()
        if not found:
            return Started(user.pk)
        *partner_row, ridden = found[0]
        partner_user = PoolUser.from_db(connection.alias, _USER_ATTNAMES, partner_row)
        user.status = partner_user.status = Status.PAIRED
        user.paired_at = partner_user.paired_at = dialog.started_at
        dialog.first, dialog.second = _first_and_second(user, partner_user)
        return _started(Entered(user, partner_user), {user.pk: dialog}, set(ridden))

    return Flight(steps()), finish


def _pair_stored(entry: Entry, user: PoolUser, dialog: Dialog, *, process_id, closed_channels: Collection[str],
                 notified: Notified | None) -> Rows:
    """The statement of start_alone that picks the user's partner, marks both paired, stores
    their dialog and tells the partner; its row is the partner's, and the channels told."""
    avoid = ("", []) if entry.avoids_nobody else _recent_partners_of(entry.channel_name)
    partner, partner_params = pool_partner(user, process_id=process_id, closed_channels=closed_channels,
                                           stale_before=processes.stale_before(), avoid=avoid)
    rows, dialog_params = values(_DIALOG_FIELDS, [dialog])
    # The dialog as stored: its id only once both users are paired (else NULL: the insert,
    # and the transaction with it, fails), and its first user the earlier one (_first_and_second).
    earlier = "(partner.created_at, partner.id) < (%s::timestamptz, %s::uuid)"
    columns, column_params = [], []
    for index, dialog_field in enumerate(_DIALOG_FIELDS, 1):
        if dialog_field.primary_key:
            columns.append(f"CASE WHEN (SELECT count(*) FROM paired) = 2 THEN v.column{index} END")
        elif dialog_field.name in ("first", "second"):
            partner_side = "partner.id" if dialog_field.name == "first" else f"v.column{index}"
            user_side = f"v.column{index}" if dialog_field.name == "first" else "partner.id"
            columns.append(f"CASE WHEN {earlier} THEN {partner_side} ELSE {user_side} END")
            column_params += [user.created_at, user.pk]
        else:
            columns.append(f"v.column{index}")
    # The partner is told of the pair as the transaction commits, by this same statement.
    tell = notified("told") if notified is not None else None
    if tell is None:
        told_ctes, told, told_params = "", "'{}'::text[]", []
    else:
        told_ctes = (", told AS (SELECT %s::uuid AS chat, id, channel_name, %s::text AS card FROM partner),"
                     f" notified AS ({tell[0]})")
        told = "ARRAY(SELECT channel_name FROM notified)"
        told_params = [dialog.pk, json.dumps(partner_card(user)), *tell[1]]
    return Rows(
        f"WITH partner AS ({partner}),"
        f" paired AS (UPDATE {_USER} SET status = %s, paired_at = %s WHERE status = %s"
        f" AND id IN (SELECT id FROM partner UNION ALL SELECT %s FROM partner) RETURNING id),"
        f" dialog AS (INSERT INTO {_DIALOG} ({_DIALOG_COLUMNS}) SELECT {', '.join(columns)}"
        f" FROM {rows} AS v, partner){told_ctes}"
        f" SELECT {_USER_COLUMNS}, {told} FROM partner",
        [*partner_params, Status.PAIRED, dialog.started_at, Status.WAITING, user.pk, *column_params, *dialog_params,
         *told_params],
    )


_DIALOG = Dialog._meta.db_table
_USER = PoolUser._meta.db_table
_DIALOG_FIELDS = Dialog._meta.concrete_fields
_DIALOG_COLUMNS = ", ".join(field.column for field in _DIALOG_FIELDS)
_DIALOG_VALUES = ", ".join(f"v.column{index}" for index in range(2, len(_DIALOG_FIELDS) + 1))
_USER_ATTNAMES = [field.attname for field in PoolUser._meta.concrete_fields]
_ENDED_AT = Dialog._meta.get_field("ended_at")
_USER_COLUMNS = ", ".join(field.column for field in PoolUser._meta.concrete_fields)


def _dialogs_insert(dialogs: list[Dialog]) -> None:
    """Store the new dialogs, once the pool says that their users are paired as this batch
    decided: else the first id is NULL, the insert fails and the transaction with it."""
    if not dialogs:
        return
    paired, guard_params = pool_paired_by([u for d in dialogs for u in (d.first, d.second)], dialogs[0].started_at)
    rows, params = values(_DIALOG_FIELDS, dialogs)
    send(f"INSERT INTO {_DIALOG} ({_DIALOG_COLUMNS})"
         f" SELECT CASE WHEN {paired} THEN v.column1 END, {_DIALOG_VALUES} FROM {rows} AS v",
         [*guard_params, *params])


def recent_partners(channels: list[str]) -> Callable[[], dict[str, set[str]]]:
    """PROTOCOL.md §7.2: for each of these connections, the connections it had a dialog with
    that ended within RANDOMCHAT_REMATCH_WINDOW seconds; they are not paired again. The
    look-up is sent now and read when the returned function is called."""
    if not settings.RANDOMCHAT_REMATCH_WINDOW or not channels:
        return dict
    ended = Rows(*_recent_partners_sql(channels))

    def read() -> dict[str, set[str]]:
        partners: dict[str, set[str]] = defaultdict(set)
        for channel, partner in ended.all():
            partners[channel].add(partner)
        return partners

    return read


def _recent_partners_of(channel: str) -> tuple[str, list]:
    """recent_partners of one connection, as a SELECT of their channels."""
    if not settings.RANDOMCHAT_REMATCH_WINDOW:
        return "", []
    sql, params = _recent_partners_sql([channel])
    return f"SELECT partner FROM ({sql}) AS recent", params


def _recent_partners_sql(channels: list[str]) -> tuple[str, list]:
    """(connection, partner) for recent_partners, as SQL: each side of a dialog found by its
    own index, from the connections' users. On PostgreSQL a LATERAL join: a prepared
    statement's generic plan otherwise began with every dialog that ended within the window
    (it cannot know how few users the connections hold) and read them all for each /start."""
    channel_in, params = any_of("u.channel_name", channels)
    since = timezone.now() - timedelta(seconds=settings.RANDOMCHAT_REMATCH_WINDOW)
    ended = [Dialog.Status.ENDED, prepared(_ENDED_AT, since)]
    if connection.vendor == "postgresql":
        sides = " UNION ALL ".join(
            f"SELECT d.{theirs}_id AS other FROM {_DIALOG} AS d WHERE d.{mine}_id = u.id AND d.status = %s"
            " AND d.ended_at >= %s" for mine, theirs in (("first", "second"), ("second", "first")))
        return (f"SELECT u.channel_name AS connection, o.channel_name AS partner FROM {_USER} AS u"
                f" CROSS JOIN LATERAL ({sides}) AS x JOIN {_USER} AS o ON o.id = x.other WHERE {channel_in}",
                [*ended, *ended, *params])
    where = f" WHERE {channel_in} AND d.status = %s AND d.ended_at >= %s"
    sides = [f"SELECT u.channel_name AS connection, o.channel_name AS partner FROM {_USER} AS u"
             f" JOIN {_DIALOG} AS d ON d.{mine}_id = u.id JOIN {_USER} AS o ON o.id = d.{theirs}_id{where}"
             for mine, theirs in (("first", "second"), ("second", "first"))]
    return " UNION ALL ".join(sides), [*params, *ended] * 2


def _started(entered: Entered, dialogs: dict, ridden: set[str]) -> Started:
    """What the /start did: its pair's 10s, but for those that rode on the commit."""
    dialog = dialogs.get(entered.user.pk)
    if dialog is None:  # it waits, or its partner made the dialog and sends the 10s
        return Started(entered.user.pk)
    user, partner = entered.user, entered.partner
    return Started(user.pk, [_paired(dialog, recipient, other) for recipient, other in ((user, partner), (partner, user))
                             if recipient.channel_name not in ridden])


def pairs_again(*, channel_names: Collection[str]) -> list[Notice]:
    """The 10 of every active dialog to those of its users who hold one of these connections:
    for a process that may have missed some (randomchat.pair_notify)."""
    held = PoolUser.objects.filter(channel_name__in=channel_names, status=Status.PAIRED).values_list("pk", flat=True)
    notices = []
    for dialog in Dialog.objects.active_of(held).select_related("first", "second"):
        for recipient, partner in ((dialog.first, dialog.second), (dialog.second, dialog.first)):
            if recipient.channel_name in channel_names:  # both users of an active dialog are paired
                notices.append(_paired(dialog, recipient, partner))
    return notices


def partner_card(partner: PoolUser) -> dict:
    """What a 10 tells of the partner."""
    return {"name": partner.name, "languageCode": partner.language, "userAttributes": partner.attributes}


def paired_message(chat, recipient_id, partner: dict) -> dict:
    """A 10: the dialog `chat` began, for its user `recipient_id`, with the partner of that card."""
    return events.chat_event(events.PAIRED, chat, sender=recipient_id, service={"partner": partner})


def _paired(dialog: Dialog, recipient: PoolUser, partner: PoolUser) -> Notice:
    return Notice(channel=recipient.channel_name, message=paired_message(dialog.pk, recipient.pk, partner_card(partner)))


def _leave(user_filter: dict, reason: str) -> list[Notice]:
    """The held user leaves: it waits no more, or its dialog ends with `reason`; the notices to send.

    Each step locks what it changes in the chat's lock order (dialogs.services); a user
    paired between the look-up and the lock is looked up again, now with its dialog.
    """
    for _ in range(LEAVE_ATTEMPTS):
        held = PoolUser.objects.filter(**user_filter, status__in=PoolUser.HELD).values_list("pk", "status").first()
        if held is None:
            return []
        user_id, status = held
        if status != Status.PAIRED:
            gone = Status.CANCELLED if reason == "cancelled" else Status.GONE
            if pool_leave_waiting(user_id=user_id, status=gone) is not None:
                return []
            continue
        dialog_id = Dialog.objects.active_of([user_id]).values_list("pk", flat=True).first()
        if dialog_id is not None:
            return dialog_end(dialog_id=dialog_id, ended_by=user_id, reason=reason)
    return []


def user_leave(*, channel_name: str, reason: str) -> list[Notice]:
    """The connection's user leaves (it closed). Idempotent: a connection that holds no
    user changes nothing."""
    return _leave({"channel_name": channel_name}, reason)


def users_release(*, user_ids, reason: str) -> list[Notice]:
    """Release users whose connections are gone (a dead process, a lost disconnect)."""
    notices = []
    for user_id in user_ids:
        notices += _leave({"pk": user_id}, reason)
    return notices


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
            notices += users_release(user_ids=processes.held_users(process_ids=[pk]), reason="disconnect")
            ServerProcess.objects.filter(pk=pk).delete()
        released.append(process)
    return released, notices


def process_release_dead() -> tuple[list[ServerProcess], list[Notice]]:
    """Release what the processes `processes_dead` names held (prune_pool)."""
    return process_release(silent={p.pk: p.last_seen for p in processes.processes_dead()})


def process_reconcile(process: ServerProcess, live_channels: set[str]) -> list[Notice]:
    """Release users of this process whose connection closed without a clean leave."""
    lost = processes.lost_users(process, live_channels)
    return users_release(user_ids=lost, reason="disconnect") if lost else []
