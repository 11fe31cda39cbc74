"""/metrics and /healthz, answered before Django: a scrape flood must not slow the chat.

Django would run each request's sync parts in a thread of its own, with a database
connection of its own, and /metrics counted rows through the ORM. Here the two endpoints
are plain ASGI; their database work runs on one thread of their own (never on the thread
that serves the chat's database calls), requests that overlap share one run of it, and
/healthz reuses its result for a second.

/metrics answers only authorised callers (404 to others); /healthz answers everyone with
its status, and only authorised callers with the reason of a failure. A caller is
authorised by `Authorization: Bearer <RANDOMCHAT_METRICS_TOKEN>`, or by a peer address in
RANDOMCHAT_METRICS_ALLOW when no proxy stands between (no X-Forwarded-For, Forwarded or
X-Real-IP header): behind a proxy on the same host every request comes from its address.
"""

from __future__ import annotations

import asyncio
import hmac
import ipaddress
import json
import logging
import secrets
from concurrent.futures import ThreadPoolExecutor

from channels.layers import get_channel_layer
from django.conf import settings
from django.db import close_old_connections, connection
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from . import metrics
from .origins import host_allowed

logger = logging.getLogger(__name__)

PROXY_HEADERS = (b"x-forwarded-for", b"forwarded", b"x-real-ip")
# The probes' own thread, and so their own database connection.
_EXECUTOR = ThreadPoolExecutor(max_workers=1, thread_name_prefix="probes")


def authorised(peer: str | None, headers: dict[bytes, bytes]) -> bool:
    """Whether a caller may see metrics and the reasons of failed health checks."""
    token = settings.RANDOMCHAT_METRICS_TOKEN
    given = headers.get(b"authorization", b"")
    if token and hmac.compare_digest(given, b"Bearer " + token.encode()):
        return True
    if peer is None or any(name in headers for name in PROXY_HEADERS):
        return False
    try:
        address = ipaddress.ip_address(peer)
    except ValueError:
        return False
    return any(address in ipaddress.ip_network(allowed, strict=False) for allowed in settings.RANDOMCHAT_METRICS_ALLOW)


async def on_probe_thread(function):
    """Run `function` on the probes' thread, its database connection kept fit as channels does."""

    def run():
        close_old_connections()
        try:
            return function()
        finally:
            close_old_connections()

    return await asyncio.get_running_loop().run_in_executor(_EXECUTOR, run)


class Shared:
    """Calls of an async function that overlap share one run of it, and calls up to
    `max_age` seconds after a run ended reuse its result (on the same event loop)."""

    def __init__(self, function, *, max_age: float = 0.0):
        self.function = function
        self.max_age = max_age
        self.running: asyncio.Task | None = None
        self.ended_at = 0.0

    async def __call__(self):
        loop = asyncio.get_running_loop()
        task = self.running
        if task is None or task.get_loop() is not loop or (task.done() and loop.time() - self.ended_at > self.max_age):
            task = self.running = loop.create_task(self.function())
            task.add_done_callback(lambda _: setattr(self, "ended_at", loop.time()))
        return await asyncio.shield(task)


# Health

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


async def _health() -> dict:
    timeout = settings.RANDOMCHAT_HEALTHZ_TIMEOUT
    database, layer = await asyncio.gather(
        _run("database", lambda: on_probe_thread(_database_check), timeout),
        _run("channel_layer", _layer_check, timeout),
    )
    healthy = database == "ok" and layer == "ok"
    return {"status": "ok" if healthy else "unavailable", "database": database, "channel_layer": layer}


# Anyone may ask /healthz, so a flood of it costs one check a second; /metrics answers
# only authorised callers, whose scrapes are few and want fresh gauges.
health = Shared(_health, max_age=1.0)
pool_gauges = Shared(lambda: on_probe_thread(metrics.pool_gauges_read))


# ASGI

async def healthz(authorised_caller: bool) -> tuple[int, bytes, bytes]:
    """200 when the database answers SELECT 1 and the channel layer delivers; 503 otherwise."""
    result = await health()
    body = result if authorised_caller else {"status": result["status"]}
    return (200 if result["status"] == "ok" else 503), b"application/json", json.dumps(body).encode()


async def metrics_text(authorised_caller: bool) -> tuple[int, bytes, bytes]:
    """Prometheus text of this process, and the pool's gauges read from the database."""
    if not authorised_caller:
        return 404, b"text/plain; charset=utf-8", b"Not Found"
    metrics.POOL.gauges = await pool_gauges()
    return 200, CONTENT_TYPE_LATEST.encode(), generate_latest(metrics.REGISTRY)


ENDPOINTS = {"/healthz": healthz, "/metrics": metrics_text}


class Probes:
    """ASGI middleware: answers GET/HEAD /healthz and /metrics itself, passes the rest on."""

    def __init__(self, app):
        self.app = app

    async def __call__(self, scope, receive, send):
        endpoint = ENDPOINTS.get(scope["path"]) if scope["type"] == "http" else None
        if endpoint is None:
            return await self.app(scope, receive, send)
        headers = dict(scope.get("headers") or [])
        host = headers.get(b"host")
        if not host_allowed(host.decode("latin-1") if host is not None else None):
            status, content_type, body = 400, b"text/plain; charset=utf-8", b"Bad Request"
        elif scope["method"] not in ("GET", "HEAD"):
            status, content_type, body = 405, b"text/plain; charset=utf-8", b"Method Not Allowed"
        else:
            client = scope.get("client")
            status, content_type, body = await endpoint(authorised(client[0] if client else None, headers))
        response_headers = [
            (b"content-type", content_type),
            (b"content-length", str(len(body)).encode()),
            (b"cache-control", b"no-store"),
        ]
        if status == 405:
            response_headers.append((b"allow", b"GET, HEAD"))
        await send({"type": "http.response.start", "status": status, "headers": response_headers})
        await send({"type": "http.response.body", "body": b"" if scope["method"] == "HEAD" else body})
