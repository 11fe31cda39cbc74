"""PROTOCOL.md §7.2: two connections whose dialog just ended are not paired again in the window."""

from __future__ import annotations

import asyncio
import contextlib

import pytest

from tests.support.events import LEFT, PAIRED, start_body
from tests.support.wire import WireClient, close_all, pair, start_stored

pytestmark = [pytest.mark.django_db(transaction=True)]


async def stop_and_wait(stopper: WireClient, partner: WireClient) -> None:
    marks = [len(stopper.events), len(partner.events)]
    await stopper.stop()
    for client, mark in zip((stopper, partner), marks):
        await client.wait_code(LEFT, timeout=10, start=mark)


@pytest.mark.timeout(60)
async def test_former_partners_keep_waiting_and_everyone_else_is_served_in_order(start_daphne):
    server = start_daphne(env={"RANDOMCHAT_REMATCH_WINDOW": "300"})
    a, b, c, d = (WireClient(server.ws_url, label) for label in "abcd")
    clients = [a, b, c, d]
    try:
        for client in clients:
            await client.open()
        await pair(a, b, start_body("A", "ga"), start_body("B", "ga"))
        await stop_and_wait(b, a)
        await start_stored(a, start_body("A again", "ga"))
        await start_stored(b, start_body("B again", "ga"))
        await asyncio.sleep(0.5)
        assert a.codes().count(PAIRED) == b.codes().count(PAIRED) == 1, "former partners were paired again"
        # A newcomer gets the longest-waiting compatible user, A; B, the only one left, waits on.
        marks = {client: len(client.events) for client in clients}
        await c.start(start_body("C", "ga"))
        with_c = await c.wait_code(PAIRED, timeout=10)
        assert (await a.wait_code(PAIRED, timeout=10, start=marks[a])).chat == with_c.chat
        assert PAIRED not in b.codes(marks[b])
        await d.start(start_body("D", "ga"))
        with_d = await d.wait_code(PAIRED, timeout=10)
        assert (await b.wait_code(PAIRED, timeout=10, start=marks[b])).chat == with_d.chat
    finally:
        await close_all(clients)


@contextlib.asynccontextmanager
async def former_partners(server):
    """Two connections whose dialog just ended, and that dialog."""
    a, b = WireClient(server.ws_url, "a"), WireClient(server.ws_url, "b")
    try:
        await a.open()
        await b.open()
        first, _ = await pair(a, b, start_body("A", "ga"), start_body("B", "ga"))
        await stop_and_wait(b, a)
        yield a, b, first
    finally:
        await close_all([a, b])


@pytest.mark.timeout(60)
async def test_without_a_window_former_partners_pair_again(start_daphne):
    async with former_partners(start_daphne(env={"RANDOMCHAT_REMATCH_WINDOW": "0"})) as (a, b, first):
        again, _ = await pair(a, b, start_body("A", "ga"), start_body("B", "ga"))
        assert again.chat != first.chat


@pytest.mark.timeout(60)
async def test_once_the_window_passed_former_partners_pair_again(start_daphne):
    # Within the window they wait; past it their connections skip the look-up, and pair.
    async with former_partners(start_daphne(env={"RANDOMCHAT_REMATCH_WINDOW": "1.5"})) as (a, b, first):
        await start_stored(a, start_body("A", "ga"))
        await start_stored(b, start_body("B", "ga"))
        await asyncio.sleep(0.3)
        assert a.codes().count(PAIRED) == 1, "former partners were paired again within the window"
        await a.stop()
        await b.stop()
        await asyncio.sleep(1.5)
        again, _ = await pair(a, b, start_body("A", "ga"), start_body("B", "ga"))
        assert again.chat != first.chat
