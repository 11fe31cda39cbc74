"""A ban made by another process (the admin, `manage.py`) closes a connection that only waits
in the pool at once: the user's address is stored with it as it enters the pool, in the
pairing batch's own transaction, so the ban finds it long before any heartbeat would."""

from __future__ import annotations

from datetime import timedelta

import pytest
from asgiref.sync import sync_to_async

from moderation.models import ParticipantAddress
from moderation.services import ban_create
from randomchat.stomp_consumer import CLOSE_POLICY
from tests.support.events import start_body
from tests.support.wire import WireClient

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.timeout(60)]

ALICE = "198.51.100.23"


async def test_a_ban_closes_a_waiting_connection_at_once(cluster):
    # The heartbeat, which would close a banned connection anyway, comes too late to count.
    servers = cluster(2, RANDOMCHAT_TRUSTED_PROXIES="127.0.0.1", RANDOMCHAT_PROCESS_HEARTBEAT=60)
    alice = await WireClient(servers[1].ws_url, "alice").open_socket(additional_headers={"X-Forwarded-For": ALICE})
    try:
        await alice.stomp_connect()
        await alice.subscribe()
        receipt = await alice.send_json("/start", start_body("Alice", "en"), receipt=True)
        assert (await alice.expect("RECEIPT")).get("receipt-id") == receipt  # it waits: nobody else is there
        stored = await sync_to_async(lambda: list(ParticipantAddress.objects.values_list("address_hash", flat=True)))()
        assert len(stored) == 1
        await sync_to_async(ban_create)(address_hash=stored[0], period=timedelta(hours=1))
        frames, closed = await alice.frames_until_closed(timeout=5)
        assert [(f.command, f.get("message")) for f in frames] == [("ERROR", "banned")]
        assert closed.rcvd.code == CLOSE_POLICY
    finally:
        await alice.close()
