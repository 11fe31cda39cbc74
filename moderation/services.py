"""Reports and bans. Each service runs in one transaction; notices go out once it committed."""

from __future__ import annotations

import logging
import uuid
from datetime import timedelta

from django.db import transaction
from django.utils import timezone

from chat.events import Notice
from chat.notify import send_notices_sync
from chat.refusals import Refusal
from chat.requests import DialogRequest, is_unicode, uuid_field
from dialogs.models import Dialog
from dialogs.services import check_owned, dialog_end, locked_dialogs
from matching.models import PoolUser
from matching.pipeline import send, values

from .models import MAX_REASON_LENGTH, Ban, ParticipantAddress, Report

logger = logging.getLogger(__name__)

BANNED = {"type": "moderation.banned"}
"""The channel-layer message that closes a connection of a banned address."""

_ADDRESS = ParticipantAddress._meta.db_table
_ADDRESS_FIELDS = ParticipantAddress._meta.concrete_fields
_ADDRESS_COLUMNS = ", ".join(field.column for field in _ADDRESS_FIELDS)
_USER = PoolUser._meta.db_table


def addresses_store(addresses: list[tuple[uuid.UUID, str]]) -> None:
    """Keep the hashed addresses of users entering the pool (a report names a dialog's
    participant; a ban closes the connections that hold a user), in the caller's transaction:
    a pairing batch sends it in its first flight, while the server runs its first statements;
    a lone /start last, while the server runs its pairing statement. A user that was not
    stored (its connection already held one) is left out."""
    if addresses:
        rows, params = values(_ADDRESS_FIELDS, [ParticipantAddress(user_id=user_id, address_hash=hashed)
                                                for user_id, hashed in addresses])
        send(f"INSERT INTO {_ADDRESS} ({_ADDRESS_COLUMNS}) SELECT * FROM {rows} AS v"
             f" WHERE EXISTS (SELECT 1 FROM {_USER} WHERE id = v.column1)", params)


def address_banned(*, address_hash: str) -> bool:
    return Ban.objects.active().filter(address_hash=address_hash).exists()


def banned_hashes() -> set[str]:
    """Every address banned now: few, read by each process on its heartbeat."""
    return set(Ban.objects.active().values_list("address_hash", flat=True))


def _reason(content: object) -> str:
    if content is None:
        return ""
    if not isinstance(content, str) or len(content) > MAX_REASON_LENGTH:
        raise Refusal("invalid_field", f"content must be null or at most {MAX_REASON_LENGTH} characters", "content")
    if "\x00" in content or not is_unicode(content):
        raise Refusal("invalid_field", "content must be valid Unicode text without NUL", "content")
    return content.strip()


def report_take(*, request: DialogRequest, reporter: uuid.UUID | None) -> tuple[uuid.UUID, list[Notice]]:
    """`reporter` reports its current or latest dialog; an active one ends as by its /stop."""
    reason = _reason(request.content)
    chat, sender = uuid_field(request.chat, "chatUUID"), uuid_field(request.sender, "senderUUID")
    with transaction.atomic():
        dialog = check_owned(locked_dialogs([chat]).get(chat), sender, reporter)
        if Report.objects.filter(dialog=dialog, reporter_id=sender).exists():
            raise Refusal("already_reported", "You have already reported this dialog", "chatUUID")
        reported = dialog.second_id if sender == dialog.first_id else dialog.first_id
        report = Report.objects.create(dialog=dialog, reporter_id=sender, reported_id=reported, reason=reason)
        notices = dialog_end(dialog_id=chat, ended_by=sender, reason=Dialog.EndReason.STOP)
    logger.info("event=report chat=%s report=%s", chat, report.pk)
    return report.pk, notices


def report_dismiss(*, reports, by=None) -> int:
    """Dismiss the open ones of `reports` (a queryset); the count dismissed."""
    return reports.filter(status=Report.Status.OPEN).update(
        status=Report.Status.DISMISSED, resolved_at=timezone.now(), resolved_by=by
    )


def report_ban(*, report: Report, period: timedelta, by=None) -> Ban | None:
    """Ban the reported participant's address for `period`; None when its address is unknown
    (purged, or never taken)."""
    address = ParticipantAddress.objects.filter(user_id=report.reported_id).first()
    if address is None:
        return None
    with transaction.atomic():
        Report.objects.filter(pk=report.pk).update(
            status=Report.Status.ACTED, resolved_at=timezone.now(), resolved_by=by
        )
        return ban_create(address_hash=address.address_hash, period=period, report=report, by=by)


def ban_create(*, address_hash: str, period: timedelta, report: Report | None = None, by=None) -> Ban:
    """Ban the address; the connections that hold a user from it are closed at once (their
    partners get 30 `admin`), the others at their process's next heartbeat."""
    now = timezone.now()
    with transaction.atomic():
        ban = Ban.objects.create(address_hash=address_hash, created_at=now, expires_at=now + period, report=report, created_by=by)
        channels = list(
            ParticipantAddress.objects.filter(address_hash=address_hash, user__status__in=PoolUser.HELD).values_list(
                "user__channel_name", flat=True
            )
        )
        notices = [Notice(channel=channel, message=BANNED) for channel in channels]
        transaction.on_commit(lambda: send_notices_sync(notices))
    logger.info("event=ban ban=%s expires=%s", ban.pk, ban.expires_at.isoformat())
    return ban


def ban_lift(*, bans) -> int:
    """Lift the active ones of `bans` (a queryset); the count lifted."""
    return bans.active().update(lifted_at=timezone.now())
