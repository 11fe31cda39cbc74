"""Where randomchat reaches into daphne: its WebSocket protocol class, to wrap once.

ASGI shows an application neither the socket's read side nor its unsent bytes, so the
slow-reader guard (backpressure.py) and the inbound pacing (inbound.py) wrap methods of
daphne's Twisted protocol.
"""

from __future__ import annotations


def websocket_protocol_to_wrap(flag: str):
    """daphne's WebSocketProtocol the first time `flag` asks; None if it is wrapped for that
    flag already, or if this process does not run under daphne."""
    try:
        from daphne.ws_protocol import WebSocketProtocol
    except ImportError:
        return None
    if getattr(WebSocketProtocol, flag, False):
        return None
    setattr(WebSocketProtocol, flag, True)
    return WebSocketProtocol
