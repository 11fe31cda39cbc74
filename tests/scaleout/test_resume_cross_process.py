"""PROTOCOL.md §7.1 across processes: a participant dropped on one daphne resumes on the other,
and a grace whose process died still runs out."""

from __future__ import annotations

import asyncio

import pytest

from tests.e2e.test_resume import SERVER_ENV, open_graced, resumed_on
from tests.scaleout.helpers import sigkill
from tests.support.events import LEFT, MESSAGE, PAIRED, START_REFUSED, start_body
from tests.support.wire import WireClient, close_all, pair

pytestmark = [pytest.mark.django_db(transaction=True)]


async def dialog_across(p1, p2, grace: int = 20):
    a = await open_graced(WireClient(p1.ws_url, "A@p1"), grace)
    b = await WireClient(p2.ws_url, "B@p2").open()
    ten_a, _ = await pair(a, b, start_body("Ann", "et"), start_body("Bob", "et"))
    return a, b, ten_a


@pytest.mark.timeout(120)
async def test_a_participant_dropped_on_one_process_resumes_on_the_other(cluster):
    p1, p2 = cluster(2, **SERVER_ENV)
    a, b, ten_a = await dialog_across(p1, p2)
    again = None
    try:
        a.abort()
        await a.closed.wait()
        await asyncio.sleep(0.3)  # p1 has detached it
        for i in range(3):
            await b.message(f"missed {i}")
        await b.wait_code(MESSAGE, timeout=10, content="missed 2")
        again, resumed = await resumed_on(p2.ws_url, ten_a.service["resumeToken"], "A@p2")
        assert (resumed.chat, resumed.sender, resumed.service["resumed"]) == (ten_a.chat, ten_a.sender, True)
        for i in range(3):
            await again.wait_code(MESSAGE, timeout=10, content=f"missed {i}")
        await again.message("back on p2")
        await b.wait_code(MESSAGE, timeout=10, content="back on p2", sender=ten_a.sender)
        await b.message("hello p2")
        await again.wait_code(MESSAGE, timeout=10, content="hello p2")
        assert [e.content for e in again.events if e.code == MESSAGE] == [
            "missed 0", "missed 1", "missed 2", "back on p2", "hello p2"
        ]
        await again.stop()
        assert (await b.wait_code(LEFT, timeout=10)).service == {"reason": "stop"}
        assert LEFT not in b.codes()[:-1]
    finally:
        await close_all([a, b] + ([again] if again else []))


@pytest.mark.timeout(120)
async def test_a_resume_on_the_other_process_closes_the_connection_still_open_on_the_first(cluster):
    p1, p2 = cluster(2, **SERVER_ENV)
    a, b, ten_a = await dialog_across(p1, p2)
    again = None
    try:
        again, _ = await resumed_on(p2.ws_url, ten_a.service["resumeToken"], "A@p2")
        _, closed = await a.frames_until_closed(timeout=10)
        assert closed.rcvd.code == 4008
        await b.message("to the new one")
        await again.wait_code(MESSAGE, timeout=10, content="to the new one")
        await asyncio.sleep(1)
        assert b.codes() == [PAIRED, MESSAGE]  # its own 20, and no 30 from the old close
    finally:
        await close_all([a, b] + ([again] if again else []))


@pytest.mark.timeout(120)
async def test_the_grace_of_a_killed_process_runs_out_on_the_other(cluster):
    p1, p2 = cluster(2, **SERVER_ENV)
    a, b, ten_a = await dialog_across(p1, p2, grace=2)
    late = None
    try:
        a.abort()
        await a.closed.wait()
        await asyncio.sleep(0.3)  # detached by p1...
        sigkill(p1)  # ...which dies before its timer ends the grace: p2's heartbeat does
        left = await b.wait_code(LEFT, timeout=20)
        assert (left.sender, left.service) == (ten_a.sender, {"reason": "disconnect"})
        late = await open_graced(WireClient(p2.ws_url, "late"))
        await late.resume(ten_a.service["resumeToken"])
        await late.event(START_REFUSED, error="resume_failed")
    finally:
        await close_all([a, b] + ([late] if late else []))
