"""Pairing as the chat sees it: users enter the pool and paired ones get their dialog in
one transaction; users leave, and their dialogs end. The pool itself is matching's.

`dialogs_start` is a group-commit writer (randomchat.batching.Batch): every /start that
arrives while the previous batch is written goes into the next transaction.
"""

from __future__ import annotations

import logging
import uuid
from datetime import timedelta
from collections import defaultdict
from collections.abc import Callable, Collection
from dataclasses import dataclass, field

from django.conf import settings
from django.db import transaction
from django.utils import timezone

from matching import processes
from matching.models import PoolUser, ServerProcess
from matching.pipeline import Rows, any_of, pipelined_atomic, prepared, send, values
from matching.selectors import pool_paired_by
from matching.services import Entered, Entry, pool_enter_many, pool_leave_waiting
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


def dialogs_start(
    entries: list[Entry], *, process_id=None, live_channels: Collection[str] | None = None,
    with_users: Callable[[list[PoolUser]], None] | None = None,
    before_commit: Callable[[list[Notice]], None] | None = None,
) -> list[Started | Refusal]:
    """Store every entry's user, pair who can be paired and create their dialogs, in one
    transaction; the 10s go out once it has committed. On PostgreSQL its statements go out
    in two flights (matching.pipeline): what pairing reads, with what `with_users` sends
    about the batch's new users (the chat: their addresses; see pool_enter_many), then what
    it writes, with what `before_commit` sends about the notices it made (the chat: the 10s
    that ride on the commit)."""
    with pipelined_atomic():
        entered = pool_enter_many(
            entries, process_id=process_id, live_channels=live_channels,
            recent_partners=recent_partners([entry.channel_name for entry in entries if not entry.avoids_nobody]),
            with_users=with_users,
        )
        pairs = [e for e in entered if isinstance(e, Entered) and e.partner is not None]
        dialogs = {}
        for e in pairs:
            if e.partner.pk not in dialogs:  # both sides of a pair may be in the batch
                first, second = sorted((e.user, e.partner), key=lambda u: (u.created_at, u.pk))
                dialogs[e.user.pk] = Dialog(first=first, second=second, language=first.language,
                                            started_at=first.paired_at)
        _dialogs_insert(list(dialogs.values()))
        started = [_started(e, dialogs) if isinstance(e, Entered) else e for e in entered]
        if before_commit is not None:
            before_commit([notice for s in started if isinstance(s, Started) for notice in s.notices])
    return started


_DIALOG = Dialog._meta.db_table
_USER = PoolUser._meta.db_table
_DIALOG_FIELDS = Dialog._meta.concrete_fields
_DIALOG_COLUMNS = ", ".join(field.column for field in _DIALOG_FIELDS)
_DIALOG_VALUES = ", ".join(f"v.column{index}" for index in range(2, len(_DIALOG_FIELDS) + 1))


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
    window = settings.RANDOMCHAT_REMATCH_WINDOW
    if not window or not channels:
        return dict
    first_in, firsts = any_of("f.channel_name", channels)
    second_in, seconds = any_of("s.channel_name", channels)
    since = prepared(Dialog._meta.get_field("ended_at"), timezone.now() - timedelta(seconds=window))
    ended = Rows(
        f"SELECT f.channel_name, s.channel_name FROM {_DIALOG} AS d"
        f" JOIN {_USER} AS f ON f.id = d.first_id JOIN {_USER} AS s ON s.id = d.second_id"
        f" WHERE d.status = %s AND d.ended_at >= %s AND ({first_in} OR {second_in})",
        [Dialog.Status.ENDED, since, *firsts, *seconds],
    )

    def read() -> dict[str, set[str]]:
        partners: dict[str, set[str]] = defaultdict(set)
        for first, second in ended.all():
            partners[first].add(second)
            partners[second].add(first)
        return partners

    return read


def _started(entered: Entered, dialogs: dict) -> Started:
    dialog = dialogs.get(entered.user.pk)
    if dialog is None:  # it waits, or its partner made the dialog and sends the 10s
        return Started(entered.user.pk)
    user, partner = entered.user, entered.partner
    return Started(user.pk, [_paired(dialog, user, partner), _paired(dialog, partner, user)])


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


def _paired(dialog: Dialog, recipient: PoolUser, partner: PoolUser) -> Notice:
    service = {"partner": partner_card(partner)}
    return Notice(
        channel=recipient.channel_name,
        message=events.chat_event(events.PAIRED, dialog.pk, sender=recipient.pk, service=service),
    )


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
