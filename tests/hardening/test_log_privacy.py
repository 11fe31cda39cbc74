"""No client-supplied text in any log line, and no client address without RANDOMCHAT_ACCESS_LOG.

The client's own words go back to it in the ERROR frame; the log names the fixed reason.
"""

import asyncio
import logging
import re

import pytest
from channels.testing import WebsocketCommunicator
from django.test import override_settings
from websockets.asyncio.client import connect

from randomchat.asgi import application
from tests.support.inprocess import raw_frame
from tests.support.live import DaphneServer

from tests.support.raw import request, websocket_handshake

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.timeout(90)]

SECRET = "pin4711secret"
# The case: a body with a raw NUL and no content-length; what follows the NUL is
# parsed as the next frame, whose "command" is the client's text.
NUL_IN_BODY = b'SEND\ndestination:/message\n\n{"content": "x\x00my PIN is 4711 ' + SECRET.encode() + b'"}\n\n\x00'

# name: (bytes after CONNECT, the fixed reason the log names)
CASES = {
    "raw NUL in a body": (NUL_IN_BODY, "Invalid command"),
    "unknown command": (raw_frame(SECRET), "Unknown command"),
    "header without colon": (b"SEND\ndestination:/start\n" + SECRET.encode() + b"\n\n\x00", "Header line without ':'"),
    "bad content-length": (raw_frame("SEND", [("destination", "/start"), ("content-length", SECRET)]), "Invalid content-length"),
    "unknown destination": (raw_frame("SEND", [("destination", "/" + SECRET)]), "Unknown destination"),
    "unknown subscription": (raw_frame("UNSUBSCRIBE", [("id", SECRET)]), "No subscription with id"),
    "unknown transaction": (raw_frame("COMMIT", [("transaction", SECRET)]), "No open transaction"),
    "transaction twice": (raw_frame("BEGIN", [("transaction", SECRET)]) * 2, "Transaction already open"),
    "subscription id twice": (
        raw_frame("SUBSCRIBE", [("id", SECRET), ("destination", "/user/dialog")]) * 2, "Subscription id already in use"
    ),
}


@pytest.mark.parametrize("case", CASES)
async def test_the_log_names_the_reason_and_the_error_quotes_the_client(stomp, caplog, case):
    caplog.set_level(logging.DEBUG)
    data, reason = CASES[case]
    client = await stomp()
    await client.connect()
    await client.send_bytes(data)
    error = await client.expect_error(reason)
    assert SECRET in error.get("message")  # the client is told what it sent
    lines = [record.getMessage() for record in caplog.records]
    assert [line for line in lines if line.endswith(f"reason={reason}")], lines
    assert not [line for line in lines if SECRET in line]


async def test_a_bad_heart_beat_header_is_not_logged(stomp, caplog):
    caplog.set_level(logging.DEBUG)
    client = await stomp()
    await client.send("CONNECT", [("accept-version", "1.2"), ("heart-beat", SECRET)])
    assert SECRET in (await client.expect_error("Invalid heart-beat header")).get("message")
    assert not [r for r in caplog.records if SECRET in r.getMessage()]


@override_settings(ALLOWED_HOSTS=["chat.example.com"])
async def test_refused_handshakes_do_not_log_the_origin_or_host(caplog):
    caplog.set_level(logging.DEBUG)
    for headers in (
        [(b"host", b"chat.example.com"), (b"origin", f"http://{SECRET}.example".encode())],
        [(b"host", f"{SECRET}.example".encode())],
    ):
        communicator = WebsocketCommunicator(application, "/connect", headers=headers)
        assert (await communicator.connect(timeout=3)) == (False, 1008)
    lines = [r.getMessage() for r in caplog.records]
    assert "websocket refused reason=origin not allowed" in lines
    assert "websocket refused reason=host not allowed" in lines
    assert not [line for line in lines if SECRET in line]


async def send_raw(url: str, data: bytes) -> str:
    async with connect(url, subprotocols=["v12.stomp"]) as ws:
        await ws.send("CONNECT\naccept-version:1.2\nheart-beat:0,0\n\n\x00")
        assert (await asyncio.wait_for(ws.recv(), 10)).startswith("CONNECTED")
        await ws.send(data.decode())
        error = await asyncio.wait_for(ws.recv(), 10)
        port = ws.local_address[1]
    return error, port


def client_traces(log: str, ports) -> list[str]:
    """Lines that name one of our client sockets, or look like access-log lines."""
    access = re.compile(r'"(GET|WSCONNECT|WSDISCONNECT|WSREJECT)\b')
    return [
        line for line in log.splitlines()
        if access.search(line) or any(re.search(rf"\b{port}\b", line) for port in ports)
    ]


def exercise(server) -> list[int]:
    """A refused frame, a 404, foreign Hosts and Origins, a chat page: their client ports."""
    error, ws_port = asyncio.run(send_raw(server.ws_url, NUL_IN_BODY))
    assert error.startswith("ERROR\nmessage:Invalid command") and SECRET in error
    ports = [ws_port]
    for path, host in ((f"/{SECRET}", None), ("/", f"{SECRET}.example"), ("/healthz", f"{SECRET}.example"), ("/", None)):
        ports.append(request(server, path, host=host)[1])
    ports.append(websocket_handshake(server, origin=f"http://{SECRET}.example")[1])
    ports.append(websocket_handshake(server, host=f"{SECRET}.example")[1])
    return ports


def test_plain_daphne_logs_no_client_text_and_no_client_address():
    # DaphneServer runs `daphne -b ... -p ... randomchat.asgi:application`: no --access-log,
    # which in daphne alone means an access log on stdout.
    with DaphneServer() as server:
        ports = exercise(server)
        log = server.log()
        assert "kind=malformed_frame reason=Invalid command" in log
        assert "event=http_refused status=400 kind=DisallowedHost" in log
        assert SECRET not in log
        assert not client_traces(log, ports), log


def test_daphnes_access_log_flag_does_not_turn_it_on():
    with DaphneServer(extra_args=("--access-log", "-", "-v", "2")) as server:
        ports = exercise(server)
        assert not client_traces(server.log(), ports)


def test_the_access_log_is_written_when_the_setting_asks(tmp_path):
    path = tmp_path / "access.log"
    with DaphneServer(env={"RANDOMCHAT_ACCESS_LOG": str(path)}) as server:
        status, port = request(server, "/healthz")
        assert status == 200
    assert re.search(rf'127\.0\.0\.1:{port} .*"GET /healthz" 200', path.read_text())
