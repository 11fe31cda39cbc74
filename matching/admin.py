"""The pool in the admin: read-only, with wait times, and an action that removes users."""

from django.contrib import admin, messages
from django.db.models import Count, Q
from django.utils import timezone

from chat.admin_readonly import ReadOnlyAdminMixin

from .maintenance import pool_remove
from .models import PoolUser, ServerProcess


def format_duration(seconds: float) -> str:
    """4s, 2m 05s, 3h 02m 01s."""
    seconds = max(0, int(seconds))
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    if hours:
        return f"{hours}h {minutes:02d}m {secs:02d}s"
    if minutes:
        return f"{minutes}m {secs:02d}s"
    return f"{secs}s"


def wait_seconds(user: PoolUser, now=None) -> float | None:
    """How long the user waited: until paired, until it left, or until now if still in the pool."""
    if user.paired_at is not None:
        end = user.paired_at
    elif user.left_at is not None:
        end = user.left_at
    elif user.status in PoolUser.IN_POOL:
        end = now or timezone.now()
    else:
        return None
    return (end - user.created_at).total_seconds()


@admin.register(PoolUser)
class PoolUserAdmin(ReadOnlyAdminMixin, admin.ModelAdmin):
    list_display = ("id", "name", "language", "gender", "age", "status", "created_at", "wait_time", "process")
    list_filter = ("status", "language", "gender", "created_at")
    search_fields = ("=id", "name", "=channel_name")
    search_help_text = "A senderUUID, a name or a channel name."
    ordering = ("-created_at",)
    list_select_related = ("process",)
    # The resume token's selector and verifier hash stay off every page.
    readonly_fields = [f.name for f in PoolUser._meta.fields if f.editable or f.primary_key] + ["wait_time"]
    actions = ["remove_from_pool"]

    @admin.display(description="wait")
    def wait_time(self, user: PoolUser) -> str:
        seconds = wait_seconds(user)
        if seconds is None:
            return "-"
        waiting = " (waiting)" if user.status in PoolUser.IN_POOL else ""
        return format_duration(seconds) + waiting

    @admin.action(
        description="Remove selected users from the pool (each is told it left the pool)", permissions=["remove"]
    )
    def remove_from_pool(self, request, queryset):
        result = pool_remove(user_ids=list(queryset.values_list("pk", flat=True)), reason="admin")
        self.message_user(request, f"Removed {len(result.removed)} user(s) from the pool.", messages.SUCCESS)
        if result.skipped:
            self.message_user(
                request,
                f"{len(result.skipped)} user(s) were not in the pool (in a dialog or already gone); "
                "end a dialog from the dialogs page.",
                messages.WARNING,
            )

    def has_remove_permission(self, request) -> bool:
        return request.user.has_perm("matching.change_pooluser")

@admin.register(ServerProcess)
class ServerProcessAdmin(ReadOnlyAdminMixin, admin.ModelAdmin):
    list_display = ("__str__", "hostname", "pid", "started_at", "last_seen", "held_users")
    ordering = ("-last_seen",)
    readonly_fields = ("id", "hostname", "pid", "started_at", "last_seen")

    def get_queryset(self, request):
        held = Count("users", filter=Q(users__status__in=PoolUser.HELD))
        return super().get_queryset(request).annotate(held_users=held)

    @admin.display(description="users held", ordering="held_users")
    def held_users(self, process: ServerProcess) -> int:
        return process.held_users
