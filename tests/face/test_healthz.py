"""/healthz: 200 when the database and the channel layer answer, 503 with the reason otherwise."""

from __future__ import annotations

import json
import urllib.request

import pytest
from asgiref.sync import async_to_sync
from channels.layers import InMemoryChannelLayer
from django.db import OperationalError, connections
from django.test import override_settings

from tests.support.raw import asgi_get
from tests.support.live import free_port


class DeafLayer(InMemoryChannelLayer):
    """A layer that accepts every message and delivers none."""

    async def send(self, channel, message):
        return None


# transaction=True: the check reaches the database from a thread of its own (randomchat/probes.py),
# which sees committed rows only. The request comes from 127.0.0.1, which may see the reasons.


def get():
    status, _, body = async_to_sync(asgi_get)("/healthz")
    return status, json.loads(body)


@pytest.mark.django_db(transaction=True)
def test_healthz_ok():
    assert get() == (200, {"status": "ok", "database": "ok", "channel_layer": "ok"})


@pytest.mark.django_db(transaction=True)
def test_healthz_database_down(monkeypatch):
    def refuse(*args, **kwargs):
        raise OperationalError("connection to server failed: Connection refused")

    # On the class: the check runs on the probes' own thread, with its own connection.
    monkeypatch.setattr(type(connections["default"]), "cursor", refuse)
    status, body = get()
    assert status == 503
    assert body == {
        "status": "unavailable",
        "database": "OperationalError: connection to server failed: Connection refused",
        "channel_layer": "ok",
    }


@pytest.mark.django_db(transaction=True)
@override_settings(
    CHANNEL_LAYERS={"default": {"BACKEND": "tests.face.test_healthz.DeafLayer"}}, RANDOMCHAT_HEALTHZ_TIMEOUT=0.3
)
def test_healthz_layer_that_delivers_nothing():
    assert get() == (503, {"status": "unavailable", "database": "ok", "channel_layer": "timed out"})


@pytest.mark.django_db(transaction=True)
def test_healthz_redis_unreachable():
    dead = f"redis://127.0.0.1:{free_port()}/0"
    layers = {"default": {"BACKEND": "channels_redis.core.RedisChannelLayer", "CONFIG": {"hosts": [dead]}}}
    with override_settings(CHANNEL_LAYERS=layers, RANDOMCHAT_HEALTHZ_TIMEOUT=1.0):
        status, body = get()
    assert status == 503 and body["status"] == "unavailable" and body["database"] == "ok"
    assert body["channel_layer"] != "ok"


@pytest.mark.django_db(transaction=True)
@override_settings(CHANNEL_LAYERS={})
def test_healthz_no_layer():
    status, body = get()
    assert (status, body["channel_layer"]) == (503, "RuntimeError: no channel layer is configured")


@pytest.mark.django_db(transaction=True)
def test_healthz_on_a_live_server(daphne_server):
    with urllib.request.urlopen(daphne_server.http_url + "/healthz", timeout=10) as response:
        assert response.status == 200
        assert response.headers["Content-Type"] == "application/json"
        assert json.loads(response.read()) == {"status": "ok", "database": "ok", "channel_layer": "ok"}
