"""Closes WebSocket connections whose client stopped reading.

ASGI gives an application no view of what is still unsent, and daphne has no limit of its
own, so a client that never reads would make the server buffer without bound. This hooks
daphne's WebSocket protocol (Twisted): a connection whose unsent bytes pass
RANDOMCHAT_SLOW_READER_BYTES, or whose Twisted send buffer stays full for
RANDOMCHAT_SLOW_READER_SECONDS, is aborted (Spring's sendBufferSizeLimit/sendTimeLimit).
The application then gets its usual websocket.disconnect.
"""

from __future__ import annotations

import logging
import time

from django.conf import settings
from twisted.internet.abstract import FileDescriptor


logger = logging.getLogger(__name__)


def unsent_bytes(transport) -> int:
    """Bytes a Twisted transport holds that the kernel has not taken yet."""
    data = getattr(transport, "dataBuffer", b"")
    return len(data) - getattr(transport, "offset", 0) + getattr(transport, "_tempDataLen", 0)


def check_backlog(protocol, now: float) -> str | None:
    """The reason to drop this connection, or None; remembers since when its buffer is full."""
    transport = protocol.transport
    if transport is None:
        return None
    backlog = unsent_bytes(transport)
    if backlog > settings.RANDOMCHAT_SLOW_READER_BYTES:
        return f"unsent backlog of {backlog} bytes"
    if backlog > getattr(transport, "bufferSize", FileDescriptor.bufferSize):
        since = getattr(protocol, "_randomchat_full_since", None)
        if since is None:
            protocol._randomchat_full_since = now
        elif now - since > settings.RANDOMCHAT_SLOW_READER_SECONDS:
            return f"send buffer full for {now - since:.0f}s"
    else:
        protocol._randomchat_full_since = None
    return None


def _drop_if_slow(protocol) -> None:
    reason = check_backlog(protocol, time.monotonic())
    if reason is not None and not getattr(protocol, "_randomchat_dropped", False):
        protocol._randomchat_dropped = True
        logger.info("event=slow_reader_closed reason=%s", reason)
        protocol.transport.abortConnection()


def wrap(WebSocketProtocol) -> None:
    """Check the backlog after each send and in daphne's periodic timeout check."""
    server_send = WebSocketProtocol.serverSend
    check_timeouts = WebSocketProtocol.check_timeouts

    def serverSend(self, content, binary=False):
        server_send(self, content, binary)
        _drop_if_slow(self)

    def check_timeouts_and_backlog(self):
        check_timeouts(self)
        _drop_if_slow(self)

    WebSocketProtocol.serverSend = serverSend
    WebSocketProtocol.check_timeouts = check_timeouts_and_backlog
