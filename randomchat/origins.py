"""Refuses WebSocket handshakes for hosts or browser origins that settings do not allow."""

from __future__ import annotations

import logging
from urllib.parse import urlparse

from channels.security.websocket import OriginValidator
from django.conf import settings
from django.http.request import split_domain_port, validate_host

logger = logging.getLogger(__name__)

# RFC 6455 "policy violation"; a close before the handshake is accepted is HTTP 403 to the client.
CLOSE_POLICY_VIOLATION = 1008


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


class OriginCheck(OriginValidator):
    """channels' origin matching (scheme, host, port; `*`), for one handshake: the patterns are
    the handshake's own host and RANDOMCHAT_ALLOWED_ORIGINS, and no Origin passes."""

    def __init__(self, host: str | None):
        own = [f"{scheme}://{host}" for scheme in ("http", "https")] if host else []
        super().__init__(None, [*own, *settings.RANDOMCHAT_ALLOWED_ORIGINS])

    def valid_origin(self, parsed_origin) -> bool:
        # No Origin: not a browser (an app, a bot), which an origin check cannot hold back.
        return parsed_origin is None or super().valid_origin(parsed_origin)


def origin_allowed(origin: str | None, host: str | None) -> bool:
    """No Origin (a non-browser client), the same host, or a configured origin passes."""
    try:
        return OriginCheck(host).valid_origin(None if origin is None else urlparse(origin))
    except ValueError:  # not a URL (a bad port, a broken IPv6 address)
        return False


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
                await send({"type": "websocket.close", "code": CLOSE_POLICY_VIOLATION})
                return
        return await self.app(scope, receive, send)
