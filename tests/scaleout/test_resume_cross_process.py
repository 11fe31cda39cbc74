"""PROTOCOL.md §7.1 across processes: a participant dropped on one daphne resumes on the other,
and a grace whose process died still runs out."""

from __future__ import annotations

import asyncio

import pytest

from tests.e2e.test_resume import SERVER_ENV, dialog, dropped
from tests.scaleout.helpers import sigkill
from tests.support.events import LEFT, MESSAGE, PAIRED

pytestmark = [pytest.mark.django_db(transaction=True)]


@pytest.mark.timeout(120)
async def test_a_participant_dropped_on_one_process_resumes_on_the_other(cluster):
    p1, p2 = cluster(2, **SERVER_ENV)
    async with dialog(p1.ws_url, url_b=p2.ws_url) as scene:
        b, ten_a = scene.b, scene.ten_a
        await dropped(scene.a)
        await asyncio.sleep(0.3)  # p1 has detached it
        for i in range(3):
            await b.message(f"missed {i}")
        await b.wait_code(MESSAGE, timeout=10, content="missed 2")
        again, resumed = await scene.resume(scene.token, "A@p2", url=p2.ws_url)
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


@pytest.mark.timeout(120)
async def test_a_resume_on_the_other_process_closes_the_connection_still_open_on_the_first(cluster):
    p1, p2 = cluster(2, **SERVER_ENV)
    async with dialog(p1.ws_url, url_b=p2.ws_url) as scene:
        again, _ = await scene.resume(scene.token, "A@p2", url=p2.ws_url)
        _, closed = await scene.a.frames_until_closed(timeout=10)
        assert closed.rcvd.code == 4008
        await scene.b.message("to the new one")
        await again.wait_code(MESSAGE, timeout=10, content="to the new one")
        await asyncio.sleep(1)
        assert scene.b.codes() == [PAIRED, MESSAGE]  # its own 20, and no 30 from the old close


@pytest.mark.timeout(120)
async def test_the_grace_of_a_killed_process_runs_out_on_the_other(cluster):
    p1, p2 = cluster(2, **SERVER_ENV)
    async with dialog(p1.ws_url, grace_a=2, url_b=p2.ws_url) as scene:
        await dropped(scene.a)
        await asyncio.sleep(0.3)  # detached by p1...
        sigkill(p1)  # ...which dies before its timer ends the grace: p2's heartbeat does
        left = await scene.b.wait_code(LEFT, timeout=20)
        assert (left.sender, left.service) == (scene.ten_a.sender, {"reason": "disconnect"})
        scene.url = p2.ws_url
        await scene.resume_refused(scene.token)
