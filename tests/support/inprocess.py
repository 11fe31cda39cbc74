"""The in-process client: STOMP over channels' WebsocketCommunicator, no server process.

Outbound frames are written by hand (bytes in, bytes out) so that tests control every
byte; inbound messages are parsed with the project's own FrameParser, and each server
WebSocket message must hold exactly one text frame or one heart-beat (`\\n`).
"""

from __future__ import annotations

import asyncio
import itertools
import json

from channels.testing import WebsocketCommunicator

from randomchat.asgi import application
from randomchat.stomp import HEARTBEAT, Frame, FrameParser

from .events import EVENT_KEYS, PAIRED

ALL_SUBPROTOCOLS = ["v12.stomp", "v11.stomp", "v10.stomp"]
SUBSCRIPTION = "sub-0"


class Closed(AssertionError):
    """The server closed the WebSocket where a frame was expected."""

    def __init__(self, code):
        super().__init__(f"the server closed the connection (code {code})")
        self.code = code


def raw_frame(command: str, headers=(), body: bytes | str = b"") -> bytes:
    """`COMMAND LF (key:value LF)* LF body NUL`; header text is written as given (unescaped)."""
    if isinstance(body, str):
        body = body.encode()
    head = "".join(f"{key}:{value}\n" for key, value in headers)
    return f"{command}\n{head}\n".encode() + body + b"\x00"


class StompClient:
    receipts = itertools.count(1)

    def __init__(self, app=application, path="/connect", subprotocols=("v12.stomp",), headers=None):
        self.ws = WebsocketCommunicator(
            app, path, subprotocols=list(subprotocols) if subprotocols else None, headers=headers
        )
        # Before CONNECTED nothing is escaped; afterwards the negotiated version decides.
        self.parser = FrameParser(version="1.0", max_frame_size=1 << 22)
        self.inbox: list[Frame] = []  # frames read while waiting for a RECEIPT, not handed out yet
        self.message_ids: set[str] = set()
        self.subprotocol: str | None = None
        self.opened = False
        self.disconnected = False

    # WebSocket level

    async def open(self) -> str | None:
        accepted, subprotocol = await self.ws.connect(timeout=5)
        assert accepted, f"handshake refused: {subprotocol}"
        self.subprotocol = subprotocol
        self.opened = True
        return subprotocol

    async def send_bytes(self, data: bytes, *, binary: bool | None = None) -> None:
        """One WebSocket message: text unless `binary` (by default binary only if not UTF-8)."""
        if binary is None:
            try:
                data.decode("utf-8")
                binary = False
            except UnicodeDecodeError:  # only a binary WebSocket message can carry it
                binary = True
        if binary:
            await self.ws.send_input({"type": "websocket.receive", "bytes": data})
        else:
            await self.ws.send_input({"type": "websocket.receive", "text": data.decode("utf-8")})

    async def send(self, command: str, headers=(), body: bytes | str = b"", *, binary: bool | None = None) -> None:
        await self.send_bytes(raw_frame(command, headers, body), binary=binary)

    async def receive_item(self, timeout: float = 3) -> Frame | object:
        """The next frame or HEARTBEAT; raises Closed if the server closed instead."""
        if self.inbox:
            return self.inbox.pop(0)
        message = await self.ws.receive_output(timeout)
        if message["type"] == "websocket.close":
            raise Closed(message.get("code"))
        assert message["type"] == "websocket.send", message
        assert message.get("bytes") is None and isinstance(message.get("text"), str), (
            f"the server must send text messages: {message!r}"
        )
        items = self.parser.feed(message["text"].encode("utf-8"))
        assert len(items) == 1 and self.parser.buffered == 0, (
            f"one frame per WebSocket message expected, got {message['text']!r}"
        )
        if items[0] is HEARTBEAT:
            assert message["text"] == "\n", "a heart-beat is exactly one LF"
        return items[0]

    async def receive(self, timeout: float = 3, *, heartbeats: bool = False) -> Frame:
        """The next frame, skipping heart-beats (unless heartbeats=True asserts there are none)."""
        while True:
            item = await self.receive_item(timeout)
            if item is HEARTBEAT:
                assert heartbeats is False, "unexpected heart-beat"
                continue
            return item

    async def expect(self, command: str, timeout: float = 3, **headers: str) -> Frame:
        frame = await self.receive(timeout)
        assert frame.command == command, f"expected {command}, got {frame!r}"
        for key, value in headers.items():
            key = key.replace("_", "-")
            assert frame.get(key) == value, f"{key}: expected {value!r} in {frame!r}"
        return frame

    async def expect_receipt(self, receipt_id: str) -> Frame:
        """The next frame is this RECEIPT."""
        return await self.expect("RECEIPT", receipt_id=receipt_id)

    async def receipt(self, receipt_id: str, timeout: float = 10) -> None:
        """Wait for this RECEIPT; frames before it stay in the inbox, in order (no ERROR among them)."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        read: list[Frame] = []
        try:
            while True:
                frame = await self.receive(max(0.01, deadline - loop.time()))
                assert frame.command != "ERROR", f"ERROR: {frame.get('message')}"
                if frame.command == "RECEIPT" and frame.get("receipt-id") == receipt_id:
                    return
                read.append(frame)
        finally:
            self.inbox[:0] = read

    async def expect_closed(self, timeout: float = 3) -> int | None:
        message = await self.ws.receive_output(timeout)
        assert message["type"] == "websocket.close", f"expected a close, got {message!r}"
        return message.get("code")

    async def expect_error(self, contains: str | None = None, **headers: str) -> Frame:
        """Exactly one ERROR frame with a `message` header, then the close, then nothing."""
        frame = await self.expect("ERROR", **headers)
        message = frame.get("message")
        assert message, f"ERROR without a message header: {frame!r}"
        if contains is not None:
            assert contains.lower() in message.lower(), f"{contains!r} not in {message!r}"
        assert frame.get("content-length") == str(len(frame.body))
        await self.expect_closed()
        await self.expect_nothing()
        return frame

    async def expect_nothing(self, timeout: float = 0.2) -> None:
        assert not self.inbox, f"unexpected output from the server: {self.inbox}"
        assert await self.ws.receive_nothing(timeout=timeout), "unexpected output from the server"

    async def close(self) -> None:
        if self.disconnected:
            return
        self.disconnected = True
        try:
            await self.ws.disconnect(timeout=5)
        except asyncio.CancelledError:
            pass  # the application was already cancelled by a timed-out receive

    # STOMP level

    async def connect(self, accept_version: str | None = "1.2", heart_beat: str | None = "0,0",
                      command: str = "CONNECT", extra=()) -> Frame:
        if not self.opened:
            await self.open()
        headers = []
        if accept_version is not None:
            headers.append(("accept-version", accept_version))
        if heart_beat is not None:
            headers.append(("heart-beat", heart_beat))
        headers.extend(extra)
        await self.send(command, headers)
        frame = await self.expect("CONNECTED")
        self.parser.version = frame.get("version")
        return frame

    async def subscribe(self, sub_id: str = SUBSCRIPTION, destination: str = "/user/dialog", receipt: str = "sub") -> None:
        await self.send("SUBSCRIBE", [("id", sub_id), ("destination", destination), ("receipt", receipt)])
        await self.expect_receipt(receipt)

    async def ready(self) -> StompClient:
        """CONNECTed and SUBSCRIBEd to /user/dialog: ready to chat."""
        await self.connect()
        await self.subscribe()
        return self

    async def stomp_disconnect(self) -> None:
        """DISCONNECT with a receipt; the server closes after it, and the client too, as daphne does."""
        receipt_id = f"r-{next(self.receipts)}"
        await self.send("DISCONNECT", [("receipt", receipt_id)])
        await self.receipt(receipt_id, 5)
        assert (await self.ws.receive_output(5))["type"] == "websocket.close"
        await self.close()

    # The chat

    async def send_json(self, destination: str, body, *, receipt: bool = False, timeout: float = 10) -> None:
        """SEND a body (a dict as JSON, bytes or str as they are); receipt=True waits until it was handled."""
        if isinstance(body, (dict, list)):
            body = json.dumps(body)
        if isinstance(body, str):
            body = body.encode()
        headers = [("destination", destination), ("content-type", "application/json"), ("content-length", len(body))]
        receipt_id = None
        if receipt:
            receipt_id = f"r-{next(self.receipts)}"
            headers.append(("receipt", receipt_id))
        await self.send("SEND", headers, body)
        if receipt_id is not None:
            await self.receipt(receipt_id, timeout)

    async def start(self, language: str = "en", *, timeout: float = 10, **fields) -> None:
        await self.send_json("/start", {"languageCode": language, **fields}, receipt=True, timeout=timeout)

    async def message(self, chat, sender, content) -> None:
        await self.send_json("/message", {"chatUUID": chat, "senderUUID": sender, "content": content}, receipt=True)

    async def stop(self, chat=None, sender=None) -> None:
        await self.send_json("/stop", {"chatUUID": chat, "senderUUID": sender, "content": None}, receipt=True)

    async def event(self, timeout: float = 5) -> dict:
        """The next event, after checking its MESSAGE frame against PROTOCOL.md §4."""
        frame = await self.expect("MESSAGE", timeout)
        assert frame.get("destination") == "/user/dialog"
        assert frame.get("subscription") == SUBSCRIPTION
        assert frame.get("content-type") == "application/json"
        assert frame.get("content-length") == str(len(frame.body))
        message_id = frame.get("message-id")
        assert message_id and message_id not in self.message_ids
        self.message_ids.add(message_id)
        event = json.loads(frame.body)
        assert set(event) == EVENT_KEYS, event
        return event

    async def event_with(self, code: int, timeout: float = 5) -> dict:
        event = await self.event(timeout)
        assert event["eventCode"] == code, event
        return event


async def paired(a: StompClient, b: StompClient) -> tuple[dict, dict]:
    """Both clients' 10 events, which must name the same new dialog."""
    ea, eb = await a.event_with(PAIRED), await b.event_with(PAIRED)
    assert ea["chatUUID"] == eb["chatUUID"] is not None
    assert ea["senderUUID"] != eb["senderUUID"]
    return ea, eb


async def pair(a: StompClient, b: StompClient) -> tuple[dict, dict]:
    """a and b start (a first) and are paired: their 10 events."""
    await a.start()
    await b.start()
    return await paired(a, b)
