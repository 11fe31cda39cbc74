"""PROTOCOL.md §4 "Order" across processes: the sender and the stopper on two daphnes."""

from __future__ import annotations

import pytest

from tests.e2e.test_order_live import SERVER_ENV, crossing_between
from tests.support.wire import WireClient

pytestmark = [pytest.mark.django_db(transaction=True)]


@pytest.mark.timeout(240)
async def test_messages_crossing_a_stop_never_follow_the_30_across_processes(cluster):
    p1, p2 = cluster(2, **SERVER_ENV)
    await crossing_between(WireClient(p1.ws_url, "A@p1"), WireClient(p2.ws_url, "B@p2"))
