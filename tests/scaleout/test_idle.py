"""Connections stay open while nothing happens: a user waits in the pool, or nothing at all.

A regression test: with redis-py 8 (socket_timeout 5 s by default) and channels-redis's
5 s BZPOPMIN, the consumer's channel receive raised redis TimeoutError, which killed the
consumer and closed an idle WebSocket with 1011 about every 5 s per process (fixed in
settings.CHANNEL_LAYERS with socket_timeout 30).
"""

from __future__ import annotations

import asyncio

import pytest

from tests.support.events import PAIRED, start_body
from tests.support.wire import WireClient, close_all

pytestmark = [pytest.mark.django_db(transaction=True)]

IDLE_SECONDS = 16  # three channels-redis BZPOPMIN blocks of 5 s


@pytest.mark.timeout(90)
async def test_idle_connections_stay_open(cluster):
    servers = cluster(2)
    clients = [WireClient(servers[i % 2].ws_url, f"idle{i}@p{i % 2 + 1}") for i in range(12)]
    try:
        await asyncio.gather(*(c.open() for c in clients))
        # Half of them wait in the pool (each its own language: nobody pairs), half do nothing.
        for i, client in enumerate(clients[:6]):
            receipt = await client.start(start_body(f"Idle{i}", "zz" + "abcdef"[i]), receipt=True)
            await client.wait_frame(lambda f, r=receipt: f.get("receipt-id") == r, timeout=15, what="RECEIPT")
        await asyncio.sleep(IDLE_SECONDS)
        closed = [(c.label, c.close_code) for c in clients if not c.is_open]
        assert not closed, f"closed by the server while idle: {closed}"
        # And they still work: two fresh users on the quiet connections pair across processes.
        a, b = clients[6], clients[7]
        await a.start(start_body("A", "en"))
        await b.start(start_body("B", "en"))
        assert (await a.wait_code(PAIRED, timeout=15)).chat == (await b.wait_code(PAIRED, timeout=15)).chat
    finally:
        await close_all(clients)
