"""Resume after a dropped connection (PROTOCOL.md §7.1).

A participant whose connection drops without DISCONNECT or /stop is detached: its dialog
stays active for the participant's grace, the partner told nothing. A new connection on any
process that shows the participant's token takes it over and is sent what it missed, read
back from the database; a grace that runs out ends the dialog as a disconnect. Each step
locks the dialog, then the participant, in the chat's one lock order (dialogs.services).
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from datetime import timedelta

from django.db import transaction
from django.utils import timezone

from chat import events
from chat.events import Notice
from chat.refusals import resume_failed
from chat.tokens import ResumeToken
from matching.models import PoolUser
from matching.services import held_refusal

from .models import Dialog
from .pairing import partner_card
from .services import dialog_end, dialog_events, locked_dialogs

Status = PoolUser.Status

@dataclass
class Resumed:
    """A participant taken over by a new connection: its 10, then the events it missed."""

    user_id: uuid.UUID
    dialog_id: uuid.UUID
    first_seq: int  # the first event the new connection is owed
    grace: int  # the participant's grace from now on
    paired: dict  # the 10, `resumed`, with the new token
    missed: list[dict] = field(default_factory=list)
    notices: list[Notice] = field(default_factory=list)  # for the connection it was taken from


def _active_dialog(user_id) -> uuid.UUID | None:
    return Dialog.objects.active_of([user_id]).values_list("pk", flat=True).first()


def participant_detach(*, channel_name: str, delivered_seq: int) -> int:
    """The connection dropped: keep its dialog for its user's grace, `delivered_seq` the last
    event it was sent. The grace in seconds, or 0: the user leaves as without resume."""
    found = (
        PoolUser.objects.filter(channel_name=channel_name, status=Status.PAIRED, resume_grace__gt=0)
        .values_list("pk", "resume_grace")
        .first()
    )
    if found is None:
        return 0
    user_id, grace = found
    dialog_id = _active_dialog(user_id)
    if dialog_id is None:
        return 0
    with transaction.atomic():
        locked_dialogs([dialog_id])  # an end or a resume meanwhile changed the user: no match
        detached = PoolUser.objects.filter(pk=user_id, channel_name=channel_name, status=Status.PAIRED).update(
            detached_at=timezone.now(), detached_seq=delivered_seq
        )
    return grace if detached else 0


def participant_resume(
    *, token: ResumeToken, channel_name: str, process_id, grace: int, new_token: ResumeToken
) -> Resumed:
    """The connection `channel_name` takes over the user of `token`, whose next token is
    `new_token`. Refused with `resume_failed` for an unknown, used or expired token, or a
    dialog that has ended."""
    held = PoolUser.objects.filter(channel_name=channel_name, status__in=PoolUser.HELD).values_list("status", flat=True)
    refusal = held_refusal(held.first())
    if refusal is not None:
        raise refusal
    user_id = PoolUser.objects.filter(resume_selector=token.selector).values_list("pk", flat=True).first()
    dialog_id = None if user_id is None else _active_dialog(user_id)
    if dialog_id is None:
        raise resume_failed()
    with transaction.atomic():
        dialog = locked_dialogs([dialog_id]).get(dialog_id)
        user = PoolUser.objects.select_for_update().filter(pk=user_id, resume_selector=token.selector).first()
        if user is None or dialog is None or not token.matches(user.resume_verifier) or user.status != Status.PAIRED:
            raise resume_failed()
        now = timezone.now()
        if user.detached_at is not None and user.detached_at + timedelta(seconds=user.resume_grace) < now:
            raise resume_failed("The resume grace has run out")
        taken_from = user.channel_name if user.detached_at is None else None
        first_seq = (dialog.last_seq if user.detached_seq is None else user.detached_seq) + 1
        user.channel_name, user.process_id = channel_name, process_id
        user.resume_selector, user.resume_verifier = new_token.selector, new_token.verifier_hash
        user.resume_grace = grace or user.resume_grace
        user.detached_at = user.detached_seq = None
        user.save(update_fields=[
            "channel_name", "process", "resume_selector", "resume_verifier", "resume_grace", "detached_at",
            "detached_seq",
        ])
        partner_id = dialog.second_id if dialog.first_id == user.pk else dialog.first_id
        partner = PoolUser.objects.get(pk=partner_id)
        missed = dialog_events(chat=dialog.pk, first_seq=first_seq, last_seq=dialog.last_seq)
    service = {"partner": partner_card(partner), "resumed": True, "resumeToken": new_token.secret}
    return Resumed(
        user_id=user.pk, dialog_id=dialog.pk, first_seq=first_seq, grace=user.resume_grace,
        paired=events.chat_event(events.PAIRED, dialog.pk, sender=user.pk, service=service),
        missed=missed,
        notices=[] if taken_from is None else [Notice(taken_from, {"type": "resume.taken"})],
    )


def graces_expire(*, now=None) -> tuple[int, list[Notice]]:
    """End the dialogs of detached participants whose grace ran out, as their disconnect; how
    many ended, and the notices. Any process may run it: an end is taken under the lock."""
    now = now or timezone.now()
    detached = PoolUser.objects.filter(status=Status.PAIRED, detached_at__isnull=False).values_list(
        "pk", "detached_at", "resume_grace"
    )
    ended, notices = 0, []
    for user_id, detached_at, grace in detached:
        if detached_at + timedelta(seconds=grace) > now:
            continue
        dialog_id = _active_dialog(user_id)
        if dialog_id is None:
            continue
        with transaction.atomic():
            locked_dialogs([dialog_id])
            if not PoolUser.objects.filter(pk=user_id, detached_at=detached_at, status=Status.PAIRED).exists():
                continue  # resumed meanwhile
            sent = dialog_end(dialog_id=dialog_id, ended_by=user_id, reason=Dialog.EndReason.DISCONNECT)
        ended += bool(sent)
        notices += sent
    return ended, notices
