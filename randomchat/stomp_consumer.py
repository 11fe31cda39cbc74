"""StompConsumer: STOMP 1.0-1.2 over a WebSocket, and nothing about chat.

Subclasses map SEND destinations to handler methods and call `deliver()` for events.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import uuid
from collections.abc import Awaitable, Callable

from channels.consumer import get_handler_name
from channels.generic.websocket import AsyncWebsocketConsumer
from django.conf import settings

from . import __version__
from .heartbeat import FRAME_TIMEOUT, HEARTBEAT_TIMEOUT, Deadlines, HeartbeatMonitor, Lapse
from .metrics import REJECTED_FRAMES
from .ratelimit import TokenBucket
from .stomp import HEARTBEAT, Frame, FrameError, FrameParser, FrameTooLarge, encode_frame
from .stomp import frames as f

logger = logging.getLogger(__name__)

SUBPROTOCOLS = ("v12.stomp", "v11.stomp", "v10.stomp")
APP_PREFIX = "/app"
# Application close codes (4000-4999): daphne's WebSocket library refuses 1002 and 1008.
CLOSE_PROTOCOL_ERROR = 4002  # after an ERROR frame
CLOSE_POLICY = 4008  # no CONNECT in time, heart-beats stopped, a banned address
# Larger heart-beat wishes are clamped: they mean "practically never" and must stay usable as floats.
MAX_HEARTBEAT_MS = 2**31 - 1
# What CPython spends on a frame beyond its characters: the object with its headers tuple,
# and each header's 2-tuple and two str (measured with tracemalloc). Many short headers
# cost far more than their bytes on the wire.
FRAME_OVERHEAD = 300
HEADER_OVERHEAD = 110
ERROR_MESSAGE_LENGTH = 500  # an ERROR's message header: one line, short enough for any client's log


def held_size(frame: Frame) -> int:
    """About the bytes of memory a frame kept by the server costs."""
    return FRAME_OVERHEAD + len(frame.body) + sum(HEADER_OVERHEAD + len(k) + len(v) for k, v in frame.headers)


class ProtocolError(Exception):
    """A client broke the STOMP contract: answered with one ERROR frame, then close.

    `reason` is fixed text, safe to log; `detail`, the client's offending input if any,
    only goes back to the client.
    """

    def __init__(
        self,
        reason: str,
        detail: str | None = None,
        *,
        headers: tuple[tuple[str, str], ...] = (),
        kind: str = "protocol_error",
    ) -> None:
        super().__init__(reason)
        self.reason = reason
        self.detail = detail
        self.headers = headers
        self.kind = kind  # a bounded category, for metrics


def negotiate_version(accept_version: str | None) -> str | None:
    """The highest version both sides speak; no header means 1.0."""
    if accept_version is None:
        return "1.0"
    offered = {v.strip() for v in accept_version.split(",")}
    common = [v for v in f.SUPPORTED_VERSIONS if v in offered]
    return common[-1] if common else None


def parse_heartbeat(value: str | None) -> tuple[int, int]:
    """`cx,cy` in ms; missing means `0,0`. Only ASCII digits: `str.isdigit` alone accepts
    characters such as "²" that `int()` rejects."""
    if value is None:
        return 0, 0
    parts = [p.strip() for p in value.split(",")]
    if len(parts) != 2 or not all(p.isascii() and p.isdigit() for p in parts):
        raise ProtocolError("Invalid heart-beat header", value[:40])
    return min(int(parts[0]), MAX_HEARTBEAT_MS), min(int(parts[1]), MAX_HEARTBEAT_MS)


def negotiate_heartbeat(client: tuple[int, int], server: tuple[int, int]) -> tuple[int, int]:
    """(server->client interval, client->server interval) in ms; 0 means none (STOMP 1.2)."""
    cx, cy = client
    sx, sy = server
    outgoing = 0 if sx == 0 or cy == 0 else max(sx, cy)
    incoming = 0 if cx == 0 or sy == 0 else max(cx, sy)
    return outgoing, incoming


def select_subprotocol(offered: list[str]) -> str | None:
    """Our most recent STOMP subprotocol among those the client offers."""
    for candidate in SUBPROTOCOLS:
        if candidate in offered:
            return candidate
    return None


class StompConsumer(AsyncWebsocketConsumer):
    """Speaks STOMP; subclasses set `destinations` and `event_destination`."""

    destinations: dict[str, str] = {}
    event_destination = ""

    async def connect(self) -> None:
        """Accept the WebSocket with a STOMP subprotocol and wait for CONNECT."""
        self.session_id = uuid.uuid4().hex
        self.version: str | None = None
        self.closing = False
        self.drop_reason: str | None = None  # "timeout" when heart-beats stopped
        # Until CONNECT nothing is escaped (CONNECT itself never is); then the negotiated version.
        self.parser = FrameParser(
            version="1.0",
            max_frame_size=settings.RANDOMCHAT_MAX_FRAME_SIZE,
            max_headers=settings.RANDOMCHAT_MAX_HEADERS,
            max_header_line=settings.RANDOMCHAT_MAX_HEADER_LINE,
        )
        self.subscriptions: dict[str, str] = {}
        self.frame_bucket = TokenBucket(*settings.RANDOMCHAT_RATE_FRAME)  # every frame, heart-beats too
        self.transactions: dict[str, list[Frame]] = {}
        self.transaction_bytes = 0  # held_size() of every frame in self.transactions
        self.pending_events: list[dict] = []
        self.pending_bytes = 0  # the bodies of self.pending_events
        self.after_answer: list[Callable[[], Awaitable[None]]] = []  # see receive_frame
        self.message_ids = itertools.count(1)
        self.heartbeat = HeartbeatMonitor(self)
        self.heartbeat.expect_connect(settings.RANDOMCHAT_CONNECT_TIMEOUT)
        subprotocol = select_subprotocol(self.scope.get("subprotocols") or [])
        await self.accept(subprotocol=subprotocol)

    async def disconnect(self, code: int) -> None:
        """Stop the timers and forget the open transactions."""
        self.closing = True
        self.heartbeat.stop()
        self._drop_transactions()

    async def dispatch(self, message: dict) -> None:
        """Call the handler at once. channels' own dispatch first awaits
        `aclose_old_connections()`, a hop to the one thread that runs every database call of
        the process, so each frame and each event would wait behind queued database work. Our
        database calls go through `database_sync_to_async`, which closes old connections itself.
        """
        handler = getattr(self, get_handler_name(message), None)
        if handler is None:
            raise ValueError(f"No handler for message type {message['type']}")
        await handler(message)

    # Inbound

    async def receive(self, text_data: str | None = None, bytes_data: bytes | None = None) -> None:
        """Handle the frames of one WebSocket message in order, until one closes the connection."""
        if self.closing:
            return
        self.heartbeat.last_inbound = now = asyncio.get_running_loop().time()
        data = text_data.encode() if text_data is not None else bytes_data or b""
        try:
            for item in self.parser.frames(data, now):
                if self.held_bytes() > settings.RANDOMCHAT_MAX_CONNECTION_BYTES:
                    break
                if not self.frame_bucket.take(now):
                    await self.reject_frame_rate()
                    return
                if item is not HEARTBEAT:
                    await self._handle(item)
                    if self.closing:
                        return
        except FrameError as exc:
            kind = "frame_too_large" if isinstance(exc, FrameTooLarge) else "malformed_frame"
            await self.reject(exc.reason, detail=exc.detail, kind=kind)
            return
        if self.held_bytes() > settings.RANDOMCHAT_MAX_CONNECTION_BYTES:
            await self.reject(self._memory_limit_reason(), kind="limit_exceeded")

    def held_bytes(self) -> int:
        """What this connection makes the server hold: the frame being received, the frames
        of its open transactions and the events waiting for its SUBSCRIBE."""
        return self.parser.buffered + self.transaction_bytes + self.pending_bytes

    @staticmethod
    def _memory_limit_reason() -> str:
        return f"More than {settings.RANDOMCHAT_MAX_CONNECTION_BYTES} bytes buffered for this connection"

    async def reject_frame_rate(self) -> None:
        """Reject a client over RANDOMCHAT_RATE_FRAME."""
        rate, burst = settings.RANDOMCHAT_RATE_FRAME
        await self.reject(
            f"Frame rate limit exceeded (more than {burst:g} frames at once or {rate:g} per second)",
            kind="frame_rate_limited",
        )

    async def _handle(self, item: Frame) -> None:
        try:
            await self.receive_frame(item)
        except ProtocolError as exc:
            await self.reject(exc.reason, detail=exc.detail, headers=exc.headers + self._receipt_id(item), kind=exc.kind)
        except Exception:
            # A bug or an outage, not the client's fault: it still gets an ERROR frame
            # rather than a bare 1011 close from the server.
            logger.exception("stomp frame failed session=%s command=%s", self.session_id, item.command)
            await self.reject("Internal server error", headers=self._receipt_id(item), kind="internal_error")

    async def receive_frame(self, frame: Frame) -> None:
        """Handle one client frame, then acknowledge its receipt if it asked for one; then
        what its handler left in `after_answer` (what the frame caused that must follow its
        receipt, without a trip through the channel layer)."""
        command = frame.command
        if command not in f.CLIENT_COMMANDS:
            raise ProtocolError("Unknown command", command, kind="unknown_command")
        if self.version is None and command not in (f.CMD_CONNECT, f.CMD_STOMP):
            raise ProtocolError(f"Expected CONNECT or STOMP, got {command}", kind="not_connected")
        handler = getattr(self, "frame_" + command.lower())
        await handler(frame)
        receipt = frame.get(f.HDR_RECEIPT)
        if receipt is not None and command not in (f.CMD_CONNECT, f.CMD_STOMP) and not self.closing:
            await self.send_answer(Frame(f.CMD_RECEIPT, ((f.HDR_RECEIPT_ID, receipt),)))
        while self.after_answer and not self.closing:
            await self.after_answer.pop(0)()
        if command == f.CMD_DISCONNECT:
            self.closing = True
            await self.close()

    async def frame_connect(self, frame: Frame) -> None:
        """Negotiate the version and heart-beats, answer CONNECTED; STOMP is the same."""
        if self.version is not None:
            raise ProtocolError("Already connected")
        version = negotiate_version(frame.get(f.HDR_ACCEPT_VERSION))
        if version is None:
            supported = ",".join(f.SUPPORTED_VERSIONS)
            raise ProtocolError(
                f"Supported protocol versions are {supported}",
                headers=((f.HDR_VERSION, supported),),
                kind="version_mismatch",
            )
        client_heartbeat = parse_heartbeat(frame.get(f.HDR_HEART_BEAT)) if version != "1.0" else (0, 0)
        server_heartbeat = tuple(settings.RANDOMCHAT_HEARTBEAT) if version != "1.0" else (0, 0)
        self.version = self.parser.version = version
        self.heartbeat.start(
            Deadlines.negotiated(
                *negotiate_heartbeat(client_heartbeat, server_heartbeat),
                grace=settings.RANDOMCHAT_HEARTBEAT_GRACE,
                frame=settings.RANDOMCHAT_FRAME_TIMEOUT,
                idle=settings.RANDOMCHAT_IDLE_TIMEOUT,
            )
        )
        await self.send_frame(
            Frame(
                f.CMD_CONNECTED,
                (
                    (f.HDR_VERSION, version),
                    (f.HDR_HEART_BEAT, "%d,%d" % server_heartbeat),
                    (f.HDR_SERVER, f"randomchat/{__version__}"),
                    (f.HDR_SESSION, self.session_id),
                    *self.connected_headers(frame),
                ),
            )
        )
        await self.stomp_connected()

    frame_stomp = frame_connect

    async def frame_subscribe(self, frame: Frame) -> None:
        """Subscribe to the event destination, and deliver the events that waited for it."""
        destination = self._required(frame, f.HDR_DESTINATION)
        sub_id = frame.get(f.HDR_ID)
        if sub_id is None:
            if self.version != "1.0":
                raise ProtocolError("SUBSCRIBE without an id header")
            sub_id = destination
        if sub_id in self.subscriptions:
            raise ProtocolError("Subscription id already in use", sub_id)
        if destination != self.event_destination:
            raise ProtocolError("Unknown destination", destination, kind="unknown_destination")
        limit = settings.RANDOMCHAT_MAX_SUBSCRIPTIONS
        if len(self.subscriptions) >= limit:
            raise ProtocolError(f"More than {limit} subscriptions", kind="limit_exceeded")
        self.subscriptions[sub_id] = destination
        pending, self.pending_events, self.pending_bytes = self.pending_events, [], 0
        for event in pending:
            await self.deliver(event)

    async def frame_unsubscribe(self, frame: Frame) -> None:
        """End a subscription by its id (1.0: or its destination)."""
        sub_id = frame.get(f.HDR_ID)
        if sub_id is None and self.version == "1.0":
            sub_id = frame.get(f.HDR_DESTINATION)
        if sub_id is None:
            raise ProtocolError("UNSUBSCRIBE without an id header")
        if self.subscriptions.pop(sub_id, None) is None:
            raise ProtocolError("No subscription with id", sub_id)

    async def frame_ack(self, frame: Frame) -> None:
        """Every subscription is `auto`: ACK and NACK have no effect."""

    frame_nack = frame_ack

    async def frame_begin(self, frame: Frame) -> None:
        """Open a transaction: its SENDs wait for COMMIT."""
        name = self._required(frame, f.HDR_TRANSACTION)
        if name in self.transactions:
            raise ProtocolError("Transaction already open", name)
        limit = settings.RANDOMCHAT_MAX_TRANSACTIONS
        if len(self.transactions) >= limit:
            raise ProtocolError(f"More than {limit} open transactions", kind="limit_exceeded")
        self.transactions[name] = []

    async def frame_commit(self, frame: Frame) -> None:
        """Handle a transaction's SENDs, in order."""
        for send in self._end_transaction(frame):
            await self.dispatch_send(send)

    async def frame_abort(self, frame: Frame) -> None:
        """Forget a transaction's SENDs."""
        self._end_transaction(frame)

    async def frame_send(self, frame: Frame) -> None:
        """Hand a SEND to its destination's handler, or keep it for its transaction's COMMIT."""
        destination = self._required(frame, f.HDR_DESTINATION)
        handler = self._handler_for(destination)
        name = frame.get(f.HDR_TRANSACTION)
        if name is None:
            await handler(frame)
            return
        frames = self.transactions.get(name)
        if frames is None:
            raise ProtocolError("No open transaction", name)
        if len(frames) >= settings.RANDOMCHAT_MAX_TRANSACTION_FRAMES:
            raise ProtocolError(f"More than {settings.RANDOMCHAT_MAX_TRANSACTION_FRAMES} frames in transaction", name)
        size = held_size(frame)
        if self.held_bytes() + size > settings.RANDOMCHAT_MAX_CONNECTION_BYTES:
            raise ProtocolError(self._memory_limit_reason(), kind="limit_exceeded")
        frames.append(frame)
        self.transaction_bytes += size

    async def frame_disconnect(self, frame: Frame) -> None:
        """The chat effect is the same as the socket closing; the close follows the receipt."""
        self._drop_transactions()

    async def dispatch_send(self, frame: Frame) -> None:
        """Call the handler of a SEND's destination."""
        await self._handler_for(frame.get(f.HDR_DESTINATION))(frame)

    def _handler_for(self, destination: str):
        name = destination[len(APP_PREFIX):] if destination.startswith(APP_PREFIX + "/") else destination
        method = self.destinations.get(name)
        if method is None:
            raise ProtocolError("Unknown destination", destination, kind="unknown_destination")
        return getattr(self, method)

    def _end_transaction(self, frame: Frame) -> list[Frame]:
        name = self._required(frame, f.HDR_TRANSACTION)
        frames = self.transactions.pop(name, None)
        if frames is None:
            raise ProtocolError("No open transaction", name)
        self.transaction_bytes -= sum(map(held_size, frames))
        return frames

    def _drop_transactions(self) -> None:
        self.transactions.clear()
        self.transaction_bytes = 0

    @staticmethod
    def _receipt_id(frame: Frame) -> tuple[tuple[str, str], ...]:
        receipt = frame.get(f.HDR_RECEIPT)
        return ((f.HDR_RECEIPT_ID, receipt),) if receipt is not None else ()

    @staticmethod
    def _required(frame: Frame, header: str) -> str:
        value = frame.get(header)
        if value is None:
            raise ProtocolError(f"{frame.command} without a {header} header", kind="missing_header")
        return value

    # Hooks

    def connected_headers(self, frame: Frame) -> tuple[tuple[str, str], ...]:
        """Headers a subclass adds to CONNECTED, answering ones of its own on `frame`."""
        return ()

    async def stomp_connected(self) -> None:
        """Called once the client is CONNECTED."""

    async def send_answer(self, frame: Frame) -> None:
        """Send a frame that answers a client frame (a RECEIPT); a subclass may hold it
        behind the events that frame caused."""
        await self.send_frame(frame)

    async def session_active(self) -> bool:
        """Whether a client with heart-beats off may stay silent past RANDOMCHAT_IDLE_TIMEOUT."""
        return False

    # Outbound

    async def send_frame(self, frame: Frame) -> None:
        """Encode a frame in the negotiated version and send it."""
        data = encode_frame(frame, self.version or "1.0")
        self.heartbeat.last_outbound = asyncio.get_running_loop().time()
        await self.send(text_data=data.decode("utf-8", "surrogateescape"))

    async def deliver(self, event: dict) -> None:
        """Send an event body (JSON bytes in `event["body"]`) to every subscription of events.

        Until the client subscribes, a bounded number of events wait for it.
        """
        if self.closing:
            return
        targets = [sub_id for sub_id, dest in self.subscriptions.items() if dest == self.event_destination]
        if not targets:
            if len(self.pending_events) >= settings.RANDOMCHAT_MAX_PENDING_EVENTS:
                await self.reject(
                    f"More than {settings.RANDOMCHAT_MAX_PENDING_EVENTS} events wait for a SUBSCRIBE "
                    f"to {self.event_destination}",
                    kind="limit_exceeded",
                )
                return
            size = len(event["body"])
            if self.held_bytes() + size > settings.RANDOMCHAT_MAX_CONNECTION_BYTES:
                await self.reject(self._memory_limit_reason(), kind="limit_exceeded")
                return
            self.pending_events.append(event)
            self.pending_bytes += size
            return
        for sub_id in targets:
            await self.send_frame(
                Frame(
                    f.CMD_MESSAGE,
                    (
                        (f.HDR_DESTINATION, self.event_destination),
                        (f.HDR_SUBSCRIPTION, sub_id),
                        (f.HDR_MESSAGE_ID, f"{self.session_id}-{next(self.message_ids)}"),
                        (f.HDR_CONTENT_TYPE, "application/json"),
                    ),
                    event["body"],
                )
            )

    async def reject(
        self,
        reason: str,
        *,
        detail: str | None = None,
        headers: tuple[tuple[str, str], ...] = (),
        kind: str = "protocol_error",
        code: int = CLOSE_PROTOCOL_ERROR,
    ) -> None:
        """One ERROR frame, then close with `code`; other connections never notice.

        The log gets the fixed `reason` only; the client's own `detail` goes back to it alone.
        """
        if self.closing:
            return
        logger.info("stomp rejected session=%s kind=%s reason=%s", self.session_id, kind, reason)
        REJECTED_FRAMES.labels(kind).inc()
        message = reason if detail is None else f"{reason} {detail!r}"
        await self.send_frame(
            Frame(
                f.CMD_ERROR,
                ((f.HDR_MESSAGE, " ".join(message.splitlines())[:ERROR_MESSAGE_LENGTH]), (f.HDR_CONTENT_TYPE, "text/plain")) + headers,
                message.encode(),
            )
        )
        self.closing = True
        await self.close(code=code)

    # Timers (randomchat.heartbeat)

    def partial_since(self) -> float | None:
        """When the frame still being received began, on the loop's clock; None if none is."""
        return self.parser.partial_since

    async def send_heartbeat(self) -> None:
        """Send an EOL."""
        await self.send(text_data="\n")

    async def time_out(self, lapse: Lapse) -> None:
        """The client let a limit pass: a frame's is an error, the others a close without one."""
        if lapse.kind == FRAME_TIMEOUT:
            await self.reject(lapse.reason, kind=lapse.kind)
            return
        if lapse.kind == HEARTBEAT_TIMEOUT:
            self.drop_reason = "timeout"
        await self._drop(lapse.kind, lapse.reason)

    async def _drop(self, kind: str, reason: str) -> None:
        """Close without an ERROR frame: the client has stopped talking."""
        if self.closing:
            return
        logger.info("stomp rejected session=%s kind=%s reason=%s", self.session_id, kind, reason)
        REJECTED_FRAMES.labels(kind).inc()
        self.closing = True
        await self.close(code=CLOSE_POLICY)
