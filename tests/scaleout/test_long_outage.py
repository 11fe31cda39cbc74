"""A PostgreSQL outage longer than RANDOMCHAT_PROCESS_TIMEOUT: no live process is released.

Every heartbeat is old when the database answers again; a process judging on that alone
released the others (their dialogs got 30 "disconnect" over open sockets, their waiting
users left the pool without a word). The daphne processes reach PostgreSQL through a
proxy whose link the test cuts: the outage is theirs alone, and other test runs on the
machine go on undisturbed.
"""

from __future__ import annotations

import asyncio

import pytest

from tests.support.events import LEFT, PAIRED, start_body
from tests.support.live import database_env
from tests.support.proxy import CuttableProxy
from tests.support.wire import WireClient, close_all, pair, start_stored

from . import services
from .test_outage import chat_both_ways

pytestmark = [pytest.mark.django_db(transaction=True)]

PROCESS_TIMEOUT, PROCESS_HEARTBEAT = 20, 5  # the defaults
AFTER = PROCESS_TIMEOUT + 3 * PROCESS_HEARTBEAT  # long enough for any false judgment to act


@pytest.mark.timeout(400)
@pytest.mark.parametrize("outage", [30, 120])
async def test_no_live_process_is_released_after_a_long_postgres_outage(cluster, outage):
    with CuttableProxy(*services.pg_address()) as proxy:
        await outage_of_postgres(cluster, proxy, outage)


async def outage_of_postgres(cluster, proxy: CuttableProxy, outage: float) -> None:
    p1, p2 = cluster(
        2,
        DATABASE_URL=proxy.url(database_env()["DATABASE_URL"]),
        RANDOMCHAT_PROCESS_TIMEOUT=PROCESS_TIMEOUT,
        RANDOMCHAT_PROCESS_HEARTBEAT=PROCESS_HEARTBEAT,
    )
    chatters = [(WireClient(p1.ws_url, f"A{i}@p1"), WireClient(p2.ws_url, f"B{i}@p2")) for i in range(3)]
    waiting = [WireClient(p1.ws_url, "waiting@p1"), WireClient(p2.ws_url, "waiting@p2")]
    later: list[WireClient] = []
    everyone = [c for pair_ in chatters for c in pair_] + waiting
    try:
        await asyncio.gather(*(c.open() for c in everyone))
        for i, (a, b) in enumerate(chatters):
            await pair(a, b, start_body(f"A{i}"), start_body(f"B{i}"))
        await start_stored(waiting[0], start_body("W1", "fi"))
        await start_stored(waiting[1], start_body("W2", "et"))

        proxy.set_cut(True)
        await asyncio.sleep(outage)
        proxy.set_cut(False)
        await asyncio.sleep(AFTER)

        assert not [(c.label, c.close_code) for c in everyone if not c.is_open]
        assert not [(c.label, c.describe()) for c in everyone if LEFT in c.codes()], "a live user was told 30"
        for a, b in chatters:  # the dialogs live on
            await chat_both_ways(a, b, f"after {outage} s")
        # The waiting users are still in the pool: a newcomer on the other process pairs with each.
        later = [WireClient(p2.ws_url, "new-fi@p2"), WireClient(p1.ws_url, "new-et@p1")]
        await asyncio.gather(*(c.open() for c in later))
        for newcomer, language, partner in ((later[0], "fi", waiting[0]), (later[1], "et", waiting[1])):
            await newcomer.start(start_body("New", language))
            got = await newcomer.wait_code(PAIRED, timeout=15)
            assert (await partner.wait_code(PAIRED, timeout=15)).chat == got.chat
    finally:
        await close_all(everyone + later)
