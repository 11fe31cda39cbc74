"""Moderation in the admin: reports with the dialog's transcript, to dismiss or to ban the
reported participant's address; the bans, to lift."""

from datetime import timedelta

from django.contrib import admin, messages
from django.urls import reverse
from django.utils.html import format_html, format_html_join

from chat.admin_readonly import ReadOnlyAdminMixin
from dialogs.admin import participant_html
from dialogs.models import Message

from .models import Ban, Report
from .services import ban_lift, report_ban, report_dismiss

BAN_PERIODS = {"1h": timedelta(hours=1), "24h": timedelta(hours=24), "7d": timedelta(days=7)}


def _ban_action(label: str, period: timedelta):
    @admin.action(description=f"Ban the reported participant's address for {label}", permissions=["moderate"])
    def ban(modeladmin, request, queryset):
        banned, unknown = 0, 0
        for report in queryset.select_related("dialog"):
            if report_ban(report=report, period=period, by=request.user) is None:
                unknown += 1
            else:
                banned += 1
        modeladmin.message_user(request, f"Banned {banned} address(es) for {label}.", messages.SUCCESS)
        if unknown:
            modeladmin.message_user(
                request, f"{unknown} reported participant(s) have no address on record.", messages.WARNING
            )

    ban.__name__ = f"ban_{label}"
    return ban


@admin.register(Report)
class ReportAdmin(ReadOnlyAdminMixin, admin.ModelAdmin):
    list_display = ("id", "status", "created_at", "reason", "dialog_link", "resolved_at")
    list_filter = ("status", "created_at")
    ordering = ("-created_at",)
    fields = (
        "id", "status", "created_at", "reason", "dialog_link", "reporter_html", "reported_html",
        "resolved_at", "resolved_by", "transcript",
    )
    readonly_fields = fields
    actions = ["dismiss", *(_ban_action(label, period) for label, period in BAN_PERIODS.items())]

    @admin.display(description="dialog")
    def dialog_link(self, report: Report):
        url = reverse("admin:dialogs_dialog_change", args=[report.dialog_id])
        return format_html('<a href="{}">{}</a>', url, report.dialog_id)

    @admin.display(description="reporter")
    def reporter_html(self, report: Report):
        return participant_html(report.reporter)

    @admin.display(description="reported participant")
    def reported_html(self, report: Report):
        return participant_html(report.reported)

    @admin.display(description="transcript")
    def transcript(self, report: Report):
        roles = {report.reporter_id: "reporter", report.reported_id: "reported"}
        rows = Message.objects.filter(dialog_id=report.dialog_id).order_by("created_at", "id")
        lines = format_html_join(
            "", "<tr><td>{}</td><td>{}</td><td>{}</td></tr>",
            ((m.created_at, roles.get(m.author_id, "?"), m.content) for m in rows),
        )
        return format_html("<table>{}</table>", lines) if lines else "(no messages)"

    @admin.action(description="Dismiss selected reports", permissions=["moderate"])
    def dismiss(self, request, queryset):
        count = report_dismiss(reports=queryset, by=request.user)
        self.message_user(request, f"Dismissed {count} report(s).", messages.SUCCESS)

    def has_moderate_permission(self, request) -> bool:
        return request.user.has_perm("moderation.change_report")


@admin.register(Ban)
class BanAdmin(ReadOnlyAdminMixin, admin.ModelAdmin):
    list_display = ("id", "created_at", "expires_at", "lifted_at", "is_active", "report", "created_by")
    list_filter = ("created_at", "expires_at")
    ordering = ("-created_at",)
    fields = ("id", "address_hash", "created_at", "expires_at", "lifted_at", "report", "created_by")
    readonly_fields = fields
    actions = ["lift"]

    @admin.display(description="active", boolean=True)
    def is_active(self, ban: Ban) -> bool:
        return ban.active

    @admin.action(description="Lift selected bans", permissions=["moderate"])
    def lift(self, request, queryset):
        self.message_user(request, f"Lifted {ban_lift(bans=queryset)} ban(s).", messages.SUCCESS)

    def has_moderate_permission(self, request) -> bool:
        return request.user.has_perm("moderation.change_ban")
