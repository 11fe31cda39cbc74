"""/metrics and /healthz: restricted by RANDOMCHAT_METRICS_TOKEN / _ALLOW, answered off the
chat's database thread, and a failed /healthz tells strangers nothing but its status."""

import asyncio
import json
import threading

import pytest
from channels.db import database_sync_to_async
from django.test import override_settings

from randomchat.probes import authorised
from tests.support.live import DaphneServer, free_port

from tests.support.raw import asgi_get, request

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.timeout(60)]

TOKEN = "s3cret-metrics-token"
STRANGER = ("203.0.113.7", 40000)


@pytest.mark.parametrize(
    "peer, headers, allow, expected",
    [
        ("127.0.0.1", {}, ["127.0.0.1", "::1"], True),
        ("::1", {}, ["127.0.0.1", "::1"], True),
        ("10.1.2.3", {}, ["10.0.0.0/8"], True),
        ("203.0.113.7", {}, ["127.0.0.1", "::1"], False),
        # Through a proxy on the same host: the peer is the proxy, not the caller.
        ("127.0.0.1", {b"x-forwarded-for": b"203.0.113.7"}, ["127.0.0.1"], False),
        ("127.0.0.1", {b"forwarded": b"for=203.0.113.7"}, ["127.0.0.1"], False),
        ("127.0.0.1", {b"x-real-ip": b"203.0.113.7"}, ["127.0.0.1"], False),
        ("127.0.0.1", {}, [], False),
        (None, {}, ["127.0.0.1"], False),
        ("203.0.113.7", {b"authorization": f"Bearer {TOKEN}".encode()}, [], True),
        ("127.0.0.1", {b"x-forwarded-for": b"x", b"authorization": f"Bearer {TOKEN}".encode()}, [], True),
        ("203.0.113.7", {b"authorization": b"Bearer wrong"}, [], False),
        ("203.0.113.7", {b"authorization": TOKEN.encode()}, [], False),
    ],
)
def test_authorised(peer, headers, allow, expected):
    with override_settings(RANDOMCHAT_METRICS_TOKEN=TOKEN, RANDOMCHAT_METRICS_ALLOW=allow):
        assert authorised(peer, headers) is expected


def test_no_token_configured_grants_nothing():
    with override_settings(RANDOMCHAT_METRICS_TOKEN="", RANDOMCHAT_METRICS_ALLOW=[]):
        assert not authorised("203.0.113.7", {b"authorization": b"Bearer "})


@override_settings(RANDOMCHAT_METRICS_TOKEN=TOKEN)
async def test_metrics_are_404_to_strangers_and_200_with_the_token():
    assert (await asgi_get("/metrics", client=STRANGER))[0] == 404
    status, headers, body = await asgi_get(
        "/metrics", client=STRANGER, headers=[(b"authorization", f"Bearer {TOKEN}".encode())]
    )
    assert status == 200 and b"randomchat_active_dialogs" in body
    assert (await asgi_get("/metrics"))[0] == 200  # from 127.0.0.1, the default allowance


async def test_healthz_tells_strangers_only_the_status():
    status, headers, body = await asgi_get("/healthz", client=STRANGER)
    assert (status, json.loads(body)) == (200, {"status": "ok"})
    assert headers[b"cache-control"] == b"no-store"


async def test_wrong_method_and_foreign_host():
    assert (await asgi_get("/metrics", method="POST"))[0:2] == (405, {
        b"content-type": b"text/plain; charset=utf-8", b"content-length": b"18",
        b"cache-control": b"no-store", b"allow": b"GET, HEAD",
    })
    assert (await asgi_get("/healthz", headers=[(b"host", b"evil.example")]))[0] == 400


async def test_probes_never_wait_for_the_chats_database_thread():
    """The one thread every database_sync_to_async call of the process queues on is kept
    busy; /metrics and /healthz still answer at once."""
    release = threading.Event()
    busy = asyncio.get_running_loop().create_task(database_sync_to_async(release.wait)(30))
    await asyncio.sleep(0.1)
    try:
        for path in ("/metrics", "/healthz"):
            status, _, _ = await asyncio.wait_for(asgi_get(path), 5)
            assert status == 200
        assert not busy.done()
    finally:
        release.set()
        await busy


def dead_database_env() -> dict:
    return {"DATABASE_URL": f"postgres://postgres@127.0.0.1:{free_port()}/gone", "RANDOMCHAT_HEALTHZ_TIMEOUT": "3"}


def get_json(server, path: str, headers: dict) -> tuple[int, dict]:
    import http.client

    connection = http.client.HTTPConnection(server.host, server.port, timeout=20)
    connection.request("GET", path, headers=headers)
    response = connection.getresponse()
    return response.status, json.loads(response.read())


def test_a_failed_healthz_shows_its_reason_only_to_the_authorised():
    with DaphneServer(env={**dead_database_env(), "RANDOMCHAT_METRICS_TOKEN": TOKEN}) as server:
        # Through a proxy: the peer address counts for nothing.
        status, body = get_json(server, "/healthz", {"X-Forwarded-For": "203.0.113.7"})
        assert (status, body) == (503, {"status": "unavailable"})
        status, body = get_json(server, "/healthz", {"Authorization": f"Bearer {TOKEN}"})
        assert status == 503 and body["status"] == "unavailable" and body["channel_layer"] == "ok"
        assert "127.0.0.1" in body["database"]  # the internal address, for the operator only
        assert request(server, "/metrics", headers={"X-Forwarded-For": "203.0.113.7"})[0] == 404


def test_metrics_can_be_closed_to_every_address():
    with DaphneServer(env={"RANDOMCHAT_METRICS_ALLOW": ""}) as server:
        assert request(server, "/metrics")[0] == 404
        assert get_json(server, "/healthz", {}) == (200, {"status": "ok"})
        assert request(server, "/")[0] == 200  # the rest is Django's, as before
