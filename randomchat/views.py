"""The HTTP side: the chat page, the AsyncAPI document and the health check."""

from __future__ import annotations

import asyncio
import logging
import secrets

from channels.db import database_sync_to_async
from channels.layers import get_channel_layer
from django.conf import settings
from django.db import connection
from django.http import FileResponse, Http404, JsonResponse
from django.shortcuts import render
from django.views.decorators.http import require_safe

logger = logging.getLogger(__name__)

ASYNCAPI_PATH = settings.BASE_DIR / "docs" / "asyncapi.yaml"
# The page loads only its own files and talks only to its own host (ws/wss included).
PAGE_CSP = (
    "default-src 'self'; connect-src 'self'; script-src 'self'; style-src 'self'; "
    "img-src 'self' data:; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
)


@require_safe
def index(request):
    """The chat page."""
    response = render(request, "randomchat/index.html")
    response["Content-Security-Policy"] = PAGE_CSP
    return response


@require_safe
def asyncapi(request):
    """docs/asyncapi.yaml, the machine-readable description of the STOMP API."""
    try:
        handle = open(ASYNCAPI_PATH, "rb")
    except FileNotFoundError:
        raise Http404("docs/asyncapi.yaml is missing") from None
    return FileResponse(handle, content_type="application/yaml; charset=utf-8")


def _database_check() -> None:
    with connection.cursor() as cursor:
        cursor.execute("SELECT 1")
        if cursor.fetchone() != (1,):
            raise RuntimeError("SELECT 1 returned something else")


async def _layer_check() -> None:
    """Send a message to a fresh channel of the layer and read it back."""
    layer = get_channel_layer()
    if layer is None:
        raise RuntimeError("no channel layer is configured")
    channel = await layer.new_channel("healthz.")
    token = secrets.token_hex(8)
    await layer.send(channel, {"type": "healthz.ping", "token": token})
    message = await layer.receive(channel)
    if message.get("token") != token:
        raise RuntimeError("the layer returned another message")


def _reason(exc: BaseException) -> str:
    if isinstance(exc, TimeoutError):
        return "timed out"
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


async def _run(name: str, check, timeout: float) -> str:
    try:
        await asyncio.wait_for(check(), timeout)
    except Exception as exc:  # noqa: BLE001 - any failure is the answer
        logger.warning("healthz check failed check=%s error=%s", name, type(exc).__name__)
        return _reason(exc)
    return "ok"


@require_safe
async def healthz(request):
    """200 when the database answers SELECT 1 and the channel layer delivers; 503 with the reason."""
    timeout = float(getattr(settings, "RANDOMCHAT_HEALTHZ_TIMEOUT", 2.0))
    database, layer = await asyncio.gather(
        _run("database", database_sync_to_async(_database_check), timeout),
        _run("channel_layer", _layer_check, timeout),
    )
    healthy = database == "ok" and layer == "ok"
    response = JsonResponse(
        {"status": "ok" if healthy else "unavailable", "database": database, "channel_layer": layer},
        status=200 if healthy else 503,
    )
    response["Cache-Control"] = "no-store"
    return response
