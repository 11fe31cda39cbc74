"""Refuses WebSocket handshakes for hosts or browser origins that settings do not allow."""

from __future__ import annotations

import logging
from urllib.parse import urlsplit

from django.conf import settings
from django.http.request import split_domain_port, validate_host

logger = logging.getLogger(__name__)


def host_allowed(host: str | None) -> bool:
    """The Host header checked against ALLOWED_HOSTS as Django checks it for HTTP.

    No Host passes: every browser sends one (daphne refuses a handshake without it), so
    only an in-process client lacks it, and DNS rebinding needs a browser.
    """
    if host is None:
        return True
    allowed = settings.ALLOWED_HOSTS
    if settings.DEBUG and not allowed:
        allowed = [".localhost", "127.0.0.1", "[::1]"]  # as HttpRequest.get_host()
    domain, _ = split_domain_port(host)
    return bool(domain) and validate_host(domain, allowed)


def origin_allowed(origin: str | None, host: str | None) -> bool:
    """No Origin (a non-browser client), the same host, or a configured origin passes."""
    if origin is None:
        return True
    allowed = settings.RANDOMCHAT_ALLOWED_ORIGINS
    if "*" in allowed or origin in allowed:
        return True
    parsed = urlsplit(origin)
    return bool(host) and parsed.netloc.lower() == host.lower()


def refusal(headers: dict[bytes, bytes]) -> str | None:
    """Why a handshake with these headers is refused (fixed text), or None."""
    origin, host = headers.get(b"origin"), headers.get(b"host")
    host_text = host.decode("latin-1") if host is not None else None
    if not host_allowed(host_text):
        return "host not allowed"
    if not origin_allowed(origin.decode("latin-1") if origin is not None else None, host_text):
        return "origin not allowed"
    return None


class OriginGuard:
    """ASGI middleware: a refused handshake gets HTTP 403 (websocket.close before accept)."""

    def __init__(self, app):
        self.app = app

    async def __call__(self, scope, receive, send):
        if scope["type"] == "websocket":
            reason = refusal(dict(scope.get("headers") or []))
            if reason is not None:
                logger.info("websocket refused reason=%s", reason)
                await receive()  # websocket.connect
                await send({"type": "websocket.close", "code": 1008})
                return
        return await self.app(scope, receive, send)
