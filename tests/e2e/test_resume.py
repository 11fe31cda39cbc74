"""PROTOCOL.md §7.1: resume after a dropped connection, on a live daphne with wire clients."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import urllib.request

import pytest
from channels.db import database_sync_to_async
from django.db import connections
from prometheus_client.parser import text_string_to_metric_families

from matching.models import PoolUser
from tests.support.events import LEFT, MESSAGE, PAIRED, START_REFUSED, Event, start_body
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


class Scene:
    """A (granted a grace) and B in a dialog, and every connection a test opens after them."""

    a: WireClient
    b: WireClient
    ten_a: Event
    ten_b: Event

    def __init__(self, url: str) -> None:
        self.url = url
        self.clients: list[WireClient] = []

    @property
    def token(self) -> str:
        return self.ten_a.service["resumeToken"]

    async def connect(self, label: str, grace: int | None = 20, url: str | None = None) -> WireClient:
        """A CONNECTed, SUBSCRIBEd client that asked for `grace` (None: asked for none)."""
        client = WireClient(url or self.url, label)
        self.clients.append(client)
        return await client.open(headers=None if grace is None else {"resume-grace": str(grace)})

    async def resume(self, token: str, label: str = "A again", url: str | None = None) -> tuple[WireClient, Event]:
        """A new connection that resumes with `token`; it and its 10."""
        client = await self.connect(label, url=url)
        await client.resume(token)
        return client, await client.wait_code(PAIRED, timeout=10)

    async def resume_refused(self, token, error: str = "resume_failed") -> WireClient:
        """A new connection whose /resume with `token` gets 11 `error`."""
        client = await self.connect("late")
        await client.resume(token)
        refused = await client.event(START_REFUSED, error=error)
        assert (refused.chat, refused.sender) == (None, None)
        return client


@contextlib.asynccontextmanager
async def dialog(url: str, *, grace_a: int = 20, url_b: str | None = None):
    """A Scene on a live server (B on `url_b` if given); its connections close at the end."""
    scene = Scene(url)
    try:
        scene.a = await scene.connect("A", grace_a)
        scene.b = await scene.connect("B", None, url=url_b)
        scene.ten_a, scene.ten_b = await pair(scene.a, scene.b, start_body("Ann", "fi"), start_body("Bob", "fi"))
        yield scene
    finally:
        await close_all(scene.clients)


async def dropped(client: WireClient) -> None:
    """The client's network goes: no close handshake, no DISCONNECT."""
    client.abort()
    await client.closed.wait()


@pytest.mark.timeout(60)
async def test_the_grace_asked_for_is_granted_capped_and_said_in_connected(start_daphne):
    scene = Scene(start_daphne(env=SERVER_ENV).ws_url)
    try:
        asks, greedy = await scene.connect("asks", 15), await scene.connect("greedy", 100000)
        plain = await scene.connect("plain", None)
        assert asks.connected.get("resume-grace") == "15"
        assert greedy.connected.get("resume-grace") == str(GRACE_MAX)
        assert plain.connected.get("resume-grace") is None
    finally:
        await close_all(scene.clients)


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
    async with dialog(server.ws_url) as scene:
        selector, verifier = scene.token.split(".")
        assert len(verifier) * 6 >= 128  # base64url: 6 bits a character
        assert "resumeToken" not in scene.ten_b.service  # B asked for no grace, and never sees A's
        assert scene.token.encode() not in b"".join(f.body for f in scene.b.frames)
        stored = await database_sync_to_async(stored_user)(scene.ten_a.sender)
        assert stored.resume_selector == selector
        assert stored.resume_verifier == hashlib.sha256(verifier.encode()).hexdigest()
        assert verifier not in {str(getattr(stored, f.attname)) for f in PoolUser._meta.fields}
    assert scene.token not in server.log() and verifier not in server.log()


@pytest.mark.timeout(90)
async def test_a_dropped_participant_resumes_and_gets_what_it_missed_in_order(start_daphne):
    server = start_daphne(env=SERVER_ENV)
    async with dialog(server.ws_url) as scene:
        a, b, ten_a = scene.a, scene.b, scene.ten_a
        await a.message("before the drop")
        await b.wait_code(MESSAGE, timeout=10, content="before the drop")
        await a.wait_code(MESSAGE, timeout=10, content="before the drop")
        await dropped(a)
        mark = len(b.events)
        await b.message("while you were away 1")
        await b.message("while you were away 2")
        await b.wait_code(MESSAGE, timeout=10, start=mark, content="while you were away 2")
        await asyncio.sleep(0.5)
        assert b.codes(mark) == [MESSAGE, MESSAGE]  # the partner is told nothing of the drop

        again, resumed = await scene.resume(scene.token)
        assert (resumed.chat, resumed.sender) == (ten_a.chat, ten_a.sender)
        assert resumed.service["resumed"] is True
        assert resumed.service["partner"] == ten_a.service["partner"]
        assert resumed.service["resumeToken"] not in (None, scene.token)
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


@pytest.mark.timeout(60)
async def test_tokens_are_single_use_and_forged_ones_fail(start_daphne):
    async with dialog(start_daphne(env=SERVER_ENV).ws_url) as scene:
        await dropped(scene.a)
        selector, verifier = scene.token.split(".")
        for forged in (selector + "." + verifier[:-1] + ("A" if verifier[-1] != "A" else "B"), "nope", "x" * 5000):
            await scene.resume_refused(forged)
        await scene.resume(scene.token)
        late = await scene.resume_refused(scene.token)  # used: the first resume rotated it
        await late.resume(12)
        await late.event(START_REFUSED, error="invalid_field")
        await late.send_json("/resume", "{not json")
        await late.event(START_REFUSED, error="invalid_json")
        await asyncio.sleep(0.3)
        assert scene.b.codes() == [PAIRED]  # the partner saw none of it


@pytest.mark.timeout(60)
async def test_when_the_grace_runs_out_the_partner_gets_30_disconnect(start_daphne):
    server = start_daphne(env=SERVER_ENV)
    async with dialog(server.ws_url, grace_a=1) as scene:
        scene.a.abort()
        left = await scene.b.wait_code(LEFT, timeout=10)
        ten_a = scene.ten_a
        assert (left.chat, left.sender, left.service) == (ten_a.chat, ten_a.sender, {"reason": "disconnect"})
        late = await scene.resume_refused(scene.token)
        assert late.codes() == [START_REFUSED]  # the ended dialog's 30 is not replayed
        assert metric(server, "randomchat_resume_graces_expired_total") == 1
        assert metric(server, "randomchat_resumes_total") == 0


@pytest.mark.timeout(60)
async def test_disconnect_and_stop_still_end_the_dialog_at_once(start_daphne):
    url = start_daphne(env=SERVER_ENV).ws_url
    async with dialog(url) as disconnecting, dialog(url) as stopping:
        await disconnecting.a.send("DISCONNECT\nreceipt:bye\n\n\x00")
        assert (await disconnecting.b.wait_code(LEFT, timeout=5)).service == {"reason": "disconnect"}
        await stopping.a.stop()
        assert (await stopping.b.wait_code(LEFT, timeout=5)).service == {"reason": "stop"}
        for scene in (disconnecting, stopping):
            await scene.resume_refused(scene.token)


@pytest.mark.timeout(60)
async def test_a_partner_who_stops_during_the_grace_ends_it(start_daphne):
    async with dialog(start_daphne(env=SERVER_ENV).ws_url) as scene:
        await dropped(scene.a)
        await scene.b.stop()
        await scene.b.wait_code(LEFT, timeout=5)
        late = await scene.resume_refused(scene.token)
        await late.assert_quiet()


@pytest.mark.timeout(60)
async def test_a_resume_takes_over_a_connection_the_server_still_thinks_open(start_daphne):
    """A phone that changed networks: its old socket is still open on the server."""
    async with dialog(start_daphne(env=SERVER_ENV).ws_url) as scene:
        again, resumed = await scene.resume(scene.token)
        assert resumed.chat == scene.ten_a.chat
        frames, closed = await scene.a.frames_until_closed(timeout=10)
        assert [f.command for f in frames if f.command != "RECEIPT"][-1:] == ["ERROR"]
        assert closed.rcvd.code == 4008
        await scene.b.message("still there?")
        await again.wait_code(MESSAGE, timeout=10, content="still there?")
        await asyncio.sleep(0.5)
        assert LEFT not in scene.b.codes()  # the old connection's close ended nothing


@pytest.mark.timeout(60)
async def test_a_resumed_connection_may_resume_again(start_daphne):
    async with dialog(start_daphne(env=SERVER_ENV).ws_url) as scene:
        scene.a.abort()
        again, resumed = await scene.resume(scene.token, "A2")
        await dropped(again)
        await scene.b.message("twice away")
        third, resumed_again = await scene.resume(resumed.service["resumeToken"], "A3")
        assert resumed_again.chat == scene.ten_a.chat
        await third.wait_code(MESSAGE, timeout=10, content="twice away")


@pytest.mark.timeout(60)
async def test_a_resumed_connection_counts_as_the_one_it_continues_for_no_rematch(start_daphne):
    async with dialog(start_daphne(env={**SERVER_ENV, "RANDOMCHAT_REMATCH_WINDOW": "300"}).ws_url) as scene:
        scene.a.abort()
        again, _ = await scene.resume(scene.token)
        await again.stop(chat=scene.ten_a.chat, sender=scene.ten_a.sender)
        await scene.b.wait_code(LEFT, timeout=10)
        mark_again, mark_b = len(again.events), len(scene.b.events)
        await again.start(start_body("Ann", "fi"), receipt=True)
        await scene.b.start(start_body("Bob", "fi"), receipt=True)
        await asyncio.sleep(1)
        assert PAIRED not in again.codes(mark_again) + scene.b.codes(mark_b)  # both wait
