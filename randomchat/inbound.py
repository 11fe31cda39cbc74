"""Paces what the server reads from each WebSocket connection.

daphne reads a socket whenever it is readable, autobahn parses all it read into messages
at once, and daphne puts each one on the connection's application queue, which has no
bound: one client writing as fast as it can would take the process's CPU from everyone
else. This hooks daphne's WebSocket protocol (Twisted) so that a connection over its
budget (RANDOMCHAT_INBOUND_FRAMES and RANDOMCHAT_INBOUND_BYTES per second, with a burst)
or with RANDOMCHAT_INBOUND_QUEUE messages still waiting for the application is not read
until the budget has refilled or the queue drained: the client's bytes wait in kernel
buffers and TCP slows the client down. Nothing is dropped, except data that arrives once
the connection is closing, which no application would read.
"""

from __future__ import annotations

import time

from django.conf import settings

from .ratelimit import TokenBucket

# How often a connection paused for its queue looks again (s).
QUEUE_POLL = 0.05


class Pacer:
    """One connection's inbound budgets, and whether its transport is paused for them."""

    __slots__ = ("protocol", "call_later", "frames", "bytes", "queue_limit", "paused")

    def __init__(self, protocol, call_later) -> None:
        self.protocol = protocol
        self.call_later = call_later
        self.frames = TokenBucket(*settings.RANDOMCHAT_INBOUND_FRAMES)
        self.bytes = TokenBucket(*settings.RANDOMCHAT_INBOUND_BYTES)
        self.queue_limit = settings.RANDOMCHAT_INBOUND_QUEUE
        self.paused = False

    def frame_read(self, size: int, now: float) -> None:
        """Called after each WebSocket frame (data or control) was handled."""
        wait = max(self.frames.spend(1, now), self.bytes.spend(size, now))
        if wait > 0:
            self.pause(wait)
        elif self.queue_long(self.queue_limit):
            self.pause(QUEUE_POLL)

    def queue_long(self, limit: int) -> bool:
        queue = getattr(self.protocol, "application_queue", None)
        return queue is not None and queue.qsize() >= limit

    def pause(self, seconds: float) -> None:
        if self.paused:
            return
        self.paused = True
        self.protocol.transport.pauseProducing()
        self.call_later(seconds, self.resume)

    def resume(self) -> None:
        protocol = self.protocol
        if protocol.state == protocol.STATE_CLOSED or protocol.transport is None:
            return
        if self.queue_long(max(1, self.queue_limit // 2)):
            self.call_later(QUEUE_POLL, self.resume)
            return
        self.paused = False
        # First what the last read left in autobahn's buffer: it may pause again.
        protocol.consumeData()
        if not self.paused:
            protocol.transport.resumeProducing()


def pacer_of(protocol) -> Pacer:
    pacer = protocol.__dict__.get("_randomchat_pacer")
    if pacer is None:
        from twisted.internet import reactor  # daphne has installed its reactor by now

        pacer = protocol._randomchat_pacer = Pacer(protocol, reactor.callLater)
    return pacer


def wrap(WebSocketProtocol) -> None:
    """Pace what daphne reads, and hand nothing to a closing connection's application."""
    process_data = WebSocketProtocol.processData
    on_frame_end = WebSocketProtocol.onFrameEnd
    on_message = WebSocketProtocol.onMessage

    def processData(self):
        pacer = self.__dict__.get("_randomchat_pacer")
        if pacer is not None and pacer.paused:
            # Leave the rest in the buffer; reading may have been resumed by someone
            # else (twisted.web's HTTPChannel stays the transport's producer), so pause again.
            self.transport.pauseProducing()
            return False
        return process_data(self)

    def onFrameEnd(self):
        size = self.current_frame.length
        result = on_frame_end(self)
        pacer_of(self).frame_read(size, time.monotonic())
        return result

    def onMessage(self, payload, isBinary):
        # Once the close has begun (the application asked for it, or the client did),
        # nothing more reaches the application: do not make it queue and skip them.
        if self.state != self.STATE_OPEN:
            return
        on_message(self, payload, isBinary)

    WebSocketProtocol.processData = processData
    WebSocketProtocol.onFrameEnd = onFrameEnd
    WebSocketProtocol.onMessage = onMessage
