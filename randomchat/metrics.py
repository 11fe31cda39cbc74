"""Prometheus metrics of this process, and the pool's state read from the database at scrape
(probes.py serves them)."""

from __future__ import annotations

from django.db.models import Count
from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    disable_created_metrics,
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
PAIRS_NOTIFIED = Counter(
    "randomchat_pairs_notified",
    "Events 10 of other processes' pairings received with their commit (NOTIFY; randomchat/pair_notify.py)",
    registry=REGISTRY,
)
DUPLICATE_EVENTS = Counter(
    "randomchat_duplicate_events",
    "Events 10 a connection had already taken (sent again after a lost listening connection), dropped",
    registry=REGISTRY,
)
REPORTS = Counter("randomchat_reports_taken", "Reports taken (event 40) by this process", registry=REGISTRY)
RESUMES = Counter(
    "randomchat_resumes", "Participants taken over by a new connection with /resume in this process", registry=REGISTRY
)
GRACES_EXPIRED = Counter(
    "randomchat_resume_graces_expired", "Dialogs ended by this process because a resume grace ran out",
    registry=REGISTRY,
)


def pool_gauges_read() -> dict:
    """Waiting users by language, active dialogs, reports by status and active bans, from
    the database (probes.py runs it)."""
    from dialogs.models import Dialog
    from matching.models import PoolUser
    from moderation.models import Ban, Report

    rows = (
        PoolUser.objects.filter(status__in=PoolUser.IN_POOL)
        .values("language")
        .annotate(n=Count("pk"))
        .order_by("language")
    )
    reports = dict(Report.objects.values_list("status").annotate(n=Count("pk")).order_by("status"))
    return {
        "waiting": {row["language"]: row["n"] for row in rows},
        "active_dialogs": Dialog.objects.filter(status=Dialog.Status.ACTIVE).count(),
        "reports": {status: reports.get(status, 0) for status in Report.Status.values},
        "active_bans": Ban.objects.active().count(),
    }


class PoolCollector:
    """The gauges shared by every process via the database (`pool_gauges_read`).

    The scrape reads them first (`gauges`): collecting never touches the database.
    """

    def __init__(self) -> None:
        self.gauges: dict = {"waiting": {}, "active_dialogs": 0, "reports": {}, "active_bans": 0}

    def describe(self):
        return []  # the gauges are known at scrape time

    def collect(self):
        waiting = GaugeMetricFamily(
            "randomchat_waiting_users", "Users waiting in the pool, by language", labels=["language"]
        )
        for language, n in self.gauges["waiting"].items():
            waiting.add_metric([language], n)
        yield waiting
        yield GaugeMetricFamily("randomchat_active_dialogs", "Dialogs in progress", value=self.gauges["active_dialogs"])
        reports = GaugeMetricFamily("randomchat_reports", "Reports kept, by status", labels=["status"])
        for status, n in self.gauges["reports"].items():
            reports.add_metric([status], n)
        yield reports
        yield GaugeMetricFamily("randomchat_active_bans", "Addresses banned now", value=self.gauges["active_bans"])


POOL = PoolCollector()
REGISTRY.register(POOL)
