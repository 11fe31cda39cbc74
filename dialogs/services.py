"""Dialog services: messages and the end of a dialog. Each runs in one transaction."""

from __future__ import annotations

import logging
import uuid
from dataclasses import dataclass

from django.conf import settings
from django.db import transaction
from django.db.models import Q
from django.utils import timezone

from matching.models import PoolUser
from randomchat import events
from randomchat.events import Notice
from randomchat.refusals import Refusal
from matching.rules import is_unicode, parse_json_object

from .models import Dialog, Message

logger = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class DialogRequest:
    """A /message or /stop body; ids are as sent (strings), for the x1 echo."""

    chat: str | None
    sender: str | None
    content: object


def parse_dialog_request(body: bytes) -> DialogRequest:
    data = parse_json_object(body)
    chat, sender = data.get("chatUUID"), data.get("senderUUID")
    return DialogRequest(
        chat=chat if isinstance(chat, str) else None,
        sender=sender if isinstance(sender, str) else None,
        content=data.get("content"),
    )


def _uuid(value: str | None, field: str) -> uuid.UUID:
    if value is None:
        raise Refusal("invalid_field", f"{field} must be a UUID string", field)
    try:
        return uuid.UUID(value)
    except ValueError:
        raise Refusal("invalid_field", f"{field} must be a UUID string", field) from None


def validate_content(content: object) -> str:
    if not isinstance(content, str):
        raise Refusal("invalid_field", "content must be a string", "content")
    if not content.strip():
        raise Refusal("empty_content", "content must not be empty", "content")
    # Either would make storing the message fail (PostgreSQL text holds no NUL; no database
    # stores a lone surrogate), and an unexpected error ends the connection's consumer.
    if "\x00" in content:
        raise Refusal("invalid_field", "content must not contain NUL characters", "content")
    if not is_unicode(content):
        raise Refusal("invalid_field", "content must be valid Unicode (no lone surrogates)", "content")
    limit = settings.RANDOMCHAT_MAX_CONTENT_LENGTH
    if len(content) > limit:
        raise Refusal("content_too_long", f"content is longer than {limit} characters", "content")
    return content


def _owned_active_dialog(request: DialogRequest, held_user: uuid.UUID | None) -> Dialog:
    """The dialog the request names, locked, if the connection's own user is in it and it is active."""
    chat = _uuid(request.chat, "chatUUID")
    sender = _uuid(request.sender, "senderUUID")
    dialog = Dialog.objects.select_for_update(of=("self",)).filter(pk=chat).first()
    if dialog is None:
        raise Refusal("unknown_chat", "No dialog has this chatUUID", "chatUUID")
    if sender != held_user or sender not in (dialog.first_id, dialog.second_id):
        raise Refusal("not_participant", "senderUUID is not this connection's user in this dialog", "senderUUID")
    if dialog.status != Dialog.Status.ACTIVE:
        raise Refusal("dialog_ended", "This dialog has ended", "chatUUID")
    return dialog


def message_create(*, request: DialogRequest, held_user: uuid.UUID | None) -> Notice:
    """Store the message, then let both participants know (the database is the record)."""
    content = validate_content(request.content)
    with transaction.atomic():
        dialog = _owned_active_dialog(request, held_user)
        Message.objects.create(dialog=dialog, author_id=held_user, content=content)
    return Notice(
        group=events.chat_group(dialog.id),
        message=events.chat_event(events.MESSAGE, dialog.id, sender=held_user, content=content),
    )


def dialog_stop(*, request: DialogRequest, held_user: uuid.UUID | None) -> list[Notice]:
    if request.chat is None:
        if held_user is not None and _active_dialog_of(held_user):
            # In a dialog, "not_in_dialog" would be false: the body lacks the dialog's id.
            raise Refusal("invalid_field", "chatUUID must be a UUID string", "chatUUID")
        raise Refusal("not_in_dialog", "This connection is in no dialog and waits for none")
    with transaction.atomic():
        dialog = _owned_active_dialog(request, held_user)
        return _end(dialog, ended_by=held_user, reason=Dialog.EndReason.STOP)


def _active_dialog_of(user_id: uuid.UUID) -> bool:
    return Dialog.objects.filter(
        Q(first_id=user_id) | Q(second_id=user_id), status=Dialog.Status.ACTIVE
    ).exists()


def dialog_end(*, dialog_id, ended_by=None, reason: str) -> list[Notice]:
    """End an active dialog; idempotent: an ended or unknown dialog gives no notice."""
    with transaction.atomic():
        dialog = Dialog.objects.select_for_update(of=("self",)).filter(pk=dialog_id).first()
        if dialog is None or dialog.status != Dialog.Status.ACTIVE:
            return []
        return _end(dialog, ended_by=ended_by, reason=reason)


def _end(dialog: Dialog, *, ended_by, reason: str) -> list[Notice]:
    now = timezone.now()
    dialog.status = Dialog.Status.ENDED
    dialog.ended_at = now
    dialog.end_reason = reason
    dialog.ended_by_id = ended_by
    dialog.save(update_fields=["status", "ended_at", "end_reason", "ended_by"])
    # The dialog is locked first, then its users by primary key: the order in which the pool
    # services lock them too, so that a stop and the partner's disconnect cannot deadlock.
    list(PoolUser.objects.select_for_update().filter(pk__in=[dialog.first_id, dialog.second_id]).order_by("pk"))
    PoolUser.objects.filter(
        pk__in=[dialog.first_id, dialog.second_id], status=PoolUser.Status.PAIRED
    ).update(status=PoolUser.Status.ENDED, left_at=now)
    transaction.on_commit(
        lambda: logger.info("event=dialog_end chat=%s reason=%s ended_by=%s", dialog.id, reason, ended_by)
    )
    return [
        Notice(
            group=events.chat_group(dialog.id),
            message=events.chat_event(events.LEFT, dialog.id, sender=ended_by, service={"reason": reason}),
        )
    ]

