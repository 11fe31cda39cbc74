"""Prometheus metrics of this process, and the pool's state read from the database at scrape."""

from __future__ import annotations

from django.db.models import Count
from django.http import HttpResponse
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    disable_created_metrics,
    generate_latest,
)
from prometheus_client.core import GaugeMetricFamily

disable_created_metrics()
REGISTRY = CollectorRegistry(auto_describe=True)

OPEN_CONNECTIONS = Gauge(
    "randomchat_open_connections", "WebSocket connections open in this process", registry=REGISTRY
)
EVENTS_DELIVERED = Counter(
    "randomchat_events_delivered", "Events delivered to connections, by event code", ["code"], registry=REGISTRY
)
MESSAGES_DELIVERED = Counter(
    "randomchat_messages_delivered", "Chat messages (event 20) delivered to connections", registry=REGISTRY
)
PAIRING_WAIT = Histogram(
    "randomchat_pairing_wait_seconds",
    "Time from an accepted /start to its event 10",
    buckets=(0.01, 0.05, 0.1, 0.5, 1, 5, 10, 30, 60, 300, 900, 3600),
    registry=REGISTRY,
)
REJECTED_FRAMES = Counter(
    "randomchat_rejected_frames", "Connections closed with ERROR, by reason", ["reason"], registry=REGISTRY
)
REFUSALS = Counter(
    "randomchat_refusals", "Refused actions (events 11/21/31), by error slug", ["error"], registry=REGISTRY
)
REPORTS = Counter("randomchat_reports_taken", "Reports taken (event 40) by this process", registry=REGISTRY)


class PoolCollector:
    """Waiting users by language and active dialogs, shared by every process via the database."""

    def describe(self):
        return []  # nothing to read at registration: the database is queried at scrape time

    def collect(self):
        from dialogs.models import Dialog
        from matching.models import PoolUser
        from moderation.models import Ban, Report

        waiting = GaugeMetricFamily(
            "randomchat_waiting_users", "Users waiting in the pool, by language", labels=["language"]
        )
        rows = (
            PoolUser.objects.filter(status__in=PoolUser.IN_POOL)
            .values("language")
            .annotate(n=Count("pk"))
            .order_by("language")
        )
        for row in rows:
            waiting.add_metric([row["language"]], row["n"])
        yield waiting
        yield GaugeMetricFamily(
            "randomchat_active_dialogs",
            "Dialogs in progress",
            value=Dialog.objects.filter(status=Dialog.Status.ACTIVE).count(),
        )
        reports = GaugeMetricFamily("randomchat_reports", "Reports kept, by status", labels=["status"])
        counts = dict(Report.objects.values_list("status").annotate(n=Count("pk")).order_by("status"))
        for status in Report.Status.values:
            reports.add_metric([status], counts.get(status, 0))
        yield reports
        yield GaugeMetricFamily("randomchat_active_bans", "Addresses banned now", value=Ban.objects.active().count())


REGISTRY.register(PoolCollector())


def metrics_view(request):
    return HttpResponse(generate_latest(REGISTRY), content_type=CONTENT_TYPE_LATEST)
