"""Browser origins: the server's own host and configured origins pass, others get 403."""

import asyncio

import pytest
import websockets
from channels.testing import WebsocketCommunicator
from django.test import override_settings

from randomchat.asgi import application
from randomchat.origins import origin_allowed
from tests.support.live import DaphneServer

pytestmark = pytest.mark.timeout(60)


@pytest.mark.parametrize(
    "origin, host, allowed, expected",
    [
        (None, "chat.example.com", [], True),  # apps and bots send no Origin
        ("https://chat.example.com", "chat.example.com", [], True),
        ("http://127.0.0.1:8000", "127.0.0.1:8000", [], True),
        ("http://evil.example", "chat.example.com", [], False),
        ("http://chat.example.com:9999", "chat.example.com", [], False),
        ("https://app.example.com", "chat.example.com", ["https://app.example.com"], True),
        ("https://other.example.com", "chat.example.com", ["https://app.example.com"], False),
        ("https://any.example", "chat.example.com", ["*"], True),
        ("null", "chat.example.com", [], False),
    ],
)
def test_origin_allowed(origin, host, allowed, expected):
    with override_settings(RANDOMCHAT_ALLOWED_ORIGINS=allowed):
        assert origin_allowed(origin, host) is expected


@pytest.mark.parametrize(
    "origin, allowed, expected",
    [
        ("https://app.example.com", ["https://.example.com"], True),  # channels' subdomain pattern
        ("http://app.example.com", ["https://.example.com"], False),
        ("https://app.example.com:8443", ["app.example.com"], True),  # no scheme: any scheme and port
        ("http://[::1", [], False),  # not a URL: refused, not an exception
        ("http://chat.example.com:99999", [], False),
    ],
)
def test_origin_patterns_are_channels_origin_validator_s(origin, allowed, expected):
    with override_settings(RANDOMCHAT_ALLOWED_ORIGINS=allowed):
        assert origin_allowed(origin, "chat.example.com") is expected


async def handshake(headers):
    communicator = WebsocketCommunicator(application, "/connect", headers=headers)
    accepted, _ = await communicator.connect(timeout=3)
    await communicator.disconnect()
    return accepted


# The accepted handshake runs a ChatConsumer, which reaches the database when it closes.
@pytest.mark.django_db(transaction=True)
@override_settings(ALLOWED_HOSTS=["chat.example.com"])
async def test_foreign_origin_refused_in_process():
    assert not await handshake([(b"host", b"chat.example.com"), (b"origin", b"http://evil.example")])
    assert await handshake([(b"host", b"chat.example.com"), (b"origin", b"https://chat.example.com")])


@pytest.mark.django_db(transaction=True)
def test_foreign_origin_gets_403_from_daphne():
    async def attempt(url, origin):
        try:
            async with websockets.connect(url, origin=origin, open_timeout=5):
                return 101
        except websockets.InvalidStatus as exc:
            return exc.response.status_code

    with DaphneServer(env={"RANDOMCHAT_ALLOWED_ORIGINS": "https://app.example.com"}) as server:
        host = server.ws_url.split("/")[2]
        assert asyncio.run(attempt(server.ws_url, "http://evil.example")) == 403
        assert asyncio.run(attempt(server.ws_url, f"http://{host}")) == 101
        assert asyncio.run(attempt(server.ws_url, "https://app.example.com")) == 101
        assert "origin not allowed" in server.log()
