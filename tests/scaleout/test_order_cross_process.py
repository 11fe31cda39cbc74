"""PROTOCOL.md §4 "Order" across processes: the sender and the stopper on two daphnes."""

from __future__ import annotations

import pytest

from tests.e2e.test_order_live import SERVER_ENV, crossing_rounds

from .wsclient import StompWs, close_all

pytestmark = [pytest.mark.django_db(transaction=True)]


@pytest.mark.timeout(240)
async def test_messages_crossing_a_stop_never_follow_the_30_across_processes(cluster):
    p1, p2 = cluster(2, **SERVER_ENV)
    a, b = StompWs(p1.ws_url, "A@p1"), StompWs(p2.ws_url, "B@p2")
    try:
        await a.open()
        await b.open()
        await crossing_rounds(a, b)
    finally:
        await close_all([a, b])
