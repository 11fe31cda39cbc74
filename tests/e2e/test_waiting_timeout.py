"""PROTOCOL.md §7.3: a user who waited RANDOMCHAT_MAX_WAIT seconds leaves the pool with 30 "timeout"."""

from __future__ import annotations

import pytest

from tests.support.events import LEFT, PAIRED, start_body
from tests.support.wire import WireClient, close_all, start_stored

pytestmark = [pytest.mark.django_db(transaction=True)]


@pytest.mark.timeout(60)
async def test_a_user_who_waited_too_long_is_told_and_may_start_again(start_daphne):
    server = start_daphne(env={"RANDOMCHAT_MAX_WAIT": "2", "RANDOMCHAT_PROCESS_HEARTBEAT": "0.5"})
    waiting, newcomer = WireClient(server.ws_url, "waiting"), WireClient(server.ws_url, "newcomer")
    clients = [waiting, newcomer]
    try:
        for client in clients:
            await client.open()
        await start_stored(waiting, start_body("Waits", "is"))
        left = await waiting.wait_code(LEFT, timeout=10)
        assert (left.chat, left.sender, left.service, left.content) == (None, None, {"reason": "timeout"}, None)
        # It is out of the pool: a newcomer of its language waits instead of pairing with it...
        await start_stored(newcomer, start_body("New", "is"))
        # ...and it may /start again, and pairs with the newcomer.
        await waiting.start(start_body("Again", "is"))
        paired = await waiting.wait_code(PAIRED, timeout=10)
        assert (await newcomer.wait_code(PAIRED, timeout=10)).chat == paired.chat
        assert waiting.codes() == [LEFT, PAIRED]
    finally:
        await close_all(clients)
