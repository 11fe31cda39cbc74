"""The user pool: every user a /start created, kept after pairing as history."""

import uuid

from django.db import models
from django.db.models import Q
from django.utils import timezone

from chat.requests import DEFAULT_NAME, GENDERS, MAX_AGE, MAX_LANGUAGE_LENGTH, MAX_NAME_LENGTH

Gender = models.TextChoices("Gender", [(gender.upper(), gender) for gender in GENDERS])
GENDER_LENGTH = max(len(gender) for gender in GENDERS)


class ServerProcess(models.Model):
    """A live daphne process, known by its heartbeat; what a dead one owned is released."""

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    hostname = models.CharField(max_length=255)
    pid = models.PositiveIntegerField()
    started_at = models.DateTimeField(default=timezone.now)
    last_seen = models.DateTimeField(default=timezone.now, db_index=True)

    class Meta:
        verbose_name_plural = "server processes"

    def __str__(self) -> str:
        return f"{self.hostname}:{self.pid}"


class PoolStatus(models.TextChoices):
    WAITING = "waiting", "waiting for a partner"
    # Written only by the two-phase pairing of earlier versions; rows it left in these
    # states (a rolling upgrade) still leave the pool like waiting ones.
    CLAIMED = "claimed", "claimed, awaiting its connection's confirmation"
    PAIRING = "pairing", "claiming a waiting user"
    PAIRED = "paired", "in a dialog"
    ENDED = "ended", "dialog ended"
    CANCELLED = "cancelled", "cancelled waiting"
    GONE = "gone", "connection gone"


# Statuses of a user that waits in the pool (CLAIMED and PAIRING: earlier versions' waiting).
IN_POOL = (PoolStatus.WAITING, PoolStatus.CLAIMED, PoolStatus.PAIRING)
# Statuses in which the connection holds the user (at most one per connection).
HELD = [*IN_POOL, PoolStatus.PAIRED]
# Statuses of earlier versions' two-phase pairing, in the middle of a claim.
CLAIMING = (PoolStatus.CLAIMED, PoolStatus.PAIRING)
# Statuses of a user who left the pool without a dialog.
LEFT_POOL = (PoolStatus.CANCELLED, PoolStatus.GONE)


class PoolUser(models.Model):
    """A user created by /start; its id is the senderUUID the client speaks with."""

    Status = PoolStatus
    HELD = HELD
    IN_POOL = IN_POOL
    CLAIMING = CLAIMING
    LEFT_POOL = LEFT_POOL

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    name = models.CharField(max_length=MAX_NAME_LENGTH, default=DEFAULT_NAME)
    language = models.CharField(max_length=MAX_LANGUAGE_LENGTH)
    gender = models.CharField(max_length=GENDER_LENGTH, choices=Gender.choices, null=True, blank=True)
    age = models.PositiveSmallIntegerField(null=True, blank=True)
    target_gender = models.CharField(max_length=GENDER_LENGTH, choices=Gender.choices, null=True, blank=True)
    target_age_min = models.PositiveSmallIntegerField(null=True, blank=True)
    target_age_max = models.PositiveSmallIntegerField(null=True, blank=True)
    channel_name = models.CharField(max_length=200)
    process = models.ForeignKey(
        ServerProcess, null=True, blank=True, on_delete=models.SET_NULL, related_name="users",
        help_text="The process that holds this user's connection.",
    )
    status = models.CharField(max_length=10, choices=Status.choices, default=Status.WAITING)
    claimed_by = models.ForeignKey(
        "self", null=True, blank=True, on_delete=models.SET_NULL, related_name="+", db_index=False
    )
    created_at = models.DateTimeField(default=timezone.now, db_index=True)
    paired_at = models.DateTimeField(null=True, blank=True)
    left_at = models.DateTimeField(null=True, blank=True)
    # Resume after a dropped connection (PROTOCOL.md §7.1; dialogs.resume). The token is a
    # selector, to find the row, and a verifier, kept only as its SHA-256 and compared in
    # constant time.
    resume_grace = models.PositiveIntegerField(
        default=0, help_text="Seconds its dialog is kept after its connection drops (granted at CONNECT).",
    )
    resume_selector = models.CharField(max_length=32, null=True, blank=True, editable=False)
    resume_verifier = models.CharField(max_length=64, null=True, blank=True, editable=False)
    detached_at = models.DateTimeField(
        null=True, blank=True, help_text="When its connection dropped, its dialog kept for resume_grace seconds.",
    )
    detached_seq = models.PositiveIntegerField(
        null=True, blank=True, help_text="The last event of its dialog that its dropped connection was sent.",
    )

    class Meta:
        # Every index is written by each /start's insert and each pairing's update: the pool
        # keeps only those a query reads, and leaves out the rows of a column that is null.
        # (A CharField's db_index or unique would also make PostgreSQL's LIKE index, which
        # no query here uses.)
        indexes = [
            # The pairing query: waiting users of one language, oldest first.
            models.Index(
                fields=["language", "created_at"],
                condition=Q(status="waiting"),
                name="pool_waiting_idx",
            ),
            models.Index(fields=["status", "created_at"], name="pool_status_idx"),
            models.Index(fields=["detached_at"], condition=Q(detached_at__isnull=False), name="pool_detached_idx"),
            models.Index(fields=["channel_name"], name="pool_channel_idx"),
            # Earlier versions' claims: found when the claimed user is deleted.
            models.Index(fields=["claimed_by"], condition=Q(claimed_by__isnull=False), name="pool_claimed_by_idx"),
        ]
        constraints = [
            models.UniqueConstraint(
                fields=["channel_name"],
                condition=Q(status__in=HELD),
                name="one_held_user_per_connection",
            ),
            models.CheckConstraint(
                condition=Q(age__isnull=True) | Q(age__lte=MAX_AGE), name="age_in_range"
            ),
            models.UniqueConstraint(
                fields=["resume_selector"], condition=Q(resume_selector__isnull=False), name="one_user_per_resume_selector"
            ),
        ]

    def __str__(self) -> str:
        return f"{self.name} ({self.language}, {self.status})"

    @property
    def attributes(self) -> dict:
        return {"gender": self.gender, "age": self.age}
