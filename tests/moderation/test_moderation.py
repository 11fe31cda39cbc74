"""Reports and bans without a server: the address hash, purge, the admin, the bans command."""

from datetime import timedelta

import pytest
from django.core.management import call_command
from django.urls import reverse

from dialogs.maintenance import dialog_purge
from moderation.address import address_hash, client_address
from moderation.models import Ban, ParticipantAddress, Report
from moderation.services import address_banned, report_ban
from randomchat.consumers import starts_write
from randomchat.process import live_addresses
from tests.support.factories import ago, entry, make_dialog


def scope(peer: str, forwarded: str | None = None) -> dict:
    headers = [(b"x-forwarded-for", forwarded.encode())] if forwarded is not None else []
    return {"client": [peer, 5000], "headers": headers}


@pytest.mark.parametrize(
    ("peer", "forwarded", "client"),
    [
        ("203.0.113.9", None, "203.0.113.9"),
        ("203.0.113.9", "198.51.100.1", "203.0.113.9"),  # an untrusted peer's header is ignored
        ("10.0.0.2", "198.51.100.1", "198.51.100.1"),
        ("10.0.0.2", "1.1.1.1, 198.51.100.1, 10.0.0.3", "198.51.100.1"),  # a chain of trusted proxies
        ("10.0.0.2", None, "10.0.0.2"),
        ("::ffff:203.0.113.9", None, "203.0.113.9"),
    ],
)
def test_client_address__socket_peer_or_trusted_proxy_entry(settings, peer, forwarded, client):
    settings.RANDOMCHAT_TRUSTED_PROXIES = ["10.0.0.0/8"]
    assert client_address(scope(peer, forwarded)) == client


def test_address_hash__keyed_and_never_the_address(settings):
    first = address_hash("203.0.113.9")
    assert len(first) == 64 and "203" not in first and first == address_hash("203.0.113.9")
    settings.RANDOMCHAT_ADDRESS_KEY = "another key"
    assert address_hash("203.0.113.9") != first
    assert address_hash(None) is None


@pytest.fixture
def report(db):
    dialog = make_dialog(messages=2, ended_at=ago(days=40))
    # Two distinct addresses: drawn from the users' random ids, they were the same one run in 250.
    for host, user in enumerate((dialog.first, dialog.second), start=1):
        ParticipantAddress.objects.create(user=user, address_hash=address_hash(f"203.0.113.{host}"))
    return Report.objects.create(dialog=dialog, reporter=dialog.first, reported=dialog.second, reason="rude")


@pytest.mark.django_db(transaction=True)  # committed, so that the address's foreign key is checked
def test_a_pairing_batch_stores_the_address_of_each_user_it_stores(monkeypatch):
    for channel, host in (("chan.a", 1), ("chan.b", 2)):
        monkeypatch.setitem(live_addresses, channel, address_hash(f"203.0.113.{host}"))
    starts_write([entry("chan.a", languageCode="de")])
    # chan.a's second /start stores no user, so no address; chan.b waits (another language).
    results = starts_write([entry("chan.a"), entry("chan.b")])
    assert results[0].slug == "already_waiting" and not results[1].notices
    stored = dict(ParticipantAddress.objects.values_list("user__channel_name", "address_hash"))
    assert stored == {"chan.a": address_hash("203.0.113.1"), "chan.b": address_hash("203.0.113.2")}


def test_purge_dialogs_deletes_the_addresses_and_reports_with_the_dialog(report):
    assert dialog_purge(older_than=timedelta(days=30)).dialogs == 1
    assert not ParticipantAddress.objects.exists() and not Report.objects.exists()


def test_admin_lists_reports_with_the_transcript(admin_client, report):
    response = admin_client.get(reverse("admin:moderation_report_changelist") + "?status__exact=open")
    assert list(response.context["cl"].result_list) == [report]
    page = admin_client.get(reverse("admin:moderation_report_change", args=[report.pk])).content.decode()
    assert "message 0" in page and "message 1" in page and "rude" in page


def test_admin_dismisses_and_bans(admin_client, report):
    url = reverse("admin:moderation_report_changelist")
    admin_client.post(url, {"action": "ban_24h", "_selected_action": [report.pk]})
    report.refresh_from_db()
    assert report.status == Report.Status.ACTED
    ban = Ban.objects.get()
    assert ban.report == report and ban.expires_at - ban.created_at == timedelta(hours=24)
    hashes = dict(ParticipantAddress.objects.values_list("user", "address_hash"))
    assert address_banned(address_hash=hashes[report.reported_id])
    assert not address_banned(address_hash=hashes[report.reporter_id])
    other = Report.objects.create(dialog=report.dialog, reporter=report.reported, reported=report.reporter)
    admin_client.post(url, {"action": "dismiss", "_selected_action": [other.pk]})
    other.refresh_from_db()
    assert other.status == Report.Status.DISMISSED and other.resolved_at is not None


def test_bans_command_lists_and_lifts(report, capsys):
    ban = report_ban(report=report, period=timedelta(hours=1))
    Ban.objects.create(address_hash="0" * 64, created_at=ago(days=2), expires_at=ago(days=1))
    call_command("bans")
    listed = capsys.readouterr().out.splitlines()
    assert len(listed) == 1 and listed[0].startswith(f"{ban.pk}\tactive")
    call_command("bans", "--lift", str(ban.pk))
    assert "Lifted 1 ban(s)" in capsys.readouterr().out
    assert not Ban.objects.active().exists()
    call_command("bans", "--all")
    assert sorted(line.split("\t")[1] for line in capsys.readouterr().out.splitlines()) == ["expired", "lifted"]


def test_a_ban_needs_a_known_address(report):
    ParticipantAddress.objects.all().delete()
    assert report_ban(report=report, period=timedelta(hours=1)) is None
    assert not Ban.objects.exists()
