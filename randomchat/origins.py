"""Refuses WebSocket handshakes from browser origins that settings do not allow."""

from __future__ import annotations

import logging
from urllib.parse import urlsplit

from django.conf import settings

logger = logging.getLogger(__name__)


def origin_allowed(origin: str | None, host: str | None) -> bool:
    """No Origin (a non-browser client), the same host, or a configured origin passes."""
    if origin is None:
        return True
    allowed = settings.RANDOMCHAT_ALLOWED_ORIGINS
    if "*" in allowed or origin in allowed:
        return True
    parsed = urlsplit(origin)
    return bool(host) and parsed.netloc.lower() == host.lower()


class OriginGuard:
    """ASGI middleware: a refused handshake gets HTTP 403 (websocket.close before accept)."""

    def __init__(self, app):
        self.app = app

    async def __call__(self, scope, receive, send):
        if scope["type"] == "websocket":
            headers = dict(scope.get("headers") or [])
            origin = headers.get(b"origin")
            host = headers.get(b"host")
            origin_text = origin.decode("latin-1") if origin is not None else None
            if not origin_allowed(origin_text, host.decode("latin-1") if host else None):
                logger.info("websocket refused origin=%s reason=origin not allowed", origin_text)
                await receive()  # websocket.connect
                await send({"type": "websocket.close", "code": 1008})
                return
        return await self.app(scope, receive, send)
