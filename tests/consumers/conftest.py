"""Fixtures for the consumer tests: STOMP clients that are always disconnected."""

import pytest
from channels.layers import get_channel_layer

from randomchat.asgi import application

from .stomp_client import ALL_SUBPROTOCOLS, StompClient


@pytest.fixture
async def stomp(transactional_db):
    """`await stomp()` -> an open StompClient on /connect; `stomp(connect=True)` also CONNECTs.

    ChatConsumer touches the database on connect and disconnect (from worker threads), so
    this fixture brings the transactional database with it, as
    `@pytest.mark.django_db(transaction=True)` would. Every client made here is
    disconnected at teardown, and the channel layer is flushed.
    """
    clients: list[StompClient] = []

    async def make(*, subprotocols=("v12.stomp",), path="/connect", connect=False, app=application, **kwargs):
        client = StompClient(app, path, subprotocols=list(subprotocols) if subprotocols else None)
        clients.append(client)
        await client.open()
        if connect:
            await client.connect(**kwargs)
        return client

    yield make
    for client in clients:
        await client.close()
    await get_channel_layer().flush()


__all__ = ["ALL_SUBPROTOCOLS", "stomp"]
