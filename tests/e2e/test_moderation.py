"""Reports and bans against a live daphne (PROTOCOL.md §7.4): clients come through a trusted
proxy (127.0.0.1) that names each one's address in X-Forwarded-For."""

from __future__ import annotations

import asyncio
from datetime import timedelta

import pytest
from asgiref.sync import sync_to_async

from dialogs.models import Dialog
from moderation.models import Ban, ParticipantAddress, Report
from moderation.services import ban_lift, report_ban
from randomchat.stomp_consumer import CLOSE_POLICY
from tests.support.wire import WireClient, frame

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.timeout(90)]

BOB, ALICE, CAROL = "203.0.113.7", "198.51.100.23", "192.0.2.200"
ENV = {
    "RANDOMCHAT_TRUSTED_PROXIES": "127.0.0.1",
    "RANDOMCHAT_PROCESS_HEARTBEAT": "0.5",
    "RANDOMCHAT_RATE_REPORT_BURST": "8",
}


def start_body(name: str) -> dict:
    return {"name": name, "languageCode": "en", "userAttributes": {}, "targetAttributes": {}}


async def client(server, address: str, *, start: bool = True) -> WireClient:
    raw = await WireClient(server.ws_url, address).open_socket(additional_headers={"X-Forwarded-For": f"10.9.8.7, {address}"})
    await raw.stomp_connect()
    await raw.subscribe()
    if start:
        started = await raw.send_json("/start", start_body("someone"), receipt=True)
        assert (await raw.expect("RECEIPT")).get("receipt-id") == started
    return raw


async def pair(server, first: str, second: str):
    a = await client(server, first)
    b = await client(server, second)
    event_a, event_b = (await a.event()).body, (await b.event()).body
    assert event_a["eventCode"] == event_b["eventCode"] == 10
    return a, event_a, b, event_b


def ids(event: dict, content=None) -> dict:
    return {"chatUUID": event["chatUUID"], "senderUUID": event["senderUUID"], "content": content}


async def test_report_ends_the_dialog_and_is_taken_once(start_daphne):
    server = start_daphne(env=ENV)
    bob, bob_10, alice, alice_10 = await pair(server, BOB, ALICE)
    await bob.send_json("/message", {**ids(bob_10), "content": "hello"})
    assert ((await alice.event()).body)["content"] == "hello"
    assert ((await bob.event()).body)["eventCode"] == 20

    reported = await bob.send_json("/report", ids(bob_10, "spam, then insults"), receipt=True)
    ended, taken = (await bob.event()).body, (await bob.event()).body
    assert ended["eventCode"] == 30 and ended["serviceContent"] == {"reason": "stop"}
    assert ended["senderUUID"] == bob_10["senderUUID"]
    assert taken["eventCode"] == 40 and taken["chatUUID"] == bob_10["chatUUID"]
    assert set(taken["serviceContent"]) == {"reportId"}
    assert (await bob.expect("RECEIPT")).get("receipt-id") == reported
    partner_end = (await alice.event()).body
    assert partner_end["eventCode"] == 30 and partner_end["senderUUID"] == bob_10["senderUUID"]

    report = await sync_to_async(Report.objects.get)()
    assert str(report.pk) == taken["serviceContent"]["reportId"]
    assert (str(report.reporter_id), str(report.reported_id)) == (bob_10["senderUUID"], alice_10["senderUUID"])
    assert report.reason == "spam, then insults" and report.status == Report.Status.OPEN
    dialog = await sync_to_async(Dialog.objects.get)()
    assert dialog.end_reason == "stop" and str(dialog.ended_by_id) == bob_10["senderUUID"]

    async def refused(raw: WireClient, body: dict) -> dict:
        await raw.send_json("/report", body)
        event = (await raw.event()).body
        assert event["eventCode"] == 41, event
        return event["serviceContent"]

    assert (await refused(bob, ids(bob_10)))["error"] == "already_reported"
    # The partner may still report the dialog it was in, once it has ended.
    await alice.send_json("/report", ids(alice_10))
    assert ((await alice.event()).body)["eventCode"] == 40
    assert (await refused(alice, ids(bob_10)))["error"] == "not_participant"
    unknown = {**ids(alice_10), "chatUUID": "00000000-0000-4000-8000-000000000000"}
    assert (await refused(alice, unknown))["error"] == "unknown_chat"
    assert (await refused(alice, ids(alice_10, "x" * 501)))["field"] == "content"
    assert (await refused(alice, {**ids(alice_10), "senderUUID": 7}))["error"] == "invalid_field"
    await alice.send(frame("SEND", {"destination": "/report"}, b"{nope"))
    assert ((await alice.event()).body)["serviceContent"]["error"] == "invalid_json"
    assert await sync_to_async(Report.objects.count)() == 2
    errors = [(await refused(alice, ids(alice_10)))["error"] for _ in range(3)]
    assert errors[-1] == "rate_limited"  # the burst of 8 /report frames is spent


async def test_a_ban_closes_the_address_connections_and_refuses_its_next_connect(start_daphne):
    server = start_daphne(env=ENV)
    bob, bob_10, alice, _ = await pair(server, BOB, ALICE)
    await bob.send_json("/report", ids(bob_10))
    assert [((await bob.event()).body)["eventCode"] for _ in range(2)] == [30, 40]
    (await alice.event()).body
    # Alice chats on with Carol, and has a second, idle connection.
    await alice.send_json("/start", start_body("alice again"))
    carol = await client(server, CAROL)
    alice_10, carol_10 = (await alice.event()).body, (await carol.event()).body
    assert alice_10["chatUUID"] == carol_10["chatUUID"]
    idle = await client(server, ALICE, start=False)

    report = await sync_to_async(Report.objects.get)()
    assert await sync_to_async(report_ban)(report=report, period=timedelta(hours=1)) is not None

    for connection in (alice, idle):
        frames, closed = await connection.frames_until_closed()
        assert frames[-1].command == "ERROR" and frames[-1].get("message") == "banned"
        assert closed.rcvd.code == CLOSE_POLICY
    ended = (await carol.event()).body
    assert ended["eventCode"] == 30 and ended["serviceContent"] == {"reason": "admin"}
    assert ended["senderUUID"] is None

    again = await WireClient(server.ws_url, "again").open_socket(additional_headers={"X-Forwarded-For": ALICE})
    await again.send(frame("CONNECT", {"accept-version": "1.2", "host": "localhost"}))
    frames, closed = await again.frames_until_closed()
    assert [(f.command, f.get("message")) for f in frames] == [("ERROR", "banned")]
    assert closed.rcvd.code == CLOSE_POLICY
    # Everybody else is welcome; a lifted ban lets the address in again.
    await (await client(server, BOB, start=False)).close()
    assert await sync_to_async(lambda: ban_lift(bans=Ban.objects.all()))() == 1
    await (await client(server, ALICE, start=False)).close()
    await bob.close()
    await carol.close()


async def test_addresses_are_kept_only_as_keyed_hashes(start_daphne):
    server = start_daphne(env=ENV)
    bob, bob_10, alice, _ = await pair(server, BOB, ALICE)
    await bob.send_json("/report", ids(bob_10, "reason"))
    assert [((await bob.event()).body)["eventCode"] for _ in range(2)] == [30, 40]
    report = await sync_to_async(Report.objects.get)()
    await sync_to_async(report_ban)(report=report, period=timedelta(days=7))
    await alice.frames_until_closed()
    await bob.close()
    await asyncio.sleep(0.5)

    hashes = await sync_to_async(lambda: list(ParticipantAddress.objects.values_list("address_hash", flat=True)))()
    assert len(hashes) == 2 and all(len(h) == 64 for h in hashes)
    dump = await sync_to_async(database_text)()
    log = server.log()
    for address in (BOB, ALICE, "10.9.8.7"):
        assert address not in dump
        assert address not in log


def database_text() -> str:
    """Every row of every table, as text."""
    from django.apps import apps

    return "\n".join(
        repr(list(model.objects.values_list()))
        for model in apps.get_models()
    )
