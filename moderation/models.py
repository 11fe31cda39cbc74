"""Reports about dialogs, bans of network addresses, and the addresses as keyed hashes.

No address is stored in clear: `address_hash` is an HMAC (moderation/address.py).
"""

import uuid

from django.conf import settings
from django.db import models
from django.db.models import Q
from django.utils import timezone

HASH_LENGTH = 64  # hex of SHA-256
MAX_REASON_LENGTH = 500


class ParticipantAddress(models.Model):
    """The hashed address of a user's connection, taken at connect and stored as the user
    enters the pool; it goes with the user (purge_dialogs deletes it with the user)."""

    user = models.OneToOneField(
        "matching.PoolUser", on_delete=models.CASCADE, primary_key=True, related_name="+"
    )  # no reverse accessor: the pool's own model has no address field of any kind
    address_hash = models.CharField(max_length=HASH_LENGTH, db_index=True)

    class Meta:
        verbose_name_plural = "participant addresses"

    def __str__(self) -> str:
        return f"address of {self.user_id}"


class Report(models.Model):
    """A participant's report about a dialog and its other participant; its id is the reportId."""

    class Status(models.TextChoices):
        OPEN = "open"
        DISMISSED = "dismissed"
        ACTED = "acted", "acted on"

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    dialog = models.ForeignKey("dialogs.Dialog", on_delete=models.CASCADE, related_name="reports")
    reporter = models.ForeignKey("matching.PoolUser", on_delete=models.CASCADE, related_name="+")
    reported = models.ForeignKey("matching.PoolUser", on_delete=models.CASCADE, related_name="+")
    reason = models.TextField(max_length=MAX_REASON_LENGTH, blank=True, default="")
    status = models.CharField(max_length=9, choices=Status.choices, default=Status.OPEN)
    created_at = models.DateTimeField(default=timezone.now, db_index=True)
    resolved_at = models.DateTimeField(null=True, blank=True)
    resolved_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )

    class Meta:
        indexes = [models.Index(fields=["status", "created_at"], name="report_status_idx")]
        constraints = [models.UniqueConstraint(fields=["dialog", "reporter"], name="one_report_per_reporter")]

    def __str__(self) -> str:
        return f"Report {self.id} ({self.status})"


class BanQuerySet(models.QuerySet):
    def active(self, now=None):
        return self.filter(lifted_at__isnull=True, expires_at__gt=now or timezone.now())


class Ban(models.Model):
    """An address (hashed) refused at CONNECT until `expires_at`, unless lifted."""

    objects = BanQuerySet.as_manager()

    address_hash = models.CharField(max_length=HASH_LENGTH, db_index=True)
    created_at = models.DateTimeField(default=timezone.now)
    expires_at = models.DateTimeField(db_index=True)
    lifted_at = models.DateTimeField(null=True, blank=True)
    report = models.ForeignKey(Report, null=True, blank=True, on_delete=models.SET_NULL, related_name="bans")
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )

    class Meta:
        constraints = [models.CheckConstraint(condition=Q(expires_at__gt=models.F("created_at")), name="ban_has_a_period")]

    def __str__(self) -> str:
        return f"Ban {self.pk} until {self.expires_at:%Y-%m-%d %H:%M}"

    @property
    def active(self) -> bool:
        return self.lifted_at is None and self.expires_at > timezone.now()
