"""Dialog services: messages and the end of a dialog. Each runs in one transaction.

LOCK ORDER. Every transaction of the chat takes its row locks in one order, so that none
waits for another that waits for it (a /stop and the partner's disconnect, two batches):

1. a server process's row (dialogs.pairing.process_release, releasing a dead process);
2. dialogs, by primary key (`locked_dialogs`);
3. then their users, by primary key (`_end`); a waiting user alone (pool_leave_waiting).

Pool entry (matching.services) first takes its languages' advisory locks, in key order,
and then locks only waiting users, skipping locked ones. A process's presence lock is a
session lock on a connection of its own, outside every transaction (matching.processes).
"""

from __future__ import annotations

import logging
import uuid

from django.db import transaction
from django.db.models import Q
from django.utils import timezone

from chat import events
from chat.events import Notice
from chat.refusals import Refusal
from chat.requests import DialogRequest, MessageDraft, uuid_field
from matching.models import PoolUser

from .models import Dialog, Message

logger = logging.getLogger(__name__)


def check_owned(dialog: Dialog | None, sender: uuid.UUID, held_user: uuid.UUID | None) -> Dialog:
    """The dialog, if the connection's own user is in it."""
    if dialog is None:
        raise Refusal("unknown_chat", "No dialog has this chatUUID", "chatUUID")
    if sender != held_user or sender not in (dialog.first_id, dialog.second_id):
        raise Refusal("not_participant", "senderUUID is not this connection's user in this dialog", "senderUUID")
    return dialog


def check_active(dialog: Dialog) -> Dialog:
    """The dialog, if it is active."""
    if dialog.status != Dialog.Status.ACTIVE:
        raise Refusal("dialog_ended", "This dialog has ended", "chatUUID", after_seq=dialog.last_seq)
    return dialog


def locked_dialogs(chats) -> dict[uuid.UUID, Dialog]:
    """Dialogs locked in primary-key order (LOCK ORDER above), with both participants'
    channels, the addresses of the dialog's events."""
    dialogs = (
        Dialog.objects.select_for_update(of=("self",))
        .select_related("first", "second")
        .only("status", "last_seq", "first__channel_name", "second__channel_name", "first", "second")
        .filter(pk__in=chats)
        .order_by("pk")
    )
    return {dialog.pk: dialog for dialog in dialogs}


def _to_participants(dialog: Dialog, message: dict) -> list[Notice]:
    return [Notice(channel=user.channel_name, message=message) for user in (dialog.first, dialog.second)]


def messages_store(drafts: list[MessageDraft]) -> list[list[Notice] | Refusal]:
    """Store many connections' messages in one transaction (group commit); each draft gets
    the notices for both participants, or its refusal. The database is the record: the
    notices are sent only once this has committed.

    A draft whose clientMessageId its sender already used is not stored again: the sender
    alone gets the first one's 20 again, as the answer to its resend."""
    results: list[list[Notice] | Refusal] = []
    with transaction.atomic():
        dialogs = locked_dialogs({draft.chat for draft in drafts})
        stored = _stored_by_client_id(drafts)
        rows = []
        for draft in drafts:
            try:
                dialog = check_owned(dialogs.get(draft.chat), draft.sender, draft.held_user)
                first = stored.get((draft.sender, draft.client_message_id))
                if first is not None:
                    results.append([_answer_again(dialog, draft.sender, first)])
                    continue
                check_active(dialog)
            except Refusal as refusal:
                results.append(refusal)
                continue
            dialog.last_seq += 1
            row = Message(
                dialog=dialog, author_id=draft.sender, content=draft.content, seq=dialog.last_seq,
                client_message_id=draft.client_message_id,
            )
            rows.append(row)
            if draft.client_message_id is not None:
                stored[(draft.sender, draft.client_message_id)] = row
            event = events.chat_event(
                events.MESSAGE, dialog.pk, sender=draft.sender, content=draft.content, seq=dialog.last_seq
            )
            results.append(_to_participants(dialog, event))
        Message.objects.bulk_create(rows)
        Dialog.objects.bulk_update({row.dialog for row in rows}, ["last_seq"])
    return results


def _stored_by_client_id(drafts: list[MessageDraft]) -> dict[tuple, Message]:
    keys = [(d.sender, d.client_message_id) for d in drafts if d.client_message_id is not None]
    if not keys:
        return {}
    found = Message.objects.filter(
        author_id__in={sender for sender, _ in keys}, client_message_id__in={key for _, key in keys}
    ).only("dialog_id", "author_id", "content", "seq", "client_message_id")
    return {(m.author_id, m.client_message_id): m for m in found}


def _answer_again(dialog: Dialog, sender: uuid.UUID, first: Message) -> Notice:
    """The 20 of a message stored before, for its sender only; `repeat` puts it among the
    connection's answers rather than in the dialog's order, which it already had its place in."""
    event = events.chat_event(events.MESSAGE, first.dialog_id, sender=sender, content=first.content, seq=first.seq)
    channel = dialog.first.channel_name if sender == dialog.first_id else dialog.second.channel_name
    return Notice(channel=channel, message={**event, "repeat": True})


def dialog_stop(*, request: DialogRequest, held_user: uuid.UUID | None) -> list[Notice]:
    if request.chat is None:
        if held_user is not None and Dialog.objects.active_of([held_user]).exists():
            # In a dialog, "not_in_dialog" would be false: the body lacks the dialog's id.
            raise Refusal("invalid_field", "chatUUID must be a UUID string", "chatUUID")
        raise Refusal("not_in_dialog", "This connection is in no dialog and waits for none")
    chat, sender = uuid_field(request.chat, "chatUUID"), uuid_field(request.sender, "senderUUID")
    with transaction.atomic():
        dialog = check_active(check_owned(locked_dialogs([chat]).get(chat), sender, held_user))
        return _end(dialog, ended_by=held_user, reason=Dialog.EndReason.STOP)


def dialog_end(*, dialog_id, ended_by=None, reason: str) -> list[Notice]:
    """End an active dialog; idempotent: an ended or unknown dialog gives no notice."""
    with transaction.atomic():
        dialog = locked_dialogs([dialog_id]).get(uuid.UUID(str(dialog_id)))
        if dialog is None or dialog.status != Dialog.Status.ACTIVE:
            return []
        return _end(dialog, ended_by=ended_by, reason=reason)


def _end(dialog: Dialog, *, ended_by, reason: str) -> list[Notice]:
    now = timezone.now()
    dialog.status = Dialog.Status.ENDED
    dialog.ended_at = now
    dialog.end_reason = reason
    dialog.ended_by_id = ended_by
    dialog.last_seq += 1  # the 30 is the dialog's last event: nothing is sequenced after it
    dialog.save(update_fields=["status", "ended_at", "end_reason", "ended_by", "last_seq"])
    # The dialog is locked; now its users (LOCK ORDER above).
    list(PoolUser.objects.select_for_update().filter(pk__in=[dialog.first_id, dialog.second_id]).order_by("pk"))
    PoolUser.objects.filter(
        pk__in=[dialog.first_id, dialog.second_id], status=PoolUser.Status.PAIRED
    ).update(status=PoolUser.Status.ENDED, left_at=now)
    transaction.on_commit(
        lambda: logger.info("event=dialog_end chat=%s reason=%s ended_by=%s", dialog.id, reason, ended_by)
    )
    end = events.chat_event(events.LEFT, dialog.id, sender=ended_by, service={"reason": reason}, seq=dialog.last_seq)
    return _to_participants(dialog, end)


def dialog_events(*, chat, first_seq: int, last_seq: int | None = None) -> list[dict]:
    """The dialog's events with seq from `first_seq` to `last_seq` (or its last), rebuilt from
    what was stored: its messages, and its end. For a connection whose notices were lost or
    are late."""
    seqs = {"seq__gte": first_seq} if last_seq is None else {"seq__range": (first_seq, last_seq)}
    found = [
        events.chat_event(events.MESSAGE, chat, sender=author, content=content, seq=seq)
        for author, content, seq in Message.objects.filter(dialog_id=chat, **seqs)
        .order_by("seq")
        .values_list("author_id", "content", "seq")
    ]
    ends = {f"last_{lookup}": value for lookup, value in seqs.items()}
    dialog = Dialog.objects.filter(pk=chat, status=Dialog.Status.ENDED, **ends).first()
    if dialog is not None:
        service = {"reason": dialog.end_reason}
        found.append(events.chat_event(events.LEFT, chat, sender=dialog.ended_by_id, service=service, seq=dialog.last_seq))
    return found


def dialog_owed(*, chat, participant, channel_name: str, first_seq: int) -> list[dict]:
    """What an ended dialog still owes the connection that held `participant` in it to the
    end: its events from `first_seq`. Nothing while it is active, nor once another connection
    resumed the participant: what follows is that connection's."""
    held_to_the_end = Q(first_id=participant, first__channel_name=channel_name) | \
        Q(second_id=participant, second__channel_name=channel_name)
    if not Dialog.objects.filter(held_to_the_end, pk=chat, status=Dialog.Status.ENDED).exists():
        return []
    return dialog_events(chat=chat, first_seq=first_seq)
