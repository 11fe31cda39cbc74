"""Fixtures for the chat tests: a fresh channel layer per test and clients that always close."""

from __future__ import annotations

import pytest
from channels.db import database_sync_to_async
from channels.layers import channel_layers, get_channel_layer
from django.db import connections

from .client import ChatClient


@pytest.fixture
async def layer():
    # A layer built in this test's event loop; the in-memory one also starts empty.
    channel_layers.backends.clear()
    layer = get_channel_layer()
    yield layer
    if hasattr(layer, "close_pools"):
        await layer.close_pools()
    channel_layers.backends.clear()


@pytest.fixture
async def chat(transactional_db, layer):
    """`await chat()` -> a connected, subscribed ChatClient; all are closed at teardown."""
    clients: list[ChatClient] = []

    async def make(*, subscribe: bool = True) -> ChatClient:
        client = ChatClient()
        clients.append(client)
        return await client.connect(subscribe=subscribe)

    yield make
    for client in clients:
        await client.close()
    # Consumers reach the database from asgiref's one worker thread; with persistent
    # connections its connection would outlive the test database.
    await database_sync_to_async(connections.close_all)()
