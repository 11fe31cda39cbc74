"""ALLOWED_HOSTS holds for the WebSocket handshake as for HTTP: DNS rebinding gets 403."""

import pytest
from channels.testing import WebsocketCommunicator
from django.test import override_settings

from randomchat.asgi import application
from randomchat.origins import host_allowed
from tests.support.live import DaphneServer

from tests.support.raw import request, websocket_handshake

pytestmark = pytest.mark.timeout(60)


@pytest.mark.parametrize(
    "host, allowed, debug, expected",
    [
        (None, ["chat.example.com"], False, True),  # only in-process clients send none
        ("chat.example.com", ["chat.example.com"], False, True),
        ("chat.example.com:8443", ["chat.example.com"], False, True),
        ("CHAT.example.com", ["chat.example.com"], False, True),
        ("a.chat.example.com", [".chat.example.com"], False, True),
        ("evil.example", ["chat.example.com"], False, False),
        ("evil.example", ["*"], False, True),
        ("", ["chat.example.com"], False, False),
        ("bad host", ["*"], False, False),
        ("localhost:8000", [], True, True),  # DEBUG with no ALLOWED_HOSTS, as Django does
        ("localhost:8000", [], False, False),
    ],
)
def test_host_allowed(host, allowed, debug, expected):
    with override_settings(ALLOWED_HOSTS=allowed, DEBUG=debug):
        assert host_allowed(host) is expected


async def test_foreign_host_refused_in_process__even_with_a_matching_origin():
    communicator = WebsocketCommunicator(
        application, "/connect", headers=[(b"host", b"evil.example"), (b"origin", b"http://evil.example")]
    )
    accepted, code = await communicator.connect(timeout=3)
    assert (accepted, code) == (False, 1008)


@pytest.mark.django_db(transaction=True)
def test_dns_rebinding_gets_403_from_daphne_like_http_gets_400(caplog):
    with DaphneServer() as server:
        own = server.http_url.split("/")[2]
        # The rebinding page: its own name as Host and as Origin.
        assert websocket_handshake(server, host="evil.example", origin="http://evil.example")[0] == 403
        assert websocket_handshake(server, host="evil.example:80")[0] == 403
        assert request(server, "/", host="evil.example")[0] == 400
        assert request(server, "/healthz", host="evil.example")[0] == 400
        # The server's own names still work, with and without an Origin.
        assert websocket_handshake(server, host=own, origin=f"http://{own}")[0] == 101
        assert websocket_handshake(server, host=f"localhost:{server.port}")[0] == 101
        assert request(server, "/healthz", host=own)[0] == 200
        assert "websocket refused reason=host not allowed" in server.log()


@pytest.mark.django_db(transaction=True)
def test_allowed_hosts_setting_reaches_the_websocket():
    with DaphneServer(env={"ALLOWED_HOSTS": "chat.example.com"}) as server:
        assert websocket_handshake(server, host="chat.example.com", origin="https://chat.example.com")[0] == 101
        assert websocket_handshake(server, host=f"127.0.0.1:{server.port}")[0] == 403
