"""Dialogs in the admin: read-only audit pages, and an action that ends dialogs."""

import uuid

from django.contrib import admin, messages
from django.db.models import Count, Q
from django.urls import reverse
from django.utils.html import format_html

from matching.models import PoolUser
from chat.admin_readonly import ReadOnlyAdminMixin

from .maintenance import dialog_end_many
from .models import Dialog, Message


def _role(dialog: Dialog, user_id) -> str:
    if user_id == dialog.first_id:
        return "first"
    if user_id == dialog.second_id:
        return "second"
    return "?"


def participant_html(user: PoolUser):
    """One participant, with a link to its pool page."""
    url = reverse("admin:matching_pooluser_change", args=[user.pk])
    return format_html(
        '<a href="{}">{}</a><br>senderUUID {}<br>language {}, gender {}, age {}<br>{}, channel {}',
        url,
        user.name,
        user.pk,
        user.language,
        user.gender or "-",
        "-" if user.age is None else user.age,
        user.get_status_display(),
        user.channel_name,
    )


class MessageInline(ReadOnlyAdminMixin, admin.TabularInline):
    model = Message
    fields = ("created_at", "author_role", "author", "content")
    readonly_fields = fields
    extra = 0
    can_delete = False
    show_change_link = False

    def get_queryset(self, request):
        return super().get_queryset(request).select_related("author", "dialog")

    @admin.display(description="participant")
    def author_role(self, message: Message) -> str:
        return _role(message.dialog, message.author_id)

    # Messages are the audit record: nobody adds, edits or deletes them here.

@admin.register(Dialog)
class DialogAdmin(ReadOnlyAdminMixin, admin.ModelAdmin):
    list_display = ("id", "status", "language", "started_at", "ended_at", "how_it_ended", "message_count")
    list_filter = ("status", "end_reason", "language", "started_at", "ended_at")
    # chatUUID, or either participant's senderUUID, in any UUID spelling.
    search_fields = ("=id",)
    search_help_text = "A chatUUID, or a senderUUID of either participant."

    def get_search_results(self, request, queryset, search_term):
        """Match the term as a UUID: PostgreSQL compares text with dashes, a hex would miss."""
        try:
            key = uuid.UUID(search_term.strip())
        except ValueError:
            return queryset.none() if search_term.strip() else queryset, False
        return queryset.filter(Q(id=key) | Q(first_id=key) | Q(second_id=key)), False
    ordering = ("-started_at",)
    list_select_related = ("first", "second")
    fields = (
        "id",
        "status",
        "language",
        "started_at",
        "ended_at",
        "end_reason",
        "ended_by_role",
        "first_participant",
        "second_participant",
        "message_count",
    )
    readonly_fields = fields
    inlines = [MessageInline]
    actions = ["end_dialogs"]

    def get_queryset(self, request):
        return super().get_queryset(request).annotate(message_count=Count("messages"))

    @admin.display(description="messages", ordering="message_count")
    def message_count(self, dialog: Dialog) -> int:
        return dialog.message_count

    @admin.display(description="how it ended", ordering="end_reason")
    def how_it_ended(self, dialog: Dialog) -> str:
        if dialog.end_reason is None:
            return "-"
        if dialog.ended_by_id is None:
            return dialog.end_reason
        return f"{dialog.end_reason} by {_role(dialog, dialog.ended_by_id)} participant"

    @admin.display(description="ended by")
    def ended_by_role(self, dialog: Dialog) -> str:
        if dialog.ended_by_id is None:
            return "-"
        return f"{_role(dialog, dialog.ended_by_id)} participant ({dialog.ended_by_id})"

    @admin.display(description="first participant (waited longer)")
    def first_participant(self, dialog: Dialog):
        return participant_html(dialog.first)

    @admin.display(description="second participant")
    def second_participant(self, dialog: Dialog):
        return participant_html(dialog.second)

    @admin.action(description="End selected dialogs (both participants are told an admin ended it)", permissions=["end"])
    def end_dialogs(self, request, queryset):
        selected = list(queryset.filter(status=Dialog.Status.ACTIVE).values_list("pk", flat=True))
        ended = dialog_end_many(dialog_ids=selected, reason=Dialog.EndReason.ADMIN)
        skipped = queryset.count() - len(ended)
        self.message_user(request, f"Ended {len(ended)} dialog(s).", messages.SUCCESS)
        if skipped:
            self.message_user(request, f"{skipped} dialog(s) had already ended.", messages.WARNING)

    def has_end_permission(self, request) -> bool:
        return request.user.has_perm("dialogs.change_dialog")
