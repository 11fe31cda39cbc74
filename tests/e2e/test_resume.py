"""PROTOCOL.md §7.1: resume after a dropped connection, on a live daphne with wire clients."""

from __future__ import annotations

import asyncio
import hashlib
import urllib.request

import pytest
from channels.db import database_sync_to_async
from django.db import connections
from prometheus_client.parser import text_string_to_metric_families

from matching.models import PoolUser
from tests.support.events import LEFT, MESSAGE, PAIRED, START_REFUSED, start_body
from tests.support.wire import WireClient, close_all, pair

pytestmark = [pytest.mark.django_db(transaction=True)]

GRACE_MAX = 30
SERVER_ENV = {
    "RANDOMCHAT_RESUME_GRACE_MAX": str(GRACE_MAX),
    "RANDOMCHAT_REMATCH_WINDOW": "0",
    "RANDOMCHAT_PROCESS_HEARTBEAT": "0.5",
}


def stored_user(pk) -> PoolUser:
    """The row, read on asgiref's thread, whose connection must not outlive the test database."""
    try:
        return PoolUser.objects.get(pk=pk)
    finally:
        connections.close_all()


def metric(server, name: str) -> float:
    """A counter of the live server's /metrics (open to loopback callers)."""
    with urllib.request.urlopen(server.http_url + "/metrics", timeout=10) as response:
        families = text_string_to_metric_families(response.read().decode())
    return sum(s.value for family in families for s in family.samples if s.name == name)


async def open_graced(client: WireClient, grace: int = 20) -> WireClient:
    await client.open(headers={"resume-grace": str(grace)})
    return client


async def paired_with_grace(server, *, grace_a: int = 20, grace_b: int | None = None):
    """A (with a grace) and B (with one only if `grace_b`) in a dialog; their 10s."""
    a = await open_graced(WireClient(server.ws_url, "A"), grace_a)
    b = WireClient(server.ws_url, "B")
    if grace_b is None:
        await b.open()
    else:
        await open_graced(b, grace_b)
    ten_a, ten_b = await pair(a, b, start_body("Ann", "fi"), start_body("Bob", "fi"))
    return a, b, ten_a, ten_b


async def resumed_on(url: str, token: str, label: str = "A again", grace: int = 20):
    """A new connection that resumes with `token`; it and its 10."""
    again = await open_graced(WireClient(url, label), grace)
    await again.resume(token)
    return again, await again.wait_code(PAIRED, timeout=10)


@pytest.mark.timeout(60)
async def test_the_grace_asked_for_is_granted_capped_and_said_in_connected(start_daphne):
    server = start_daphne(env=SERVER_ENV)
    asks, greedy, plain = WireClient(server.ws_url), WireClient(server.ws_url), WireClient(server.ws_url)
    try:
        await asks.open(headers={"resume-grace": "15"})
        await greedy.open(headers={"resume-grace": "100000"})
        await plain.open()
        assert asks.connected.get("resume-grace") == "15"
        assert greedy.connected.get("resume-grace") == str(GRACE_MAX)
        assert plain.connected.get("resume-grace") is None
    finally:
        await close_all([asks, greedy, plain])


@pytest.mark.timeout(60)
async def test_a_bad_resume_grace_header_is_a_protocol_error(start_daphne):
    server = start_daphne(env=SERVER_ENV)
    client = WireClient(server.ws_url)
    try:
        await client.open_socket()
        await client.send("CONNECT\naccept-version:1.2\nresume-grace:-5\n\n\x00")
        error = await client.expect("ERROR")
        assert "resume-grace" in error.get("message")
        await client.closed.wait()
    finally:
        await client.close()


@pytest.mark.timeout(60)
async def test_the_token_goes_to_its_owner_only_and_only_its_hash_is_stored(start_daphne):
    server = start_daphne(env=SERVER_ENV)
    a, b, ten_a, ten_b = await paired_with_grace(server)
    try:
        token = ten_a.service["resumeToken"]
        selector, verifier = token.split(".")
        assert len(verifier) * 6 >= 128  # base64url: 6 bits a character
        assert "resumeToken" not in ten_b.service  # B asked for no grace, and never sees A's
        assert token.encode() not in b"".join(f.body for f in b.frames)
        stored = await database_sync_to_async(stored_user)(ten_a.sender)
        assert stored.resume_selector == selector
        assert stored.resume_verifier == hashlib.sha256(verifier.encode()).hexdigest()
        assert verifier not in {str(getattr(stored, f.attname)) for f in PoolUser._meta.fields}
    finally:
        await close_all([a, b])
    assert token not in server.log() and verifier not in server.log()


@pytest.mark.timeout(90)
async def test_a_dropped_participant_resumes_and_gets_what_it_missed_in_order(start_daphne):
    server = start_daphne(env=SERVER_ENV)
    a, b, ten_a, _ = await paired_with_grace(server)
    again = None
    try:
        await a.message("before the drop")
        await b.wait_code(MESSAGE, timeout=10, content="before the drop")
        await a.wait_code(MESSAGE, timeout=10, content="before the drop")
        a.abort()
        await a.closed.wait()
        mark = len(b.events)
        await b.message("while you were away 1")
        await b.message("while you were away 2")
        await b.wait_code(MESSAGE, timeout=10, start=mark, content="while you were away 2")
        await asyncio.sleep(0.5)
        assert b.codes(mark) == [MESSAGE, MESSAGE]  # the partner is told nothing of the drop

        again, resumed = await resumed_on(server.ws_url, ten_a.service["resumeToken"])
        assert (resumed.chat, resumed.sender) == (ten_a.chat, ten_a.sender)
        assert resumed.service["resumed"] is True
        assert resumed.service["partner"] == ten_a.service["partner"]
        assert resumed.service["resumeToken"] not in (None, ten_a.service["resumeToken"])
        missed = [await again.wait_code(MESSAGE, timeout=10, content=f"while you were away {i}") for i in (1, 2)]
        assert again.codes() == [PAIRED, MESSAGE, MESSAGE]  # nothing before the drop comes again
        assert {m.sender for m in missed} == {b.user}

        # The dialog goes on, both ways, with the resumed connection speaking as A.
        await again.message("back", chat=ten_a.chat, sender=ten_a.sender)
        await b.wait_code(MESSAGE, timeout=10, content="back", sender=ten_a.sender)
        await b.message("welcome back")
        await again.wait_code(MESSAGE, timeout=10, content="welcome back")
        assert not a.problems + b.problems + again.problems
        assert metric(server, "randomchat_resumes_total") == 1
    finally:
        await close_all([a, b] + ([again] if again else []))


@pytest.mark.timeout(60)
async def test_tokens_are_single_use_and_forged_ones_fail(start_daphne):
    server = start_daphne(env=SERVER_ENV)
    a, b, ten_a, _ = await paired_with_grace(server)
    clients = [a, b]
    try:
        a.abort()
        await a.closed.wait()
        token = ten_a.service["resumeToken"]
        selector, verifier = token.split(".")
        forgeries = [selector + "." + verifier[:-1] + ("A" if verifier[-1] != "A" else "B"), "nope", "x" * 5000]
        for forged in forgeries:
            thief = await open_graced(WireClient(server.ws_url, "thief"))
            clients.append(thief)
            await thief.resume(forged)
            refused = await thief.event(START_REFUSED, error="resume_failed")
            assert (refused.chat, refused.sender) == (None, None)
        again, _ = await resumed_on(server.ws_url, token)
        late = await open_graced(WireClient(server.ws_url, "late"))
        clients += [again, late]
        await late.resume(token)  # used: the first resume rotated it
        await late.event(START_REFUSED, error="resume_failed")
        await late.resume(12)
        await late.event(START_REFUSED, error="invalid_field")
        await late.send_json("/resume", "{not json")
        await late.event(START_REFUSED, error="invalid_json")
        await asyncio.sleep(0.3)
        assert b.codes() == [PAIRED]  # the partner saw none of it
    finally:
        await close_all(clients)


@pytest.mark.timeout(60)
async def test_when_the_grace_runs_out_the_partner_gets_30_disconnect(start_daphne):
    server = start_daphne(env=SERVER_ENV)
    a, b, ten_a, _ = await paired_with_grace(server, grace_a=1)
    late = None
    try:
        a.abort()
        left = await b.wait_code(LEFT, timeout=10)
        assert (left.chat, left.sender, left.service) == (ten_a.chat, ten_a.sender, {"reason": "disconnect"})
        late = await open_graced(WireClient(server.ws_url, "late"))
        await late.resume(ten_a.service["resumeToken"])
        await late.event(START_REFUSED, error="resume_failed")
        assert late.codes() == [START_REFUSED]  # the ended dialog's 30 is not replayed
        assert metric(server, "randomchat_resume_graces_expired_total") == 1
        assert metric(server, "randomchat_resumes_total") == 0
    finally:
        await close_all([a, b] + ([late] if late else []))


@pytest.mark.timeout(60)
async def test_disconnect_and_stop_still_end_the_dialog_at_once(start_daphne):
    server = start_daphne(env=SERVER_ENV)
    a, b, ten_a, _ = await paired_with_grace(server)
    c, d, ten_c, _ = await paired_with_grace(server)
    try:
        await a.send("DISCONNECT\nreceipt:bye\n\n\x00")
        left = await b.wait_code(LEFT, timeout=5)
        assert left.service == {"reason": "disconnect"}
        await c.stop()
        assert (await d.wait_code(LEFT, timeout=5)).service == {"reason": "stop"}
        for token in (ten_a.service["resumeToken"], ten_c.service["resumeToken"]):
            late = await open_graced(WireClient(server.ws_url, "late"))
            await late.resume(token)
            await late.event(START_REFUSED, error="resume_failed")
            await late.close()
    finally:
        await close_all([a, b, c, d])


@pytest.mark.timeout(60)
async def test_a_partner_who_stops_during_the_grace_ends_it(start_daphne):
    server = start_daphne(env=SERVER_ENV)
    a, b, ten_a, _ = await paired_with_grace(server)
    late = None
    try:
        a.abort()
        await a.closed.wait()
        await b.stop()
        await b.wait_code(LEFT, timeout=5)
        late = await open_graced(WireClient(server.ws_url, "late"))
        await late.resume(ten_a.service["resumeToken"])
        await late.event(START_REFUSED, error="resume_failed")
        await late.assert_quiet()
    finally:
        await close_all([a, b] + ([late] if late else []))


@pytest.mark.timeout(60)
async def test_a_resume_takes_over_a_connection_the_server_still_thinks_open(start_daphne):
    """A phone that changed networks: its old socket is still open on the server."""
    server = start_daphne(env=SERVER_ENV)
    a, b, ten_a, _ = await paired_with_grace(server)
    again = None
    try:
        again, resumed = await resumed_on(server.ws_url, ten_a.service["resumeToken"])
        assert resumed.chat == ten_a.chat
        frames, closed = await a.frames_until_closed(timeout=10)
        assert [f.command for f in frames if f.command != "RECEIPT"][-1:] == ["ERROR"]
        assert closed.rcvd.code == 4008
        await b.message("still there?")
        await again.wait_code(MESSAGE, timeout=10, content="still there?")
        await asyncio.sleep(0.5)
        assert LEFT not in b.codes()  # the old connection's close ended nothing
    finally:
        await close_all([a, b] + ([again] if again else []))


@pytest.mark.timeout(60)
async def test_a_resumed_connection_may_resume_again(start_daphne):
    server = start_daphne(env=SERVER_ENV)
    a, b, ten_a, _ = await paired_with_grace(server)
    clients = [a, b]
    try:
        a.abort()
        again, resumed = await resumed_on(server.ws_url, ten_a.service["resumeToken"], "A2")
        clients.append(again)
        again.abort()
        await again.closed.wait()
        await b.message("twice away")
        third, resumed_again = await resumed_on(server.ws_url, resumed.service["resumeToken"], "A3")
        clients.append(third)
        assert resumed_again.chat == ten_a.chat
        await third.wait_code(MESSAGE, timeout=10, content="twice away")
    finally:
        await close_all(clients)


@pytest.mark.timeout(60)
async def test_a_resumed_connection_counts_as_the_one_it_continues_for_no_rematch(start_daphne):
    server = start_daphne(env={**SERVER_ENV, "RANDOMCHAT_REMATCH_WINDOW": "300"})
    a, b, ten_a, _ = await paired_with_grace(server)
    again = None
    try:
        a.abort()
        again, _ = await resumed_on(server.ws_url, ten_a.service["resumeToken"])
        await again.stop(chat=ten_a.chat, sender=ten_a.sender)
        await b.wait_code(LEFT, timeout=10)
        mark_again, mark_b = len(again.events), len(b.events)
        await again.start(start_body("Ann", "fi"), receipt=True)
        await b.start(start_body("Bob", "fi"), receipt=True)
        await asyncio.sleep(1)
        assert PAIRED not in again.codes(mark_again) + b.codes(mark_b)  # both wait
    finally:
        await close_all([a, b] + ([again] if again else []))
