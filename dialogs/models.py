"""Dialogs between two pool users, and their messages, kept for audit."""

import uuid

from django.db import models
from django.db.models import Q
from django.utils import timezone

from chat.requests import MAX_CLIENT_MESSAGE_ID, MAX_LANGUAGE_LENGTH


class DialogQuerySet(models.QuerySet):
    def active_of(self, users):
        """The active dialogs in which any of `users` (instances, ids or a queryset) takes part."""
        return self.filter(Q(first__in=users) | Q(second__in=users), status=Dialog.Status.ACTIVE)


class Dialog(models.Model):
    """A one-to-one chat; its id is the chatUUID."""

    objects = DialogQuerySet.as_manager()

    class Status(models.TextChoices):
        ACTIVE = "active"
        ENDED = "ended"

    class EndReason(models.TextChoices):
        STOP = "stop"
        DISCONNECT = "disconnect"
        TIMEOUT = "timeout"
        ADMIN = "admin"

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    first = models.ForeignKey(
        "matching.PoolUser", on_delete=models.PROTECT, related_name="dialogs_as_first",
        help_text="The participant who waited longer.",
    )
    second = models.ForeignKey(
        "matching.PoolUser", on_delete=models.PROTECT, related_name="dialogs_as_second"
    )
    language = models.CharField(max_length=MAX_LANGUAGE_LENGTH)
    status = models.CharField(max_length=6, choices=Status.choices, default=Status.ACTIVE)
    started_at = models.DateTimeField(default=timezone.now, db_index=True)
    ended_at = models.DateTimeField(null=True, blank=True)
    end_reason = models.CharField(max_length=10, choices=EndReason.choices, null=True, blank=True)
    ended_by = models.ForeignKey(
        "matching.PoolUser", null=True, blank=True, on_delete=models.PROTECT, related_name="+", db_index=False
    )
    last_seq = models.PositiveIntegerField(
        default=0, help_text="The sequence number of the dialog's latest event (messages and its end).",
    )

    class Meta:
        # A pairing inserts each dialog before it ends: its end's columns are indexed only once set.
        indexes = [
            models.Index(fields=["status", "started_at"], name="dialog_status_idx"),
            models.Index(fields=["ended_at"], condition=Q(ended_at__isnull=False), name="dialog_ended_idx"),
            models.Index(fields=["ended_by"], condition=Q(ended_by__isnull=False), name="dialog_ended_by_idx"),
        ]
        constraints = [
            models.CheckConstraint(
                condition=(
                    Q(status="active", ended_at__isnull=True, end_reason__isnull=True)
                    | Q(status="ended", ended_at__isnull=False, end_reason__isnull=False)
                ),
                name="dialog_end_consistent",
            ),
            models.CheckConstraint(condition=~Q(first=models.F("second")), name="dialog_not_with_self"),
        ]

    def __str__(self) -> str:
        return f"Dialog {self.id} ({self.status})"


class Message(models.Model):
    dialog = models.ForeignKey(Dialog, on_delete=models.CASCADE, related_name="messages")
    author = models.ForeignKey("matching.PoolUser", on_delete=models.PROTECT, related_name="+")
    content = models.TextField()
    created_at = models.DateTimeField(default=timezone.now)
    seq = models.PositiveIntegerField(
        null=True, blank=True, help_text="Its place among the dialog's events, as both participants received them.",
    )
    client_message_id = models.CharField(
        max_length=MAX_CLIENT_MESSAGE_ID, null=True, blank=True,
        help_text="The sender's own key (clientMessageId): a resend with it is stored once.",
    )

    class Meta:
        ordering = ["created_at", "id"]
        indexes = [models.Index(fields=["dialog", "created_at"], name="message_dialog_idx")]
        constraints = [
            models.UniqueConstraint(
                fields=["author", "client_message_id"],
                condition=Q(client_message_id__isnull=False),
                name="message_once_per_client_id",
            )
        ]

    def __str__(self) -> str:
        return f"Message {self.pk} in {self.dialog_id}"
