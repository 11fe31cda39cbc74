"""Fixtures for the hardening tests: STOMP clients over the in-process application."""

import json

import pytest
from channels.layers import get_channel_layer

from randomchat.asgi import application
from tests.consumers.stomp_client import StompClient


class ChatClient(StompClient):
    """A StompClient that speaks the chat: /start, /message, /stop and their events."""

    async def ready(self) -> "ChatClient":
        await self.connect()
        await self.subscribe()
        return self

    async def send_json(self, destination: str, body, receipt: str | None = None) -> None:
        headers = [("destination", destination)]
        if receipt:
            headers.append(("receipt", receipt))
        await self.send("SEND", headers, body if isinstance(body, (bytes, str)) else json.dumps(body))

    async def event(self, timeout: float = 3) -> dict:
        frame = await self.expect("MESSAGE", timeout)
        return json.loads(frame.body)

    async def start(self, language: str = "en", **fields) -> None:
        await self.send_json("/start", {"languageCode": language, **fields}, receipt="start")
        await self.expect_receipt("start")


@pytest.fixture
async def chat_client():
    """`await chat_client()` -> a CONNECTed, subscribed ChatClient, disconnected at teardown."""
    clients: list[ChatClient] = []

    async def make(*, headers=None, ready=True) -> ChatClient:
        client = ChatClient(application, "/connect", subprotocols=["v12.stomp"], headers=headers)
        clients.append(client)
        await client.open()
        return await client.ready() if ready else client

    yield make
    for client in clients:
        await client.close()
    await get_channel_layer().flush()


async def pair(make) -> tuple[ChatClient, dict, ChatClient, dict]:
    """Two clients in one dialog, with their 10 events."""
    a, b = await make(), await make()
    await a.start()
    await b.start()
    event_a, event_b = await a.event(), await b.event()
    assert event_a["eventCode"] == event_b["eventCode"] == 10
    return a, event_a, b, event_b
